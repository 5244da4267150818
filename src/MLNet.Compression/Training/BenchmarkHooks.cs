namespace MLNet.Compression.Training;

/// <summary>
/// The library's benchmark-only switches, in one place: A/B comparisons of how training reads its batches, run in one
/// process, and a wall-clock breakdown of the training steps. The defaults are what the library always does; no switch
/// changes a batch, its order or a weight. Process-wide: set them with <see cref="Set"/>, whose scope puts the previous
/// values back.
/// </summary>
internal static class BenchmarkHooks
{
    /// <summary>
    /// Whether the batches are read on a background thread while the current step trains (<see cref="BatchStream.Prefetch"/>);
    /// default true. Same batches in the same order either way.
    /// </summary>
    public static bool PrefetchBatches { get; private set; } = true;

    /// <summary>
    /// Whether <see cref="BatchStream.Batch.FeaturesTensor"/> and <see cref="BatchStream.Batch.LabelsTensor"/> share the
    /// batch's arrays (default true) or clone them as <c>torch.tensor</c> does (the way batches were made before).
    /// </summary>
    public static bool ShareBatchArrays { get; private set; } = true;

    /// <summary>When set, the training steps of every run add their wall-clock breakdown to it (default null).</summary>
    public static StepProfile? Profile { get; private set; }

    /// <summary>Sets every switch until the returned scope is disposed, which puts the previous values back.</summary>
    /// <param name="prefetchBatches">The value of <see cref="PrefetchBatches"/> meanwhile.</param>
    /// <param name="shareBatchArrays">The value of <see cref="ShareBatchArrays"/> meanwhile.</param>
    /// <param name="profile">The value of <see cref="Profile"/> meanwhile.</param>
    public static IDisposable Set(bool prefetchBatches = true, bool shareBatchArrays = true, StepProfile? profile = null)
    {
        var previous = new Scope(PrefetchBatches, ShareBatchArrays, Profile);
        PrefetchBatches = prefetchBatches;
        ShareBatchArrays = shareBatchArrays;
        Profile = profile;
        return previous;
    }

    /// <summary>Puts back the values it was made with when disposed.</summary>
    private sealed class Scope(bool prefetchBatches, bool shareBatchArrays, StepProfile? profile) : IDisposable
    {
        /// <inheritdoc />
        public void Dispose()
        {
            PrefetchBatches = prefetchBatches;
            ShareBatchArrays = shareBatchArrays;
            Profile = profile;
        }
    }
}
