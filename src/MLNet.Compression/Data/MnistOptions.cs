namespace MLNet.Compression.Data;

/// <summary>The two MNIST splits.</summary>
public enum MnistSplit
{
    /// <summary>The 60,000 training images (<c>train-images-idx3-ubyte</c>, <c>train-labels-idx1-ubyte</c>).</summary>
    Train,

    /// <summary>The 10,000 test images (<c>t10k-images-idx3-ubyte</c>, <c>t10k-labels-idx1-ubyte</c>).</summary>
    Test,
}

/// <summary>
/// Where <see cref="MnistDataset.Ensure(MnistOptions?)"/> looks for the MNIST files, and how
/// <c>LoadMnist</c> names its columns. Sources are tried in this order, every file checked against its
/// SHA-256 before use: <see cref="DataDirectory"/> (or <c>MNIST_DIR</c>), <see cref="CacheDirectory"/>,
/// the HTTP <see cref="Mirrors"/> (if <see cref="AllowHttp"/>).
/// </summary>
public sealed class MnistOptions
{
    /// <summary>Name of the environment variable read when <see cref="DataDirectory"/> is not set.</summary>
    public const string DataDirectoryEnvironmentVariable = "MNIST_DIR";

    /// <summary>
    /// A directory that already holds the MNIST files, raw (<c>train-images-idx3-ubyte</c>, also accepted with a dot:
    /// <c>train-images.idx3-ubyte</c>) or gzip-compressed (the same names plus <c>.gz</c>). Raw files are used in place;
    /// compressed ones are decompressed into <see cref="CacheDirectory"/>. Default: the <c>MNIST_DIR</c>
    /// environment variable; none when that is unset.
    /// </summary>
    public string? DataDirectory { get; set; }

    /// <summary>
    /// Where verified files are kept (and downloads are written). Default: <c>&lt;cache root&gt;/mnist</c>, where the
    /// cache root is the <c>MLNET_COMPRESSION_CACHE</c> environment variable, else <c>$XDG_CACHE_HOME/mlnet-compression</c>,
    /// else <c>~/.cache/mlnet-compression</c> (<c>%LOCALAPPDATA%\mlnet-compression</c> on Windows).
    /// </summary>
    public string? CacheDirectory { get; set; }

    /// <summary>Whether to download the <c>.gz</c> files from <see cref="Mirrors"/>. Default <see langword="true"/>.</summary>
    public bool AllowHttp { get; set; } = true;

    /// <summary>
    /// Base URLs of HTTP mirrors, tried in order; the file URL is the base plus <c>/&lt;name&gt;.gz</c>.
    /// Default: <see cref="MnistDataset.DefaultMirrors"/>.
    /// </summary>
    public IList<string> Mirrors { get; set; } = new List<string>(MnistDataset.DefaultMirrors);

    /// <summary>Time allowed for each HTTP download (connection plus body). Default 2 minutes.</summary>
    public TimeSpan HttpTimeout { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>
    /// Receives one line for each source that failed (and why) and for each file obtained (and from where).
    /// Wire it to <c>MLContext.Log</c> or a console; <see langword="null"/> to stay silent.
    /// </summary>
    public Action<string>? Log { get; set; }

    /// <summary>Name of the label column created by <c>LoadMnist</c>. Default <c>"Label"</c>.</summary>
    public string LabelColumnName { get; set; } = "Label";

    /// <summary>Name of the feature column created by <c>LoadMnist</c>. Default <c>"Features"</c>.</summary>
    public string FeatureColumnName { get; set; } = "Features";

    /// <summary>Test hook: the HTTP handler used for mirror downloads (default: a new <see cref="HttpClientHandler"/>).</summary>
    internal HttpMessageHandler? HttpHandler { get; set; }
}

/// <summary>Paths of the four verified, uncompressed MNIST files.</summary>
/// <param name="TrainImages">Path of <c>train-images-idx3-ubyte</c> (60,000 images of 28×28).</param>
/// <param name="TrainLabels">Path of <c>train-labels-idx1-ubyte</c> (60,000 labels).</param>
/// <param name="TestImages">Path of <c>t10k-images-idx3-ubyte</c> (10,000 images of 28×28).</param>
/// <param name="TestLabels">Path of <c>t10k-labels-idx1-ubyte</c> (10,000 labels).</param>
public sealed record MnistFiles(string TrainImages, string TrainLabels, string TestImages, string TestLabels)
{
    /// <summary>The image file of a split.</summary>
    /// <param name="split">Which split.</param>
    public string ImagesPath(MnistSplit split) => split == MnistSplit.Train ? TrainImages : TestImages;

    /// <summary>The label file of a split.</summary>
    /// <param name="split">Which split.</param>
    public string LabelsPath(MnistSplit split) => split == MnistSplit.Train ? TrainLabels : TestLabels;
}

/// <summary>
/// Thrown when <see cref="MnistDataset.Ensure(MnistOptions?)"/> cannot obtain a verified copy of every MNIST file
/// from any source. The message lists every source tried, why each failed, and how to fix it.
/// </summary>
public sealed class MnistAcquisitionException : IOException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">The full explanation.</param>
    /// <param name="failures">One line per source and file that failed.</param>
    public MnistAcquisitionException(string message, IReadOnlyList<string> failures)
        : base(message)
    {
        Failures = failures;
    }

    /// <summary>One line per source (and file) that was tried and failed, in the order tried.</summary>
    public IReadOnlyList<string> Failures { get; }
}
