using System.Reflection;
using MLNet.Compression.Tooling;

namespace MLNet.Compression.SampleTests;

/// <summary>Runs the built tabular sample (<c>dotnet TabularClassification.dll ...</c>) as a child process.</summary>
public static class TabularSampleProcess
{
    /// <summary>The AssemblyMetadata key the project file writes the sample's dll path under.</summary>
    public const string PathMetadataKey = "TabularSamplePath";

    /// <summary>
    /// Alone on 2 cores a run with 20 network epochs takes about 25 s; the limit allows for a machine busy with other test
    /// assemblies.
    /// </summary>
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(6);

    /// <summary>The sample's dll, from the path the build wrote into this assembly.</summary>
    public static string SamplePath()
    {
        string? path = typeof(TabularSampleProcess).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == PathMetadataKey)?.Value;
        if (string.IsNullOrEmpty(path))
            throw new InvalidOperationException($"The test assembly has no [AssemblyMetadata(\"{PathMetadataKey}\")]; the project file should generate it.");
        if (!File.Exists(path))
            throw new FileNotFoundException($"The tabular sample '{path}' does not exist; build samples/TabularClassification (building this project should).", path);
        return path;
    }

    /// <summary>Runs the sample with <paramref name="arguments"/> in <paramref name="workingDirectory"/> and waits for it.</summary>
    /// <param name="workingDirectory">The child's working directory.</param>
    /// <param name="arguments">The sample's command line.</param>
    public static MainJobRun Run(string workingDirectory, params string[] arguments)
    {
        // One TorchSharp thread: on a 2-core machine shared with other test assemblies the default (one per core) made the
        // network's training 13x slower (1.5 s against 20 s for the multiclass row, measured under load).
        ChildProcessResult run = ChildProcess.Run(ChildProcess.DotnetHost(), [SamplePath(), .. arguments], workingDirectory, Timeout,
            new Dictionary<string, string?> { ["OMP_NUM_THREADS"] = "1" });
        return new MainJobRun(run.ExitCode, run.Transcript, run.Seconds);
    }
}
