using System.Reflection;
using MLNet.Compression.Tooling;

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
        ChildProcessResult run = ChildProcess.Run(ChildProcess.DotnetHost(), [SamplePath(), .. arguments], workingDirectory, Timeout);
        return new MainJobRun(run.ExitCode, run.Transcript, run.Seconds);
    }
}
