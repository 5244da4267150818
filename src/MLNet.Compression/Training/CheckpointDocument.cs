using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace MLNet.Compression.Training;

// The typed form of checkpoint.json. One class serves every format version: fields a version does not have stay null
// and fall back to their defaults; fields this library does not know (a newer minor addition) are ignored. Enumerations
// are stored by name (as version 2 did) and parsed by the reader, so an unknown name is reported with its field.

/// <summary>checkpoint.json: what the checkpoint holds and how large each binary entry is.</summary>
internal sealed class CheckpointDocument
{
    public string? Format { get; set; }

    public int? Version { get; set; }

    /// <summary>The architecture in <see cref="Networks.ArchitectureJson"/>'s form.</summary>
    public JsonNode? Architecture { get; set; }

    public List<string?>? Classes { get; set; }

    public string? LabelColumn { get; set; }

    public string? FeatureColumn { get; set; }

    /// <summary>The seed the model was trained with (resolved; <see cref="CheckpointOptions.Seed"/> is the option as set).</summary>
    public int? Seed { get; set; }

    public CheckpointOptions? Options { get; set; }

    /// <summary>The weighted layers in <c>weights.bin</c>'s order, with their shapes.</summary>
    public List<CheckpointLayer?>? Layers { get; set; }

    /// <summary>Version 3: the length of <c>weights.bin</c>.</summary>
    public CheckpointEntry? Weights { get; set; }

    /// <summary>Version 3: the length of <c>optimizer.bin</c> (absent when the model has no optimizer state).</summary>
    public CheckpointEntry? Optimizer { get; set; }

    public CheckpointIncremental? Incremental { get; set; }

    /// <summary>
    /// Version 3: the export encodings re-applied after the weights change, one step per encoding, in order, in the steps'
    /// own System.Text.Json form (see <see cref="IReapplicableStep"/>). Version 3 named quantization's epochs and learning
    /// rate <c>qatEpochs</c> and <c>qatLearningRate</c>; version 4 uses the options' own names.
    /// </summary>
    public JsonNode? Recipe { get; set; }

    /// <summary>Version 3: the output head (absent: multiclass, as every earlier checkpoint was).</summary>
    public string? Head { get; set; }

    /// <summary>
    /// Version 3: the length of <c>model.onnx</c>, the exported model exactly as it scored when saved (quantized, sparse or
    /// clustered), so a loaded checkpoint scores identically without re-calibrating. Absent in older checkpoints (their
    /// models are exported again, as float32).
    /// </summary>
    public CheckpointEntry? Onnx { get; set; }

    /// <summary>
    /// Version 3: <see cref="NeuralNetworkTransformer.CompressionHistory"/>, the reports of the stages that made the model, in
    /// their own System.Text.Json form (polymorphic on <c>$stage</c>).
    /// </summary>
    public JsonNode? History { get; set; }
}

/// <summary>Every persistable <see cref="NeuralNetworkOptions"/> property except the architecture and column names (stored beside).</summary>
internal sealed class CheckpointOptions
{
    public int? Epochs { get; set; }

    public int? BatchSize { get; set; }

    public double? LearningRate { get; set; }

    public string? Optimizer { get; set; }

    public string? LearningRateSchedule { get; set; }

    public double? Momentum { get; set; }

    public double? WeightDecay { get; set; }

    public string? Precision { get; set; }

    public string? Device { get; set; }

    public int? ScoringBatchSize { get; set; }

    public double? ValidationFraction { get; set; }

    public int? EarlyStoppingPatience { get; set; }

    /// <summary>The option as set (null: drawn from the context).</summary>
    public int? Seed { get; set; }

    public bool? Shuffle { get; set; }

    public int? ProgressInterval { get; set; }

    public long? ShuffleCacheLimitBytes { get; set; }

    public int? ShuffleBufferRows { get; set; }

    /// <summary>The option as set (null: the default).</summary>
    public int? Threads { get; set; }

    public Augmentation.CheckpointAugmentation? Augmentation { get; set; }

    public long? MemoryBudgetBytes { get; set; }

    public bool? AllowLowerPrecisionForBudget { get; set; }
}

/// <summary>One weighted layer as stored: its name, weight shape and bias length.</summary>
internal sealed class CheckpointLayer
{
    public string? Name { get; set; }

    public List<int>? WeightShape { get; set; }

    public int? Bias { get; set; }
}

/// <summary>A binary entry's declared (uncompressed) length in bytes.</summary>
internal sealed class CheckpointEntry
{
    public long? Bytes { get; set; }
}

/// <summary>The <c>incremental</c> object: what continued training carries.</summary>
internal sealed class CheckpointIncremental
{
    public int? Increments { get; set; }

    public CheckpointReplay? Replay { get; set; }

    public CheckpointEwc? Ewc { get; set; }
}

/// <summary>The replay memory's header, repeated from <c>replay.bin</c>.</summary>
internal sealed class CheckpointReplay
{
    public int? Exemplars { get; set; }

    public int? Capacity { get; set; }

    public int? FeatureLength { get; set; }

    /// <summary>Bytes of the stored exemplars (packed features, class indices, stored outputs, ranges), not the entry's length.</summary>
    public long? Bytes { get; set; }

    /// <summary>Bits per feature (absent in checkpoints written before exemplar encodings: 8).</summary>
    public int? Bits { get; set; }

    /// <summary>Network outputs stored per exemplar (logit replay; absent: 0).</summary>
    public int? LogitLength { get; set; }

    /// <summary>Feature values clamped into their ranges so far (absent: 0).</summary>
    public long? ClampedValues { get; set; }
}

/// <summary>The EWC state's header.</summary>
internal sealed class CheckpointEwc
{
    public int? Tasks { get; set; }

    /// <summary>Bytes of Fisher and anchor values, not the entry's length.</summary>
    public long? Bytes { get; set; }
}

/// <summary>Source-generated (de)serialisation of checkpoint.json: camelCase names, nulls left out, unknown fields ignored.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, ReadCommentHandling = System.Text.Json.JsonCommentHandling.Skip,
    NumberHandling = JsonNumberHandling.Strict, MaxDepth = 64)]
[JsonSerializable(typeof(CheckpointDocument))]
internal sealed partial class CheckpointJsonContext : JsonSerializerContext
{
}
