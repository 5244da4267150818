using MLNet.Compression.Networks;
using MLNet.Compression.Quantization;

namespace MLNet.Compression.Onnx;

/// <summary>The compute path an encoding asks of a weighted layer that has kernels of its own for it.</summary>
internal enum WeightCompute
{
    /// <summary>The layer's float operator, reading the tensors the encoding supplies (float, dequantized, rebuilt).</summary>
    Float,

    /// <summary>Int8 weights with activations quantized per row at run time (the layer's integer kernel).</summary>
    DynamicInt8,

    /// <summary>Int4 block-quantized weights (the layer's 4-bit kernel).</summary>
    Int4,
}

/// <summary>
/// An encoding: how a layer's tensors are written to ONNX. Layers (<see cref="ModelLayer.EmitOnnx"/>) write their own
/// operators and ask the encoding for their tensors. The default writes float32 weights as dense initializers. Encodings
/// override the narrowest hook that fits:
/// <list type="bullet">
/// <item><see cref="EmitWeight"/>/<see cref="EmitBias"/> to change how a tensor is stored (e.g. an int8 initializer plus a
/// DequantizeLinear node, a sparse initializer, or a codebook plus a Gather), returning the name of a float tensor in the
/// layer's weight layout;</item>
/// <item><see cref="EmitInput"/> and <see cref="EmitActivation"/> to quantize a layer's input or output;</item>
/// <item><see cref="ComputeOf"/> to ask a layer for one of its integer kernels, which then reads
/// <see cref="QuantizeWeights"/> and stores integer tensors through <see cref="AddIntegerTensor"/>.</item>
/// </list>
/// </summary>
internal class OnnxLayerEmitter
{
    /// <summary>The float32 dense encoding.</summary>
    public static OnnxLayerEmitter Default { get; } = new();

    /// <summary>Which encoding this is (for the one check that every layer takes it).</summary>
    public virtual LayerEncoding Encoding => LayerEncoding.Float32;

    /// <summary>Layers this encoding writes in float32 whatever it is (not checked against <see cref="Encoding"/>).</summary>
    public virtual IReadOnlyCollection<string>? KeptFloat => null;

    /// <summary>Adds the layer's weight tensor ([out, in] or [out, in/groups, k, k]) and returns the value name the operator reads.</summary>
    public virtual string EmitWeight(OnnxGraphBuilder graph, ParameterizedLayer layer) =>
        graph.AddFloatInitializer(layer.Name + ".weight", layer.Weight, layer.WeightShape);

    /// <summary>Adds the layer's bias ([out]) and returns the value name the operator reads.</summary>
    public virtual string EmitBias(OnnxGraphBuilder graph, ParameterizedLayer layer) =>
        graph.AddFloatInitializer(layer.Name + ".bias", layer.Bias, [layer.Bias.Length]);

    /// <summary>The value the layer's operator reads as input (the input itself, or e.g. its quantize-dequantize).</summary>
    public virtual string EmitInput(OnnxGraphBuilder graph, ParameterizedLayer layer, string input) => input;

    /// <summary>Emits the activation after a parameterized layer; returns the output value name.</summary>
    public virtual string EmitActivation(OnnxGraphBuilder graph, ParameterizedLayer layer, string input) =>
        Activations.Emit(graph, layer.Name, layer.Activation, input);

    /// <summary>
    /// For <see cref="WeightCompute.DynamicInt8"/>: one activation scale per batch (DynamicQuantizeLinear) instead of one per row.
    /// </summary>
    public virtual bool PerBatchActivationScales => false;

    /// <summary>The compute path for <paramref name="layer"/>; <see cref="WeightCompute.Float"/> unless the encoding uses one of the layer's integer kernels.</summary>
    public virtual WeightCompute ComputeOf(ParameterizedLayer layer) => WeightCompute.Float;

    /// <summary>The layer's weights quantized for its integer kernel (encodings that return a non-float <see cref="ComputeOf"/>).</summary>
    public virtual QuantizedTensor QuantizeWeights(ParameterizedLayer layer) =>
        throw new InvalidOperationException($"The {Encoding} encoding has no integer weights for layer '{layer.Name}'.");

    /// <summary>
    /// Adds an int8 or int4 (<paramref name="bits"/>) tensor of <paramref name="values"/> (row-major, shape <paramref name="dims"/>)
    /// and returns the name of a value of that element type.
    /// </summary>
    public virtual string AddIntegerTensor(OnnxGraphBuilder graph, string name, sbyte[] values, long[] dims, int bits) =>
        throw new InvalidOperationException($"The {Encoding} encoding stores no integer tensors ('{name}').");
}
