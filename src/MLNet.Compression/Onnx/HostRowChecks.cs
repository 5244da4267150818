using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using MLNet.Compression.Onnx.Proto;
using DataType = MLNet.Compression.Onnx.Proto.TensorProto.Types.DataType;

namespace MLNet.Compression.Onnx;

/// <summary>
/// The in-process form of an exported graph for <see cref="BatchedOnnxScorer"/> (issue 19): the checks an exported graph
/// makes on its input rows, which every ONNX consumer needs (ML.NET's OnnxTransformer in a saved zip runs the graph as it
/// is), are made on the host instead, where the scorer's block of rows is already in cache, so that ONNX Runtime does not
/// spend a pass over the features on them:
/// <list type="bullet">
/// <item>the non-finite row probe (Sub(x, x) → ReduceMean over the row, or Einsum "ij->i" from opset 18): 0 for a row of
/// finite features, NaN for a row with a NaN or an infinity (<see cref="OnnxGraphBuilder.NonFiniteRowProbe"/>, the output
/// head's guard) becomes a graph input the host fills with the same values;</item>
/// <item>the per-batch int8 input clean (an If whose branches zero such rows and clip every value to ± a limit) becomes the
/// host zeroing those rows and clipping in its own buffer.</item>
/// </list>
/// Outputs are the exported graph's, bit for bit: x − x is +0 for every finite x, so the probe is +0 for a finite row and
/// NaN otherwise, exactly what the host writes; the clean is the same Where and Clip on the same values. A graph with no
/// such nodes is returned unchanged.
/// </summary>
internal sealed class HostRowChecks(byte[] onnx, bool rowProbe, bool rowProbeVector, float? clipLimit, bool rowAbsMax = false)
{
    /// <summary>Name of the added [N, 1] input holding each row's probe (0 or NaN).</summary>
    internal const string RowProbeName = "mlnet_host_row_probe";

    /// <summary>Name of the added [N] input holding each row's probe (the opset-18 Einsum form).</summary>
    internal const string RowProbeVectorName = "mlnet_host_row_probe_vector";

    /// <summary>Name of the added [N, 1] input holding each row's largest magnitude (the first int8 dynamic layer's range).</summary>
    internal const string RowAbsMaxName = "mlnet_host_row_abs_max";

    /// <summary>Whether the graph takes <see cref="RowAbsMaxName"/>: max(ReduceMax(x), −ReduceMin(x)) per row, from the host.</summary>
    public bool HasRowAbsMax { get; } = rowAbsMax;

    /// <summary>The graph the scorer runs.</summary>
    public byte[] Onnx { get; } = onnx;

    /// <summary>Whether the graph takes <see cref="RowProbeName"/>.</summary>
    public bool HasRowProbe { get; } = rowProbe;

    /// <summary>Whether the graph takes <see cref="RowProbeVectorName"/>.</summary>
    public bool HasRowProbeVector { get; } = rowProbeVector;

    /// <summary>Whether any check moved to the host (the scorer then scans each block).</summary>
    public bool Any => HasRowProbe || HasRowProbeVector || ClipLimit is not null || HasRowAbsMax;

    /// <summary>The names of the inputs the host fills, in the order <see cref="CreateHostInputs"/> gives their tensors.</summary>
    public IReadOnlyList<string> HostInputNames =>
        [.. HasRowProbe ? [RowProbeName] : Array.Empty<string>(), .. HasRowProbeVector ? [RowProbeVectorName] : Array.Empty<string>(),
         .. HasRowAbsMax ? [RowAbsMaxName] : Array.Empty<string>()];

    /// <summary>
    /// The tensors for <see cref="HostInputNames"/>, in that order, over the first <paramref name="rows"/> rows of
    /// <paramref name="values"/> (pinned; the caller disposes them).
    /// </summary>
    public OrtValue[] CreateHostInputs(HostRowValues values, int rows)
    {
        var inputs = new List<OrtValue>(3);
        if (HasRowProbe)
            inputs.Add(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, values.Probes.AsMemory(0, rows), [rows, 1]));
        if (HasRowProbeVector)
            inputs.Add(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, values.Probes.AsMemory(0, rows), [rows]));
        if (HasRowAbsMax)
            inputs.Add(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, values.AbsMax.AsMemory(0, rows), [rows, 1]));
        return [.. inputs];
    }

    /// <summary>When set, the host zeroes non-finite rows and clips every value to ± this before the run (the per-batch clean).</summary>
    public float? ClipLimit { get; } = clipLimit;

    /// <summary>The graph as it is, with no check on the host.</summary>
    public static HostRowChecks None(byte[] onnx) => new(onnx, false, false, null);

    /// <summary>Rewrites <paramref name="onnx"/> (an exported graph) into its in-process form; unchanged when nothing matches.</summary>
    public static HostRowChecks Rewrite(byte[] onnx)
    {
        var model = ModelProto.Parser.ParseFrom(onnx);
        var graph = model.Graph;
        if (graph.Input.Count != 1)
            return None(onnx);
        string x = graph.Input[0].Name;
        var nodes = graph.Node;
        var renames = new Dictionary<string, string>(StringComparer.Ordinal);
        bool rowProbe = false, rowProbeVector = false;
        foreach (var sub in nodes.Where(n => n.OpType == "Sub" && n.Input.Count == 2 && n.Input[0] == x && n.Input[1] == x).ToList())
        {
            foreach (var consumer in nodes.Where(n => n.Input.Contains(sub.Output[0])).ToList())
            {
                if (consumer.OpType == "ReduceMean" && IsRowReduction(consumer, graph))
                {
                    renames[consumer.Output[0]] = RowProbeName;
                    rowProbe = true;
                }
                else if (consumer.OpType == "Einsum" && consumer.Attribute.Any(a => a.Name == "equation" && a.S.ToStringUtf8().Replace(" ", "", StringComparison.Ordinal) == "ij->i"))
                {
                    renames[consumer.Output[0]] = RowProbeVectorName;
                    rowProbeVector = true;
                }
            }
        }

        // The per-batch clean: If(any row bad, Where(IsNaN(probe), 0, x) → Clip(lo, hi), Clip(x, lo, hi)) with lo = −hi.
        float? clipLimit = null;
        foreach (var clean in nodes.Where(n => n.OpType == "If").ToList())
        {
            var elseBranch = clean.Attribute.FirstOrDefault(a => a.Name == "else_branch")?.G;
            var thenBranch = clean.Attribute.FirstOrDefault(a => a.Name == "then_branch")?.G;
            if (elseBranch is not { Node.Count: 1 } || elseBranch.Node[0] is not { OpType: "Clip" } clip || clip.Input.Count != 3 || clip.Input[0] != x
                || thenBranch is not { Node.Count: 3 } || thenBranch.Node[0].OpType != "IsNaN" || !renames.ContainsKey(thenBranch.Node[0].Input[0])
                || thenBranch.Node[1].OpType != "Where" || thenBranch.Node[1].Input[2] != x || !IsZero(graph, thenBranch.Node[1].Input[1])
                || thenBranch.Node[2].OpType != "Clip" || thenBranch.Node[2].Input[1] != clip.Input[1] || thenBranch.Node[2].Input[2] != clip.Input[2]
                || ScalarOf(graph, clip.Input[1]) is not float lo || ScalarOf(graph, clip.Input[2]) is not float hi || lo != -hi || !(hi > 0)
                || (clipLimit is float known && known != hi))
                continue;
            clipLimit = hi;
            renames[clean.Output[0]] = x;
        }
        // The symmetric per-row int8 dynamic layer reading the model's input: Max(ReduceMax(x), Neg(ReduceMin(x))) per row. The
        // host sees every value as it copies the row, so it hands over the row's largest magnitude (exact: no rounding).
        bool rowAbsMax = false;
        NodeProto? Producer(string value) => nodes.FirstOrDefault(n => n.Output.Contains(value));
        foreach (var max in nodes.Where(n => n.OpType == "Max" && n.Input.Count == 2).ToList())
        {
            if (Producer(max.Input[0]) is { OpType: "ReduceMax" } reduceMax && reduceMax.Input[0] == x && IsRowReduction(reduceMax, graph)
                && Producer(max.Input[1]) is { OpType: "Neg" } neg && Producer(neg.Input[0]) is { OpType: "ReduceMin" } reduceMin
                && reduceMin.Input[0] == x && IsRowReduction(reduceMin, graph))
            {
                renames[max.Output[0]] = RowAbsMaxName;
                rowAbsMax = true;
            }
        }
        if (renames.Count == 0)
            return None(onnx);

        foreach (var node in nodes)
            RenameInputs(node, renames);
        foreach (var output in graph.Output)
            if (renames.ContainsKey(output.Name))
                return None(onnx); // a probe that is a graph output: leave the graph as it is
        RemoveDeadNodes(graph);
        if (rowProbe)
            graph.Input.Add(FloatInput(RowProbeName, graph.Input[0], keepColumn: true));
        if (rowProbeVector)
            graph.Input.Add(FloatInput(RowProbeVectorName, graph.Input[0], keepColumn: false));
        if (rowAbsMax)
            graph.Input.Add(FloatInput(RowAbsMaxName, graph.Input[0], keepColumn: true));
        return new(model.ToByteArray(), rowProbe, rowProbeVector, clipLimit, rowAbsMax);
    }

    /// <summary>
    /// Makes the host checks on the <paramref name="rows"/> rows of <paramref name="features"/> (<paramref name="width"/>
    /// values each) in place, as <see cref="CopyRow"/> does for one row, into <paramref name="values"/>.
    /// </summary>
    public void Apply(Span<float> features, int rows, int width, HostRowValues values)
    {
        for (int r = 0; r < rows; r++)
        {
            var row = features.Slice(r * width, width);
            CopyRow(row, row, values, r);
        }
    }

    /// <summary>
    /// Copies one row from <paramref name="source"/> into <paramref name="destination"/> (they may be the same span) and
    /// writes its host values at <paramref name="row"/> of <paramref name="values"/>, reading the values as they are copied:
    /// its probe (0 for finite values, NaN otherwise) and, when the graph takes it, its largest magnitude; with
    /// <see cref="ClipLimit"/> set the copy is also cleaned (a non-finite row zeroed, values clipped). The batched view fills
    /// its block through this.
    /// </summary>
    public void CopyRow(ReadOnlySpan<float> source, Span<float> destination, HostRowValues values, int row)
    {
        if (source.Length != destination.Length)
            throw new ArgumentException($"The row has {source.Length} values; the block row holds {destination.Length}.", nameof(source));
        ref float src = ref MemoryMarshal.GetReference(source);
        ref float dst = ref MemoryMarshal.GetReference(destination);
        var sum = Vector<float>.Zero;
        var top = new Vector<float>(float.NegativeInfinity);
        var bottom = new Vector<float>(float.PositiveInfinity);
        int i = 0;
        bool range = HasRowAbsMax || ClipLimit is not null; // the row's largest magnitude: an input, or the clip's test
        for (; i <= source.Length - Vector<float>.Count; i += Vector<float>.Count)
        {
            var v = Vector.LoadUnsafe(ref src, (nuint)i);
            v.StoreUnsafe(ref dst, (nuint)i);
            sum += v - v;
            if (range)
            {
                top = Vector.Max(top, v);
                bottom = Vector.Min(bottom, v);
            }
        }
        float tail = 0f, high = float.NegativeInfinity, low = float.PositiveInfinity;
        for (; i < source.Length; i++)
        {
            float v = Unsafe.Add(ref src, i);
            Unsafe.Add(ref dst, i) = v;
            tail += v - v;
            high = Math.Max(high, v);
            low = Math.Min(low, v);
        }
        bool finite = Vector.EqualsAll(sum, Vector<float>.Zero) && tail == 0f;
        values.Probes[row] = finite ? 0f : float.NaN;
        float absMax = 0f;
        if (range)
        {
            for (int l = 0; l < Vector<float>.Count; l++)
            {
                high = Math.Max(high, top[l]);
                low = Math.Min(low, bottom[l]);
            }
            // Max(row max, −row min), as the graph's ReduceMax/ReduceMin/Neg/Max compute it for a finite row (a row with a NaN
            // or an infinity scores NaN through its probe whatever this is).
            absMax = Math.Max(high, -low);
            if (HasRowAbsMax)
                values.AbsMax[row] = absMax;
        }
        if (ClipLimit is float limit)
        {
            if (!finite)
                destination.Clear();
            else if (absMax >= limit)
                foreach (ref float v in destination)
                    v = Math.Clamp(v, -limit, limit);
        }
    }

    private static bool IsRowReduction(NodeProto reduce, GraphProto graph)
    {
        if (reduce.Attribute.FirstOrDefault(a => a.Name == "keepdims") is { I: 0 })
            return false;
        var axes = reduce.Attribute.FirstOrDefault(a => a.Name == "axes")?.Ints.ToArray()
            ?? (reduce.Input.Count > 1 ? graph.Initializer.FirstOrDefault(t => t.Name == reduce.Input[1]) is { } t ? Int64sOf(t) : null : null);
        return axes is [1] or [-1];
    }

    private static long[]? Int64sOf(TensorProto t) =>
        t.DataType != (int)DataType.Int64 ? null
        : t.Int64Data.Count > 0 ? t.Int64Data.ToArray()
        : Enumerable.Range(0, t.RawData.Length / 8).Select(i => BitConverter.ToInt64(t.RawData.Span.Slice(i * 8, 8))).ToArray();

    private static float? ScalarOf(GraphProto graph, string name) =>
        graph.Initializer.FirstOrDefault(t => t.Name == name) is { DataType: (int)DataType.Float } t && t.Dims.Aggregate(1L, (a, b) => a * b) == 1
            ? (t.FloatData.Count == 1 ? t.FloatData[0] : t.RawData.Length == 4 ? OnnxGraphBuilder.ReadFloat(t.RawData.Span, 0) : null)
            : null;

    private static bool IsZero(GraphProto graph, string name) => ScalarOf(graph, name) is 0f;

    private static void RenameInputs(NodeProto node, IReadOnlyDictionary<string, string> renames)
    {
        for (int i = 0; i < node.Input.Count; i++)
            if (renames.TryGetValue(node.Input[i], out var to))
                node.Input[i] = to;
        foreach (var a in node.Attribute)
        {
            if (a.G is not null)
                foreach (var inner in a.G.Node)
                    RenameInputs(inner, renames);
        }
    }

    /// <summary>Removes nodes none of whose outputs is read (by a node, a branch, or as a graph output), then unread initializers.</summary>
    private static void RemoveDeadNodes(GraphProto graph)
    {
        while (true)
        {
            var read = new HashSet<string>(graph.Output.Select(o => o.Name), StringComparer.Ordinal);
            foreach (var n in graph.Node)
                AddReads(n, read);
            var dead = graph.Node.Where(n => !n.Output.Any(read.Contains)).ToList();
            if (dead.Count == 0)
                break;
            foreach (var n in dead)
                graph.Node.Remove(n);
        }
        var used = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in graph.Node)
            AddReads(n, used);
        foreach (var t in graph.Initializer.Where(t => !used.Contains(t.Name)).ToList())
            graph.Initializer.Remove(t);
    }

    private static void AddReads(NodeProto node, HashSet<string> read)
    {
        foreach (var i in node.Input)
            read.Add(i);
        foreach (var a in node.Attribute)
            if (a.G is not null)
                foreach (var inner in a.G.Node)
                    AddReads(inner, read);
    }

    private static ValueInfoProto FloatInput(string name, ValueInfoProto features, bool keepColumn)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(features.Type.TensorType.Shape.Dim[0].Clone());
        if (keepColumn)
            shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = 1 });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)DataType.Float, Shape = shape } },
        };
    }
}

/// <summary>The per-row values the host hands to the in-process graph for one block (<see cref="HostRowChecks"/>).</summary>
internal sealed class HostRowValues(int capacity)
{
    /// <summary>Rows this holds.</summary>
    public int Capacity { get; } = capacity;

    /// <summary>Each row's probe: 0 for finite features, NaN otherwise (pinned: ONNX Runtime reads it in place).</summary>
    public float[] Probes { get; } = GC.AllocateUninitializedArray<float>(capacity, pinned: true);

    /// <summary>Each row's largest magnitude, when the graph takes it (pinned).</summary>
    public float[] AbsMax { get; } = GC.AllocateUninitializedArray<float>(capacity, pinned: true);
}
