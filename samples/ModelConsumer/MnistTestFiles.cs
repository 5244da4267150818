using MLNet.Compression.Tooling;

namespace ModelConsumer;

/// <summary>One test image and its label.</summary>
/// <param name="Index">Row in the MNIST test split.</param>
/// <param name="Label">The digit the image shows.</param>
/// <param name="Pixels">784 bytes, row by row.</param>
public sealed record DigitImage(int Index, byte Label, byte[] Pixels)
{
    /// <summary>28 x 28.</summary>
    public const int PixelCount = MnistTestSplit.ImageSize;

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
/// The MNIST test split as <see cref="DigitImage"/>s, read by the IDX reader this sample shares with the deployment tests
/// (<c>tests/Shared/MnistTestSplit.cs</c>, linked as source: this application does not reference MLNet.Compression).
/// </summary>
public static class MnistTestFiles
{
    /// <summary>
    /// Reads the whole test split from <paramref name="dataDir"/> (<c>--data-dir</c>) alone when given, else from
    /// <c>MNIST_DIR</c>, then the cache the main job fills (<c>MLNET_COMPRESSION_CACHE</c>, else
    /// <c>$XDG_CACHE_HOME/mlnet-compression</c>, else <c>~/.cache/mlnet-compression</c>, each plus <c>/mnist</c>).
    /// </summary>
    public static IReadOnlyList<DigitImage> Load(string? dataDir)
    {
        var split = MnistTestSplit.Load(dataDir, howToFix: "Pass --data-dir DIR or set MNIST_DIR, or run samples/MnistCompression once to fill the cache.");
        var result = new List<DigitImage>(split.Count);
        for (int i = 0; i < split.Count; i++)
            result.Add(new DigitImage(i, split.Labels[i], split.Pixels(i).ToArray()));
        return result;
    }
}
