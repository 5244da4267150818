using Microsoft.ML;

namespace MLNet.Compression.Incremental;

/// <summary>How continued training fights forgetting; combine with <c>|</c>.</summary>
[Flags]
public enum ContinualStrategies
{
    /// <summary>Plain fine-tuning from the previous weights (and optimizer state): a warm start.</summary>
    None = 0,

    /// <summary>
    /// Experience replay: a bounded memory of exemplars from earlier increments (each feature stored at
    /// <see cref="ContinueTrainingOptions.ReplayEncoding"/>'s precision within a per-feature range taken from the data), chosen
    /// by <see cref="ContinueTrainingOptions.ReplaySelection"/>, is mixed into every batch. Any feature range works.
    /// </summary>
    Replay = 1,

    /// <summary>
    /// Learning without forgetting (Li &amp; Hoiem, 2016): the previous model's outputs on every training row (new rows and
    /// exemplars) are distilled into the old classes' outputs.
    /// </summary>
    LearningWithoutForgetting = 2,

    /// <summary>
    /// Elastic weight consolidation (Kirkpatrick et al., 2017), online form: a quadratic penalty, weighted by the diagonal
    /// Fisher information of earlier tasks, holds the parameters that mattered for them near their earlier values.
    /// </summary>
    ElasticWeightConsolidation = 4,
}

/// <summary>The size of the replay memory: a number of exemplars or a number of bytes.</summary>
public sealed class ReplayBudget
{
    private ReplayBudget(int? rows, long? bytes)
    {
        MaxRows = rows;
        MaxBytes = bytes;
    }

    /// <summary>The most exemplars, or null when the budget is in bytes.</summary>
    public int? MaxRows { get; }

    /// <summary>
    /// The most bytes, or null when the budget is in rows: the packed features plus a 4-byte class index per exemplar (plus the
    /// stored outputs with logit replay), plus 8 bytes per feature for the ranges when any range is not [0, 1].
    /// </summary>
    public long? MaxBytes { get; }

    /// <summary>At most <paramref name="rows"/> exemplars (each takes feature count + 4 bytes: 788 bytes for MNIST).</summary>
    /// <param name="rows">Positive number of exemplars.</param>
    public static ReplayBudget Rows(int rows)
    {
        if (rows <= 0)
            throw new ArgumentOutOfRangeException(nameof(rows), rows, "A replay budget needs room for at least one exemplar (rows > 0).");
        return new ReplayBudget(rows, null);
    }

    /// <summary>
    /// At most <paramref name="bytes"/> bytes of exemplars: each takes <see cref="ExemplarEncoding.BytesFor"/> bytes of packed
    /// features plus a 4-byte class index (plus 2 bytes per class with logit replay), so a lower precision holds more of them.
    /// </summary>
    /// <param name="bytes">Positive number of bytes; it must hold at least one exemplar.</param>
    public static ReplayBudget Bytes(long bytes)
    {
        if (bytes <= 0)
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "A replay budget in bytes must be positive.");
        return new ReplayBudget(null, bytes);
    }

    /// <summary>The number of 8-bit exemplars (no stored outputs, ranges [0, 1]) the budget allows for rows of <paramref name="featureLength"/> values.</summary>
    /// <param name="featureLength">Values per row.</param>
    public int CapacityFor(int featureLength) => CapacityFor(featureLength, ExemplarEncoding.Bits(8), 0, 0);

    /// <summary>
    /// The number of exemplars the budget allows for rows of <paramref name="featureLength"/> values stored with
    /// <paramref name="encoding"/>, <paramref name="logitLength"/> stored outputs each, and <paramref name="fixedBytes"/> bytes of ranges.
    /// </summary>
    internal int CapacityFor(int featureLength, ExemplarEncoding encoding, int logitLength, long fixedBytes)
    {
        if (MaxRows is { } rows)
            return rows;
        long perRow = ReplayMemory.BytesPerExemplar(featureLength, encoding.BitsPerFeature, logitLength);
        long capacity = (MaxBytes!.Value - fixedBytes) / perRow;
        if (capacity < 1)
            throw new ArgumentOutOfRangeException("options", MaxBytes,
                $"ContinueTrainingOptions.ReplayBudget is {MaxBytes} bytes, less than one exemplar of {featureLength} features at {encoding} " +
                $"needs ({perRow} bytes{(fixedBytes > 0 ? $" plus {fixedBytes} bytes of feature ranges" : string.Empty)}). Give a larger budget or a lower-precision ReplayEncoding.");
        return (int)Math.Min(capacity, int.MaxValue);
    }

    /// <summary>"1,000 rows" or "784,000 bytes".</summary>
    public override string ToString() => MaxRows is { } r ? $"{r:N0} rows" : $"{MaxBytes:N0} bytes";
}

/// <summary>
/// How replay stores each feature of an exemplar: <see cref="Bits"/>(8), (4), (2) or (1) bits, on an affine grid over the
/// feature's range (taken from the data seen; [0, 1] while every value lies in it). 8 bits stores pixels / 255 exactly; 1 bit
/// keeps only which side of the range's midpoint a value lies (a per-feature threshold). Features are packed densely, so at
/// 4, 2 or 1 bit the same budget holds about 2, 4 or 8 times as many exemplars.
/// </summary>
public sealed class ExemplarEncoding : IEquatable<ExemplarEncoding>
{
    private ExemplarEncoding(int bits) => BitsPerFeature = bits;

    /// <summary>Bits stored per feature: 8, 4, 2 or 1.</summary>
    public int BitsPerFeature { get; }

    /// <summary>An encoding of <paramref name="bits"/> bits per feature.</summary>
    /// <param name="bits">8, 4, 2 or 1.</param>
    public static ExemplarEncoding Bits(int bits)
    {
        if (bits is not (8 or 4 or 2 or 1))
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "An exemplar encoding stores 8, 4, 2 or 1 bits per feature.");
        return new ExemplarEncoding(bits);
    }

    /// <summary>Bytes of the packed features of one exemplar of <paramref name="featureLength"/> values: ⌈featureLength · bits / 8⌉.</summary>
    /// <param name="featureLength">Values per row (positive).</param>
    public long BytesFor(int featureLength)
    {
        if (featureLength <= 0)
            throw new ArgumentOutOfRangeException(nameof(featureLength), featureLength, "Exemplars need at least one feature.");
        return ((long)featureLength * BitsPerFeature + 7) / 8;
    }

    /// <summary>True when <paramref name="other"/> stores the same number of bits.</summary>
    /// <param name="other">The encoding to compare with.</param>
    public bool Equals(ExemplarEncoding? other) => other is not null && other.BitsPerFeature == BitsPerFeature;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as ExemplarEncoding);

    /// <inheritdoc/>
    public override int GetHashCode() => BitsPerFeature;

    /// <summary>"8-bit", "4-bit", ….</summary>
    public override string ToString() => $"{BitsPerFeature}-bit";
}

/// <summary>Which rows the replay memory keeps.</summary>
public enum ExemplarSelection
{
    /// <summary>
    /// Class-balanced reservoir sampling (Chrysakis &amp; Moens, 2020): each class keeps a uniform random sample of its rows,
    /// the classes within one exemplar of each other. Needs no model pass.
    /// </summary>
    Reservoir = 0,

    /// <summary>
    /// Herding (iCaRL, Rebuffi et al., 2017): after each increment, the exemplars of each new class are chosen one by one so
    /// that their mean feature in the trained network's penultimate layer best approximates the class mean; every class keeps
    /// an equal share of the memory and, when the share shrinks, drops its last-chosen exemplars first. Costs one forward pass
    /// over (a sample of at most max(2,000, 4 × share) rows per class of) the new data.
    /// </summary>
    Herding = 1,
}

/// <summary>
/// Options for continued (incremental) training: <c>mlContext.Compression().ContinueTraining(previousModel, options)</c>. The
/// training settings come from <see cref="FineTuningOptions"/>: <see cref="FineTuningOptions.Epochs"/> over the new data
/// (default 5, at least 1), the learning rate (default: the rate the previous model was trained with), rows per optimizer step
/// (exemplars included; default: the previous model's batch size), progress (stage <c>"continue"</c>) and cancellation.
/// </summary>
public sealed class ContinueTrainingOptions : FineTuningOptions
{
    /// <summary>Creates the default options: warm-start fine-tuning for five epochs.</summary>
    public ContinueTrainingOptions()
        : base(defaultEpochs: 5)
    {
    }

    private protected override string OptionsName => nameof(ContinueTrainingOptions);

    private protected override int MinEpochs => 1;

    /// <summary>Continued training runs its 5 epochs on any data size: more passes over a small increment would forget more.</summary>
    private protected override bool EpochsFitTheData => false;

    /// <summary>Forgetting mitigation; any combination. Default <see cref="ContinualStrategies.None"/> (warm-start fine-tuning).</summary>
    public ContinualStrategies Strategies { get; set; } = ContinualStrategies.None;

    /// <summary>
    /// Whether to start from the previous model's optimizer state (Adam's moments or SGD's momentum) when it has one.
    /// When the output layer grows, the new rows start with zero state. Default true.
    /// </summary>
    public bool ReuseOptimizerState { get; set; } = true;

    /// <summary>
    /// Data of the task the previous model learned, used only when the previous model carries no memory of it (a model
    /// from <c>NeuralNetworkTrainer</c>, pruning or quantization): it seeds the replay memory and gives EWC its Fisher
    /// information. Its label must be a key whose key values are among the previous model's class names (binary: a Boolean
    /// label; regression: a Single label, as the model was trained on). Required for
    /// <see cref="ContinualStrategies.ElasticWeightConsolidation"/> in that case; without it replay starts with an empty
    /// memory (only later increments replay). Ignored when the previous model carries the state.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public IDataView? PreviousData { get; set; }

    /// <summary>Size of the replay memory. Default: 1,000 rows.</summary>
    public ReplayBudget ReplayBudget { get; set; } = ReplayBudget.Rows(1000);

    /// <summary>
    /// Precision of the stored exemplars. Default <c>ExemplarEncoding.Bits(8)</c> (788 B per MNIST row). Lower precision
    /// holds proportionally more exemplars in a <see cref="ReplayBudget.Bytes"/> budget. Each feature's range is taken from the
    /// data seen and widened as new rows arrive; the stored exemplars are then re-encoded on the wider grid.
    /// </summary>
    public ExemplarEncoding ReplayEncoding { get; set; } = ExemplarEncoding.Bits(8);

    /// <summary>
    /// Which rows the memory keeps. Default <see cref="ExemplarSelection.Reservoir"/> (for a regression network, which has no
    /// classes, a plain uniform reservoir of rows and their targets; <see cref="ExemplarSelection.Herding"/> is refused there).
    /// </summary>
    public ExemplarSelection ReplaySelection { get; set; } = ExemplarSelection.Reservoir;

    /// <summary>
    /// Logit replay (DER++, Buzzega et al., 2020): when above 0, every exemplar also stores the network's outputs (float16,
    /// 2 bytes per class, counted in the budget) from the end of the increment that stored it, and training adds this weight
    /// times the mean squared error between the current and the stored outputs of the exemplars in the batch (the classes
    /// an exemplar's outputs did not cover yet are left out). Default 0 (off). Multiclass networks only: for a binary or
    /// regression network a value above 0 is refused (use <see cref="ContinualStrategies.LearningWithoutForgetting"/>).
    /// </summary>
    public double ReplayLogitWeight { get; set; }

    /// <summary>
    /// DER++'s β: the weight of the exemplars' cross-entropy on their labels against the new rows' (1 = every row of the batch
    /// counts the same, as plain replay). Used only with <see cref="ReplayLogitWeight"/> above 0. Default 1; multiclass networks only.
    /// </summary>
    public double ReplayLabelWeight { get; set; } = 1;

    /// <summary>
    /// Share of each batch taken from the replay memory, in [0, 0.95]. Default (null): the larger of the share of classes
    /// that only the memory holds (so that every class is seen about equally often) and the memory's share of all rows
    /// (so that every exemplar is seen as often as every new row).
    /// </summary>
    public double? ReplayFraction { get; set; }

    /// <summary>Distillation temperature for learning without forgetting. Default 2 (Li &amp; Hoiem).</summary>
    public double LwfTemperature { get; set; } = 2;

    /// <summary>
    /// Weight of the distillation term against the head's training loss for learning without forgetting. Default 1. On a binary
    /// or regression network the old and the new task share the one output: where the new data contradicts the previous
    /// model, a lower weight (for example 0.3) learns the new task and keeps less of the old one.
    /// </summary>
    public double LwfWeight { get; set; } = 1;

    /// <summary>EWC's penalty weight λ (0 or more). Default 5,000.</summary>
    public double EwcLambda { get; set; } = 5000;

    /// <summary>Rows used to estimate the Fisher information at the end of each increment (one backward pass each). Default 1,000.</summary>
    public int EwcFisherRows { get; set; } = 1000;

    /// <summary>Online EWC's decay γ of earlier Fisher information, in (0, 1]. Default 1 (earlier tasks count fully).</summary>
    public double EwcDecay { get; set; } = 1;

    /// <summary>
    /// Whether weights that are exactly zero in the previous model (a pruned model) stay zero: they are masked after
    /// every optimizer step. Default true.
    /// </summary>
    public bool KeepSparsity { get; set; } = true;

    /// <summary>Returns a copy.</summary>
    public ContinueTrainingOptions Clone() => (ContinueTrainingOptions)MemberwiseClone();

    /// <summary>Checks every setting; throws naming the bad one.</summary>
    internal void Validate()
    {
        const ContinualStrategies all = ContinualStrategies.Replay | ContinualStrategies.LearningWithoutForgetting | ContinualStrategies.ElasticWeightConsolidation;
        if ((Strategies & ~all) != 0)
            throw new ArgumentOutOfRangeException(nameof(Strategies), Strategies,
                $"ContinueTrainingOptions.Strategies has unknown value(s) {(int)(Strategies & ~all)}; combine Replay, LearningWithoutForgetting and ElasticWeightConsolidation (or None).");
        ValidateFineTuning();
        if (ReplayBudget is null)
            throw new ArgumentNullException(nameof(ReplayBudget), "ContinueTrainingOptions.ReplayBudget must be set (ReplayBudget.Rows(n) or ReplayBudget.Bytes(n)).");
        if (ReplayEncoding is null)
            throw new ArgumentNullException(nameof(ReplayEncoding), "ContinueTrainingOptions.ReplayEncoding must be set (ExemplarEncoding.Bits(8), (4), (2) or (1)).");
        if (!Enum.IsDefined(ReplaySelection))
            throw new ArgumentOutOfRangeException(nameof(ReplaySelection), ReplaySelection, "ContinueTrainingOptions.ReplaySelection must be Reservoir or Herding.");
        if (!(ReplayLogitWeight >= 0 && double.IsFinite(ReplayLogitWeight)))
            throw new ArgumentOutOfRangeException(nameof(ReplayLogitWeight), ReplayLogitWeight, "ContinueTrainingOptions.ReplayLogitWeight (DER++'s α) must be 0 or more.");
        if (!(ReplayLabelWeight >= 0 && double.IsFinite(ReplayLabelWeight)))
            throw new ArgumentOutOfRangeException(nameof(ReplayLabelWeight), ReplayLabelWeight, "ContinueTrainingOptions.ReplayLabelWeight (DER++'s β) must be 0 or more.");
        if (ReplayFraction is { } f && !(f >= 0 && f <= 0.95))
            throw new ArgumentOutOfRangeException(nameof(ReplayFraction), f, "ContinueTrainingOptions.ReplayFraction must be in [0, 0.95].");
        if (!(LwfTemperature > 0 && double.IsFinite(LwfTemperature)))
            throw new ArgumentOutOfRangeException(nameof(LwfTemperature), LwfTemperature, "ContinueTrainingOptions.LwfTemperature must be a positive finite number.");
        if (!(LwfWeight >= 0 && double.IsFinite(LwfWeight)))
            throw new ArgumentOutOfRangeException(nameof(LwfWeight), LwfWeight, "ContinueTrainingOptions.LwfWeight must be 0 or more.");
        if (!(EwcLambda >= 0 && double.IsFinite(EwcLambda)))
            throw new ArgumentOutOfRangeException(nameof(EwcLambda), EwcLambda, "ContinueTrainingOptions.EwcLambda (λ) must be 0 or more.");
        if (EwcFisherRows < 1)
            throw new ArgumentOutOfRangeException(nameof(EwcFisherRows), EwcFisherRows, "ContinueTrainingOptions.EwcFisherRows must be at least 1.");
        if (!(EwcDecay > 0 && EwcDecay <= 1))
            throw new ArgumentOutOfRangeException(nameof(EwcDecay), EwcDecay, "ContinueTrainingOptions.EwcDecay (γ) must be in (0, 1].");
    }
}
