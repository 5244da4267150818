using MLNet.Compression.Networks;

namespace MLNet.Compression.Onnx;

/// <summary>
/// Writes the ONNX nodes and initializers of one layer. The default writes float32 weights as dense initializers and a
/// plain Gemm/Conv. Compression stages override the narrowest hook that fits:
/// <list type="bullet">
/// <item><see cref="EmitWeight"/>/<see cref="EmitBias"/> to change only how a tensor is stored (e.g. an int8 initializer
/// plus a DequantizeLinear node, a sparse initializer, or a codebook plus a Gather), returning the name of a float tensor
/// in the layer's weight layout;</item>
/// <item><see cref="EmitDense"/>/<see cref="EmitConv"/> to change the operator itself (e.g. MatMulInteger with dynamic
/// activation quantization).</item>
/// </list>
/// </summary>
internal class OnnxLayerEmitter
{
    /// <summary>The float32 dense encoding.</summary>
    public static OnnxLayerEmitter Default { get; } = new();

    /// <summary>Adds the layer's weight tensor ([out, in] or [out, in/groups, k, k]) and returns the value name the operator reads.</summary>
    public virtual string EmitWeight(OnnxGraphBuilder graph, ParameterizedLayer layer) =>
        graph.AddFloatInitializer(layer.Name + ".weight", layer.Weight, layer.WeightShape);

    /// <summary>Adds the layer's bias ([out]) and returns the value name the operator reads.</summary>
    public virtual string EmitBias(OnnxGraphBuilder graph, ParameterizedLayer layer) =>
        graph.AddFloatInitializer(layer.Name + ".bias", layer.Bias, [layer.Bias.Length]);

    /// <summary>Emits y = x·Wᵀ + b for an input of shape [N, in]; returns the output value name (before activation).</summary>
    public virtual string EmitDense(OnnxGraphBuilder graph, DenseModelLayer layer, string input)
    {
        var w = EmitWeight(graph, layer);
        var b = EmitBias(graph, layer);
        return graph.AddNode("Gemm", [input, w, b], layer.Name, new Dictionary<string, object> { ["transB"] = 1L });
    }

    /// <summary>Emits a 2-D convolution (NCHW) with the layer's stride, padding and groups; returns the output value name.</summary>
    public virtual string EmitConv(OnnxGraphBuilder graph, ConvModelLayer layer, string input)
    {
        var w = EmitWeight(graph, layer);
        var b = EmitBias(graph, layer);
        return graph.AddNode("Conv", [input, w, b], layer.Name, new Dictionary<string, object>
        {
            ["kernel_shape"] = new long[] { layer.Kernel, layer.Kernel },
            ["strides"] = new long[] { layer.Stride, layer.Stride },
            ["pads"] = new long[] { layer.Padding, layer.Padding, layer.Padding, layer.Padding },
            ["dilations"] = new long[] { 1, 1 },
            ["group"] = (long)layer.Groups,
        });
    }

    /// <summary>Emits the activation after a parameterized layer; returns the output value name.</summary>
    public virtual string EmitActivation(OnnxGraphBuilder graph, ParameterizedLayer layer, string input) =>
        layer.Activation switch
        {
            Activation.None => input,
            Activation.Relu => graph.AddNode("Relu", [input], layer.Name + ".relu"),
            _ => throw new NotSupportedException($"Layer '{layer.Name}': activation {layer.Activation} cannot be exported to ONNX."),
        };
}
