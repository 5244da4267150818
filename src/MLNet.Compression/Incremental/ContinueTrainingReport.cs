using System.Globalization;
using System.Text;
using System.Text.Json.Serialization;
using MLNet.Compression.Memory;
using MLNet.Compression.Quantization;

namespace MLNet.Compression.Incremental;

/// <summary>What one increment of continued training did, and the memory the model carries afterwards.</summary>
public sealed record ContinueTrainingReport : CompressionStageReport
{
    [JsonConstructor]
    internal ContinueTrainingReport()
    {
    }

    /// <summary>How many increments the model has been through (1 after the first <c>ContinueTraining</c>).</summary>
    [JsonInclude]
    public int Increment { get; internal init; }

    /// <summary>The strategies used.</summary>
    [JsonInclude]
    public ContinualStrategies Strategies { get; internal init; }

    /// <summary>Epochs run over the new data.</summary>
    [JsonInclude]
    public int Epochs { get; internal init; }

    /// <summary>Optimizer steps run.</summary>
    [JsonInclude]
    public long Steps { get; internal init; }

    /// <summary>Rows of the new data with a label.</summary>
    [JsonInclude]
    public long NewRows { get; internal init; }

    /// <summary>Share of each batch taken from the replay memory (0 without replay or with an empty memory).</summary>
    [JsonInclude]
    public double ReplayFraction { get; internal init; }

    /// <summary>Exemplars in the memory while training (from earlier increments).</summary>
    [JsonInclude]
    public int ExemplarsReplayed { get; internal init; }

    /// <summary>Whether training started from the previous model's optimizer state.</summary>
    [JsonInclude]
    public bool OptimizerStateReused { get; internal init; }

    /// <summary>The previous model's classes.</summary>
    [JsonInclude]
    public IReadOnlyList<string> ClassesBefore { get; internal init; } = [];

    /// <summary>The new model's classes: the previous ones, then the ones the new data added.</summary>
    [JsonInclude]
    public IReadOnlyList<string> Classes { get; internal init; } = [];

    /// <summary>Classes the new data added (the output layer grew by one row each).</summary>
    public IReadOnlyList<string> AddedClasses => Classes.Skip(ClassesBefore.Count).ToArray();

    /// <summary>Weights that were exactly zero in the previous model and were held at zero (pruned models).</summary>
    [JsonInclude]
    public long MaskedZeroWeights { get; internal init; }

    /// <summary>Weights exactly zero before and after the increment.</summary>
    [JsonIgnore]
    public (long Before, long After) ZeroWeights { get; internal init; }

    /// <summary>The first of <see cref="ZeroWeights"/>, as JSON carries it (a tuple has no named members there).</summary>
    [JsonInclude]
    [JsonPropertyName("ZeroWeightsBefore")]
    private long ZeroWeightsBefore
    {
        get => ZeroWeights.Before;
        init => ZeroWeights = (value, ZeroWeights.After);
    }

    /// <summary>The second of <see cref="ZeroWeights"/>, as JSON carries it.</summary>
    [JsonInclude]
    [JsonPropertyName("ZeroWeightsAfter")]
    private long ZeroWeightsAfter
    {
        get => ZeroWeights.After;
        init => ZeroWeights = (ZeroWeights.Before, value);
    }

    /// <summary>The quantization mode the result was re-quantized with (the previous model's), or null.</summary>
    [JsonInclude]
    public QuantizationMode? Requantized { get; internal init; }

    /// <summary>EWC's penalty (λ/2) Σ F (θ − θ*)² at the end of training, or null without EWC.</summary>
    [JsonInclude]
    public double? EwcPenalty { get; internal init; }

    /// <summary>Parameters of the new model.</summary>
    [JsonInclude]
    public long Parameters { get; internal init; }

    /// <summary>Bytes of the shipped model (the ONNX artifact, quantized when the model is).</summary>
    [JsonInclude]
    public long ModelBytes { get; internal init; }

    /// <summary>
    /// Bytes of the replay memory the new model carries: per exemplar its packed features, a 4-byte class index and, with logit
    /// replay, 2 bytes per class; plus 8 bytes per feature for the ranges when some range is not [0, 1].
    /// </summary>
    [JsonInclude]
    public long ReplayBytes { get; internal init; }

    /// <summary>The most bytes the replay memory may hold under its budget.</summary>
    [JsonInclude]
    public long ReplayBudgetBytes { get; internal init; }

    /// <summary>Bits per feature of the stored exemplars (<see cref="ContinueTrainingOptions.ReplayEncoding"/>), or null without replay.</summary>
    [JsonInclude]
    public int? ReplayBitsPerFeature { get; internal init; }

    /// <summary>How the memory chose its exemplars.</summary>
    [JsonInclude]
    public ExemplarSelection ReplaySelection { get; internal init; }

    /// <summary>Exemplars the new model carries.</summary>
    [JsonInclude]
    public int ExemplarsHeld { get; internal init; }

    /// <summary>
    /// Feature values clamped into their stored range so far (over all increments): values that could not widen a range
    /// (infinite ones). Ranges otherwise widen to cover the data, so this is normally 0.
    /// </summary>
    [JsonInclude]
    public long ClampedValues { get; internal init; }

    /// <summary>Exemplars the new model carries, per class name (binary: "False" and "True"; regression, one reservoir: "Score").</summary>
    [JsonInclude]
    public IReadOnlyDictionary<string, int> ExemplarsPerClass { get; internal init; } = new Dictionary<string, int>();

    /// <summary>Bytes of the EWC state the new model carries (Fisher information and anchor weights, float32).</summary>
    [JsonInclude]
    public long EwcBytes { get; internal init; }

    /// <summary><see cref="ModelBytes"/> + <see cref="ReplayBytes"/> + <see cref="EwcBytes"/>: what the model takes to the next increment.</summary>
    public long TotalBytes => ModelBytes + ReplayBytes + EwcBytes;

    /// <summary>
    /// The bound <see cref="TotalBytes"/> stays under for a fixed class count, however many increments run:
    /// <see cref="ModelBytes"/> + <see cref="ReplayBudgetBytes"/> + <see cref="EwcBytes"/> (EWC keeps one Fisher and one
    /// anchor whatever the number of tasks). Only class growth adds: one output row per new class.
    /// </summary>
    public long BoundBytes => ModelBytes + ReplayBudgetBytes + EwcBytes;

    /// <summary>Wall-clock seconds of the whole increment (training, memory update, Fisher, re-quantization).</summary>
    [JsonInclude]
    public double Seconds { get; internal init; }

    /// <summary>A summary: strategies, classes, steps, and the memory carried forward.</summary>
    public override string ToString()
    {
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append(c, $"Increment {Increment}: {Strategies}, {Epochs} epoch(s), {Steps:N0} steps on {NewRows:N0} new rows");
        if (ReplayFraction > 0)
            sb.Append(c, $" + {ReplayFraction:P0} of each batch from {ExemplarsReplayed:N0} exemplars");
        sb.AppendLine(OptimizerStateReused ? ", optimizer state reused." : ", fresh optimizer state.");
        sb.Append(c, $"classes: {Classes.Count}");
        if (AddedClasses.Count > 0)
            sb.Append(c, $" ({string.Join(", ", AddedClasses)} added)");
        if (MaskedZeroWeights > 0)
            sb.Append(c, $"; {MaskedZeroWeights:N0} pruned weights held at zero ({ZeroWeights.Before:N0} -> {ZeroWeights.After:N0} zeros)");
        if (Requantized is { } q)
            sb.Append(c, $"; re-quantized {q}");
        if (EwcPenalty is { } p)
            sb.Append(c, $"; EWC penalty {p:G4}");
        sb.AppendLine();
        sb.Append(c, $"memory carried: model {MemoryReport.FormatBytes(ModelBytes)} + replay {MemoryReport.FormatBytes(ReplayBytes)}");
        if (ReplayBitsPerFeature is { } bits)
            sb.Append(c, $" ({ExemplarsHeld:N0} {bits}-bit exemplars, {ReplaySelection}{(ClampedValues > 0 ? $", {ClampedValues:N0} values clamped" : string.Empty)})");
        sb.Append(c, $" (budget {MemoryReport.FormatBytes(ReplayBudgetBytes)}) + EWC {MemoryReport.FormatBytes(EwcBytes)} = {MemoryReport.FormatBytes(TotalBytes)}");
        sb.Append(c, $" (bound {MemoryReport.FormatBytes(BoundBytes)}); {Seconds:F1} s");
        return sb.ToString();
    }
}
