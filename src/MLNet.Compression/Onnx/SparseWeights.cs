using System.Runtime.InteropServices;
using Google.Protobuf;
using MLNet.Compression.Networks;
using MLNet.Compression.Onnx.Proto;

namespace MLNet.Compression.Onnx;

/// <summary>When the exporter stores weight tensors compactly (see <see cref="OnnxExportOptions.SparseWeights"/>).</summary>
internal enum SparseWeightsMode
{
    /// <summary>Compactly when the tensor's density is at most <see cref="OnnxExportOptions.SparseDensityThreshold"/> and the encoding is smaller.</summary>
    Auto,

    /// <summary>Always dense float32 (the exporter's historical output).</summary>
    Never,

    /// <summary>Every dense/conv weight tensor compactly, whatever its density (for tests and comparisons).</summary>
    Always,
}

/// <summary>How a sparse weight tensor is stored in the ONNX file. All reconstruct the exact float32 weights.</summary>
internal enum SparseWeightEncoding
{
    /// <summary>Plain float32 initializer (4 bytes per element).</summary>
    Dense,

    /// <summary>
    /// The non-zero values (float32) plus one uint8 gap per value (positions = CumSum of the gaps; gaps over 255 are bridged by
    /// explicit zero entries), rebuilt in the graph by Cast → CumSum → ScatterElements into ConstantOfShape zeros → Reshape.
    /// About 5 bytes per non-zero. The default: smallest on disk and in the deflated ML.NET zip.
    /// </summary>
    DeltaUInt8,

    /// <summary>
    /// The non-zero values plus a packed 1-bit mask of the dense tensor (MSB first), rebuilt by BitShift/Mod → Cast(bool) →
    /// NonZero → ScatterElements. 4 bytes per non-zero plus n/8 bytes.
    /// </summary>
    Bitmask,

    /// <summary>ONNX <c>sparse_initializer</c> (COO) with linear int64 indices: 12 bytes per non-zero.</summary>
    SparseInitializerInt64,

    /// <summary>ONNX <c>sparse_initializer</c> (COO) with linear int32 indices: 8 bytes per non-zero.</summary>
    SparseInitializerInt32,
}

/// <summary>How one layer's weight tensor is (or would be) stored by the exporter.</summary>
/// <param name="Layer">Layer name.</param>
/// <param name="Encoding">The encoding the exporter uses for it.</param>
/// <param name="Elements">Elements of the dense weight tensor.</param>
/// <param name="NonZeros">Non-zero weights.</param>
/// <param name="EncodedBytes">Bytes of tensor data stored in the ONNX file for the weights (values, indices or mask; excluding the few
/// hundred bytes of node and shape metadata).</param>
/// <param name="ResidentBytes">Bytes the weights occupy once ONNX Runtime has loaded the model: dense float32 for every encoding
/// here, because sparse initializers and in-graph reconstructions are materialized as dense tensors.</param>
internal sealed record SparseWeightLayerInfo(string Layer, SparseWeightEncoding Encoding, long Elements, long NonZeros, long EncodedBytes, long ResidentBytes)
{
    /// <summary>Fraction of non-zero weights.</summary>
    public double Density => Elements == 0 ? 0 : (double)NonZeros / Elements;

    /// <summary>Bytes the weights take as dense float32.</summary>
    public long DenseBytes => Elements * sizeof(float);
}

/// <summary>
/// Compact ONNX storage of weight tensors with many exact zeros (after magnitude pruning). Pruned models are otherwise no smaller
/// than dense ones, because ONNX stores float tensors densely. The encodings keep the exact float32 values, so scores are
/// unchanged; ONNX Runtime materializes the weights densely at load (resident memory is dense float32 either way).
/// </summary>
internal static class SparseWeights
{
    /// <summary>Default density at or below which <see cref="SparseWeightsMode.Auto"/> stores a tensor compactly.</summary>
    public const double DefaultDensityThreshold = 0.5;

    /// <summary>Bytes of graph metadata an encoded tensor costs beyond its data (nodes, shapes); small tensors stay dense.</summary>
    internal const int EncodingOverheadBytes = 768;

    /// <summary>Counts the non-zero elements (−0 counts as zero).</summary>
    public static long CountNonZeros(ReadOnlySpan<float> values)
    {
        long n = 0;
        foreach (var v in values)
            if (v != 0f)
                n++;
        return n;
    }

    /// <summary>Bytes of tensor data <paramref name="encoding"/> stores for the dense tensor <paramref name="values"/>.</summary>
    public static long EncodedBytes(SparseWeightEncoding encoding, ReadOnlySpan<float> values) => encoding switch
    {
        SparseWeightEncoding.Dense => (long)values.Length * sizeof(float),
        SparseWeightEncoding.DeltaUInt8 => (long)EncodeDeltaUInt8(values).Values.Length * (sizeof(float) + 1),
        SparseWeightEncoding.Bitmask => CountNonZeros(values) * sizeof(float) + (values.Length + 7) / 8,
        SparseWeightEncoding.SparseInitializerInt64 => CountNonZeros(values) * (sizeof(float) + sizeof(long)),
        SparseWeightEncoding.SparseInitializerInt32 => CountNonZeros(values) * (sizeof(float) + sizeof(int)),
        _ => throw new ArgumentOutOfRangeException(nameof(encoding), encoding, null),
    };

    /// <summary>The encoding the exporter picks for <paramref name="values"/> under <paramref name="options"/>.</summary>
    public static SparseWeightEncoding Choose(ReadOnlySpan<float> values, OnnxExportOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!(options.SparseDensityThreshold >= 0 && options.SparseDensityThreshold <= 1))
            throw new ArgumentOutOfRangeException(nameof(options), options.SparseDensityThreshold,
                "OnnxExportOptions.SparseDensityThreshold must be between 0 and 1.");
        if (options.SparseWeights == SparseWeightsMode.Never || options.SparseEncoding == SparseWeightEncoding.Dense || values.Length == 0)
            return SparseWeightEncoding.Dense;
        if (options.SparseWeights == SparseWeightsMode.Always)
            return options.SparseEncoding;
        double density = (double)CountNonZeros(values) / values.Length;
        if (density > options.SparseDensityThreshold)
            return SparseWeightEncoding.Dense;
        long dense = (long)values.Length * sizeof(float);
        return EncodedBytes(options.SparseEncoding, values) + EncodingOverheadBytes < dense ? options.SparseEncoding : SparseWeightEncoding.Dense;
    }

    /// <summary>
    /// Per parameterized layer: the encoding the exporter uses for its weights under <paramref name="options"/> (the default
    /// emitter's behaviour), the bytes stored and the bytes resident after ONNX Runtime loads the model. Biases are always dense.
    /// </summary>
    public static IReadOnlyList<SparseWeightLayerInfo> Describe(NetworkModel model, OnnxExportOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new();
        bool applies = OnnxExporter.UsesSparseWeights(options);
        return model.ParameterizedLayers.Select(l =>
        {
            var enc = applies ? Choose(l.Weight, options) : SparseWeightEncoding.Dense;
            return new SparseWeightLayerInfo(l.Name, enc, l.Weight.Length, CountNonZeros(l.Weight),
                EncodedBytes(enc, l.Weight), (long)l.Weight.Length * sizeof(float));
        }).ToArray();
    }

    /// <summary>
    /// Adds a float tensor of shape <paramref name="dims"/> with <paramref name="values"/> (row-major) to the graph using
    /// <paramref name="encoding"/>, and returns the name of a float value holding the dense tensor.
    /// </summary>
    public static string Emit(OnnxGraphBuilder graph, string name, float[] values, IReadOnlyList<int> dims, SparseWeightEncoding encoding)
    {
        ArgumentNullException.ThrowIfNull(graph);
        ArgumentNullException.ThrowIfNull(values);
        long count = dims.Aggregate(1L, (a, b) => a * b);
        if (count != values.Length)
            throw new ArgumentException($"Tensor '{name}' has {values.Length} values but its shape [{string.Join(", ", dims)}] needs {count}.");
        return encoding switch
        {
            SparseWeightEncoding.Dense => graph.AddFloatInitializer(name, values, dims),
            SparseWeightEncoding.DeltaUInt8 => EmitDeltaUInt8(graph, name, values, dims),
            SparseWeightEncoding.Bitmask => EmitBitmask(graph, name, values, dims),
            SparseWeightEncoding.SparseInitializerInt64 => EmitSparseInitializer(graph, name, values, dims, TensorProto.Types.DataType.Int64),
            SparseWeightEncoding.SparseInitializerInt32 => EmitSparseInitializer(graph, name, values, dims, TensorProto.Types.DataType.Int32),
            _ => throw new ArgumentOutOfRangeException(nameof(encoding), encoding, null),
        };
    }

    /// <summary>
    /// The entries of a uint8 gap encoding over <paramref name="length"/> positions: one per position where
    /// <paramref name="isStored"/> is true, each with its gap to the previous entry (position[i] = gap[0] + … + gap[i]).
    /// A gap over 255 is bridged by entries with gap 255 and source -1; they must carry a value that leaves the tensor
    /// unchanged (they land on positions that are not stored, i.e. zeros). The first entry may sit at position 0 (gap 0).
    /// </summary>
    internal static (int[] Sources, byte[] Gaps) EncodeGaps(int length, Func<int, bool> isStored)
    {
        var sources = new List<int>();
        var gaps = new List<byte>();
        long previous = 0;
        for (int i = 0; i < length; i++)
        {
            if (!isStored(i))
                continue;
            long gap = i - previous;
            while (gap > byte.MaxValue)
            {
                sources.Add(-1);
                gaps.Add(byte.MaxValue);
                gap -= byte.MaxValue;
            }
            sources.Add(i);
            gaps.Add((byte)gap);
            previous = i;
        }
        return (sources.ToArray(), gaps.ToArray());
    }

    /// <summary>Non-zero values and uint8 gaps (see <see cref="EncodeGaps"/>); bridging entries have value 0.</summary>
    internal static (float[] Values, byte[] Gaps) EncodeDeltaUInt8(ReadOnlySpan<float> dense)
    {
        var copy = dense.ToArray();
        var (sources, gaps) = EncodeGaps(copy.Length, i => copy[i] != 0f);
        return (sources.Select(i => i < 0 ? 0f : copy[i]).ToArray(), gaps);
    }

    /// <summary>Inverse of <see cref="EncodeDeltaUInt8"/> (for tests).</summary>
    internal static float[] DecodeDeltaUInt8(float[] values, byte[] gaps, int length)
    {
        var dense = new float[length];
        long p = 0;
        for (int i = 0; i < values.Length; i++)
        {
            p += gaps[i];
            dense[p] = values[i];
        }
        return dense;
    }

    private static string EmitDeltaUInt8(OnnxGraphBuilder graph, string name, float[] dense, IReadOnlyList<int> dims)
    {
        var (values, gaps) = EncodeDeltaUInt8(dense);
        var zeros = Zeros(graph, name, dense.Length);
        if (values.Length == 0)
            return Reshape(graph, name, zeros, dims);
        var v = graph.AddFloatInitializer(name + ".values", values, [values.Length]);
        return ScatterByGaps(graph, name, zeros, v, gaps, dims);
    }

    /// <summary>
    /// Writes <paramref name="values"/> (a float value of one entry per gap) into the flat <paramref name="zeros"/> at the
    /// positions the uint8 <paramref name="gaps"/> encode (Cast → CumSum → ScatterElements) and reshapes to <paramref name="dims"/>.
    /// </summary>
    internal static string ScatterByGaps(OnnxGraphBuilder graph, string name, string zeros, string values, byte[] gaps, IReadOnlyList<int> dims)
    {
        var g = graph.AddRawInitializer(name + ".gaps", TensorProto.Types.DataType.Uint8, gaps, 1, [gaps.Length], gaps.Length);
        var g32 = graph.AddNode("Cast", [g], name + ".gaps_i32", new Dictionary<string, object> { ["to"] = (long)TensorProto.Types.DataType.Int32 });
        var axis = graph.AddRawInitializer(name + ".axis", TensorProto.Types.DataType.Int32, new byte[4], sizeof(int), [], 1);
        var positions = graph.AddNode("CumSum", [g32, axis], name + ".positions");
        var flat = graph.AddNode("ScatterElements", [zeros, positions, values], name + ".flat", new Dictionary<string, object> { ["axis"] = 0L });
        return Reshape(graph, name, flat, dims);
    }

    private static string EmitBitmask(OnnxGraphBuilder graph, string name, float[] dense, IReadOnlyList<int> dims)
    {
        var zeros = Zeros(graph, name, dense.Length);
        var mask = new byte[(dense.Length + 7) / 8];
        var values = new List<float>();
        for (int i = 0; i < dense.Length; i++)
        {
            if (dense[i] == 0f)
                continue;
            mask[i >> 3] |= (byte)(0x80 >> (i & 7));
            values.Add(dense[i]);
        }
        if (values.Count == 0)
            return Reshape(graph, name, zeros, dims);
        var v = graph.AddFloatInitializer(name + ".values", values.ToArray(), [values.Count]);
        var m = graph.AddRawInitializer(name + ".mask", TensorProto.Types.DataType.Uint8, mask, 1, [mask.Length, 1], mask.Length);
        var shifts = graph.AddRawInitializer(name + ".shifts", TensorProto.Types.DataType.Uint8, new byte[] { 7, 6, 5, 4, 3, 2, 1, 0 }, 1, [8], 8);
        var two = graph.AddRawInitializer(name + ".two", TensorProto.Types.DataType.Uint8, new byte[] { 2 }, 1, [], 1);
        var shifted = graph.AddNode("BitShift", [m, shifts], name + ".shifted", new Dictionary<string, object> { ["direction"] = "RIGHT" });
        var bits = graph.AddNode("Mod", [shifted, two], name + ".bits");
        var flatBits = Reshape(graph, name + ".bits", bits, [-1]);
        var isSet = graph.AddNode("Cast", [flatBits], name + ".set", new Dictionary<string, object> { ["to"] = (long)TensorProto.Types.DataType.Bool });
        var nz = graph.AddNode("NonZero", [isSet], name + ".nonzero");
        var positions = Reshape(graph, name + ".positions", nz, [-1]);
        var flat = graph.AddNode("ScatterElements", [zeros, positions, v], name + ".flat", new Dictionary<string, object> { ["axis"] = 0L });
        return Reshape(graph, name, flat, dims);
    }

    private static string EmitSparseInitializer(OnnxGraphBuilder graph, string name, float[] dense, IReadOnlyList<int> dims, TensorProto.Types.DataType indexType)
    {
        var values = new List<float>();
        var indices = new List<long>();
        for (int i = 0; i < dense.Length; i++)
            if (dense[i] != 0f)
            {
                values.Add(dense[i]);
                indices.Add(i);
            }
        var unique = graph.UniqueName(name);
        byte[] indexBytes = indexType switch
        {
            TensorProto.Types.DataType.Int64 => MemoryMarshal.AsBytes(CollectionsMarshal.AsSpan(indices)).ToArray(),
            TensorProto.Types.DataType.Int32 => MemoryMarshal.AsBytes(indices.Select(i => checked((int)i)).ToArray().AsSpan()).ToArray(),
            _ => throw new ArgumentOutOfRangeException(nameof(indexType), indexType, null),
        };
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("Sparse initializers are written on little-endian machines only.");
        var sparse = new SparseTensorProto
        {
            Values = new TensorProto
            {
                Name = unique,
                DataType = (int)TensorProto.Types.DataType.Float,
                RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(CollectionsMarshal.AsSpan(values))),
            },
            Indices = new TensorProto { DataType = (int)indexType, RawData = ByteString.CopyFrom(indexBytes) },
        };
        sparse.Values.Dims.Add(values.Count);
        sparse.Indices.Dims.Add(indices.Count);
        sparse.Dims.AddRange(dims.Select(d => (long)d));
        graph.Graph.SparseInitializer.Add(sparse);
        return unique;
    }

    internal static string Zeros(OnnxGraphBuilder graph, string name, int length)
    {
        var shape = graph.AddInt64Initializer(name + ".length", [length], [1]);
        return graph.AddNode("ConstantOfShape", [shape], name + ".zeros");
    }

    internal static string Reshape(OnnxGraphBuilder graph, string name, string input, IReadOnlyList<int> dims)
    {
        var shape = graph.AddInt64Initializer(name + ".shape", dims.Select(d => (long)d).ToArray(), [dims.Count]);
        return graph.AddNode("Reshape", [input, shape], name + ".dense");
    }
}

/// <summary>
/// The default float32 emitter, except that weight tensors with many exact zeros are stored compactly (see
/// <see cref="SparseWeights"/>). The exporter uses it in place of <see cref="OnnxLayerEmitter.Default"/> unless
/// <see cref="OnnxExportOptions.SparseWeights"/> is <see cref="SparseWeightsMode.Never"/>.
/// </summary>
internal sealed class SparseWeightsEmitter : OnnxLayerEmitter
{
    private readonly OnnxExportOptions exportOptions;

    /// <summary>Creates an emitter that follows <paramref name="options"/>' sparse settings.</summary>
    public SparseWeightsEmitter(OnnxExportOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        exportOptions = options;
    }

    /// <inheritdoc />
    public override LayerEncoding Encoding => LayerEncoding.Sparse;

    /// <inheritdoc />
    public override string EmitWeight(OnnxGraphBuilder graph, ParameterizedLayer layer) =>
        SparseWeights.Emit(graph, layer.Name + ".weight", layer.Weight, layer.WeightShape, SparseWeights.Choose(layer.Weight, exportOptions));
}
