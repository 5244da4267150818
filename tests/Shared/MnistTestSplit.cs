using System.Buffers.Binary;
using System.IO.Compression;

namespace MLNet.Compression.Tooling;

/// <summary>
/// The MNIST test split (t10k images and labels, IDX format, raw or <c>.gz</c>) read without MLNet.Compression: an
/// application that deploys a model does not reference the library that trained it, so it reads the 4-byte big-endian
/// headers itself. Shared as a linked source file by samples/ModelConsumer and the deployment tests.
/// </summary>
public sealed class MnistTestSplit
{
    /// <summary>Pixels per image: 28 x 28.</summary>
    public const int ImageSize = 28 * 28;

    /// <summary>The names the images file goes by (the canonical one first).</summary>
    public static IReadOnlyList<string> ImageNames { get; } = ["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"];

    /// <summary>The names the labels file goes by (the canonical one first).</summary>
    public static IReadOnlyList<string> LabelNames { get; } = ["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"];

    private readonly byte[] pixels;

    private MnistTestSplit(byte[] pixels, byte[] labels, string imagesPath, string labelsPath)
    {
        this.pixels = pixels;
        Labels = labels;
        ImagesPath = imagesPath;
        LabelsPath = labelsPath;
    }

    /// <summary>The digit (0..9) of each image.</summary>
    public byte[] Labels { get; }

    /// <summary>The images file read.</summary>
    public string ImagesPath { get; }

    /// <summary>The labels file read.</summary>
    public string LabelsPath { get; }

    /// <summary>The number of images.</summary>
    public int Count => Labels.Length;

    /// <summary>The 784 pixels of image <paramref name="row"/>, row by row.</summary>
    /// <param name="row">0-based image index.</param>
    public ReadOnlySpan<byte> Pixels(int row) => pixels.AsSpan(row * ImageSize, ImageSize);

    /// <summary>The model input of image <paramref name="row"/>: every pixel / 255f in stored order, as MLNet.Compression's loader produces it.</summary>
    /// <param name="row">0-based image index.</param>
    public float[] Features(int row)
    {
        ReadOnlySpan<byte> image = Pixels(row);
        var features = new float[ImageSize];
        for (int i = 0; i < ImageSize; i++)
            features[i] = image[i] / 255f;
        return features;
    }

    /// <summary>
    /// The library's cache root, resolved as MLNet.Compression resolves it: <c>MLNET_COMPRESSION_CACHE</c>, else
    /// <c>$XDG_CACHE_HOME/mlnet-compression</c>, else <c>~/.cache/mlnet-compression</c> (<c>%LOCALAPPDATA%\mlnet-compression</c> on Windows).
    /// </summary>
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

    /// <summary>The library's MNIST cache folder: <see cref="CacheRoot"/> plus <c>/mnist</c>.</summary>
    public static string CacheDirectory() => Path.Combine(CacheRoot(), "mnist");

    /// <summary>
    /// The folders searched, in order: <paramref name="dataDir"/> alone when given; otherwise <c>MNIST_DIR</c> (when set),
    /// then <see cref="CacheDirectory"/>.
    /// </summary>
    /// <param name="dataDir">An explicit folder, or <see langword="null"/>.</param>
    public static IEnumerable<string> Folders(string? dataDir)
    {
        if (!string.IsNullOrWhiteSpace(dataDir))
        {
            yield return Path.GetFullPath(dataDir);
            yield break; // an explicit folder is the only one used
        }
        string? mnistDir = Environment.GetEnvironmentVariable("MNIST_DIR");
        if (!string.IsNullOrWhiteSpace(mnistDir))
            yield return Path.GetFullPath(mnistDir);
        yield return CacheDirectory();
    }

    /// <summary>
    /// Reads the test split from the first folder of <see cref="Folders"/> that has both files, else from
    /// <paramref name="fallbackImages"/> and <paramref name="fallbackLabels"/> when both are given.
    /// </summary>
    /// <param name="dataDir">An explicit folder, or <see langword="null"/> for <c>MNIST_DIR</c> and the cache.</param>
    /// <param name="fallbackImages">An images file to use when no folder has the files (for example the path a trainer reported).</param>
    /// <param name="fallbackLabels">The labels file that goes with <paramref name="fallbackImages"/>.</param>
    /// <param name="howToFix">The advice appended to the error when nothing is found.</param>
    /// <exception cref="FileNotFoundException">No folder holds both files; the message lists the folders searched.</exception>
    /// <exception cref="InvalidDataException">A file is not an MNIST IDX file of 28 x 28 images or digit labels.</exception>
    public static MnistTestSplit Load(string? dataDir, string? fallbackImages = null, string? fallbackLabels = null,
        string howToFix = "Set MNIST_DIR to a folder that holds them, or run samples/MnistCompression once to fill the cache.")
    {
        var tried = new List<string>();
        foreach (string folder in Folders(dataDir))
        {
            string? images = Find(folder, ImageNames);
            string? labels = Find(folder, LabelNames);
            if (images is not null && labels is not null)
                return Read(images, labels);
            tried.Add(folder);
        }
        if (!string.IsNullOrEmpty(fallbackImages) && !string.IsNullOrEmpty(fallbackLabels))
        {
            if (File.Exists(fallbackImages) && File.Exists(fallbackLabels))
                return Read(fallbackImages, fallbackLabels);
            tried.Add($"{fallbackImages} + {fallbackLabels}");
        }
        throw new FileNotFoundException(
            "The MNIST test files (t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, raw or .gz) were not found in: " +
            string.Join(", ", tried) + ". " + howToFix);
    }

    /// <summary>Reads an images file and its labels file (raw, or gzip when the name ends in <c>.gz</c>).</summary>
    /// <param name="imagesPath">The IDX3 unsigned-byte images file.</param>
    /// <param name="labelsPath">The IDX1 unsigned-byte labels file.</param>
    /// <exception cref="InvalidDataException">A file is not an MNIST IDX file of 28 x 28 images or digit labels, or the counts differ.</exception>
    public static MnistTestSplit Read(string imagesPath, string labelsPath)
    {
        byte[] images = ReadAll(imagesPath);
        byte[] labels = ReadAll(labelsPath);
        if (images.Length < 16 || BinaryPrimitives.ReadInt32BigEndian(images) != 0x0803)
            throw new InvalidDataException($"'{imagesPath}' is not an IDX file of unsigned bytes with 3 dimensions.");
        int count = BinaryPrimitives.ReadInt32BigEndian(images.AsSpan(4));
        int rows = BinaryPrimitives.ReadInt32BigEndian(images.AsSpan(8));
        int columns = BinaryPrimitives.ReadInt32BigEndian(images.AsSpan(12));
        if (rows != 28 || columns != 28 || images.Length != 16L + (long)count * ImageSize)
            throw new InvalidDataException($"'{imagesPath}' holds {count} images of {rows}x{columns} in {images.Length} bytes; expected 28x28 images.");
        if (labels.Length < 8 || BinaryPrimitives.ReadInt32BigEndian(labels) != 0x0801)
            throw new InvalidDataException($"'{labelsPath}' is not an IDX file of unsigned bytes with 1 dimension.");
        int labelCount = BinaryPrimitives.ReadInt32BigEndian(labels.AsSpan(4));
        if (labelCount != count || labels.Length != 8 + labelCount)
            throw new InvalidDataException($"'{labelsPath}' holds {labelCount} labels in {labels.Length} bytes; '{imagesPath}' holds {count} images.");
        byte[] digits = labels.AsSpan(8).ToArray();
        int bad = Array.FindIndex(digits, d => d > 9);
        if (bad >= 0)
            throw new InvalidDataException($"'{labelsPath}': label {digits[bad]} at row {bad} is not a digit.");
        return new MnistTestSplit(images.AsSpan(16).ToArray(), digits, imagesPath, labelsPath);
    }

    private static string? Find(string folder, IReadOnlyList<string> names)
    {
        foreach (string name in names)
        {
            foreach (string candidate in new[] { Path.Combine(folder, name), Path.Combine(folder, name + ".gz") })
            {
                if (File.Exists(candidate))
                    return candidate;
            }
        }
        return null;
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
