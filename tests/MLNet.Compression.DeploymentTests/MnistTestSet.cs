using System.Buffers.Binary;
using System.IO.Compression;

namespace MLNet.Compression.DeploymentTests;

/// <summary>
/// The MNIST test split, read straight from the IDX files (this project cannot use the library's IdxDataView).
/// Features are pixel / 255f in stored (row-major) order, exactly as the library produces them.
/// </summary>
public sealed class MnistTestSet
{
    public const string ImagesFileName = "t10k-images-idx3-ubyte";
    public const string LabelsFileName = "t10k-labels-idx1-ubyte";
    public const int ImageSize = 28 * 28;

    private MnistTestSet(float[][] features, byte[] labels, string imagesPath, string labelsPath)
    {
        Features = features;
        Labels = labels;
        ImagesPath = imagesPath;
        LabelsPath = labelsPath;
    }

    /// <summary>One 784-float vector per image.</summary>
    public float[][] Features { get; }

    /// <summary>The digit (0..9) of each image.</summary>
    public byte[] Labels { get; }

    public string ImagesPath { get; }

    public string LabelsPath { get; }

    public int Count => Labels.Length;

    /// <summary>
    /// Loads the test split from the first place that has both files: <c>MNIST_DIR</c> (raw files, also named
    /// <c>t10k-images.idx3-ubyte</c>, or the same names plus <c>.gz</c>), then the library's cache
    /// (<c>&lt;root&gt;/mnist</c>, root = <c>MLNET_COMPRESSION_CACHE</c>, else <c>$XDG_CACHE_HOME/mlnet-compression</c>,
    /// else <c>~/.cache/mlnet-compression</c>), then the paths the factory reported as the files it used.
    /// </summary>
    public static MnistTestSet Load(string? factoryImagesPath, string? factoryLabelsPath)
    {
        var tried = new List<string>();
        foreach (var (images, labels) in Candidates(factoryImagesPath, factoryLabelsPath))
        {
            tried.Add($"{images} + {labels}");
            if (File.Exists(images) && File.Exists(labels))
                return Read(images, labels);
        }
        throw new FileNotFoundException("MNIST test files not found; looked for:" + Environment.NewLine + string.Join(Environment.NewLine, tried));
    }

    /// <summary>The library's cache root, resolved the way MLNet.Compression resolves it.</summary>
    public static string CacheRoot()
    {
        string? explicitRoot = Environment.GetEnvironmentVariable("MLNET_COMPRESSION_CACHE");
        if (!string.IsNullOrWhiteSpace(explicitRoot))
            return Path.GetFullPath(explicitRoot);
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        if (!string.IsNullOrWhiteSpace(xdg))
            return Path.Combine(Path.GetFullPath(xdg), "mlnet-compression");
        if (OperatingSystem.IsWindows())
            return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData), "mlnet-compression");
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        if (string.IsNullOrEmpty(home))
            home = Environment.GetEnvironmentVariable("HOME") ?? Path.GetTempPath();
        return Path.Combine(home, ".cache", "mlnet-compression");
    }

    private static IEnumerable<(string Images, string Labels)> Candidates(string? factoryImagesPath, string? factoryLabelsPath)
    {
        string? userDir = Environment.GetEnvironmentVariable("MNIST_DIR");
        if (!string.IsNullOrWhiteSpace(userDir))
        {
            userDir = Path.GetFullPath(userDir);
            foreach (string suffix in new[] { "", ".gz" })
            {
                yield return (Path.Combine(userDir, ImagesFileName + suffix), Path.Combine(userDir, LabelsFileName + suffix));
                yield return (Path.Combine(userDir, "t10k-images.idx3-ubyte" + suffix), Path.Combine(userDir, "t10k-labels.idx1-ubyte" + suffix));
            }
        }
        string cache = Path.Combine(CacheRoot(), "mnist");
        yield return (Path.Combine(cache, ImagesFileName), Path.Combine(cache, LabelsFileName));
        if (!string.IsNullOrEmpty(factoryImagesPath) && !string.IsNullOrEmpty(factoryLabelsPath))
            yield return (factoryImagesPath, factoryLabelsPath);
    }

    private static MnistTestSet Read(string imagesPath, string labelsPath)
    {
        byte[] images = ReadAll(imagesPath);
        byte[] labels = ReadAll(labelsPath);

        if (images.Length < 16 || BinaryPrimitives.ReadInt32BigEndian(images) != 0x0803)
            throw new InvalidDataException($"'{imagesPath}' is not an IDX3 unsigned-byte file.");
        int count = BinaryPrimitives.ReadInt32BigEndian(images.AsSpan(4));
        int height = BinaryPrimitives.ReadInt32BigEndian(images.AsSpan(8));
        int width = BinaryPrimitives.ReadInt32BigEndian(images.AsSpan(12));
        if (height * width != ImageSize || images.Length != 16 + (long)count * ImageSize)
            throw new InvalidDataException($"'{imagesPath}': {count} images of {height}x{width} in {images.Length} bytes; expected 28x28.");

        if (labels.Length < 8 || BinaryPrimitives.ReadInt32BigEndian(labels) != 0x0801)
            throw new InvalidDataException($"'{labelsPath}' is not an IDX1 unsigned-byte file.");
        int labelCount = BinaryPrimitives.ReadInt32BigEndian(labels.AsSpan(4));
        if (labelCount != count || labels.Length != 8 + labelCount)
            throw new InvalidDataException($"'{labelsPath}' has {labelCount} labels in {labels.Length} bytes; the images file has {count} images.");

        var features = new float[count][];
        for (int i = 0; i < count; i++)
        {
            var row = new float[ImageSize];
            ReadOnlySpan<byte> pixels = images.AsSpan(16 + i * ImageSize, ImageSize);
            for (int p = 0; p < ImageSize; p++)
                row[p] = pixels[p] / 255f;
            features[i] = row;
        }
        byte[] digits = labels.AsSpan(8).ToArray();
        if (digits.Any(d => d > 9))
            throw new InvalidDataException($"'{labelsPath}' has a label above 9.");
        return new MnistTestSet(features, digits, imagesPath, labelsPath);
    }

    private static byte[] ReadAll(string path)
    {
        if (!path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase))
            return File.ReadAllBytes(path);
        using var file = File.OpenRead(path);
        using var gzip = new GZipStream(file, CompressionMode.Decompress);
        using var buffer = new MemoryStream();
        gzip.CopyTo(buffer);
        return buffer.ToArray();
    }
}
