using static TorchSharp.torch;

namespace MLNet.Compression.Training;

/// <summary>
/// libtorch's intra-op thread count is one process-wide setting. A training sets it for as long as it runs and the value the
/// process had before comes back when the last overlapping training ends (a count of active trainings, under a lock), so two
/// trainings that overlap never restore each other's setting half-way; when they ask for different values, the latest wins.
/// </summary>
internal static class TorchThreads
{
    private static readonly object Gate = new();
    private static int active;
    private static int original;

    /// <summary>Sets the intra-op threads to <paramref name="threads"/> until the returned scope is disposed.</summary>
    public static IDisposable Use(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        lock (Gate)
        {
            if (active++ == 0)
                original = get_num_threads();
            if (get_num_threads() != threads)
                set_num_threads(threads);
        }
        return new Scope();
    }

    private sealed class Scope : IDisposable
    {
        private int disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref disposed, 1) != 0)
                return;
            lock (Gate)
            {
                if (--active == 0 && get_num_threads() != original)
                    set_num_threads(original);
            }
        }
    }
}
