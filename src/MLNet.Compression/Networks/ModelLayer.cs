using MLNet.Compression.Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.Compression.Networks;

/// <summary>
/// One resolved layer of a <see cref="NetworkModel"/>: sizes known, weights held as flat float arrays. Each layer type
/// (one file under Networks/) derives from this class and owns its TorchSharp module, its ONNX emission, its
/// structured-pruning rule and its activation-memory estimate; its spec record and JSON form live in the same file, and
/// <see cref="LayerRegistry"/> is the one list of layer types.
/// </summary>
internal abstract class ModelLayer
{
    protected ModelLayer(string name, int[] inputShape, int[] outputShape)
    {
        Name = name;
        InputShape = inputShape;
        OutputShape = outputShape;
    }

    /// <summary>Stable name used for parameters ("fc1", "conv2", "output").</summary>
    public string Name { get; }

    /// <summary>Shape of one example entering the layer (no batch dimension).</summary>
    public int[] InputShape { get; }

    /// <summary>Shape of one example leaving the layer (no batch dimension).</summary>
    public int[] OutputShape { get; }

    /// <summary>Whether the layer has weights.</summary>
    public virtual bool HasParameters => false;

    /// <summary>
    /// Whether the layer only moves, selects or (in evaluation) passes through values, so that an input quantized to uint8
    /// stays quantized (max-pooling, flatten, dropout): static quantization carries a layer's quantized output across it.
    /// </summary>
    public virtual bool KeepsQuantizedValues => false;

    public abstract ModelLayer Clone();

    /// <summary>
    /// The TorchSharp modules of the layer in order, with their names in the network's Sequential body; for a layer with
    /// weights the first is the module that holds them ("weight" and "bias" parameters).
    /// </summary>
    public abstract IEnumerable<(string Name, nn.Module<Tensor, Tensor> Module)> CreateModules();

    /// <summary>
    /// Writes the layer's ONNX nodes reading <paramref name="input"/> and returns its output value name. Weighted layers ask
    /// <paramref name="encoding"/> (float32, float16, int8, int4, sparse or clustered storage) for their tensors.
    /// </summary>
    public abstract string EmitOnnx(OnnxGraphBuilder graph, OnnxLayerEmitter encoding, string input);

    /// <summary>
    /// Why this layer cannot be written in <paramref name="encoding"/>, or null when it can (layers without weights take
    /// every encoding). <see cref="LayerEncodings.EnsureSupported"/> is the one place that turns this into an error.
    /// </summary>
    public virtual string? CannotEncode(LayerEncoding encoding) => null;

    /// <summary>
    /// Structured pruning: the layer rebuilt for the surviving input channels or features <paramref name="keptIn"/> (null: all),
    /// keeping the output units <paramref name="keepOwn"/> (null: all; only layers whose <see cref="UnitsNotRemovable"/> is null
    /// are given a list). Returns the new layer; <paramref name="keptOut"/> is the surviving output channels or features (null: all).
    /// </summary>
    public abstract ModelLayer Shrink(int[]? keptIn, int[]? keepOwn, out int[]? keptOut);

    /// <summary>Why the output units of this layer cannot be removed by name (the rest of "Layer 'x' ..."), or null when they can.</summary>
    public virtual string? UnitsNotRemovable => "has no weights, so it has no units to remove.";

    /// <summary>Activation values one example keeps for the backward pass (the output, plus e.g. the activation's or a mask's copy).</summary>
    public virtual long ActivationElements => ShapeSize(OutputShape);

    /// <summary>Number of values in a shape.</summary>
    internal static long ShapeSize(IReadOnlyList<int> shape)
    {
        long n = 1;
        foreach (var d in shape)
            n *= d;
        return n;
    }
}

/// <summary>A layer with a weight tensor and a bias vector.</summary>
internal abstract class ParameterizedLayer : ModelLayer
{
    protected ParameterizedLayer(string name, int[] inputShape, int[] outputShape, int[] weightShape, Activation activation)
        : base(name, inputShape, outputShape)
    {
        WeightShape = weightShape;
        Activation = activation;
        long count = 1;
        try
        {
            foreach (var d in weightShape)
                count = checked(count * d);
            if (count > Array.MaxLength)
                throw new OverflowException();
        }
        catch (OverflowException e)
        {
            throw new ArgumentException(
                $"Layer '{name}' would have {string.Join(" x ", weightShape)} weights, more than one array holds ({Array.MaxLength:N0}); use fewer units, channels or a smaller kernel.",
                "architecture", e);
        }
        weightCount = (int)count;
    }

    // Allocated on first use, so that a network can be resolved (shapes checked against a file's sizes) before any weight exists.
    private readonly int weightCount;
    private float[]? weight;
    private float[]? bias;

    public override bool HasParameters => true;

    /// <summary>Weight shape in PyTorch/ONNX layout: [out, in] for dense, [out, in/groups, k, k] for conv.</summary>
    public int[] WeightShape { get; }

    public Activation Activation { get; }

    /// <summary>Row-major weights in <see cref="WeightShape"/> layout (zeros until set; allocated on first use).</summary>
    public float[] Weight
    {
        get => weight ??= new float[weightCount];
        set => weight = value;
    }

    /// <summary>One bias per output unit or channel (zeros until set; allocated on first use).</summary>
    public float[] Bias
    {
        get => bias ??= new float[WeightShape[0]];
        set => bias = value;
    }

    /// <summary>Number of weights the shape holds (known without allocating them).</summary>
    public int WeightCount => weightCount;

    /// <summary>Number of output units (dense) or filters (conv): the first weight dimension.</summary>
    public int OutputUnits => WeightShape[0];

    /// <summary>Weights per output unit or filter.</summary>
    public int FanIn => weightCount / WeightShape[0];

    public long ParameterCount => (long)weightCount + WeightShape[0];

    public override string? UnitsNotRemovable => null;

    public override long ActivationElements => ShapeSize(OutputShape) * (Activation == Activation.None ? 1 : 2);

    /// <summary>The ONNX operator of the float layer ("Gemm", "Conv"), for reports.</summary>
    public abstract string OnnxOperator { get; }

    /// <summary>The fused int8 operator ONNX Runtime runs for the static (QDQ) encoding ("QGemm", "QLinearConv"), for reports.</summary>
    public abstract string QuantizedOperator { get; }

    /// <summary>
    /// Whether the layer can be the network's output layer, whose <see cref="OutputUnits"/> are the output head's values
    /// (a flat vector per row: dense). The exporter refuses a network whose last layer cannot.
    /// </summary>
    public virtual bool CanBeOutputLayer => false;

    /// <summary>Whether the layer has its own int8 kernel for dynamic quantization (else its int8 weights are dequantized and computed in float).</summary>
    public virtual bool HasDynamicInt8Kernel => false;

    /// <summary>Whether the layer has its own 4-bit kernel (else the int4 weight-only mode stores it as int8 weights computed in float).</summary>
    public virtual bool HasInt4Kernel => false;

    /// <summary>
    /// The layer's function with the given weight and bias tensors (the module's own, or replacements such as fake-quantized
    /// weights), before the activation: what the module's forward computes.
    /// </summary>
    public abstract Tensor Forward(Tensor input, Tensor weight, Tensor bias);

    /// <summary>
    /// EWC's diagonal Fisher for a batch of rows: given the layer's <paramref name="input"/> (what its module receives, one row
    /// per example) and each row's gradient with respect to the layer's output before its activation
    /// (<paramref name="outputGradient"/>, same rows), the sum over the rows of each row's squared gradient of the weight
    /// (<see cref="WeightShape"/>) and of the bias, computed without mixing rows. Null (the default) when the layer type has no
    /// batched form: EWC then takes one backward pass per row for the whole network, so a new layer type works without it.
    /// </summary>
    public virtual (Tensor Weight, Tensor Bias)? SquaredGradientSums(Tensor input, Tensor outputGradient) => null;

    protected void CopyParametersFrom(ParameterizedLayer other)
    {
        Weight = (float[])other.Weight.Clone();
        Bias = (float[])other.Bias.Clone();
    }
}

/// <summary>The ways a layer's tensors can be written to ONNX.</summary>
internal enum LayerEncoding
{
    /// <summary>Dense float32.</summary>
    Float32,

    /// <summary>Float32 with compact storage of mostly-zero tensors.</summary>
    Sparse,

    /// <summary>Float16 weights.</summary>
    Float16,

    /// <summary>Int8 weights, activations quantized per row at run time.</summary>
    Int8Dynamic,

    /// <summary>Int8 weights and calibrated uint8 activations (QDQ).</summary>
    Int8Static,

    /// <summary>Int4 block-quantized weights.</summary>
    Int4WeightOnly,

    /// <summary>Codebook plus indices (weight clustering).</summary>
    Clustered,
}

/// <summary>The one place that says a layer cannot take an encoding.</summary>
internal static class LayerEncodings
{
    /// <summary>Throws when a layer of <paramref name="model"/> cannot be written in <paramref name="encoding"/>.</summary>
    /// <exception cref="NotSupportedException">A layer says it cannot take the encoding.</exception>
    public static void EnsureSupported(NetworkModel model, LayerEncoding encoding, IReadOnlyCollection<string>? keptFloat = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        foreach (var layer in model.Layers)
        {
            if (keptFloat?.Contains(layer.Name) == true)
                continue;
            if (layer.CannotEncode(encoding) is { } reason)
                throw new NotSupportedException(
                    $"Layer '{layer.Name}' ({layer.GetType().Name.Replace("ModelLayer", "", StringComparison.Ordinal)}) of '{model.Architecture.Name}' cannot be exported as {encoding}: {reason} " +
                    "Choose another encoding, or keep this layer in float (QuantizationOptions.KeepFloat).");
        }
    }
}
