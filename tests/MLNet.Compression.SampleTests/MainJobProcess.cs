using System.Diagnostics;
using System.Reflection;
using System.Text;

namespace MLNet.Compression.SampleTests;

/// <summary>What one run of the main job printed and returned.</summary>
/// <param name="ExitCode">The process exit code.</param>
/// <param name="Output">The command, then stdout and stderr.</param>
/// <param name="Seconds">Wall-clock seconds.</param>
public sealed record MainJobRun(int ExitCode, string Output, double Seconds);

/// <summary>Runs the built main job (<c>dotnet MnistCompression.dll ...</c>) as a child process.</summary>
public static class MainJobProcess
{
    /// <summary>The AssemblyMetadata key the project file writes the sample's dll path under.</summary>
    public const string PathMetadataKey = "MainJobPath";

    /// <summary>Alone on 2 cores the quick run takes about 15 s; the limit allows for a machine busy with other test assemblies.</summary>
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(6);

    /// <summary>The sample's dll, from the path the build wrote into this assembly.</summary>
    public static string SamplePath()
    {
        string? path = typeof(MainJobProcess).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == PathMetadataKey)?.Value;
        if (string.IsNullOrEmpty(path))
            throw new InvalidOperationException($"The test assembly has no [AssemblyMetadata(\"{PathMetadataKey}\")]; the project file should generate it.");
        if (!File.Exists(path))
            throw new FileNotFoundException($"The main job '{path}' does not exist; build samples/MnistCompression (building this project should).", path);
        return path;
    }

    /// <summary>A new empty temporary folder.</summary>
    public static string NewTempDirectory()
    {
        string dir = Path.Combine(Path.GetTempPath(), "mlnet-compression-mainjob-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>Deletes a folder made by <see cref="NewTempDirectory"/>, ignoring failures.</summary>
    public static void DeleteDirectory(string dir)
    {
        try
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    /// <summary>Runs the main job with <paramref name="arguments"/> in <paramref name="workingDirectory"/> and waits for it.</summary>
    public static MainJobRun Run(string workingDirectory, params string[] arguments)
    {
        var start = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory,
        };
        start.ArgumentList.Add(SamplePath());
        foreach (string argument in arguments)
            start.ArgumentList.Add(argument);

        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        using var process = new Process { StartInfo = start };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (stdout) stdout.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        var clock = Stopwatch.StartNew();
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        bool exited = process.WaitForExit(Timeout);
        if (!exited)
        {
            try
            {
                process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
            }
        }
        process.WaitForExit(); // drains the redirected streams
        string output;
        lock (stdout)
        lock (stderr)
            output = $"$ {start.FileName} {string.Join(' ', start.ArgumentList)}{Environment.NewLine}" +
                     $"--- stdout ---{Environment.NewLine}{stdout}--- stderr ---{Environment.NewLine}{stderr}";
        if (!exited)
            throw new TimeoutException($"The main job did not finish within {Timeout.TotalMinutes} minutes and was killed.{Environment.NewLine}{output}");
        return new MainJobRun(process.ExitCode, output, clock.Elapsed.TotalSeconds);
    }

    /// <summary>The dotnet host: the one running this process when it is dotnet itself, else DOTNET_HOST_PATH, DOTNET_ROOT, PATH.</summary>
    private static string DotnetHost()
    {
        string hostName = OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet";
        string? processPath = Environment.ProcessPath;
        if (processPath is not null && string.Equals(Path.GetFileName(processPath), hostName, StringComparison.OrdinalIgnoreCase))
            return processPath;
        string? hostPath = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (!string.IsNullOrEmpty(hostPath) && File.Exists(hostPath))
            return hostPath;
        string? root = Environment.GetEnvironmentVariable("DOTNET_ROOT");
        if (!string.IsNullOrEmpty(root) && File.Exists(Path.Combine(root, hostName)))
            return Path.Combine(root, hostName);
        return "dotnet";
    }
}
