using Microsoft.ML;
using MLNet.Compression.Distillation;

namespace MLNet.Compression.Pruning;

/// <summary>What a pruning step removes.</summary>
public enum PruningGranularity
{
    /// <summary>Magnitude pruning of single weights, each layer to its own target: the smallest |w| of each layer become zero.</summary>
    PerLayer,

    /// <summary>
    /// Magnitude pruning of single weights with one threshold across every prunable layer, so layers with many small
    /// weights (large dense layers) lose more than small, sensitive ones. Layers named in <see cref="PruningOptions.LayerSparsity"/>
    /// are pruned to their own target instead and left out of the global pool.
    /// </summary>
    Global,

    /// <summary>
    /// Removes whole neurons of hidden dense layers and whole filters of (non-depthwise) conv layers, those with the
    /// smallest L1 norm of incoming weights, together with the next layer's matching inputs: the network becomes
    /// genuinely smaller (fewer parameters and operations). Done in one shot at the start with the schedule's
    /// <see cref="PruningSchedule.FinalSparsity"/> as the fraction of units removed (or the layer's override), then the
    /// smaller network is fine-tuned. The output layer's units (the classes) are never removed.
    /// </summary>
    StructuredNeurons,
}

/// <summary>Options for <see cref="PruningEstimator"/>.</summary>
public sealed class PruningOptions
{
    /// <summary>When and how far to prune. Default: <c>PruningSchedule.ConstantSparsity(0.5)</c> (half the weights, from step 0).</summary>
    public PruningSchedule Schedule { get; set; } = PruningSchedule.ConstantSparsity(0.5);

    /// <summary>What is removed: single weights per layer (default), single weights with one global threshold, or whole neurons/filters.</summary>
    public PruningGranularity Granularity { get; set; } = PruningGranularity.PerLayer;

    /// <summary>
    /// Names of layers left unpruned ("fc1", "conv2", "output"...). Default: none, as in Han et al. 2015, who pruned the
    /// output layer of LeNet-300-100 too (to 26% of its weights). Add <c>"output"</c> to keep the output layer dense.
    /// Biases are never pruned.
    /// </summary>
    public ICollection<string> KeepDense { get; set; } = new List<string>();

    /// <summary>
    /// Per-layer targets that replace the schedule's final sparsity for the named layers, e.g. <c>["fc1"] = 0.92</c>,
    /// <c>["output"] = 0.74</c>. The layer follows the schedule's curve scaled to its own target:
    /// <c>sparsity(t) · target / FinalSparsity</c>. A target of 0 leaves the layer dense. Values must be in [0, 1).
    /// </summary>
    public IDictionary<string, double> LayerSparsity { get; set; } = new Dictionary<string, double>(StringComparer.Ordinal);

    /// <summary>Fine-tuning epochs over the data given to <c>Fit</c>. Default 2. 0 prunes in one shot without fine-tuning.</summary>
    public int Epochs { get; set; } = 2;

    /// <summary>Fine-tuning learning rate. Default (null): one tenth of the rate the model was trained with (Han et al. 2015).</summary>
    public double? LearningRate { get; set; }

    /// <summary>Fine-tuning batch size. Default (null): the model's training batch size.</summary>
    public int? BatchSize { get; set; }


    /// <summary>
    /// A teacher for the fine-tuning (knowledge distillation while the stage fine-tunes): any fitted <see cref="ITransformer"/>
    /// whose output has one score per class, e.g. the uncompressed model or a larger one. The loss becomes
    /// <see cref="Distillation"/>'s blend of the teacher's softened scores and the labels instead of the labels alone, which
    /// recovers more of the accuracy lost to compression. Default (null): the labels alone.
    /// </summary>
    public ITransformer? Teacher { get; set; }

    /// <summary>
    /// How <see cref="Teacher"/>'s scores are blended with the labels (temperature, alpha, score column, disk cache). Used only
    /// when <see cref="Teacher"/> is set. Default: T = 4, alpha = 0.9, teacher run on every batch.
    /// </summary>
    public DistillationOptions Distillation { get; set; } = new();

    /// <summary>Receives fine-tuning progress (stage <c>"prune"</c>).</summary>
    public IProgress<TrainingProgress>? Progress { get; set; }

    /// <summary>Returns a copy (the collections are copied too).</summary>
    public PruningOptions Clone() => new()
    {
        Schedule = Schedule,
        Granularity = Granularity,
        KeepDense = KeepDense is null ? null! : new List<string>(KeepDense),
        LayerSparsity = LayerSparsity is null ? null! : new Dictionary<string, double>(LayerSparsity, StringComparer.Ordinal),
        Epochs = Epochs,
        LearningRate = LearningRate,
        BatchSize = BatchSize,
        Progress = Progress,
        Teacher = Teacher,
        Distillation = Distillation?.Clone()!,
    };

    internal void Validate()
    {
        if (Schedule is null)
            throw new ArgumentNullException(nameof(Schedule), "PruningOptions.Schedule must be set, e.g. PruningSchedule.ConstantSparsity(0.8).");
        if (!Enum.IsDefined(Granularity))
            throw new ArgumentOutOfRangeException(nameof(Granularity), Granularity, "PruningOptions.Granularity is not a known value.");
        if (KeepDense is null)
            throw new ArgumentNullException(nameof(KeepDense), "PruningOptions.KeepDense must not be null (use an empty list).");
        if (LayerSparsity is null)
            throw new ArgumentNullException(nameof(LayerSparsity), "PruningOptions.LayerSparsity must not be null (use an empty dictionary).");
        foreach (var name in KeepDense)
            if (string.IsNullOrWhiteSpace(name))
                throw new ArgumentException("PruningOptions.KeepDense holds an empty layer name.", nameof(KeepDense));
        foreach (var (name, sparsity) in LayerSparsity)
        {
            if (string.IsNullOrWhiteSpace(name))
                throw new ArgumentException("PruningOptions.LayerSparsity holds an empty layer name.", nameof(LayerSparsity));
            if (!(sparsity >= 0 && sparsity < 1))
                throw new ArgumentOutOfRangeException(nameof(LayerSparsity), sparsity,
                    $"PruningOptions.LayerSparsity[\"{name}\"] = {sparsity}: a sparsity must be in [0, 1).");
            if (KeepDense.Contains(name) && sparsity > 0)
                throw new ArgumentException($"Layer '{name}' is both in PruningOptions.KeepDense and given a sparsity of {sparsity} in LayerSparsity; choose one.",
                    nameof(LayerSparsity));
        }
        if (Epochs < 0)
            throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "PruningOptions.Epochs must be 0 or more.");
        if (LearningRate is { } lr && (!(lr > 0) || double.IsInfinity(lr)))
            throw new ArgumentOutOfRangeException(nameof(LearningRate), lr, "PruningOptions.LearningRate must be a positive number (or null for a tenth of the model's rate).");
        if (BatchSize is { } b && b <= 0)
            throw new ArgumentOutOfRangeException(nameof(BatchSize), b, "PruningOptions.BatchSize must be positive (or null for the model's batch size).");
        TeacherGuidance.ValidateSettings(Teacher, Distillation, Epochs, "PruningOptions");
    }
}
