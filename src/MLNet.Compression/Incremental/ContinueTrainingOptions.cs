using Microsoft.ML;

namespace MLNet.Compression.Incremental;

/// <summary>How continued training fights forgetting; combine with <c>|</c>.</summary>
[Flags]
public enum ContinualStrategies
{
    /// <summary>Plain fine-tuning from the previous weights (and optimizer state): a warm start.</summary>
    None = 0,

    /// <summary>
    /// Experience replay: a bounded memory of exemplars (uint8 pixels) from earlier increments, chosen by class-balanced
    /// reservoir sampling, is mixed into every batch. Needs features in [0, 1].
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

    /// <summary>The most bytes (pixels plus a 4-byte class index per exemplar), or null when the budget is in rows.</summary>
    public long? MaxBytes { get; }

    /// <summary>At most <paramref name="rows"/> exemplars (each takes feature count + 4 bytes: 788 bytes for MNIST).</summary>
    /// <param name="rows">Positive number of exemplars.</param>
    public static ReplayBudget Rows(int rows)
    {
        if (rows <= 0)
            throw new ArgumentOutOfRangeException(nameof(rows), rows, "A replay budget needs room for at least one exemplar (rows > 0).");
        return new ReplayBudget(rows, null);
    }

    /// <summary>At most <paramref name="bytes"/> bytes of exemplars (pixels as uint8 plus a 4-byte class index each).</summary>
    /// <param name="bytes">Positive number of bytes; it must hold at least one exemplar.</param>
    public static ReplayBudget Bytes(long bytes)
    {
        if (bytes <= 0)
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "A replay budget in bytes must be positive.");
        return new ReplayBudget(null, bytes);
    }

    /// <summary>The number of exemplars the budget allows for rows of <paramref name="featureLength"/> values.</summary>
    /// <param name="featureLength">Values per row.</param>
    public int CapacityFor(int featureLength)
    {
        if (MaxRows is { } rows)
            return rows;
        long perRow = ReplayMemory.BytesPerExemplar(featureLength);
        long capacity = MaxBytes!.Value / perRow;
        if (capacity < 1)
            throw new ArgumentOutOfRangeException("options", MaxBytes,
                $"ContinueTrainingOptions.ReplayBudget is {MaxBytes} bytes, less than one exemplar of {featureLength} features needs ({perRow} bytes). Give a larger budget.");
        return (int)Math.Min(capacity, int.MaxValue);
    }

    /// <summary>"1,000 rows" or "784,000 bytes".</summary>
    public override string ToString() => MaxRows is { } r ? $"{r:N0} rows" : $"{MaxBytes:N0} bytes";
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

    private protected override double DefaultLearningRateFactor => 1;

    private protected override int MinEpochs => 1;

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
    /// information. Its label must be a key whose key values are among the previous model's class names. Required for
    /// <see cref="ContinualStrategies.ElasticWeightConsolidation"/> in that case; without it replay starts with an empty
    /// memory (only later increments replay). Ignored when the previous model carries the state.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public IDataView? PreviousData { get; set; }

    /// <summary>Size of the replay memory. Default: 1,000 rows.</summary>
    public ReplayBudget ReplayBudget { get; set; } = ReplayBudget.Rows(1000);

    /// <summary>
    /// Share of each batch taken from the replay memory, in [0, 0.95]. Default (null): the larger of the share of classes
    /// that only the memory holds (so that every class is seen about equally often) and the memory's share of all rows
    /// (so that every exemplar is seen as often as every new row).
    /// </summary>
    public double? ReplayFraction { get; set; }

    /// <summary>Distillation temperature for learning without forgetting. Default 2 (Li &amp; Hoiem).</summary>
    public double LwfTemperature { get; set; } = 2;

    /// <summary>Weight of the distillation term against the cross-entropy for learning without forgetting. Default 1.</summary>
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
