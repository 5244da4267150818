using System.Diagnostics;

namespace MLNet.Compression.Training;

/// <summary>
/// A wall-clock breakdown of training epochs for benchmarks (<see cref="BenchmarkHooks.Profile"/>; off unless set): the time the
/// training thread waited for the next batch, and the time of the steps themselves (tensors, forward, loss, backward, optimizer,
/// bookkeeping). Not thread-safe: one training at a time.
/// </summary>
internal sealed class StepProfile
{
    private long last;

    /// <summary>Seconds spent between one step's end (or the epoch's start) and the next batch's arrival.</summary>
    public double WaitSeconds { get; private set; }

    /// <summary>Seconds spent in the steps.</summary>
    public double StepSeconds { get; private set; }

    /// <summary>Steps counted.</summary>
    public long Steps { get; private set; }

    /// <summary>Clears the sums.</summary>
    public void Reset() => (WaitSeconds, StepSeconds, Steps) = (0, 0, 0);

    internal void EpochStarted() => last = Stopwatch.GetTimestamp();

    internal void BatchArrived()
    {
        long now = Stopwatch.GetTimestamp();
        WaitSeconds += Stopwatch.GetElapsedTime(last, now).TotalSeconds;
        last = now;
    }

    internal void StepDone()
    {
        long now = Stopwatch.GetTimestamp();
        StepSeconds += Stopwatch.GetElapsedTime(last, now).TotalSeconds;
        Steps++;
        last = now;
    }
}
