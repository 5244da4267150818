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
    private readonly QuantizationSpec spec;

    // Int8Static: for a weighted layer, the next weighted layer when only layers that keep quantized values (max-pooling,
    // flatten, dropout) lie between: its input range is then the range of this layer's activated output.
    private readonly Dictionary<string, string> nextLayer = new(StringComparer.Ordinal);

    // Int8Static: the DequantizeLinear output already carrying a layer's input quantization (emitted after the previous activation).
    private readonly Dictionary<string, string> quantizedInput = new(StringComparer.Ordinal);

    private readonly bool sparse;

    /// <summary>
    /// Creates the emitter for <paramref name="model"/> (validated against <paramref name="spec"/>); with
    /// <paramref name="sparseStorage"/>, integer weight tensors with many zeros (pruned) keep a sparse storage when it is smaller.
    /// </summary>
    public QuantizedEmitter(NetworkModel model, QuantizationSpec spec, bool sparseStorage = true)
    {
        QuantizedExport.Validate(model, spec);
        this.spec = spec;
        sparse = sparseStorage;
        var layers = model.Layers;
        for (int i = 0; i < layers.Count; i++)
        {
            if (layers[i] is not ParameterizedLayer)
                continue;
            int j = i + 1;
            while (j < layers.Count && layers[j].KeepsQuantizedValues)
                j++;
            if (j < layers.Count && layers[j] is ParameterizedLayer next)
                nextLayer[layers[i].Name] = next.Name;
        }
    }

    /// <summary>The specification being written.</summary>
    public QuantizationSpec Spec => spec;

    private QuantizedExport.LayerPlan Plan(ParameterizedLayer layer) => QuantizedExport.PlanOf(layer, spec);

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
                var w = QuantizedStorage.AddConstant(graph, layer.Name + ".weight_fp16", DataType.Float16, half, Dims(layer.WeightShape));
                return graph.AddNode("Cast", [w], layer.Name + ".weight", new Dictionary<string, object> { ["to"] = (long)DataType.Float });
            }
            case QuantizedExport.LayerPlan.Int8WeightOnlyConv:
            case QuantizedExport.LayerPlan.Int8Qdq:
                return EmitInt8Weight(graph, layer, QuantizedTensor.Int8Symmetric(layer.Weight, layer.OutputUnits, spec.PerChannel));
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
        var (xScale, _) = QuantizedExport.ActivationParameters(spec.InputRanges![layer.Name]);
        var wq = QuantizedTensor.Int8Symmetric(layer.Weight, layer.OutputUnits, spec.PerChannel);
        var scales = wq.Scales.Select(s => xScale * s).ToArray();
        var q = new int[layer.Bias.Length];
        for (int i = 0; i < q.Length; i++)
            q[i] = (int)Math.Clamp(Math.Round((double)layer.Bias[i] / scales[scales.Length == 1 ? 0 : i]), int.MinValue, int.MaxValue);
        var b = graph.AddRawInitializer(layer.Name + ".bias_q", DataType.Int32, MemoryMarshal.AsBytes(q.AsSpan()), sizeof(int), [q.Length], q.Length);
        var s = QuantizedStorage.AddScale(graph, layer.Name + ".bias_scale", scales);
        var attrs = scales.Length == 1 ? null : new Dictionary<string, object> { ["axis"] = 0L };
        return graph.AddNode("DequantizeLinear", [b, s], layer.Name + ".bias", attrs);
    }

    /// <inheritdoc />
    public override LayerEncoding Encoding => spec.Mode switch
    {
        QuantizationMode.Float16 => LayerEncoding.Float16,
        QuantizationMode.Int8Dynamic => LayerEncoding.Int8Dynamic,
        QuantizationMode.Int8Static => LayerEncoding.Int8Static,
        _ => LayerEncoding.Int4WeightOnly,
    };

    /// <inheritdoc />
    public override IReadOnlyCollection<string>? KeptFloat => spec.KeepFloat;

    /// <inheritdoc />
    public override bool PerBatchActivationScales => spec.ActivationScales == ActivationScaleScope.PerBatch;

    /// <inheritdoc />
    public override WeightCompute ComputeOf(ParameterizedLayer layer) => Plan(layer) switch
    {
        QuantizedExport.LayerPlan.Int8DynamicDense => WeightCompute.DynamicInt8,
        QuantizedExport.LayerPlan.Int4Dense => WeightCompute.Int4,
        _ => WeightCompute.Float,
    };

    /// <inheritdoc />
    public override QuantizedTensor QuantizeWeights(ParameterizedLayer layer) => QuantizedExport.QuantizeWeights(layer, spec);

    /// <inheritdoc />
    public override string AddIntegerTensor(OnnxGraphBuilder graph, string name, sbyte[] values, long[] dims, int bits) =>
        QuantizedStorage.Add(graph, name, values, dims, bits, sparse);

    /// <inheritdoc />
    public override string EmitInput(OnnxGraphBuilder graph, ParameterizedLayer layer, string input) =>
        Plan(layer) == QuantizedExport.LayerPlan.Int8Qdq ? QuantizeInput(graph, layer, input) : input;

    /// <inheritdoc />
    public override string EmitActivation(OnnxGraphBuilder graph, ParameterizedLayer layer, string input)
    {
        // Int4: ONNX Runtime fuses MatMul + Add + Relu into a float FusedGemm before its DequantizeLinear → MatMulNBits rewrite
        // runs, which would leave the 4-bit weights dequantized on every run; Max(y, 0) is the same function and is not fused.
        if (ComputeOf(layer) == WeightCompute.Int4 && layer.Activation == Activation.Relu)
            return graph.AddNode("Max", [input, graph.AddFloatInitializer(layer.Name + ".relu_zero", [0f], [])], layer.Name + ".relu");
        var y = base.EmitActivation(graph, layer, input);
        // Int8Static: quantize the activated output with the next weighted layer's input range, so that ONNX Runtime sees
        // DQ → Conv/Gemm → (Relu) → Q and fuses it into QLinearConv/QGemm with a quantized output (max-pooling in between runs on uint8).
        if (spec.Mode != QuantizationMode.Int8Static || Plan(layer) != QuantizedExport.LayerPlan.Int8Qdq
            || !nextLayer.TryGetValue(layer.Name, out var next) || spec.KeepFloat?.Contains(next) == true)
            return y;
        // QuantizeInput reuses it when it reaches the next layer unchanged (only layers that emit no node lie between).
        var dq = QuantizeDequantize(graph, next, y);
        quantizedInput[next] = dq;
        return dq;
    }

    private string QuantizeInput(OnnxGraphBuilder graph, ParameterizedLayer layer, string input) =>
        quantizedInput.TryGetValue(layer.Name, out var dq) && dq == input ? input : QuantizeDequantize(graph, layer.Name, input);

    private string QuantizeDequantize(OnnxGraphBuilder graph, string layerName, string input)
    {
        var (scale, zp) = QuantizedExport.ActivationParameters(spec.InputRanges![layerName]);
        var s = graph.AddFloatInitializer(layerName + ".input_scale", [scale], []);
        var z = graph.AddRawInitializer(layerName + ".input_zero_point", DataType.Uint8, [zp], 1, [], 1);
        var q = graph.AddNode("QuantizeLinear", [input, s, z], layerName + ".input_q");
        return graph.AddNode("DequantizeLinear", [q, s, z], layerName + ".input_dq");
    }

    private string EmitInt8Weight(OnnxGraphBuilder graph, ParameterizedLayer layer, QuantizedTensor q)
    {
        var w = QuantizedStorage.Add(graph, layer.Name + ".weight_q", q.Values!, Dims(layer.WeightShape), 8, sparse);
        var s = QuantizedStorage.AddScale(graph, layer.Name + ".weight_scale", q.Scales);
        var zeros = new sbyte[q.Scales.Length];
        var z = graph.AddRawInitializer(layer.Name + ".weight_zero_point", DataType.Int8, MemoryMarshal.AsBytes(zeros.AsSpan()), 1,
            q.Scales.Length == 1 ? [] : [zeros.Length], zeros.Length);
        var attrs = q.Scales.Length == 1 ? null : new Dictionary<string, object> { ["axis"] = 0L };
        return graph.AddNode("DequantizeLinear", [w, s, z], layer.Name + ".weight", attrs);
    }

    private static long[] Dims(int[] shape) => shape.Select(d => (long)d).ToArray();
}

/// <summary>
/// Layer-agnostic storage of quantized tensors: int8 and int4 values stored densely, or, when smaller (pruned weights), only
/// the non-zero values plus one uint8 gap each (as <see cref="SparseWeights"/> stores floats), rebuilt in the graph by
/// Cast → ScatterElements → Reshape → Cast. Every input of the rebuild is a constant, so ONNX Runtime folds it at load into
/// the dense int8/int4 initializer, and its DequantizeLinear fusions (QGemm, QLinearConv, MatMulNBits) apply as to a dense tensor.
/// </summary>
internal static class QuantizedStorage
{
    /// <summary>
    /// Adds an int8 (<paramref name="bits"/> = 8) or int4 (4) tensor of <paramref name="values"/> (row-major, shape
    /// <paramref name="dims"/>) named <paramref name="name"/>, sparse when <paramref name="allowSparse"/> and that is smaller;
    /// returns the name of the value holding the tensor.
    /// </summary>
    public static string Add(OnnxGraphBuilder graph, string name, sbyte[] values, long[] dims, int bits, bool allowSparse)
    {
        if (bits is not (4 or 8))
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "Only int8 and int4 tensors are stored.");
        if (allowSparse && SparseBytes(values, bits) is { } sparseBytes && sparseBytes + SparseWeights.EncodingOverheadBytes < DenseBytes(values.Length, bits))
            return AddSparse(graph, name, values, dims, bits);
        if (bits == 8)
            return graph.AddRawInitializer(name, DataType.Int8, MemoryMarshal.AsBytes(values.AsSpan()), 1, dims, values.Length);
        return AddConstant(graph, name, DataType.Int4, PackInt4(values.Select(v => (byte)(v & 0x0F)).ToArray()), dims);
    }

    /// <summary>Bytes of values a dense tensor of <paramref name="count"/> elements stores.</summary>
    public static long DenseBytes(long count, int bits) => bits == 8 ? count : (count + 1) / 2;

    /// <summary>Bytes of values and gaps the sparse storage of <paramref name="values"/> needs.</summary>
    public static long SparseBytes(sbyte[] values, int bits)
    {
        long entries = SparseWeights.EncodeGaps(values.Length, i => values[i] != 0).Sources.LongLength;
        return DenseBytes(entries, bits) + entries;
    }

    /// <summary>Two values per byte, the first in the low nibble.</summary>
    public static byte[] PackInt4(byte[] nibbles)
    {
        var packed = new byte[(nibbles.LongLength + 1) / 2];
        for (long e = 0; e < nibbles.LongLength; e++)
            packed[e >> 1] |= (byte)((e & 1) == 0 ? nibbles[e] & 0x0F : (nibbles[e] & 0x0F) << 4);
        return packed;
    }

    private static string AddSparse(OnnxGraphBuilder graph, string name, sbyte[] dense, long[] dims, int bits)
    {
        var (sources, gaps) = SparseWeights.EncodeGaps(dense.Length, i => dense[i] != 0);
        var values = sources.Select(i => i < 0 ? (sbyte)0 : dense[i]).ToArray();
        var toFloat = new Dictionary<string, object> { ["to"] = (long)DataType.Float };
        string floats;
        if (bits == 8)
        {
            var v = graph.AddRawInitializer(name + ".values", DataType.Int8, MemoryMarshal.AsBytes(values.AsSpan()), 1, [values.Length], values.Length);
            floats = graph.AddNode("Cast", [v], name + ".values_f", toFloat);
        }
        else
        {
            // Values offset by 8 into 0..15, two per byte: low nibbles Mod 16, high nibbles BitShift 4, interleaved, cut to length, minus 8.
            var packed = PackInt4(values.Select(x => (byte)(x + 8)).ToArray());
            var p = graph.AddRawInitializer(name + ".values_u4", DataType.Uint8, packed, 1, [packed.Length], packed.Length);
            var sixteen = graph.AddRawInitializer(name + ".sixteen", DataType.Uint8, new byte[] { 16 }, 1, [], 1);
            var four = graph.AddRawInitializer(name + ".four", DataType.Uint8, new byte[] { 4 }, 1, [], 1);
            var low = graph.AddNode("Mod", [p, sixteen], name + ".low");
            var high = graph.AddNode("BitShift", [p, four], name + ".high", new Dictionary<string, object> { ["direction"] = "RIGHT" });
            var column = graph.AddInt64Initializer(name + ".column", [-1L, 1L], [2]);
            var pairs = graph.AddNode("Concat", [graph.AddNode("Reshape", [low, column], name + ".low_col"), graph.AddNode("Reshape", [high, column], name + ".high_col")],
                name + ".pairs", new Dictionary<string, object> { ["axis"] = 1L });
            var flat = graph.AddNode("Reshape", [pairs, graph.AddInt64Initializer(name + ".flat_shape", [-1L], [1])], name + ".unpacked");
            var cut = graph.AddNode("Slice", [flat, graph.AddInt64Initializer(name + ".start", [0L], [1]), graph.AddInt64Initializer(name + ".end", [values.LongLength], [1])],
                name + ".offset_values");
            var eight = graph.AddFloatInitializer(name + ".eight", [8f], []);
            floats = graph.AddNode("Sub", [graph.AddNode("Cast", [cut], name + ".offset_f", toFloat), eight], name + ".values_f");
        }
        var zeros = SparseWeights.Zeros(graph, name, dense.Length);
        var rebuilt = SparseWeights.ScatterByGaps(graph, name, zeros, floats, gaps, dims.Select(d => checked((int)d)).ToArray());
        return graph.AddNode("Cast", [rebuilt], name, new Dictionary<string, object> { ["to"] = (long)(bits == 8 ? DataType.Int8 : DataType.Int4) });
    }

    /// <summary>
    /// A float16 or int4 tensor as a Constant node rather than an initializer: ML.NET's OnnxTransformer (5.0) types every
    /// initializer and throws "Unsupported ONNX scalar type" for these element types, while ONNX Runtime turns Constant nodes
    /// into initializers when it loads the graph (so folding and fusions see the same graph).
    /// </summary>
    public static string AddConstant(OnnxGraphBuilder graph, string name, DataType type, byte[] littleEndianData, long[] dims)
    {
        var tensor = new TensorProto { DataType = (int)type, RawData = ByteString.CopyFrom(littleEndianData) };
        tensor.Dims.AddRange(dims);
        return graph.AddNode("Constant", [], name, new Dictionary<string, object> { ["value"] = tensor });
    }

    public static string AddScale(OnnxGraphBuilder graph, string name, float[] scales) =>
        scales.Length == 1 ? graph.AddFloatInitializer(name, scales, []) : graph.AddFloatInitializer(name, scales, [scales.Length]);
}
