namespace MLNet.Compression.Onnx;

/// <summary>Settings for <see cref="OnnxExporter.Export"/>.</summary>
internal sealed class OnnxExportOptions
{
    /// <summary>Default name of the graph input (and of the ML.NET feature column it binds to).</summary>
    public const string DefaultInputName = "Features";

    /// <summary>Default name of the probabilities output.</summary>
    public const string DefaultScoreName = "Score";

    /// <summary>Default name of the predicted class index output (0-based int64, shape [N]).</summary>
    public const string DefaultLabelIndexName = "PredictedLabelIndex";

    /// <summary>Name of the graph input: float [N, InputLength].</summary>
    public string InputName { get; init; } = DefaultInputName;

    /// <summary>Name of the probabilities output: float [N, classes], softmax over the logits.</summary>
    public string ScoreName { get; init; } = DefaultScoreName;

    /// <summary>Name of the predicted class output: int64 [N], the 0-based arg-max of the probabilities (first on ties).</summary>
    public string LabelIndexName { get; init; } = DefaultLabelIndexName;

    /// <summary>Default ONNX operator set (opset 17, IR version 8).</summary>
    public const int DefaultOpset = 17;

    /// <summary>The default-domain opset to declare; 13 to 23.</summary>
    public int Opset { get; init; } = DefaultOpset;

    /// <summary>Optional class names (one per output unit) stored in the model metadata.</summary>
    public IReadOnlyList<string>? ClassNames { get; init; }

    /// <summary>Extra metadata properties written into the model.</summary>
    public IReadOnlyDictionary<string, string>? Metadata { get; init; }

    /// <summary>
    /// Writes each layer's weights and operators; the default writes dense float weights. Compression stages pass a
    /// subclass that writes quantized, sparse or clustered encodings.
    /// </summary>
    public OnnxLayerEmitter LayerEmitter { get; init; } = OnnxLayerEmitter.Default;

    /// <summary>
    /// Whether weight tensors with many exact zeros (pruned models) are stored compactly; <see cref="SparseWeightsMode.Auto"/>
    /// by default. Applies when <see cref="LayerEmitter"/> is the default emitter. Scores are unchanged.
    /// </summary>
    public SparseWeightsMode SparseWeights { get; init; } = SparseWeightsMode.Auto;

    /// <summary>In <see cref="SparseWeightsMode.Auto"/>, the largest fraction of non-zero weights a tensor may have to be stored compactly.</summary>
    public double SparseDensityThreshold { get; init; } = Onnx.SparseWeights.DefaultDensityThreshold;

    /// <summary>The compact encoding used for sparse weight tensors.</summary>
    public SparseWeightEncoding SparseEncoding { get; init; } = SparseWeightEncoding.DeltaUInt8;
}
