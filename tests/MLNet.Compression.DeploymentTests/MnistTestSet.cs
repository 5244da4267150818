using MLNet.Compression.Tooling;

namespace MLNet.Compression.DeploymentTests;

/// <summary>
/// The MNIST test split as the deployment tests use it, read by the IDX reader shared with samples/ModelConsumer
/// (<c>tests/Shared/MnistTestSplit.cs</c>; this project cannot use the library's IdxDataView). Features are
/// pixel / 255f in stored (row-major) order, exactly as the library produces them.
/// </summary>
public sealed class MnistTestSet
{
    /// <summary>Pixels per image.</summary>
    public const int ImageSize = MnistTestSplit.ImageSize;

    private MnistTestSet(MnistTestSplit split)
    {
        Features = Enumerable.Range(0, split.Count).Select(split.Features).ToArray();
        Labels = split.Labels;
        ImagesPath = split.ImagesPath;
        LabelsPath = split.LabelsPath;
    }

    /// <summary>One 784-float vector per image.</summary>
    public float[][] Features { get; }

    /// <summary>The digit (0..9) of each image.</summary>
    public byte[] Labels { get; }

    /// <summary>The images file read.</summary>
    public string ImagesPath { get; }

    /// <summary>The labels file read.</summary>
    public string LabelsPath { get; }

    /// <summary>The number of images.</summary>
    public int Count => Labels.Length;

    /// <summary>
    /// Loads the test split from the first place that has both files: <c>MNIST_DIR</c> (raw or <c>.gz</c>, canonical or
    /// dotted names), then the library's cache, then the paths the factory reported as the files it used.
    /// </summary>
    public static MnistTestSet Load(string? factoryImagesPath, string? factoryLabelsPath)
        => new(MnistTestSplit.Load(null, factoryImagesPath, factoryLabelsPath));
}
