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

/// <summary>
/// Options for <see cref="PruningEstimator"/>. The fine-tuning settings come from <see cref="TeacherGuidedFineTuningOptions"/>:
/// <see cref="FineTuningOptions.Epochs"/> (default: 2, or more on small data, enough for
/// <see cref="FineTuningOptions.DefaultMinimumSteps"/> steps up to <see cref="FineTuningOptions.MaxDefaultEpochs"/>; 0 prunes
/// in one shot without fine-tuning), the learning rate (default: the rate the model was trained with), batch size,
/// teacher, progress (stage <c>"prune"</c>) and cancellation.
/// </summary>
public sealed class PruningOptions : TeacherGuidedFineTuningOptions
{
    /// <summary>Creates the default options: half the weights from step 0, two fine-tuning epochs.</summary>
    public PruningOptions()
        : base(defaultEpochs: 2)
    {
    }

    private protected override string OptionsName => nameof(PruningOptions);

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

    /// <summary>Returns a copy (the collections are copied too).</summary>
    public PruningOptions Clone() => CopyGuidedTo(new PruningOptions
    {
        Schedule = Schedule,
        Granularity = Granularity,
        KeepDense = KeepDense is null ? null! : new List<string>(KeepDense),
        LayerSparsity = LayerSparsity is null ? null! : new Dictionary<string, double>(LayerSparsity, StringComparer.Ordinal),
    });

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
        ValidateFineTuning();
    }
}
