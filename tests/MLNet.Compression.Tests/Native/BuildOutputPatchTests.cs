using MLNet.Compression.Build;
using Xunit;

namespace MLNet.Compression.Tests.Native;

/// <summary>Checks that MLNet.Compression.targets patched this test project's own output.</summary>
public sealed class BuildOutputPatchTests
{
    [Fact]
    public void BuildPatchedTheOutputCopyWhenTheSystemLibStdCxxIsOlder()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        string? output = NativeLibraryFiles.OutputCopy;
        Assert.NotNull(output);
        ElfVersionNeed? need = ElfVersionNeedPatcher.FindVersionNeed(output, NativeLibraryFiles.LibStdCxx, NativeLibraryFiles.NewGlibcxx);
        Assert.NotNull(need);

        string? system = ElfVersionNeedPatcher.FindSystemLibrary(NativeLibraryFiles.LibStdCxx);
        Assert.NotNull(system);
        bool systemIsNewEnough = ElfVersionNeedPatcher.DefinesVersion(system, NativeLibraryFiles.NewGlibcxx);
        Assert.Equal(!systemIsNewEnough, need.IsWeak);

        // Only that one need differs from the package's file, and the package cache itself is untouched.
        string? cache = NativeLibraryFiles.CacheCopy;
        if (cache is not null)
        {
            Assert.False(ElfVersionNeedPatcher.FindVersionNeed(cache, NativeLibraryFiles.LibStdCxx, NativeLibraryFiles.NewGlibcxx)!.IsWeak);
            byte[] original = File.ReadAllBytes(cache);
            byte[] patched = File.ReadAllBytes(output);
            Assert.Equal(original.Length, patched.Length);
            Assert.All(
                Enumerable.Range(0, original.Length).Where(i => original[i] != patched[i]),
                i => Assert.InRange(i, need.FlagsOffset, need.FlagsOffset + 1));
        }
    }

    [Fact]
    public void TorchSharpLoadsAndComputesInProcess()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        using var ones = TorchSharp.torch.ones(2, 2);
        using var sum = ones.sum();
        Assert.Equal(4f, sum.item<float>());
    }
}
