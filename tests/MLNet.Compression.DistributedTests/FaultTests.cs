using Xunit;

namespace MLNet.Compression.DistributedTests;

/// <summary>
/// A rank that throws, is killed or hangs at step 3 ends the whole <c>mpiexec -n 2</c> job with a non-zero status within a
/// bounded time: the other rank never waits forever in a collective.
/// </summary>
public sealed class FaultTests
{
    /// <summary>Generous for a loaded machine: start-up of two .NET processes and libtorch takes most of it.</summary>
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(90);

    [MpiFact]
    public void ARankThatThrowsEndsTheJobWithANonZeroStatus()
    {
        using var dir = new TempFolder();
        var run = MpiJob.Run(2, Bound, "--out", dir["r.json"], "--distributed", "--fault", "throw", "--epochs", "50");
        Assert.NotEqual(0, run.ExitCode);
        Assert.Contains("Injected failure on rank 1 at step 3", run.Stderr);
        Assert.Contains("Aborting the MPI job", run.Stderr);
        Assert.False(File.Exists(dir["r.json"]), "Rank 0 finished training although rank 1 had failed.");
    }

    [MpiFact]
    public void AKilledRankEndsTheJobWithANonZeroStatus()
    {
        using var dir = new TempFolder();
        var run = MpiJob.Run(2, Bound, "--out", dir["r.json"], "--distributed", "--fault", "kill", "--epochs", "50");
        Assert.NotEqual(0, run.ExitCode);
        Assert.Contains("injecting fault 'kill'", run.Stderr);
        Assert.False(File.Exists(dir["r.json"]), "Rank 0 finished training although rank 1 had been killed.");
    }

    [MpiFact]
    public void AHangingRankEndsTheJobAfterTheCollectiveTimeout()
    {
        using var dir = new TempFolder();
        var run = MpiJob.Run(2, Bound, "--out", dir["r.json"], "--distributed", "--fault", "hang", "--timeout", "4", "--epochs", "50");
        Assert.NotEqual(0, run.ExitCode);
        Assert.Contains("longer than DistributedOptions.CollectiveTimeout", run.Stderr);
        Assert.True(run.Seconds < 60, $"The job took {run.Seconds:F0} s to end after a 4 s collective timeout.");
        Assert.False(File.Exists(dir["r.json"]));
    }
}
