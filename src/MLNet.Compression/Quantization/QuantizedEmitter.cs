using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Google.Protobuf;
using MLNet.Compression.Networks;
using MLNet.Compression.Onnx;
using MLNet.Compression.Onnx.Proto;
using DataType = MLNet.Compression.Onnx.Proto.TensorProto.Types.DataType;

namespace MLNet.Compression.Quantization;

/// <summary>
/// Writes the layers of a network quantized as a <see cref="QuantizationSpec"/> says (see <see cref="QuantizedExport"/> for the
/// graph of each mode). Layers named in <see cref="QuantizationSpec.KeepFloat"/> are written by the float32 default.
/// </summary>
internal sealed class QuantizedEmitter : OnnxLayerEmitter
{
    private readonly QuantizationSpec _spec;

    // Int8Static: for a weighted layer, the next weighted layer when only max-pooling/flatten lie between (its input range is
    // then the range of this layer's activated output), and whether it follows directly.
    private readonly Dictionary<string, (string Next, bool Adjacent)> _next = new(StringComparer.Ordinal);

    // Int8Static: the DequantizeLinear output already carrying a layer's input quantization (emitted after the previous activation).
    private readonly Dictionary<string, string> _quantizedInput = new(StringComparer.Ordinal);

    /// <summary>Creates the emitter for <paramref name="model"/> (validated against <paramref name="spec"/>).</summary>
    public QuantizedEmitter(NetworkModel model, QuantizationSpec spec)
    {
        QuantizedExport.Validate(model, spec);
        _spec = spec;
        var layers = model.Layers;
        for (int i = 0; i < layers.Count; i++)
        {
            if (layers[i] is not ParameterizedLayer)
                continue;
            int j = i + 1;
            while (j < layers.Count && layers[j] is MaxPoolModelLayer or FlattenModelLayer)
                j++;
            if (j < layers.Count && layers[j] is ParameterizedLayer next)
                _next[layers[i].Name] = (next.Name, j == i + 1);
        }
    }

    /// <summary>The specification being written.</summary>
    public QuantizationSpec Spec => _spec;

    private QuantizedExport.LayerPlan Plan(ParameterizedLayer layer) => QuantizedExport.PlanOf(layer, _spec);

    /// <inheritdoc />
    public override string EmitWeight(OnnxGraphBuilder graph, ParameterizedLayer layer)
    {
        switch (Plan(layer))
        {
            case QuantizedExport.LayerPlan.Float16:
            {
                var half = new byte[layer.Weight.Length * 2];
                for (int i = 0; i < layer.Weight.Length; i++)
                    BinaryPrimitives.WriteHalfLittleEndian(half.AsSpan(i * 2), QuantizedTensor.ToHalf(layer.Weight[i]));
                var w = AddConstant(graph, layer.Name + ".weight_fp16", DataType.Float16, half, Dims(layer.WeightShape));
                return graph.AddNode("Cast", [w], layer.Name + ".weight", new Dictionary<string, object> { ["to"] = (long)DataType.Float });
            }
            case QuantizedExport.LayerPlan.Int8WeightOnlyConv:
            case QuantizedExport.LayerPlan.Int8Qdq:
                return EmitInt8Weight(graph, layer, QuantizedTensor.Int8Symmetric(layer.Weight, layer.OutputUnits, _spec.PerChannel));
            default:
                return base.EmitWeight(graph, layer);
        }
    }

    /// <inheritdoc />
    public override string EmitBias(OnnxGraphBuilder graph, ParameterizedLayer layer)
    {
        if (Plan(layer) != QuantizedExport.LayerPlan.Int8Qdq)
            return base.EmitBias(graph, layer);
        // int32 bias with scale x_scale * w_scale (per channel), zero point 0: what QLinearConv/QGemm take.
        var (xScale, _) = QuantizedExport.ActivationParameters(_spec.InputRanges![layer.Name]);
        var wq = QuantizedTensor.Int8Symmetric(layer.Weight, layer.OutputUnits, _spec.PerChannel);
        var scales = wq.Scales.Select(s => xScale * s).ToArray();
        var q = new int[layer.Bias.Length];
        for (int i = 0; i < q.Length; i++)
            q[i] = (int)Math.Clamp(Math.Round((double)layer.Bias[i] / scales[scales.Length == 1 ? 0 : i]), int.MinValue, int.MaxValue);
        var b = graph.AddRawInitializer(layer.Name + ".bias_q", DataType.Int32, MemoryMarshal.AsBytes(q.AsSpan()), sizeof(int), [q.Length], q.Length);
        var s = AddScale(graph, layer.Name + ".bias_scale", scales);
        var attrs = scales.Length == 1 ? null : new Dictionary<string, object> { ["axis"] = 0L };
        return graph.AddNode("DequantizeLinear", [b, s], layer.Name + ".bias", attrs);
    }

    /// <inheritdoc />
    public override string EmitDense(OnnxGraphBuilder graph, DenseModelLayer layer, string input) => Plan(layer) switch
    {
        QuantizedExport.LayerPlan.Int8DynamicDense => EmitDynamicDense(graph, layer, input),
        QuantizedExport.LayerPlan.Int4Dense => EmitInt4Dense(graph, layer, input),
        QuantizedExport.LayerPlan.Int8Qdq => base.EmitDense(graph, layer, QuantizeInput(graph, layer, input)),
        _ => base.EmitDense(graph, layer, input),
    };

    /// <inheritdoc />
    public override string EmitConv(OnnxGraphBuilder graph, ConvModelLayer layer, string input) => Plan(layer) switch
    {
        QuantizedExport.LayerPlan.Int8Qdq => base.EmitConv(graph, layer, QuantizeInput(graph, layer, input)),
        _ => base.EmitConv(graph, layer, input),
    };

    /// <inheritdoc />
    public override string EmitActivation(OnnxGraphBuilder graph, ParameterizedLayer layer, string input)
    {
        // Int4: ONNX Runtime fuses MatMul + Add + Relu into a float FusedGemm before its DequantizeLinear → MatMulNBits rewrite
        // runs, which would leave the 4-bit weights dequantized on every run; Max(y, 0) is the same function and is not fused.
        if (Plan(layer) == QuantizedExport.LayerPlan.Int4Dense && layer.Activation == Activation.Relu)
            return graph.AddNode("Max", [input, graph.AddFloatInitializer(layer.Name + ".relu_zero", [0f], [])], layer.Name + ".relu");
        var y = base.EmitActivation(graph, layer, input);
        // Int8Static: quantize the activated output with the next weighted layer's input range, so that ONNX Runtime sees
        // DQ → Conv/Gemm → (Relu) → Q and fuses it into QLinearConv/QGemm with a quantized output (max-pooling in between runs on uint8).
        if (_spec.Mode != QuantizationMode.Int8Static || Plan(layer) != QuantizedExport.LayerPlan.Int8Qdq
            || !_next.TryGetValue(layer.Name, out var next) || _spec.KeepFloat?.Contains(next.Next) == true)
            return y;
        var dq = QuantizeDequantize(graph, next.Next, y);
        if (next.Adjacent)
            _quantizedInput[next.Next] = dq;
        return dq;
    }

    private string QuantizeInput(OnnxGraphBuilder graph, ParameterizedLayer layer, string input) =>
        _quantizedInput.TryGetValue(layer.Name, out var dq) && dq == input ? input : QuantizeDequantize(graph, layer.Name, input);

    private string QuantizeDequantize(OnnxGraphBuilder graph, string layerName, string input)
    {
        var (scale, zp) = QuantizedExport.ActivationParameters(_spec.InputRanges![layerName]);
        var s = graph.AddFloatInitializer(layerName + ".input_scale", [scale], []);
        var z = graph.AddRawInitializer(layerName + ".input_zero_point", DataType.Uint8, [zp], 1, [], 1);
        var q = graph.AddNode("QuantizeLinear", [input, s, z], layerName + ".input_q");
        return graph.AddNode("DequantizeLinear", [q, s, z], layerName + ".input_dq");
    }

    private static string EmitInt8Weight(OnnxGraphBuilder graph, ParameterizedLayer layer, QuantizedTensor q)
    {
        var w = graph.AddRawInitializer(layer.Name + ".weight_q", DataType.Int8, MemoryMarshal.AsBytes(q.Values!.AsSpan()), 1,
            Dims(layer.WeightShape), q.Values!.Length);
        var s = AddScale(graph, layer.Name + ".weight_scale", q.Scales);
        var zeros = new sbyte[q.Scales.Length];
        var z = graph.AddRawInitializer(layer.Name + ".weight_zero_point", DataType.Int8, MemoryMarshal.AsBytes(zeros.AsSpan()), 1,
            q.Scales.Length == 1 ? [] : [zeros.Length], zeros.Length);
        var attrs = q.Scales.Length == 1 ? null : new Dictionary<string, object> { ["axis"] = 0L };
        return graph.AddNode("DequantizeLinear", [w, s, z], layer.Name + ".weight", attrs);
    }

    /// <summary>
    /// Per-row dynamic quantization: each row's activations get their own uint8 scale and zero point (from that row's
    /// min and max, widened to include 0), MatMulInteger multiplies them with the int8 weights [in, out], and the zero point
    /// is taken out with the weights' column sums: y = (x_q·W − zp·colsum(W)) · x_scale · w_scale + b. Unlike
    /// DynamicQuantizeLinear (one scale for the whole batch), a row's result does not depend on the other rows it is scored
    /// with, so batched in-process scoring and ML.NET's one-row-at-a-time scoring give identical outputs.
    /// </summary>
    private string EmitDynamicDense(OnnxGraphBuilder graph, DenseModelLayer layer, string input)
    {
        var q = QuantizedTensor.Int8Symmetric(layer.Weight, layer.OutputUnits, _spec.PerChannel);
        int k = layer.InFeatures, n = layer.OutFeatures;
        var transposed = new sbyte[q.Values!.Length];
        var columnSums = new float[n];
        for (int o = 0; o < n; o++)
            for (int i = 0; i < k; i++)
            {
                transposed[i * n + o] = q.Values[o * k + i];
                columnSums[o] += q.Values[o * k + i];
            }
        string name = layer.Name;
        var w = graph.AddRawInitializer(name + ".weight_q", DataType.Int8, MemoryMarshal.AsBytes(transposed.AsSpan()), 1, [k, n], transposed.Length);
        var ws = AddScale(graph, name + ".weight_scale", q.Scales);
        var colsum = graph.AddFloatInitializer(name + ".weight_column_sums", columnSums, [1, n]);
        var zero = graph.AddFloatInitializer(name + ".zero", [0f], []);
        var levels = graph.AddFloatInitializer(name + ".levels", [255f], []);
        var tiny = graph.AddFloatInitializer(name + ".min_scale", [1e-30f], []);
        var rowAxis = new Dictionary<string, object> { ["axes"] = new long[] { 1 }, ["keepdims"] = 1L };
        var rowMin = graph.AddNode("Min", [graph.AddNode("ReduceMin", [input], name + ".row_min", rowAxis), zero], name + ".row_min0");
        var rowMax = graph.AddNode("Max", [graph.AddNode("ReduceMax", [input], name + ".row_max", rowAxis), zero], name + ".row_max0");
        var scale = graph.AddNode("Max", [graph.AddNode("Div", [graph.AddNode("Sub", [rowMax, rowMin], name + ".row_range"), levels], name + ".row_scale_raw"), tiny], name + ".row_scale");
        var zeroPoint = graph.AddNode("Clip", [graph.AddNode("Round", [graph.AddNode("Div", [graph.AddNode("Neg", [rowMin], name + ".neg_min"), scale], name + ".zp_raw")], name + ".zp_round"), zero, levels], name + ".row_zero_point");
        var shifted = graph.AddNode("Add", [graph.AddNode("Round", [graph.AddNode("Div", [input, scale], name + ".x_scaled")], name + ".x_round"), zeroPoint], name + ".x_shifted");
        var xq = graph.AddNode("Cast", [graph.AddNode("Clip", [shifted, zero, levels], name + ".x_clipped")], name + ".input_q",
            new Dictionary<string, object> { ["to"] = (long)DataType.Uint8 });
        var mm = graph.AddNode("MatMulInteger", [xq, w], name + ".matmul_int32");
        var mmf = graph.AddNode("Cast", [mm], name + ".matmul_float", new Dictionary<string, object> { ["to"] = (long)DataType.Float });
        var corrected = graph.AddNode("Sub", [mmf, graph.AddNode("Mul", [zeroPoint, colsum], name + ".zero_point_term")], name + ".matmul_centered");
        var outScale = graph.AddNode("Mul", [scale, ws], name + ".output_scale");
        var y = graph.AddNode("Mul", [corrected, outScale], name + ".matmul");
        return graph.AddNode("Add", [y, EmitBias(graph, layer)], name);
    }

    /// <summary>
    /// MatMul(x, DequantizeLinear(W_int4 [in, out], scales [blocks, out], axis = 0, block_size)) + bias: opset-21 blocked
    /// quantization that ONNX Runtime rewrites into MatMulNBits.
    /// </summary>
    private string EmitInt4Dense(OnnxGraphBuilder graph, DenseModelLayer layer, string input)
    {
        int k = layer.InFeatures, n = layer.OutFeatures, bs = _spec.BlockSize;
        var q = QuantizedTensor.Int4Blockwise(layer.Weight, n, bs);
        int blocks = q.BlocksPerRow;
        // [in, out] row-major, two values per byte, the first in the low nibble.
        long count = (long)k * n;
        var packed = new byte[(count + 1) / 2];
        for (int i = 0; i < k; i++)
            for (int o = 0; o < n; o++)
            {
                long e = (long)i * n + o;
                int nibble = q.Values![o * k + i] & 0x0F;
                packed[e >> 1] |= (byte)((e & 1) == 0 ? nibble : nibble << 4);
            }
        var scales = new float[blocks * n];
        for (int b = 0; b < blocks; b++)
            for (int o = 0; o < n; o++)
                scales[b * n + o] = q.Scales[o * blocks + b];
        var w = AddConstant(graph, layer.Name + ".weight_q4", DataType.Int4, packed, [k, n]);
        var s = graph.AddFloatInitializer(layer.Name + ".weight_scale", scales, [blocks, n]);
        var wf = graph.AddNode("DequantizeLinear", [w, s], layer.Name + ".weight_t",
            new Dictionary<string, object> { ["axis"] = 0L, ["block_size"] = (long)bs });
        var y = graph.AddNode("MatMul", [input, wf], layer.Name + ".matmul");
        return graph.AddNode("Add", [y, EmitBias(graph, layer)], layer.Name);
    }

    /// <summary>
    /// A float16 or int4 tensor as a Constant node rather than an initializer: ML.NET's OnnxTransformer (5.0) types every
    /// initializer and throws "Unsupported ONNX scalar type" for these element types, while ONNX Runtime turns Constant nodes
    /// into initializers when it loads the graph (so folding and fusions see the same graph).
    /// </summary>
    private static string AddConstant(OnnxGraphBuilder graph, string name, DataType type, byte[] littleEndianData, long[] dims)
    {
        var tensor = new TensorProto { DataType = (int)type, RawData = ByteString.CopyFrom(littleEndianData) };
        tensor.Dims.AddRange(dims);
        return graph.AddNode("Constant", [], name, new Dictionary<string, object> { ["value"] = tensor });
    }

    private static string AddScale(OnnxGraphBuilder graph, string name, float[] scales) =>
        scales.Length == 1 ? graph.AddFloatInitializer(name, scales, []) : graph.AddFloatInitializer(name, scales, [scales.Length]);

    private static long[] Dims(int[] shape) => shape.Select(d => (long)d).ToArray();
}
