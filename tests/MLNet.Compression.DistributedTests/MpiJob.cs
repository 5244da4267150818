using System.Reflection;
using System.Text.Json.Nodes;
using MLNet.Compression.Tooling;
using Xunit;

namespace MLNet.Compression.DistributedTests;

/// <summary>Runs the test host under <c>mpiexec</c> (or alone) and reads its result.</summary>
internal static class MpiJob
{
    /// <summary>Set (to 1) in CI: a missing mpiexec fails the tests instead of skipping them.</summary>
    public const string RequireVariable = "MLNET_COMPRESSION_REQUIRE_MPI";

    /// <summary>MPICH's launcher: <c>mpiexec.mpich</c> (Debian's name, never Open MPI's), else <c>mpiexec</c>.</summary>
    public static string? Mpiexec { get; } = ChildProcess.FindOnPath("mpiexec.mpich") ?? ChildProcess.FindOnPath("mpiexec");

    public static bool MpiRequired => Environment.GetEnvironmentVariable(RequireVariable) is { Length: > 0 } v && v != "0";

    public static string HostPath { get; } = typeof(MpiJob).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
        .Single(a => a.Key == "DistributedHostPath").Value!;

    public static string SamplePath { get; } = typeof(MpiJob).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
        .Single(a => a.Key == "DistributedSamplePath").Value!;

    /// <summary>Runs the host with <paramref name="ranks"/> processes (0: without mpiexec at all).</summary>
    public static ChildProcessResult Run(int ranks, TimeSpan timeout, params string[] hostArguments) => RunProgram(HostPath, ranks, timeout, hostArguments);

    /// <summary>Runs <paramref name="dll"/> with <paramref name="ranks"/> processes (0: without mpiexec at all).</summary>
    public static ChildProcessResult RunProgram(string dll, int ranks, TimeSpan timeout, params string[] hostArguments)
    {
        Assert.True(File.Exists(dll), $"The program was not built: {dll}.");
        var arguments = new List<string>();
        string program;
        if (ranks == 0)
            program = ChildProcess.DotnetHost();
        else
        {
            program = Mpiexec ?? throw new InvalidOperationException(
                "mpiexec was not found on PATH. Install MPICH (apt-get install -y mpich libmpich-dev) to run the distributed tests.");
            arguments.AddRange(["-n", ranks.ToString(System.Globalization.CultureInfo.InvariantCulture), ChildProcess.DotnetHost()]);
        }
        arguments.Add(dll);
        arguments.AddRange(hostArguments);
        return ChildProcess.Run(program, arguments, Path.GetDirectoryName(dll)!, timeout, closeStandardInput: true);
    }

    public static JsonObject ReadResult(string path, ChildProcessResult run)
    {
        Assert.True(run.ExitCode == 0, $"The job failed (exit {run.ExitCode}).\n{run.Transcript}");
        Assert.True(File.Exists(path), $"The job wrote no result to {path}.\n{run.Transcript}");
        return JsonNode.Parse(File.ReadAllText(path))!.AsObject();
    }

    public static float[] Weights(JsonObject result) => result["weights"]!.AsArray().Select(w => (float)w!).ToArray();
}

/// <summary>A fact that needs MPICH's <c>mpiexec</c>: skipped with a message where it is absent, unless CI requires it.</summary>
public sealed class MpiFactAttribute : FactAttribute
{
    /// <summary>Sets <see cref="FactAttribute.Skip"/> when mpiexec is missing and not required.</summary>
    public MpiFactAttribute()
    {
        if (MpiJob.Mpiexec is null && !MpiJob.MpiRequired)
            Skip = "mpiexec (MPICH) is not installed: apt-get install -y mpich libmpich-dev. CI installs it and sets " +
                   $"{MpiJob.RequireVariable}=1, so there these tests run.";
    }
}

/// <summary>A temporary folder removed at the end of a test.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder() => Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "mlnet-distributed-" + Guid.NewGuid().ToString("N"));

    public string this[string name] => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
