namespace MLNet.Compression.Data;

/// <summary>Options for loading a pair of IDX files (images and labels) as an <see cref="IdxDataView"/>.</summary>
public sealed class IdxLoaderOptions
{
    /// <summary>
    /// Number of classes: the label column is a key type with this many values, and every label in the file must be
    /// below it. Between 1 and 256 (IDX labels are bytes). Default 10.
    /// </summary>
    public int ClassCount { get; set; } = 10;

    /// <summary>Name of the label column (key&lt;uint, ClassCount&gt;). Default <c>"Label"</c>.</summary>
    public string LabelColumnName { get; set; } = "Label";

    /// <summary>Name of the feature column (vector&lt;float, height × width&gt;, pixel / 255). Default <c>"Features"</c>.</summary>
    public string FeatureColumnName { get; set; } = "Features";

    /// <summary>If set, the images must be this many pixels high (rows), else loading throws <see cref="IdxFormatException"/>.</summary>
    public int? ExpectedImageHeight { get; set; }

    /// <summary>If set, the images must be this many pixels wide (columns), else loading throws <see cref="IdxFormatException"/>.</summary>
    public int? ExpectedImageWidth { get; set; }

    /// <summary>
    /// Directory for the raw copy of a gzip-compressed image file (see <see cref="IdxDataView"/>). Default:
    /// <c>&lt;cache root&gt;/idx</c>, where the cache root is <c>MLNET_COMPRESSION_CACHE</c>, else
    /// <c>$XDG_CACHE_HOME/mlnet-compression</c>, else <c>~/.cache/mlnet-compression</c>.
    /// </summary>
    public string? DecompressionCacheDirectory { get; set; }
}
