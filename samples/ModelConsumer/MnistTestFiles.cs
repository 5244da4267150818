using System.Buffers.Binary;
using System.IO.Compression;

namespace ModelConsumer;

/// <summary>One test image and its label.</summary>
/// <param name="Index">Row in the MNIST test split.</param>
/// <param name="Label">The digit the image shows.</param>
/// <param name="Pixels">784 bytes, row by row.</param>
public sealed record DigitImage(int Index, byte Label, byte[] Pixels)
{
    /// <summary>28 x 28.</summary>
    public const int PixelCount = 28 * 28;

    /// <summary>The model's input: every pixel / 255, as MLNet.Compression's MNIST loader produced them for training.</summary>
    public ModelInput ToInput()
    {
        var features = new float[PixelCount];
        for (int i = 0; i < PixelCount; i++)
            features[i] = Pixels[i] / 255f;
        return new ModelInput { Features = features };
    }

    /// <summary>The image in 14 lines of 28 characters (two pixel rows per line, as console cells are about twice as tall as wide).</summary>
    public IEnumerable<string> ToAscii()
    {
        const string ramp = " .:-=+*#%@";
        var line = new char[28];
        for (int y = 0; y < 28; y += 2)
        {
            for (int x = 0; x < 28; x++)
            {
                int value = Math.Max(Pixels[y * 28 + x], Pixels[(y + 1) * 28 + x]);
                line[x] = ramp[value * (ramp.Length - 1) / 255];
            }
            yield return new string(line).TrimEnd();
        }
    }
}

/// <summary>
/// Reads the MNIST test split (t10k images and labels, IDX format, raw or .gz) without MLNet.Compression: an application
/// that deploys a model does not reference the library that trained it, so it reads the 4-byte big-endian headers itself.
/// </summary>
public static class MnistTestFiles
{
    private static readonly string[] ImageNames = ["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"];
    private static readonly string[] LabelNames = ["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"];

    /// <summary>
    /// The folders searched, in order: <paramref name="dataDir"/> (<c>--data-dir</c>), <c>MNIST_DIR</c>, then the cache the
    /// main job fills (<c>MLNET_COMPRESSION_CACHE</c>, else <c>$XDG_CACHE_HOME/mlnet-compression</c>, else
    /// <c>~/.cache/mlnet-compression</c>, each plus <c>/mnist</c>).
    /// </summary>
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
        yield return Path.Combine(CacheRoot(), "mnist");
    }

    /// <summary>Reads the whole test split from the first folder that has both files.</summary>
    public static IReadOnlyList<DigitImage> Load(string? dataDir)
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
        throw new FileNotFoundException(
            "The MNIST test files (t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, raw or .gz) were not found in: " +
            string.Join(", ", tried) + ". Pass --data-dir DIR or set MNIST_DIR, or run samples/MnistCompression once to fill the cache.");
    }

    private static string? Find(string folder, string[] names)
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

    private static string CacheRoot()
    {
        string? root = Environment.GetEnvironmentVariable("MLNET_COMPRESSION_CACHE");
        if (!string.IsNullOrWhiteSpace(root))
            return Path.GetFullPath(root);
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        if (!string.IsNullOrWhiteSpace(xdg))
            return Path.Combine(Path.GetFullPath(xdg), "mlnet-compression");
        if (OperatingSystem.IsWindows())
            return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData), "mlnet-compression");
        return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "mlnet-compression");
    }

    private static List<DigitImage> Read(string imagesPath, string labelsPath)
    {
        byte[] images = ReadAll(imagesPath);
        byte[] labels = ReadAll(labelsPath);
        if (images.Length < 16 || BinaryPrimitives.ReadInt32BigEndian(images) != 0x0803)
            throw new InvalidDataException($"'{imagesPath}' is not an IDX file of unsigned bytes with 3 dimensions.");
        int count = BinaryPrimitives.ReadInt32BigEndian(images.AsSpan(4));
        int rows = BinaryPrimitives.ReadInt32BigEndian(images.AsSpan(8));
        int columns = BinaryPrimitives.ReadInt32BigEndian(images.AsSpan(12));
        if (rows != 28 || columns != 28 || images.Length != 16L + (long)count * DigitImage.PixelCount)
            throw new InvalidDataException($"'{imagesPath}' holds {count} images of {rows}x{columns} in {images.Length} bytes; expected 28x28 images.");
        if (labels.Length < 8 || BinaryPrimitives.ReadInt32BigEndian(labels) != 0x0801)
            throw new InvalidDataException($"'{labelsPath}' is not an IDX file of unsigned bytes with 1 dimension.");
        int labelCount = BinaryPrimitives.ReadInt32BigEndian(labels.AsSpan(4));
        if (labelCount != count || labels.Length != 8 + labelCount)
            throw new InvalidDataException($"'{labelsPath}' holds {labelCount} labels in {labels.Length} bytes; '{imagesPath}' holds {count} images.");

        var result = new List<DigitImage>(count);
        for (int i = 0; i < count; i++)
        {
            byte label = labels[8 + i];
            if (label > 9)
                throw new InvalidDataException($"'{labelsPath}': label {label} at row {i} is not a digit.");
            result.Add(new DigitImage(i, label, images.AsSpan(16 + i * DigitImage.PixelCount, DigitImage.PixelCount).ToArray()));
        }
        return result;
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
