using MLNet.Compression.Build;
using Xunit;

namespace MLNet.Compression.Tests.Native;

/// <summary>Locates TorchSharp's native library and makes throwaway copies of it.</summary>
internal static class NativeLibraryFiles
{
    public const string LibStdCxx = "libstdc++.so.6";
    public const string NewGlibcxx = "GLIBCXX_3.4.32";

    private static readonly string[] RelativePath = { "runtimes", "linux-x64", "native", "libLibTorchSharp.so" };

    /// <summary>The copy the build placed in this test's output directory (patched by MLNet.Compression.targets), if any.</summary>
    public static string? OutputCopy
    {
        get
        {
            string path = Path.Combine(new[] { AppContext.BaseDirectory }.Concat(RelativePath).ToArray());
            return File.Exists(path) ? path : null;
        }
    }

    /// <summary>The pristine file in the NuGet package cache, if present.</summary>
    public static string? CacheCopy
    {
        get
        {
            string? root = Environment.GetEnvironmentVariable("NUGET_PACKAGES");
            if (string.IsNullOrEmpty(root))
            {
                root = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
            }

            string path = Path.Combine(new[] { root, "torchsharp", "0.107.0" }.Concat(RelativePath).ToArray());
            return File.Exists(path) ? path : null;
        }
    }

    /// <summary>
    /// Copies libLibTorchSharp.so (preferably from the test output directory, else from the NuGet cache) into
    /// <paramref name="directory"/> as it ships: if the output copy was already patched by the build, the weak flag
    /// is cleared again in the copy, so that the result is byte-identical to the package's file.
    /// </summary>
    public static string CopyPristine(string directory)
    {
        string source = OutputCopy ?? CacheCopy
            ?? throw new InvalidOperationException("libLibTorchSharp.so was found neither in the test output directory nor in the NuGet cache.");
        string destination = Path.Combine(directory, "libLibTorchSharp.so");
        File.Copy(source, destination, overwrite: true);
        ElfVersionNeed? need = ElfVersionNeedPatcher.FindVersionNeed(destination, LibStdCxx, NewGlibcxx);
        Assert.NotNull(need);
        if (need.IsWeak)
        {
            ushort flags = (ushort)(need.Flags & ~ElfVersionNeedPatcher.VerFlagWeak);
            using var stream = new FileStream(destination, FileMode.Open, FileAccess.Write);
            stream.Seek(need.FlagsOffset, SeekOrigin.Begin);
            stream.WriteByte((byte)(flags & 0xff));
            stream.WriteByte((byte)(flags >> 8));
        }

        return destination;
    }
}

/// <summary>A temporary directory removed on dispose.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "mlnet-native-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

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
