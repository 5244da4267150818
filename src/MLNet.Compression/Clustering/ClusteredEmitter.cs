using MLNet.Compression.Networks;
using MLNet.Compression.Onnx;
using MLNet.Compression.Onnx.Proto;

namespace MLNet.Compression.Clustering;

/// <summary>How one clustered layer's weights are stored in the ONNX model.</summary>
internal enum ClusteredEncoding
{
    /// <summary>Not clustered: float32 (compact sparse storage when mostly zeros, like the default export).</summary>
    Float,

    /// <summary>A float codebook plus one uint8 index per weight, rebuilt by Cast → Gather.</summary>
    DenseIndices,

    /// <summary>
    /// For pruned layers: a float codebook (plus a trailing 0), and per non-zero weight one uint8 index and one uint8 gap to
    /// the previous non-zero (gaps over 255 bridged by entries that point at the 0), rebuilt by Gather, CumSum and ScatterElements.
    /// </summary>
    SparseIndices,
}

/// <summary>What the exporter stores for one clustered layer.</summary>
/// <param name="Layer">Layer name.</param>
/// <param name="Encoding">How its weights are stored.</param>
/// <param name="Clusters">Codebook entries (0 when not clustered).</param>
/// <param name="Elements">Weights in the layer.</param>
/// <param name="NonZeros">Non-zero weights.</param>
/// <param name="StoredBytes">Bytes of weight data in the ONNX file (codebook, indices, gaps or float values; biases excluded).</param>
internal sealed record ClusteredLayerInfo(string Layer, ClusteredEncoding Encoding, int Clusters, long Elements, long NonZeros, long StoredBytes);

/// <summary>Writes clustered layers as codebook + uint8 indices; other layers like the default (sparse-aware) export.</summary>
internal sealed class ClusteredEmitter : OnnxLayerEmitter
{
    private readonly IReadOnlyDictionary<string, LayerClusters> clusters;
    private readonly SparseWeightsEmitter fallback = new(new OnnxExportOptions());

    public ClusteredEmitter(IReadOnlyDictionary<string, LayerClusters> clusters) => this.clusters = clusters;

    /// <inheritdoc />
    public override LayerEncoding Encoding => LayerEncoding.Clustered;

    /// <summary>Whether a layer with this many non-zeros is stored sparsely (same density rule as the float export).</summary>
    public static bool UseSparse(long elements, long nonZeros) => nonZeros <= elements * SparseWeights.DefaultDensityThreshold;

    /// <summary>The index and gap streams of the sparse encoding: one entry per non-zero, plus bridging entries (index = zeroIndex).</summary>
    public static (byte[] Indices, byte[] Gaps) EncodeSparse(int[] assignment, int zeroIndex)
    {
        var (sources, gaps) = SparseWeights.EncodeGaps(assignment.Length, i => assignment[i] >= 0);
        return (sources.Select(i => (byte)(i < 0 ? zeroIndex : assignment[i])).ToArray(), gaps);
    }

    /// <summary>What <see cref="EmitWeight"/> stores for <paramref name="layer"/>.</summary>
    public ClusteredLayerInfo Describe(ParameterizedLayer layer)
    {
        long n = layer.Weight.Length;
        long nz = SparseWeights.CountNonZeros(layer.Weight);
        if (!clusters.TryGetValue(layer.Name, out var c))
        {
            var enc = SparseWeights.Choose(layer.Weight, new OnnxExportOptions());
            return new ClusteredLayerInfo(layer.Name, ClusteredEncoding.Float, 0, n, nz, SparseWeights.EncodedBytes(enc, layer.Weight));
        }
        int k = c.Centroids.Length;
        if (UseSparse(n, nz))
        {
            var (indices, _) = EncodeSparse(c.Assignment, k);
            return new ClusteredLayerInfo(layer.Name, ClusteredEncoding.SparseIndices, k, n, nz, (k + 1) * sizeof(float) + 2L * indices.Length);
        }
        return new ClusteredLayerInfo(layer.Name, ClusteredEncoding.DenseIndices, k, n, nz, (k + 1) * sizeof(float) + n);
    }

    /// <inheritdoc />
    public override string EmitWeight(OnnxGraphBuilder graph, ParameterizedLayer layer)
    {
        if (!clusters.TryGetValue(layer.Name, out var c))
            return fallback.EmitWeight(graph, layer);
        string name = layer.Name + ".weight";
        int k = c.Centroids.Length;
        // The codebook ends with a 0 that pruned weights (and bridging entries) point at.
        var codebook = graph.AddFloatInitializer(name + ".codebook", [.. c.Centroids, 0f], [k + 1]);
        long n = layer.Weight.Length;
        long nz = c.Assignment.LongCount(a => a >= 0);
        if (UseSparse(n, nz))
        {
            var (indices, gaps) = EncodeSparse(c.Assignment, k);
            var zeros = SparseWeights.Zeros(graph, name, layer.Weight.Length);
            if (indices.Length == 0)
                return SparseWeights.Reshape(graph, name, zeros, layer.WeightShape);
            var idx = graph.AddRawInitializer(name + ".indices", TensorProto.Types.DataType.Uint8, indices, 1, [indices.Length], indices.Length);
            var values = graph.AddNode("Gather", [codebook, Cast(graph, idx, name + ".indices")], name + ".values", new Dictionary<string, object> { ["axis"] = 0L });
            return SparseWeights.ScatterByGaps(graph, name, zeros, values, gaps, layer.WeightShape);
        }
        var dense = new byte[n];
        for (int i = 0; i < dense.Length; i++)
            dense[i] = (byte)(c.Assignment[i] < 0 ? k : c.Assignment[i]);
        var all = graph.AddRawInitializer(name + ".indices", TensorProto.Types.DataType.Uint8, dense, 1,
            layer.WeightShape.Select(d => (long)d).ToArray(), n);
        return graph.AddNode("Gather", [codebook, Cast(graph, all, name + ".indices")], name + ".dense", new Dictionary<string, object> { ["axis"] = 0L });
    }

    private static string Cast(OnnxGraphBuilder graph, string input, string name) =>
        graph.AddNode("Cast", [input], name + "_i32", new Dictionary<string, object> { ["to"] = (long)TensorProto.Types.DataType.Int32 });
}
