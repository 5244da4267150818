using System.Globalization;
using System.Text;
using System.Text.Json.Serialization;
using MLNet.Compression.Networks;

namespace MLNet.Compression.Pruning;

/// <summary>How sparse one weighted layer is (biases are not counted: they are never pruned).</summary>
/// <param name="Name">Layer name ("fc1", "conv2", "output").</param>
/// <param name="Units">Output neurons or filters the layer has now.</param>
/// <param name="OriginalUnits">Output neurons or filters before pruning (differs from <paramref name="Units"/> after structured pruning).</param>
/// <param name="Weights">Weights the layer has now.</param>
/// <param name="OriginalWeights">Weights before pruning.</param>
/// <param name="ZeroWeights">Weights that are exactly zero now.</param>
/// <param name="TargetSparsity">The layer's target, when it was pruned to one of its own (null: left dense, pooled in a global threshold, or not a pruning result).</param>
public sealed record LayerPruningStats(string Name, int Units, int OriginalUnits, long Weights, long OriginalWeights, long ZeroWeights, double? TargetSparsity)
{
    /// <summary>Fraction of the layer's original weights that are gone (structured) or zero: <c>1 − nonzero / OriginalWeights</c>.</summary>
    public double Sparsity => OriginalWeights == 0 ? 0 : 1 - (double)(Weights - ZeroWeights) / OriginalWeights;
}

/// <summary>The sparsity a model has, per layer and overall; after pruning, also how far the schedule got.</summary>
public sealed record PruningReport : CompressionStageReport
{
    [JsonConstructor]
    internal PruningReport(IReadOnlyList<LayerPruningStats> layers, double? targetSparsity, long stepsRun, long? plannedEndStep, bool scheduleCompleted,
        PruningGranularity? granularity, IReadOnlyList<string>? warnings = null, int fineTuningEpochs = 0, double? fineTuningLearningRate = null)
    {
        Warnings = warnings ?? [];
        FineTuningEpochs = fineTuningEpochs;
        FineTuningLearningRate = fineTuningLearningRate;
        Layers = layers;
        TargetSparsity = targetSparsity;
        StepsRun = stepsRun;
        PlannedEndStep = plannedEndStep;
        ScheduleCompleted = scheduleCompleted;
        Granularity = granularity;
    }

    /// <summary>
    /// What the user should know about the run, e.g. a target sparsity not reached because fine-tuning ended before the
    /// schedule did, or an accuracy on the first 2,000 training rows more than 5 points below the source model's (also logged
    /// as warnings, and part of <see cref="ToString"/>). Empty when all went as planned.
    /// </summary>
    public IReadOnlyList<string> Warnings { get; }

    /// <summary>Every weighted layer, in order.</summary>
    public IReadOnlyList<LayerPruningStats> Layers { get; }

    /// <summary>Weights the model has now.</summary>
    public long Weights => Layers.Sum(l => l.Weights);

    /// <summary>Weights before pruning.</summary>
    public long OriginalWeights => Layers.Sum(l => l.OriginalWeights);

    /// <summary>Weights that are exactly zero.</summary>
    public long ZeroWeights => Layers.Sum(l => l.ZeroWeights);

    /// <summary>Fraction of the original weights that are gone or zero, over all layers.</summary>
    public double Sparsity => OriginalWeights == 0 ? 0 : 1 - (double)(Weights - ZeroWeights) / OriginalWeights;

    /// <summary>
    /// The overall sparsity aimed at: the schedule's final sparsity for <see cref="PruningGranularity.Global"/> (over the
    /// pooled layers), the weight-weighted mean of the layer targets for <see cref="PruningGranularity.PerLayer"/>; null otherwise.
    /// </summary>
    public double? TargetSparsity { get; }

    /// <summary>Fine-tuning epochs the pruning run made (set, or chosen by the data-size default of <see cref="FineTuningOptions.Epochs"/>).</summary>
    public int FineTuningEpochs { get; }

    /// <summary>The fine-tuning learning rate the pruning run used; null for a report computed from a model's weights.</summary>
    public double? FineTuningLearningRate { get; }

    /// <summary>Optimizer steps the pruning run made (0 for a report computed from a model's weights).</summary>
    public long StepsRun { get; }

    /// <summary>The schedule's last step, when it has one.</summary>
    public long? PlannedEndStep { get; }

    /// <summary>Whether the run reached the schedule's last mask update (false: the sparsity reached is below the plan; a warning was logged).</summary>
    public bool ScheduleCompleted { get; }

    /// <summary>What was pruned, or null for a report computed from a model's weights.</summary>
    public PruningGranularity? Granularity { get; }

    /// <summary>Per-layer sparsity of <paramref name="model"/>'s weights (no targets).</summary>
    internal static PruningReport FromWeights(NetworkModel model) =>
        new(model.ParameterizedLayers.Select(l => Stats(l, l, null)).ToArray(), null, 0, null, true, null);

    internal static LayerPruningStats Stats(ParameterizedLayer now, ParameterizedLayer original, double? target) =>
        new(now.Name, now.OutputUnits, original.OutputUnits, now.Weight.LongLength, original.Weight.LongLength, CountZeros(now.Weight), target);

    private static long CountZeros(float[] values)
    {
        long zeros = 0;
        foreach (var v in values)
            if (v == 0f)
                zeros++;
        return zeros;
    }

    /// <summary>A table: one line per layer, then the total.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        var c = CultureInfo.InvariantCulture;
        sb.AppendLine(c, $"{"layer",-10} {"units",11} {"weights",17} {"zero",10} {"sparsity",9} {"target",7}");
        foreach (var l in Layers)
            sb.AppendLine(c, $"{l.Name,-10} {(l.Units == l.OriginalUnits ? l.Units.ToString(c) : $"{l.Units}/{l.OriginalUnits}"),11} " +
                             $"{(l.Weights == l.OriginalWeights ? l.Weights.ToString("N0", c) : $"{l.Weights:N0}/{l.OriginalWeights:N0}"),17} " +
                             $"{l.ZeroWeights,10:N0} {l.Sparsity,9:P1} {(l.TargetSparsity is { } t ? t.ToString("P0", c) : "-"),7}");
        sb.Append(c, $"{"total",-10} {"",11} {Weights,17:N0} {ZeroWeights,10:N0} {Sparsity,9:P1} {(TargetSparsity is { } tt ? tt.ToString("P0", c) : "-"),7}");
        if (StepsRun > 0 || PlannedEndStep is not null)
            sb.Append(c, $"{Environment.NewLine}{StepsRun:N0} step(s) run{(PlannedEndStep is { } e ? string.Format(c, ", schedule ends at step {0:N0}", e) : string.Empty)}{(ScheduleCompleted ? string.Empty : " (not reached)")}");
        if (FineTuningLearningRate is { } lr)
            sb.Append(c, $"; fine-tuning {FineTuningEpochs} epoch(s) at learning rate {lr:G3}");
        foreach (var warning in Warnings)
            sb.Append(c, $"{Environment.NewLine}WARNING: {warning}");
        return sb.ToString();
    }
}
