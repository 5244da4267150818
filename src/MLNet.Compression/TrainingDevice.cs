namespace MLNet.Compression;

/// <summary>Where a network is trained.</summary>
public enum TrainingDeviceKind
{
    /// <summary>CUDA when <c>torch.cuda.is_available()</c>, otherwise CPU.</summary>
    Auto,

    /// <summary>Always the CPU.</summary>
    Cpu,

    /// <summary>A CUDA device; an error when none is present, unless <c>MLContext.FallbackToCpu</c> is set.</summary>
    Cuda,
}

/// <summary>
/// The device a network trains on: <see cref="Auto"/>, <see cref="Cpu"/> or <see cref="Cuda(int)"/>.
/// CUDA needs the application to reference a CUDA build of libtorch (the <c>TorchSharp-cuda-linux</c> or
/// <c>TorchSharp-cuda-windows</c> package) instead of <c>libtorch-cpu-*</c>.
/// </summary>
public readonly record struct TrainingDevice
{
    private TrainingDevice(TrainingDeviceKind kind, int index)
    {
        Kind = kind;
        Index = index;
    }

    /// <summary>The kind of device.</summary>
    public TrainingDeviceKind Kind { get; }

    /// <summary>The CUDA device index (only meaningful for <see cref="TrainingDeviceKind.Cuda"/>).</summary>
    public int Index { get; }

    /// <summary>CUDA device 0 when available (or <c>MLContext.GpuDeviceId</c> when set), otherwise the CPU.</summary>
    public static TrainingDevice Auto => new(TrainingDeviceKind.Auto, 0);

    /// <summary>The CPU.</summary>
    public static TrainingDevice Cpu => new(TrainingDeviceKind.Cpu, 0);

    /// <summary>The CUDA device with the given index.</summary>
    /// <param name="index">Zero-based CUDA device index.</param>
    public static TrainingDevice Cuda(int index = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        return new(TrainingDeviceKind.Cuda, index);
    }

    /// <summary>Parses "auto", "cpu", "cuda" or "cuda:N" (case-insensitive).</summary>
    /// <param name="text">The text to parse.</param>
    public static TrainingDevice Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var t = text.Trim().ToLowerInvariant();
        if (t == "auto")
            return Auto;
        if (t == "cpu")
            return Cpu;
        if (t == "cuda" || t == "gpu")
            return Cuda(0);
        if ((t.StartsWith("cuda:", StringComparison.Ordinal) || t.StartsWith("gpu:", StringComparison.Ordinal))
            && int.TryParse(t[(t.IndexOf(':') + 1)..], out int index) && index >= 0)
            return Cuda(index);
        throw new FormatException($"'{text}' is not a training device. Use 'auto', 'cpu', 'cuda' or 'cuda:N'.");
    }

    /// <inheritdoc />
    public override string ToString() => Kind switch
    {
        TrainingDeviceKind.Cuda => $"cuda:{Index}",
        TrainingDeviceKind.Cpu => "cpu",
        _ => "auto",
    };
}

/// <summary>The numeric precision of the forward and backward passes.</summary>
public enum TrainingPrecision
{
    /// <summary>Everything in 32-bit floats.</summary>
    Float32,

    /// <summary>
    /// Mixed precision with float16: forward and backward run on a float16 copy of the weights, with dynamic loss scaling;
    /// float32 master weights and optimizer state take the update. Halves activation memory. Meant for CUDA.
    /// </summary>
    Float16,

    /// <summary>
    /// Mixed precision with bfloat16 (float32's exponent range, so no loss scaling): forward and backward in bfloat16,
    /// float32 master weights. Halves activation memory. Fast on CUDA (Ampere and later) and CPUs with AVX-512 BF16.
    /// </summary>
    BFloat16,
}

/// <summary>The optimizer used for training.</summary>
public enum OptimizerKind
{
    /// <summary>Adam (Kingma &amp; Ba, 2015): two float32 moment buffers per parameter.</summary>
    Adam,

    /// <summary>Stochastic gradient descent with momentum: one float32 buffer per parameter (none when momentum is 0).</summary>
    Sgd,
}
