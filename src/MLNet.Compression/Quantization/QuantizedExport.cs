using MLNet.Compression.Networks;
using MLNet.Compression.Onnx;

namespace MLNet.Compression.Quantization;

/// <summary>
/// Turns a <see cref="QuantizationSpec"/> into ONNX export settings (<see cref="Options"/>) whose emitter writes a quantized graph
/// that ONNX Runtime's CPU kernels run, and describes what the weights cost on disk and once loaded (<see cref="Describe"/>).
/// </summary>
/// <remarks>
/// Graph per mode (parameterized layers not named in <see cref="QuantizationSpec.KeepFloat"/>):
/// <list type="bullet">
/// <item><see cref="QuantizationMode.Float16"/>: float16 weight initializers, Cast to float32, float Gemm/Conv; float32 biases.
/// ONNX Runtime folds the Cast at load, so the weights are resident as float32.</item>
/// <item><see cref="QuantizationMode.Int8Dynamic"/>: dense layers quantize each row of activations with its own uint8 scale
/// (after a ReLU: row max / 255, zero point 0; elsewhere symmetric: max |x| / 127 from ReduceMax/ReduceMin per row, zero
/// point 128; then one QuantizeLinear along axis 0), ONNX Runtime's MatMulIntegerToFloat(x_u8, W_s8 [in, out], activation
/// scale 1, the weights' per-column scales) → Mul(x_scale per row) → Add(bias). Per-row scales make a row's result independent of the batch it is scored in (ONNX's
/// DynamicQuantizeLinear uses one scale per batch), so batched and one-row-at-a-time scoring agree exactly. With
/// <see cref="ActivationScaleScope.PerBatch"/> (opt-in) dense layers use exactly that instead: the input cleaned of
/// non-finite values, DynamicQuantizeLinear → MatMulInteger → Cast → Mul → Add, which ONNX Runtime fuses into
/// DynamicQuantizeMatMul (<c>DenseModelLayer</c>'s EmitPerBatchInt8). Convolutions store
/// int8 per-channel weights behind a DequantizeLinear and compute in float (ConvInteger takes one weight zero point per tensor
/// and ONNX Runtime's CPU kernel has no int8-weight variant); ONNX Runtime keeps the int8 weights and dequantizes them each run.</item>
/// <item><see cref="QuantizationMode.Int8Static"/>: QDQ. Each layer input goes through QuantizeLinear/DequantizeLinear (uint8, the
/// calibrated range), the weights are int8 per channel (axis 0) behind a DequantizeLinear, the bias is int32 with scale
/// x_scale · w_scale, and the output of a layer whose next weighted layer is reached through max-pooling/flatten only is
/// quantized with that layer's input range, so ONNX Runtime fuses the groups into QLinearConv/QGemm at load.</item>
/// <item><see cref="QuantizationMode.Int4WeightOnly"/>: dense layers MatMul(x, DequantizeLinear(W_int4 [in, out], scales [blocks, out],
/// axis 0, block_size)) + Add(bias) (opset 21 blocked quantization, symmetric, no zero points), which ONNX Runtime turns into
/// its MatMulNBits kernel (the Relu is written as Max(y, 0) so that ONNX Runtime does not fuse MatMul + Add + Relu into a float
/// Gemm first). Convolutions use int8 per-channel weights behind a DequantizeLinear, computed in float. Float16 and int4 tensors
/// are Constant nodes, not initializers: ML.NET's OnnxTransformer rejects initializers of those types.</item>
/// </list>
/// </remarks>
internal static class QuantizedExport
{
    /// <summary>Smallest opset for per-channel DequantizeLinear (axis attribute).</summary>
    public const int MinOpset = 13;

    /// <summary>Opset needed for int4 tensors and blocked DequantizeLinear (block_size attribute).</summary>
    public const int Int4Opset = 21;

    /// <summary>
    /// Export settings that write <paramref name="model"/> quantized as <paramref name="spec"/> says; every other setting
    /// (names, class names, metadata) comes from <paramref name="baseOptions"/>. The opset is raised to what the mode needs.
    /// </summary>
    /// <exception cref="ArgumentException">A range is missing or invalid for a layer (Int8Static), or KeepFloat names an unknown layer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The block size is not a power of two of at least 16 (Int4WeightOnly).</exception>
    public static OnnxExportOptions Options(NetworkModel model, QuantizationSpec spec, OnnxExportOptions? baseOptions = null)
    {
        Validate(model, spec);
        var b = baseOptions ?? new OnnxExportOptions();
        int opset = Math.Max(b.Opset, spec.Mode == QuantizationMode.Int4WeightOnly && HasQuantizedDense(model, spec) ? Int4Opset : MinOpset);
        return new OnnxExportOptions
        {
            InputName = b.InputName,
            ScoreName = b.ScoreName,
            LabelIndexName = b.LabelIndexName,
            Opset = opset,
            ClassNames = b.ClassNames,
            Metadata = b.Metadata,
            LayerEmitter = new QuantizedEmitter(model, spec, b.SparseWeights != SparseWeightsMode.Never),
            SparseWeights = b.SparseWeights,
            SparseDensityThreshold = b.SparseDensityThreshold,
            SparseEncoding = b.SparseEncoding,
        };
    }

    /// <summary>Per weighted layer: encoding, compute path, bytes stored in the ONNX file and bytes resident in ONNX Runtime.</summary>
    public static QuantizedWeightsInfo Describe(NetworkModel model, QuantizationSpec spec)
    {
        Validate(model, spec);
        var reluInputs = ReluInputLayers(model);
        var cleaned = PerBatchCleanedLayers(model, spec);
        var layers = model.ParameterizedLayers.Select(l => DescribeLayer(l, spec, reluInputs.Contains(l.Name), cleaned.Contains(l.Name))).ToArray();
        return new QuantizedWeightsInfo(spec.Mode, layers);
    }

    /// <summary>
    /// Bytes the weights and biases of <paramref name="model"/> occupy once ONNX Runtime has loaded its export quantized with
    /// <paramref name="options"/> (what the quantization estimator reported): they depend on the mode, activation scale scope, per-channel scales,
    /// block size and float layers, not on the weights or the calibrated ranges, so a restored model re-derives them.
    /// </summary>
    public static long ResidentBytes(NetworkModel model, QuantizationOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        var spec = new QuantizationSpec(options.Mode, options.PerChannel, options.BlockSize, null, options.KeepFloat.ToArray(), options.ActivationScales);
        var reluInputs = ReluInputLayers(model);
        var cleaned = PerBatchCleanedLayers(model, spec);
        return new QuantizedWeightsInfo(spec.Mode, model.ParameterizedLayers.Select(l => DescribeLayer(l, spec, reluInputs.Contains(l.Name), cleaned.Contains(l.Name))).ToArray()).ResidentBytes;
    }

    /// <summary>
    /// Per-batch int8 dynamic: the dense layers whose input is cleaned in the graph (the model's input always; a hidden layer
    /// only where no bound on its activations holds, see <c>DenseModelLayer</c>'s EmitPerBatchInt8), each storing three
    /// float constants; found by exporting, since the bounds follow from the weights. Empty for every other spec.
    /// </summary>
    private static HashSet<string> PerBatchCleanedLayers(NetworkModel model, QuantizationSpec spec)
    {
        if (spec.Mode != QuantizationMode.Int8Dynamic || spec.ActivationScales != ActivationScaleScope.PerBatch)
            return [];
        var graph = OnnxExporter.BuildModel(model, Options(model, spec)).Graph;
        return model.ParameterizedLayers.Where(l => graph.Initializer.Any(t => t.Name == l.Name + ".finite_limit")).Select(l => l.Name)
            .ToHashSet(StringComparer.Ordinal);
    }

    /// <summary>
    /// Quantizes one layer's weights the way the exporter writes them (float16, int8 per channel or per tensor, or int4 per block);
    /// the result gives the dequantized values and the quantization step of every weight.
    /// </summary>
    public static QuantizedTensor QuantizeWeights(ParameterizedLayer layer, QuantizationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(layer);
        ArgumentNullException.ThrowIfNull(spec);
        return PlanOf(layer, spec) switch
        {
            LayerPlan.Float32 => QuantizedTensor.Float32(layer.Weight),
            LayerPlan.Float16 => QuantizedTensor.Float16(layer.Weight),
            LayerPlan.Int4Dense => QuantizedTensor.Int4Blockwise(layer.Weight, layer.OutputUnits, spec.BlockSize),
            _ => QuantizedTensor.Int8Symmetric(layer.Weight, layer.OutputUnits, spec.PerChannel),
        };
    }

    /// <summary>The weights of layer <paramref name="layerName"/> after quantization and dequantization (<see cref="ParameterizedLayer.WeightShape"/> layout).</summary>
    public static float[] DequantizedWeights(NetworkModel model, QuantizationSpec spec, string layerName)
    {
        ArgumentNullException.ThrowIfNull(model);
        var layer = model.ParameterizedLayers.FirstOrDefault(l => l.Name == layerName)
            ?? throw new ArgumentException($"The model has no weighted layer '{layerName}'.", nameof(layerName));
        return QuantizeWeights(layer, spec).Dequantize();
    }

    /// <summary>Quantization parameters (uint8, asymmetric) of an activation with the calibrated <paramref name="range"/>; the range is widened to include 0.</summary>
    public static (float Scale, byte ZeroPoint) ActivationParameters(ActivationRange range)
    {
        float min = Math.Min(range.Min, 0f), max = Math.Max(range.Max, 0f);
        float scale = (max - min) / 255f;
        if (!(scale > 0) || float.IsInfinity(scale))
            scale = 1f;
        float zp = MathF.Round(-min / scale);
        return (scale, (byte)Math.Clamp(zp, 0f, 255f));
    }

    internal enum LayerPlan
    {
        Float32,
        Float16,
        Int8DynamicDense,
        Int8WeightOnlyConv,
        Int8Qdq,
        Int4Dense,
    }

    internal static LayerPlan PlanOf(ParameterizedLayer layer, QuantizationSpec spec)
    {
        if (spec.KeepFloat is { } keep && keep.Contains(layer.Name))
            return LayerPlan.Float32;
        return spec.Mode switch
        {
            QuantizationMode.Float16 => LayerPlan.Float16,
            QuantizationMode.Int8Dynamic => layer.HasDynamicInt8Kernel ? LayerPlan.Int8DynamicDense : LayerPlan.Int8WeightOnlyConv,
            QuantizationMode.Int8Static => LayerPlan.Int8Qdq,
            QuantizationMode.Int4WeightOnly => layer.HasInt4Kernel ? LayerPlan.Int4Dense : LayerPlan.Int8WeightOnlyConv,
            _ => throw new ArgumentOutOfRangeException(nameof(spec), spec.Mode, "Unknown quantization mode."),
        };
    }

    internal static void Validate(NetworkModel model, QuantizationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(spec);
        if (!Enum.IsDefined(spec.Mode))
            throw new ArgumentOutOfRangeException(nameof(spec), spec.Mode, "Unknown quantization mode.");
        if (!Enum.IsDefined(spec.ActivationScales))
            throw new ArgumentOutOfRangeException(nameof(spec), spec.ActivationScales, "Unknown activation scale scope.");
        if (spec.ActivationScales == ActivationScaleScope.PerBatch && spec.Mode != QuantizationMode.Int8Dynamic)
            throw new ArgumentException(
                $"Per-batch activation scales apply to Int8Dynamic only, not to {spec.Mode}; use ActivationScaleScope.PerRow.", nameof(spec));
        var names = model.ParameterizedLayers.Select(l => l.Name).ToHashSet(StringComparer.Ordinal);
        if (spec.KeepFloat is { } keep)
            foreach (var name in keep)
                if (!names.Contains(name))
                    throw new ArgumentException(
                        $"KeepFloat names layer '{name}', which the model does not have; its weighted layers are: {string.Join(", ", names)}.", nameof(spec));
        if (spec.Mode == QuantizationMode.Int4WeightOnly)
        {
            int bs = spec.BlockSize;
            if (bs < 16 || (bs & (bs - 1)) != 0)
                throw new ArgumentOutOfRangeException("blockSize", bs,
                    "The int4 blockSize (weights per scale) must be a power of two of at least 16, e.g. 32 or 64.");
        }
        if (spec.Mode == QuantizationMode.Int8Static)
        {
            foreach (var layer in model.ParameterizedLayers)
            {
                if (PlanOf(layer, spec) != LayerPlan.Int8Qdq)
                    continue;
                if (spec.InputRanges is null || !spec.InputRanges.TryGetValue(layer.Name, out var r))
                    throw new ArgumentException(
                        $"Int8Static needs the calibrated input range of layer '{layer.Name}', but the spec has none for it.", nameof(spec));
                if (!float.IsFinite(r.Min) || !float.IsFinite(r.Max) || r.Min > r.Max)
                    throw new ArgumentException(
                        $"The input range of layer '{layer.Name}' must be finite with Min <= Max, but is [{r.Min}, {r.Max}].", nameof(spec));
            }
        }
    }

    private static bool HasQuantizedDense(NetworkModel model, QuantizationSpec spec) =>
        model.ParameterizedLayers.Any(l => PlanOf(l, spec) == LayerPlan.Int4Dense);

    /// <summary>
    /// The layers whose ONNX input is a Relu node's output: the previous layer (dropout emits nothing in between) has a ReLU
    /// activation. Their int8 dynamic form quantizes with zero point 0 (row max / 255) instead of the symmetric form (<c>DenseModelLayer</c>'s EmitDynamicInt8).
    /// </summary>
    internal static HashSet<string> ReluInputLayers(NetworkModel model)
    {
        var result = new HashSet<string>(StringComparer.Ordinal);
        bool relu = false;
        foreach (var layer in model.Layers)
        {
            if (layer is DropoutModelLayer)
                continue;
            if (layer is ParameterizedLayer p)
            {
                if (relu)
                    result.Add(p.Name);
                relu = p.Activation == Activation.Relu;
            }
            else
                relu = false;
        }
        return result;
    }

    private static QuantizedLayerInfo DescribeLayer(ParameterizedLayer layer, QuantizationSpec spec, bool reluInput, bool perBatchCleaned)
    {
        long n = layer.Weight.Length, outUnits = layer.OutputUnits, biasFloat = layer.Bias.Length * (long)sizeof(float);
        long channelScales = spec.PerChannel ? outUnits : 1;
        switch (PlanOf(layer, spec))
        {
            case LayerPlan.Float32:
                return new(layer.Name, "float32", "float " + layer.OnnxOperator, n, n * 4, n * 4, biasFloat);
            case LayerPlan.Float16:
                // The Cast of a constant is folded at session creation: the weights are resident as float32.
                return new(layer.Name, "float16", $"float {layer.OnnxOperator} (weights cast to float32 at load)",
                    n, n * 2, n * 4, biasFloat);
            case LayerPlan.Int8DynamicDense:
            {
                // int8 values + float scales + three float constants (the unit activation scale, the smallest row scale, the
                // levels) + the uint8 zero point 128 of the symmetric form (none when the input is a ReLU's output: zero point 0);
                // MatMulIntegerToFloat prepacks the int8 matrix (about 1 byte per weight).
                if (spec.ActivationScales == ActivationScaleScope.PerBatch)
                {
                    // int8 values + float scales + the three float constants of the input clean where the layer has one
                    // (DenseModelLayer's EmitPerBatchInt8; exported at opset 18 or later the layer reading the model's input also
                    // stores an 8-byte reduction axis, not counted).
                    long constants = perBatchCleaned ? 3 * 4 : 0;
                    long batchStored = StoredValueBytes(layer, spec, 8) + channelScales * 4 + constants;
                    return new(layer.Name, Int8Name(spec), "per-batch dynamic quantization + DynamicQuantizeMatMul (int8)", n, batchStored,
                        n + channelScales * 4 + constants, biasFloat);
                }
                long zeroPoint = reluInput ? 0 : 1;
                long stored = StoredValueBytes(layer, spec, 8) + channelScales * 4 + 3 * 4 + zeroPoint;
                long resident = n + channelScales * 4 + 3 * 4 + zeroPoint;
                return new(layer.Name, Int8Name(spec), "per-row dynamic quantization + MatMulIntegerToFloat (int8)", n, stored, resident, biasFloat);
            }
            case LayerPlan.Int8WeightOnlyConv:
            {
                // int8 values + float scales + int8 zero points. ONNX Runtime does not constant-fold DequantizeLinear: the int8
                // weights stay resident and each run dequantizes them into a temporary float32 tensor for the float Conv.
                long stored = StoredValueBytes(layer, spec, 8) + channelScales * 5;
                return new(layer.Name, Int8Name(spec), $"DequantizeLinear per run + float {layer.OnnxOperator}", n, stored, n + channelScales * 5, biasFloat);
            }
            case LayerPlan.Int8Qdq:
            {
                // int8 values + float scales + int8 zero points (weights), int32 values + float scales (bias). QLinearConv/QGemm keep
                // int8 weights and int32 biases.
                long stored = StoredValueBytes(layer, spec, 8) + channelScales * 5;
                long bias = outUnits * 4 + channelScales * 4;
                return new(layer.Name, Int8Name(spec), $"QDQ → {layer.QuantizedOperator} (int8)", n, stored, n + channelScales * 5, bias);
            }
            case LayerPlan.Int4Dense:
            {
                long blocks = (layer.FanIn + spec.BlockSize - 1) / spec.BlockSize;
                long stored = StoredValueBytes(layer, spec, 4) + blocks * layer.OutputUnits * 4;
                // MatMulNBits holds [out, blocks, block/2] bytes (the input dimension padded to whole blocks) plus the scales;
                // sparse storage is rebuilt into the dense tensor at load.
                long resident = blocks * layer.OutputUnits * (spec.BlockSize / 2) + blocks * layer.OutputUnits * 4;
                return new(layer.Name, $"int4 block {spec.BlockSize}", "MatMulNBits (4-bit)", n, stored, resident, biasFloat);
            }
            default:
                throw new InvalidOperationException();
        }
    }

    /// <summary>
    /// Bytes of the integer values as stored: dense (one byte per int8, half a byte per int4) or, for pruned weights where it is
    /// smaller, the non-zero values plus one uint8 gap each (<see cref="QuantizedStorage"/>; sparse data only, the few hundred
    /// bytes of rebuild nodes not counted).
    /// </summary>
    private static long StoredValueBytes(ParameterizedLayer layer, QuantizationSpec spec, int bits)
    {
        var values = QuantizeWeights(layer, spec).Values!;
        long dense = QuantizedStorage.DenseBytes(values.Length, bits);
        long sparse = QuantizedStorage.SparseBytes(values, bits);
        return sparse + SparseWeights.EncodingOverheadBytes < dense ? sparse : dense;
    }

    private static string Int8Name(QuantizationSpec spec) => spec.PerChannel ? "int8 per-channel" : "int8 per-tensor";
}

/// <summary>How one weighted layer is stored and computed in the quantized ONNX model.</summary>
/// <param name="Name">Layer name ("fc1", "conv2", "output").</param>
/// <param name="Encoding">Weight encoding: "float32", "float16", "int8 per-channel", "int8 per-tensor", "int4 block 32"...</param>
/// <param name="Compute">The operator ONNX Runtime runs for the layer.</param>
/// <param name="Weights">Number of weights (biases excluded).</param>
/// <param name="WeightBytes">Bytes of weight data in the ONNX file: values plus scales and zero points.</param>
/// <param name="ResidentWeightBytes">Bytes the weights occupy once ONNX Runtime has loaded and optimized the model.</param>
/// <param name="BiasBytes">Bytes of bias data in the ONNX file (and resident).</param>
internal sealed record QuantizedLayerInfo(string Name, string Encoding, string Compute, long Weights, long WeightBytes, long ResidentWeightBytes, long BiasBytes)
{
    /// <summary>Bytes of all the layer's parameters as stored: <see cref="WeightBytes"/> + <see cref="BiasBytes"/>.</summary>
    public long Bytes => WeightBytes + BiasBytes;

    /// <summary>Bytes of the layer's weights in float32.</summary>
    public long FloatWeightBytes => Weights * sizeof(float);
}

/// <summary>What <see cref="QuantizedExport.Describe"/> reports for a whole model.</summary>
/// <param name="Mode">The quantization mode.</param>
/// <param name="Layers">Every weighted layer, in order.</param>
internal sealed record QuantizedWeightsInfo(QuantizationMode Mode, IReadOnlyList<QuantizedLayerInfo> Layers)
{
    /// <summary>Bytes of all parameters as stored.</summary>
    public long StoredBytes => Layers.Sum(l => l.Bytes);

    /// <summary>Bytes of all parameters resident in ONNX Runtime.</summary>
    public long ResidentBytes => Layers.Sum(l => l.ResidentWeightBytes + l.BiasBytes);
}

/// <summary>
/// One weight tensor quantized (or cast) the way the exporter stores it: the integer values (or the float16/float32 values),
/// and the scales. <see cref="Dequantize"/> gives the values ONNX Runtime computes with; <see cref="Step"/> the spacing of
/// representable values at each weight: the dequantized value is within half a step of the float weight (round to nearest:
/// float16, int8), or within one step (int4, rounded with error diffusion).
/// </summary>
internal sealed class QuantizedTensor
{
    private QuantizedTensor(string encoding, float[]? floats, sbyte[]? values, float[] scales, int rows, int blockSize, int blocksPerRow)
    {
        Encoding = encoding;
        Floats = floats;
        Values = values;
        Scales = scales;
        Rows = rows;
        BlockSize = blockSize;
        BlocksPerRow = blocksPerRow;
    }

    /// <summary>"float32", "float16", "int8 per-channel", "int8 per-tensor" or "int4 block B".</summary>
    public string Encoding { get; }

    /// <summary>The stored float values (float32/float16 encodings, float16 rounded), else null.</summary>
    public float[]? Floats { get; }

    /// <summary>The integer values in the weight layout (int8: −127..127, int4: −8..7), else null.</summary>
    public sbyte[]? Values { get; }

    /// <summary>Scales: one (per tensor), one per row (output unit), or per row and block (row-major [rows, blocks]).</summary>
    public float[] Scales { get; }

    /// <summary>Rows (output units).</summary>
    public int Rows { get; }

    /// <summary>Weights per int4 block along a row (0 when not blocked).</summary>
    public int BlockSize { get; }

    /// <summary>Blocks per row (int4), else 0.</summary>
    public int BlocksPerRow { get; }

    /// <summary>Elements.</summary>
    public int Length => Floats?.Length ?? Values!.Length;

    /// <summary>The scale of element <paramref name="index"/> (0 for float encodings).</summary>
    public float ScaleAt(int index)
    {
        if (Values is null)
            return 0f;
        if (Scales.Length == 1)
            return Scales[0];
        int rowLength = Values.Length / Rows;
        int row = index / rowLength;
        return BlockSize == 0 ? Scales[row] : Scales[row * BlocksPerRow + (index % rowLength) / BlockSize];
    }

    /// <summary>The spacing of representable values at element <paramref name="index"/>: the scale (integer encodings) or the float16 ulp.</summary>
    public float Step(int index)
    {
        if (Values is not null)
            return ScaleAt(index);
        if (Encoding == "float16")
        {
            var h = (Half)Floats![index];
            var next = BitConverter.UInt16BitsToHalf((ushort)(BitConverter.HalfToUInt16Bits(h) + 1));
            float d = Math.Abs((float)next - (float)h);
            return float.IsFinite(d) ? d : 32f; // the ulp at the top of the float16 range
        }
        return 0f;
    }

    /// <summary>The values the model computes with (weight layout).</summary>
    public float[] Dequantize()
    {
        if (Floats is not null)
            return (float[])Floats.Clone();
        var result = new float[Values!.Length];
        for (int i = 0; i < result.Length; i++)
            result[i] = Values[i] * ScaleAt(i);
        return result;
    }

    /// <summary>Float32 values unchanged.</summary>
    public static QuantizedTensor Float32(float[] w) => new("float32", (float[])w.Clone(), null, [], 1, 0, 0);

    /// <summary>Values rounded to float16 (saturating at ±65504).</summary>
    public static QuantizedTensor Float16(float[] w)
    {
        var f = new float[w.Length];
        for (int i = 0; i < w.Length; i++)
            f[i] = (float)ToHalf(w[i]);
        return new("float16", f, null, [], 1, 0, 0);
    }

    /// <summary>The float16 value of <paramref name="v"/>, saturated to the finite range.</summary>
    public static Half ToHalf(float v) => (Half)Math.Clamp(v, -65504f, 65504f);

    /// <summary>Symmetric int8 (−127..127): scale = max|w| / 127 per row (<paramref name="perChannel"/>) or for the whole tensor.</summary>
    public static QuantizedTensor Int8Symmetric(float[] w, int rows, bool perChannel)
    {
        int rowLength = w.Length / rows;
        var scales = new float[perChannel ? rows : 1];
        for (int s = 0; s < scales.Length; s++)
        {
            var span = perChannel ? w.AsSpan(s * rowLength, rowLength) : w.AsSpan();
            scales[s] = ScaleFor(MaxAbs(span), 127);
        }
        var q = new sbyte[w.Length];
        for (int i = 0; i < w.Length; i++)
            q[i] = (sbyte)Math.Clamp(MathF.Round(w[i] / scales[perChannel ? i / rowLength : 0]), -127f, 127f);
        return new(perChannel ? "int8 per-channel" : "int8 per-tensor", null, q, scales, rows, 0, 0);
    }

    /// <summary>
    /// Symmetric int4 (−8..7, scale = max|w| / 7) in blocks of <paramref name="blockSize"/> consecutive weights of a row (the input
    /// dimension), rounded with error diffusion: each value within one step of its weight, each block's sum within half a step.
    /// </summary>
    public static QuantizedTensor Int4Blockwise(float[] w, int rows, int blockSize)
    {
        int rowLength = w.Length / rows;
        int blocks = (rowLength + blockSize - 1) / blockSize;
        var scales = new float[rows * blocks];
        var q = new sbyte[w.Length];
        for (int r = 0; r < rows; r++)
            for (int b = 0; b < blocks; b++)
            {
                int start = r * rowLength + b * blockSize, len = Math.Min(blockSize, rowLength - b * blockSize);
                float scale = ScaleFor(MaxAbs(w.AsSpan(start, len)), 7);
                scales[r * blocks + b] = scale;
                // Error diffusion along the input dimension: each weight absorbs the rounding error left by the previous one
                // (kept within half a step), so every weight stays within one step and the block's running sum within half a step.
                // Neighbouring inputs (pixels, features) are correlated, so the errors largely cancel in the dot product.
                float carry = 0;
                for (int i = start; i < start + len; i++)
                {
                    float target = w[i] + carry;
                    float v = Math.Clamp(MathF.Round(target / scale), -8f, 7f);
                    q[i] = (sbyte)v;
                    carry = Math.Clamp(target - v * scale, -0.5f * scale, 0.5f * scale);
                }
            }
        return new($"int4 block {blockSize}", null, q, scales, rows, blockSize, blocks);
    }

    private static float ScaleFor(float maxAbs, int qmax)
    {
        float s = maxAbs / qmax;
        return s > 0 && float.IsFinite(s) ? s : 1f;
    }

    private static float MaxAbs(ReadOnlySpan<float> span)
    {
        float m = 0;
        foreach (var v in span)
            m = Math.Max(m, Math.Abs(v));
        return m;
    }
}
