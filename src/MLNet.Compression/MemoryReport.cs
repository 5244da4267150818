using System.Globalization;
using System.Text;
using MLNet.Compression.Networks;

namespace MLNet.Compression;

/// <summary>
/// Where a model's memory goes, in bytes: parameters, gradients and optimizer state while training, activations per batch,
/// the ONNX artifact and the saved zip, and the peak measured while training.
/// </summary>
public sealed class MemoryReport
{
    internal MemoryReport(NetworkModel model, int batchSize, TrainingPrecision precision, OptimizerKind optimizer, double momentum,
        long artifactBytes, Func<long>? zipBytes, long residentWeightBytes, long? peakTrainingBytes, long? peakGpuBytes, string device)
    {
        Parameters = model.ParameterCount;
        NonZeroParameters = model.NonZeroParameterCount;
        ParameterBytes = Parameters * sizeof(float);
        GradientBytes = Parameters * sizeof(float);
        int slots = optimizer == OptimizerKind.Adam ? 2 : momentum > 0 ? 1 : 0;
        OptimizerStateBytes = slots * Parameters * sizeof(float);
        int activationElementBytes = precision == TrainingPrecision.Float32 ? 4 : 2;
        LowPrecisionWeightBytes = precision == TrainingPrecision.Float32 ? 0 : Parameters * 2;
        BatchSize = batchSize;
        ActivationBytesPerBatch = ActivationElements(model) * batchSize * activationElementBytes;
        ArtifactBytes = artifactBytes;
        this.zipBytes = zipBytes is null ? null : new Lazy<long>(zipBytes);
        ResidentWeightBytes = residentWeightBytes;
        PeakTrainingBytes = peakTrainingBytes;
        PeakGpuBytes = peakGpuBytes;
        Device = device;
        Precision = precision;
    }

    private readonly Lazy<long>? zipBytes;

    /// <summary>Number of weights and biases.</summary>
    public long Parameters { get; }

    /// <summary>Number of weights and biases that are not zero (pruning lowers this).</summary>
    public long NonZeroParameters { get; }

    /// <summary>Float32 parameter bytes held while training (the master weights).</summary>
    public long ParameterBytes { get; }

    /// <summary>Extra float16/bfloat16 copy of the weights used by mixed-precision training (0 in float32).</summary>
    public long LowPrecisionWeightBytes { get; }

    /// <summary>Gradient bytes while training (one float32 per parameter).</summary>
    public long GradientBytes { get; }

    /// <summary>Optimizer state bytes: Adam keeps two float32 moments per parameter, SGD with momentum one.</summary>
    public long OptimizerStateBytes { get; }

    /// <summary>The batch size the activation figure is for.</summary>
    public int BatchSize { get; }

    /// <summary>
    /// Activation bytes kept for the backward pass for one batch (the input and every layer output, in the training precision).
    /// Halves with mixed precision and scales linearly with the batch size.
    /// </summary>
    public long ActivationBytesPerBatch { get; }

    /// <summary>Bytes of the ONNX model that ships (inside the zip).</summary>
    public long ArtifactBytes { get; }

    /// <summary>Bytes of the model zip written by <c>mlContext.Model.Save</c> (measured by saving to memory on first use).</summary>
    public long? ZipBytes => zipBytes?.Value;

    /// <summary>Bytes the weights take in the scoring process (float32 dense unless a compression stage stores them smaller).</summary>
    public long ResidentWeightBytes { get; }

    /// <summary>Peak resident memory of the process during training (Linux: reset at the start of training), when trained here.</summary>
    public long? PeakTrainingBytes { get; }

    /// <summary>Peak GPU memory in use during training (sampled through NVML at epoch ends), when trained on CUDA.</summary>
    public long? PeakGpuBytes { get; }

    /// <summary>The device the model was trained on.</summary>
    public string Device { get; }

    /// <summary>The training precision.</summary>
    public TrainingPrecision Precision { get; }

    /// <summary>Total training-time bytes for weights, gradients, optimizer state and one batch of activations.</summary>
    public long TrainingBytes => ParameterBytes + LowPrecisionWeightBytes + GradientBytes + OptimizerStateBytes + ActivationBytesPerBatch;

    /// <summary>
    /// Estimates, before any training, the memory a training run adds to the process: parameters, gradients, optimizer state,
    /// the activations of one batch by layer, backward-pass transients, input buffers and the copies written back at the end.
    /// </summary>
    /// <param name="architecture">The network (its input shape gives the input size).</param>
    /// <param name="classCount">Classes of the label (output units).</param>
    /// <param name="batchSize">Rows per batch.</param>
    /// <param name="optimizer">The optimizer (Adam keeps two moments per parameter, SGD with momentum one).</param>
    /// <param name="precision">The training precision (16-bit activations and a 16-bit weight copy in mixed precision).</param>
    /// <param name="momentum">SGD's momentum (0: no momentum buffer). Ignored for Adam.</param>
    public static TrainingMemoryEstimate Estimate(NetworkArchitecture architecture, int classCount, int batchSize,
        OptimizerKind optimizer = OptimizerKind.Adam, TrainingPrecision precision = TrainingPrecision.Float32, double momentum = 0.9)
    {
        ArgumentNullException.ThrowIfNull(architecture);
        if (classCount <= 0)
            throw new ArgumentOutOfRangeException(nameof(classCount), classCount, "The class count must be positive.");
        if (batchSize <= 0)
            throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "The batch size must be positive.");
        if (!Enum.IsDefined(optimizer))
            throw new ArgumentOutOfRangeException(nameof(optimizer), optimizer, "Not a known optimizer.");
        if (!Enum.IsDefined(precision))
            throw new ArgumentOutOfRangeException(nameof(precision), precision, "Not a known precision.");
        var model = NetworkModel.Create(architecture, classCount);
        return new TrainingMemoryEstimate(model, batchSize, optimizer, precision, momentum);
    }

    /// <summary>Estimates the training memory of <paramref name="options"/> for a label of <paramref name="classCount"/> classes.</summary>
    /// <param name="options">Architecture, batch size, optimizer, momentum and precision are read from here.</param>
    /// <param name="classCount">Classes of the label.</param>
    public static TrainingMemoryEstimate Estimate(NeuralNetworkOptions options, int classCount)
    {
        ArgumentNullException.ThrowIfNull(options);
        return Estimate(options.Architecture, classCount, options.BatchSize, options.Optimizer, options.Precision, options.Momentum);
    }

    internal static long ActivationElements(NetworkModel model)
    {
        long total = model.InputLength;
        foreach (var layer in model.Layers)
            total += layer.ActivationElements;
        return total;
    }

    /// <summary>Formats a byte count as B, KB, MB or GB (powers of 1024).</summary>
    /// <param name="bytes">The byte count.</param>
    public static string FormatBytes(long bytes)
    {
        string[] units = ["B", "KB", "MB", "GB", "TB"];
        double v = bytes;
        int u = 0;
        while (Math.Abs(v) >= 1024 && u < units.Length - 1)
        {
            v /= 1024;
            u++;
        }
        return u == 0 ? $"{bytes} B" : v.ToString(v >= 100 ? "F0" : "F1", CultureInfo.InvariantCulture) + " " + units[u];
    }

    /// <inheritdoc />
    public override string ToString()
    {
        var sb = new StringBuilder();
        void Row(string name, string value) => sb.Append(CultureInfo.InvariantCulture, $"  {name,-38}{value}\n");
        sb.Append("Memory report\n");
        Row("parameters", $"{Parameters:N0} ({NonZeroParameters:N0} non-zero)");
        Row("parameter bytes (float32)", FormatBytes(ParameterBytes));
        if (LowPrecisionWeightBytes > 0)
            Row($"low-precision weight copy", FormatBytes(LowPrecisionWeightBytes));
        Row("gradient bytes", FormatBytes(GradientBytes));
        Row("optimizer state bytes", FormatBytes(OptimizerStateBytes));
        Row($"activations per batch of {BatchSize}", FormatBytes(ActivationBytesPerBatch) + $" ({Precision})");
        Row("training total (estimate)", FormatBytes(TrainingBytes));
        if (PeakTrainingBytes is long peak)
            Row("peak process memory while training", FormatBytes(peak));
        if (PeakGpuBytes is long gpu)
            Row("peak GPU memory while training", FormatBytes(gpu));
        Row("ONNX artifact", FormatBytes(ArtifactBytes));
        if (ZipBytes is long zip)
            Row("model zip", FormatBytes(zip));
        Row("resident weights when scoring", FormatBytes(ResidentWeightBytes));
        Row("device", Device);
        return sb.ToString();
    }
}
