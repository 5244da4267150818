namespace MLNet.Compression.Quantization;

/// <summary>
/// Options for <see cref="QuantizationEstimator"/>. The fine-tuning settings of quantization-aware training come from
/// <see cref="FineTuningOptions"/> (<see cref="FineTuningOptions.Epochs"/> is <see cref="QatEpochs"/> and
/// <see cref="FineTuningOptions.LearningRate"/> is <see cref="QatLearningRate"/>; batch size, progress with stage
/// <c>"quantize"</c>, and cancellation); they are used only when <see cref="QuantizationAwareTraining"/> is on.
/// </summary>
public sealed class QuantizationOptions : FineTuningOptions
{
    /// <summary>Creates the default options: int8 static quantization, per-channel weights, MinMax calibration on 1,000 rows.</summary>
    public QuantizationOptions()
        : base(defaultEpochs: 2)
    {
    }

    private protected override string OptionsName => nameof(QuantizationOptions);

    /// <summary>Quantization-aware training fine-tunes at a tenth of the model's rate by default.</summary>
    private protected override double DefaultLearningRateFactor => 0.1;

    /// <summary>Smallest accepted <see cref="BlockSize"/>.</summary>
    public const int MinBlockSize = 16;

    /// <summary>Largest accepted <see cref="BlockSize"/>.</summary>
    public const int MaxBlockSize = 4096;

    /// <summary>How weights (and activations) are stored and computed. Default <see cref="QuantizationMode.Int8Static"/>.</summary>
    public QuantizationMode Mode { get; set; } = QuantizationMode.Int8Static;

    /// <summary>
    /// One scale per output channel (row of a dense weight, filter of a convolution) instead of one per tensor, for the int8
    /// modes. Default true: it costs one float per channel and keeps small channels from being rounded away.
    /// </summary>
    public bool PerChannel { get; set; } = true;

    /// <summary>Weights per scale in <see cref="QuantizationMode.Int4WeightOnly"/>: a power of two from 16 to 4096. Default 32.</summary>
    public int BlockSize { get; set; } = 128;

    /// <summary>
    /// How <see cref="QuantizationMode.Int8Dynamic"/> quantizes dense layers' activations at run time: one scale per row
    /// (<see cref="ActivationScaleScope.PerRow"/>, the default: a row's scores never depend on its batch) or one per batch
    /// (<see cref="ActivationScaleScope.PerBatch"/>: faster, scores depend slightly on the batch, and one row with a huge
    /// finite feature silently degrades the other rows of its batch; see there). Only <see cref="QuantizationMode.Int8Dynamic"/>
    /// accepts <see cref="ActivationScaleScope.PerBatch"/>.
    /// </summary>
    public ActivationScaleScope ActivationScales { get; set; } = ActivationScaleScope.PerRow;

    /// <summary>How the activation ranges of <see cref="QuantizationMode.Int8Static"/> are chosen. Default <see cref="CalibrationMethod.MinMax"/>.</summary>
    public CalibrationMethod Calibration { get; set; } = CalibrationMethod.MinMax;

    /// <summary>
    /// Rows of the data given to <c>Fit</c> that calibration runs through the float network (the first ones, in the view's
    /// order). Default 1,000. Used by <see cref="QuantizationMode.Int8Static"/> only.
    /// </summary>
    public int CalibrationRows { get; set; } = 1000;

    /// <summary>The percentile of |x| that <see cref="CalibrationMethod.Percentile"/> keeps, in (0, 100]. Default 99.99.</summary>
    public double Percentile { get; set; } = 99.99;

    /// <summary>Names of layers left in float32 ("fc1", "output"...). Default: none.</summary>
    public ICollection<string> KeepFloat { get; set; } = new List<string>();

    /// <summary>
    /// Fine-tune with simulated quantization before exporting (quantization-aware training): the forward pass uses weights
    /// rounded to int8 per channel and, for <see cref="QuantizationMode.Int8Static"/>, layer inputs rounded to uint8/int8
    /// over their running range, while the gradient flows to float master weights (straight-through estimator). Supported
    /// for <see cref="QuantizationMode.Int8Static"/> and <see cref="QuantizationMode.Int8Dynamic"/>. Default false.
    /// </summary>
    public bool QuantizationAwareTraining { get; set; }

    /// <summary>Epochs of quantization-aware fine-tuning over the data given to <c>Fit</c> (the same setting as <see cref="FineTuningOptions.Epochs"/>). Default: 2, or more on small data (see there).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int QatEpochs
    {
        get => Epochs;
        set => Epochs = value;
    }

    /// <summary>
    /// Learning rate of quantization-aware fine-tuning (the same setting as <see cref="FineTuningOptions.LearningRate"/>).
    /// Default (null): one tenth of the rate the model was trained with (measured: on 60,000 MNIST rows it keeps int8 accuracy
    /// at least as well as the model's own rate; other stages fine-tune at the model's own rate).
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public double? QatLearningRate
    {
        get => LearningRate;
        set => LearningRate = value;
    }

    /// <summary>Returns a copy (the layer list is copied too).</summary>
    public QuantizationOptions Clone() => CopyTo(new QuantizationOptions
    {
        Mode = Mode,
        PerChannel = PerChannel,
        ActivationScales = ActivationScales,
        BlockSize = BlockSize,
        Calibration = Calibration,
        CalibrationRows = CalibrationRows,
        Percentile = Percentile,
        KeepFloat = KeepFloat is null ? null! : new List<string>(KeepFloat),
        QuantizationAwareTraining = QuantizationAwareTraining,
    });

    internal void Validate()
    {
        if (!Enum.IsDefined(Mode))
            throw new ArgumentOutOfRangeException(nameof(Mode), Mode, "QuantizationOptions.Mode is not a known value.");
        if (!Enum.IsDefined(ActivationScales))
            throw new ArgumentOutOfRangeException(nameof(ActivationScales), ActivationScales, "QuantizationOptions.ActivationScales is not a known value.");
        if (ActivationScales == ActivationScaleScope.PerBatch && Mode != QuantizationMode.Int8Dynamic)
            throw new ArgumentException(
                $"QuantizationOptions.ActivationScales = PerBatch applies to Int8Dynamic only (activations quantized at run time), not to {Mode}. " +
                "Set Mode = Int8Dynamic or leave ActivationScales at PerRow.", nameof(ActivationScales));
        if (!Enum.IsDefined(Calibration))
            throw new ArgumentOutOfRangeException(nameof(Calibration), Calibration, "QuantizationOptions.Calibration is not a known value.");
        if (BlockSize < MinBlockSize || BlockSize > MaxBlockSize || (BlockSize & (BlockSize - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(BlockSize), BlockSize,
                $"QuantizationOptions.BlockSize must be a power of two from {MinBlockSize} to {MaxBlockSize} (e.g. 32 or 64): it is how many weights share one 4-bit scale.");
        if (CalibrationRows <= 0)
            throw new ArgumentOutOfRangeException(nameof(CalibrationRows), CalibrationRows, "QuantizationOptions.CalibrationRows must be positive (1,000 is usually enough).");
        if (!(Percentile > 0 && Percentile <= 100))
            throw new ArgumentOutOfRangeException(nameof(Percentile), Percentile, "QuantizationOptions.Percentile must be in (0, 100], e.g. 99.99.");
        if (KeepFloat is null)
            throw new ArgumentNullException(nameof(KeepFloat), "QuantizationOptions.KeepFloat must not be null (use an empty list).");
        foreach (var name in KeepFloat)
            if (string.IsNullOrWhiteSpace(name))
                throw new ArgumentException("QuantizationOptions.KeepFloat holds an empty layer name.", nameof(KeepFloat));
        if (QatEpochs < 0)
            throw new ArgumentOutOfRangeException(nameof(QatEpochs), QatEpochs, "QuantizationOptions.QatEpochs must be 0 or more.");
        if (QatLearningRate is { } lr && (!(lr > 0) || double.IsInfinity(lr)))
            throw new ArgumentOutOfRangeException(nameof(QatLearningRate), lr,
                $"QuantizationOptions.QatLearningRate must be a positive number (or null for a tenth of the model's rate).");
        ValidateFineTuning();
        if (QuantizationAwareTraining && Mode is not (QuantizationMode.Int8Static or QuantizationMode.Int8Dynamic))
            throw new ArgumentException(
                $"QuantizationOptions.QuantizationAwareTraining simulates int8 weights and activations; it is supported for Int8Static and Int8Dynamic, not {Mode}. " +
                "Turn it off or choose an int8 mode.", nameof(QuantizationAwareTraining));
    }
}
