using System.Collections;
using System.Diagnostics;
using System.Text;

namespace MLNet.Compression.PackageTests;

/// <summary>What a child process printed and how it ended.</summary>
public sealed record ProcessResult(int ExitCode, string Stdout, string Stderr, string Transcript);

/// <summary>Runs a child process with captured output and a time limit (the whole process tree is killed past it).</summary>
public static class ProcessRunner
{
    public static ProcessResult Run(string fileName, IEnumerable<string> arguments, string workingDirectory, TimeSpan timeout)
    {
        var start = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory,
        };
        foreach (string argument in arguments)
            start.ArgumentList.Add(argument);

        // A test run under `dotnet test` inherits MSBuild's variables (MSBuildExtensionsPath, MSBuildSDKsPath, ...), which
        // would point a nested `dotnet build` at the outer build's SDK state; the child starts from a clean slate instead.
        foreach (string name in start.Environment.Keys.ToArray())
        {
            if (name.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase) || name.StartsWith("_MSBuild", StringComparison.OrdinalIgnoreCase))
                start.Environment.Remove(name);
        }
        start.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        start.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0";
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";

        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        using var process = new Process { StartInfo = start };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (stdout) stdout.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        var clock = Stopwatch.StartNew();
        process.Start();
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
            }
        }
        // Drains the redirected streams, but not forever: a grandchild that kept the pipes open must not hang the test.
        process.WaitForExit(TimeSpan.FromSeconds(30));
        string outText, errText;
        lock (stdout)
        lock (stderr)
        {
            outText = stdout.ToString();
            errText = stderr.ToString();
        }
        string transcript = $"$ {fileName} {string.Join(' ', start.ArgumentList)}  (in {workingDirectory}, {clock.Elapsed.TotalSeconds:F1} s)" +
                            $"{Environment.NewLine}--- stdout ---{Environment.NewLine}{outText}--- stderr ---{Environment.NewLine}{errText}";
        if (!exited)
            throw new TimeoutException($"Still running after {timeout.TotalMinutes} minutes; killed.{Environment.NewLine}{transcript}");
        return new ProcessResult(process.ExitCode, outText, errText, transcript);
    }
}
