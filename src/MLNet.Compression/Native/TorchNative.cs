using TorchSharp;

namespace MLNet.Compression.Native;

/// <summary>Loads libtorch once and turns a load failure into an exception that says how to fix it.</summary>
internal static class TorchNative
{
    private static readonly Lazy<Exception?> LoadError = new(TryLoad, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Returns true when libtorch is loaded; throws a descriptive exception when it cannot be.</summary>
    public static bool EnsureLoaded()
    {
        if (LoadError.Value is { } error)
            throw new InvalidOperationException(Describe(error), error);
        return true;
    }

    private static Exception? TryLoad()
    {
        try
        {
            // Touching torch runs its static constructor, which loads LibTorchSharp and the libtorch backend.
            using var probe = torch.zeros(1);
            return null;
        }
        catch (Exception e)
        {
            return e;
        }
    }

    private static string Describe(Exception error)
    {
        var all = string.Join(" | ", Flatten(error).Select(e => e.Message));
        var advice = all.Contains("GLIBCXX", StringComparison.Ordinal)
            ? "The system libstdc++ is older than the one LibTorchSharp was built against. MLNet.Compression's build step " +
              "writes a patched copy of libLibTorchSharp.so into the build output; make sure the project references the " +
              "MLNet.Compression package (its buildTransitive targets run) and rebuild, or set MLNetCompressionPatchTorchSharp=always."
            : "Reference exactly one libtorch backend package in the application: libtorch-cpu-linux-x64 (or -win-x64 / -osx-arm64) " +
              "for CPU, or TorchSharp-cuda-linux / TorchSharp-cuda-windows for CUDA, with the version TorchSharp expects.";
        return $"TorchSharp could not load its native libraries: {all}. {advice}";
    }

    private static IEnumerable<Exception> Flatten(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
            yield return x;
    }
}
