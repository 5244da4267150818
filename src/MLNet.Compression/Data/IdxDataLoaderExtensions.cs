using Microsoft.ML;

namespace MLNet.Compression.Data;

/// <summary>Entry points on <see cref="DataOperationsCatalog"/> (<c>mlContext.Data</c>) for IDX files and MNIST.</summary>
public static class IdxDataLoaderExtensions
{
    /// <summary>
    /// Loads a pair of IDX files (raw or gzip-compressed) as a lazy, seekable, shuffleable <see cref="IdxDataView"/>
    /// with a key label column and a float feature vector (pixels / 255).
    /// </summary>
    /// <param name="catalog">The data catalog, <c>mlContext.Data</c>.</param>
    /// <param name="imagesPath">IDX image file (magic 0x00000803).</param>
    /// <param name="labelsPath">IDX label file (magic 0x00000801).</param>
    /// <param name="options">Class count, column names, expected image size; defaults when <see langword="null"/>.</param>
    /// <returns>The data view; nothing but the labels is read into memory.</returns>
    /// <exception cref="FileNotFoundException">A file does not exist.</exception>
    /// <exception cref="IdxFormatException">The files are not valid IDX files or do not fit together or the options.</exception>
    public static IdxDataView LoadIdx(this DataOperationsCatalog catalog, string imagesPath, string labelsPath, IdxLoaderOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new IdxDataView(imagesPath, labelsPath, options);
    }

    /// <summary>
    /// Loads one MNIST split (28×28 images, 10 classes): finds or fetches the files with
    /// <see cref="MnistDataset"/> (checksum-verified; see there for the sources) and opens them as an
    /// <see cref="IdxDataView"/>: <c>Label</c> = key&lt;uint, 10&gt; with key values "0".."9",
    /// <c>Features</c> = vector&lt;float, 784&gt;.
    /// </summary>
    /// <param name="catalog">The data catalog, <c>mlContext.Data</c>.</param>
    /// <param name="split">Which split.</param>
    /// <param name="options">Sources, logging and column names; defaults when <see langword="null"/>.</param>
    /// <returns>The data view.</returns>
    /// <exception cref="MnistAcquisitionException">The files could not be obtained from any source.</exception>
    public static IdxDataView LoadMnist(this DataOperationsCatalog catalog, MnistSplit split, MnistOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        if (!Enum.IsDefined(split))
            throw new ArgumentOutOfRangeException(nameof(split), split, "Use MnistSplit.Train or MnistSplit.Test.");
        options ??= new MnistOptions();
        var (images, labels) = MnistDataset.Ensure(split, options);
        return new IdxDataView(images, labels, new IdxLoaderOptions
        {
            ClassCount = 10,
            ExpectedImageHeight = 28,
            ExpectedImageWidth = 28,
            LabelColumnName = options.LabelColumnName,
            FeatureColumnName = options.FeatureColumnName,
        });
    }
}
