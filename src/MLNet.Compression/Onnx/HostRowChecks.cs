using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
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
/// host zeroing those rows and clipping in its own buffer;</item>
/// <item>per-row int8 dynamic's first-layer row range (ReduceMax, ReduceMin) becomes an input;</item>
/// <item>the first layer's QuantizeLinear of the features (int8 static's fixed scale, per-row int8 dynamic's row scale, which
/// then is an input too) becomes the host writing the uint8 codes, which replace the float features as the graph's input
/// (<see cref="QuantizedInput"/>);</item>
/// <item>outputs the caller does not fetch are dropped with the nodes only they need.</item>
/// </list>
/// Outputs are the exported graph's, bit for bit: x − x is +0 for every finite x, so the probe is +0 for a finite row and
/// NaN otherwise, exactly what the host writes; the clean is the same Where and Clip on the same values; the range, the row
/// scale and the codes are computed with the graph's own float operations (<see cref="HostQuantizedInput"/>). A graph with
/// no such nodes is returned unchanged.
/// </summary>
internal sealed class HostRowChecks(byte[] onnx, bool rowProbe, bool rowProbeVector, float? clipLimit, bool rowAbsMax = false,
    HostQuantizedInput? quantizedInput = null, bool rowScale = false)
{
    /// <summary>Name of the added [N, 1] input holding each row's probe (0 or NaN).</summary>
    internal const string RowProbeName = "mlnet_host_row_probe";

    /// <summary>Name of the added [N] input holding each row's probe (the opset-18 Einsum form).</summary>
    internal const string RowProbeVectorName = "mlnet_host_row_probe_vector";

    /// <summary>Name of the added [N, 1] input holding each row's largest magnitude (the first int8 dynamic layer's range).</summary>
    internal const string RowAbsMaxName = "mlnet_host_row_abs_max";

    /// <summary>Name of the added [N, 1] input holding each row's scale for the first per-row int8 dynamic layer (with the input codes).</summary>
    internal const string RowScaleName = "mlnet_host_row_scale";

    /// <summary>Whether the graph takes <see cref="RowScaleName"/>: the scale the host quantized the row with, which the layer multiplies its product by.</summary>
    public bool HasRowScale { get; } = rowScale;

    /// <summary>Name of the added uint8 [N, D] input replacing the float features: the codes of the first layer's QuantizeLinear.</summary>
    internal const string QuantizedInputName = "mlnet_host_input_q";

    /// <summary>
    /// When set, the graph takes the first layer's uint8 input codes (<see cref="QuantizedInputName"/>) instead of the float
    /// features: the host quantizes each row as it copies it, exactly as the graph's QuantizeLinear would.
    /// </summary>
    public HostQuantizedInput? QuantizedInput { get; } = quantizedInput;

    /// <summary>Whether the graph takes <see cref="RowAbsMaxName"/>: max(ReduceMax(x), −ReduceMin(x)) per row, from the host.</summary>
    public bool HasRowAbsMax { get; } = rowAbsMax;

    /// <summary>The graph the scorer runs.</summary>
    public byte[] Onnx { get; } = onnx;

    /// <summary>Whether the graph takes <see cref="RowProbeName"/>.</summary>
    public bool HasRowProbe { get; } = rowProbe;

    /// <summary>Whether the graph takes <see cref="RowProbeVectorName"/>.</summary>
    public bool HasRowProbeVector { get; } = rowProbeVector;

    /// <summary>Whether any check moved to the host (the scorer then scans each block).</summary>
    public bool Any => HasRowProbe || HasRowProbeVector || ClipLimit is not null || HasRowAbsMax || QuantizedInput is not null;

    /// <summary>The names of the inputs the host fills besides the features, in the order <see cref="CreateInputs"/> gives their tensors.</summary>
    public IReadOnlyList<string> HostInputNames =>
        [.. HasRowProbe ? [RowProbeName] : Array.Empty<string>(), .. HasRowProbeVector ? [RowProbeVectorName] : Array.Empty<string>(),
         .. HasRowAbsMax ? [RowAbsMaxName] : Array.Empty<string>(), .. HasRowScale ? [RowScaleName] : Array.Empty<string>()];

    /// <summary>
    /// Every input the graph takes, in the order <see cref="CreateInputs"/> gives their tensors: the features (named
    /// <paramref name="featureName"/>) or their codes (<see cref="QuantizedInputName"/>), then <see cref="HostInputNames"/>.
    /// </summary>
    public string[] InputNames(string featureName) => [QuantizedInput is null ? featureName : QuantizedInputName, .. HostInputNames];

    /// <summary>Per-row host values for blocks of up to <paramref name="capacity"/> rows of this graph (with room for the codes it takes).</summary>
    public HostRowValues NewValues(int capacity) => new(capacity, QuantizedInput?.Width ?? 0);

    /// <summary>
    /// The tensors for <see cref="InputNames"/>, in that order, over the first <paramref name="rows"/> rows (<paramref name="width"/>
    /// values each) of <paramref name="features"/> and <paramref name="values"/> (both pinned; the caller disposes the tensors).
    /// When the graph takes the input codes, <paramref name="features"/> is not read: the codes in <paramref name="values"/> are.
    /// </summary>
    public OrtValue[] CreateInputs(Memory<float> features, HostRowValues? values, int rows, int width)
    {
        if (Any && values is null)
            throw new ArgumentNullException(nameof(values), "This graph takes values the host computes for each row; copy the rows through CopyRow first.");
        var inputs = new List<OrtValue>(4);
        try
        {
            if (QuantizedInput is null)
                inputs.Add(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, features[..(rows * width)], [rows, width]));
            else
            {
                if (values!.Codes.Length < (long)rows * width)
                    throw new ArgumentException($"{rows} rows of {width} codes do not fit the {values.Codes.Length} codes these values hold.", nameof(values));
                inputs.Add(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, values.Codes.AsMemory(0, rows * width), [rows, width]));
            }
            if (HasRowProbe)
                inputs.Add(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, values!.Probes.AsMemory(0, rows), [rows, 1]));
            if (HasRowProbeVector)
                inputs.Add(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, values!.Probes.AsMemory(0, rows), [rows]));
            if (HasRowAbsMax)
                inputs.Add(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, values!.AbsMax.AsMemory(0, rows), [rows, 1]));
            if (HasRowScale)
                inputs.Add(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, values!.RowScales.AsMemory(0, rows), [rows, 1]));
            return [.. inputs];
        }
        catch
        {
            foreach (var v in inputs)
                v.Dispose();
            throw;
        }
    }

    /// <summary>When set, the host zeroes non-finite rows and clips every value to ± this before the run (the per-batch clean).</summary>
    public float? ClipLimit { get; } = clipLimit;

    /// <summary>The graph as it is, with no check on the host.</summary>
    public static HostRowChecks None(byte[] onnx) => new(onnx, false, false, null);

    /// <summary>Rewrites <paramref name="onnx"/> (an exported graph) into its in-process form; unchanged when nothing matches.</summary>
    /// <param name="onnx">The exported graph.</param>
    /// <param name="quantizeInput">Also move the first layer's QuantizeLinear of the features to the host where it can (the
    /// default); false keeps the float features as the input (benchmarks measure the difference).</param>
    /// <param name="outputs">The outputs the caller fetches (the scorer: its head's batched outputs); the graph's other outputs
    /// and the nodes only they need are dropped (the multiclass head's PredictedLabel: the batched view takes the label from
    /// the scores itself). Null keeps every output.</param>
    public static HostRowChecks Rewrite(byte[] onnx, bool quantizeInput = true, IReadOnlyCollection<string>? outputs = null) =>
        (quantizeInput ? RewriteCore(onnx, quantizeInput: true, outputs) : null) ?? RewriteCore(onnx, quantizeInput: false, outputs)!;

    /// <summary>
    /// The rewrite; with <paramref name="quantizeInput"/> the first layer's QuantizeLinear of the features moves to the host
    /// too, and null is returned when the float features would still be read by the graph (then the rewrite runs without it).
    /// </summary>
    private static HostRowChecks? RewriteCore(byte[] onnx, bool quantizeInput, IReadOnlyCollection<string>? outputs)
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
        // The features' QuantizeLinear (int8 static's first layer; per-row int8 dynamic's symmetric first layer, whose row scale
        // follows from the row range above): the host writes the uint8 codes as it copies the row, and the graph takes them
        // instead of the float features (a quarter of the bytes, and no pass of ONNX Runtime over the floats).
        // Per row, the layer's scale (Max(Div(range, levels), minimum), which multiplies its product) comes from the host too.
        string? codesValue = null, rowScaleValue = null;
        HostQuantizedInput? quantized = quantizeInput ? QuantizedInputOf(graph, x, renames, Producer, out codesValue, out rowScaleValue) : null;
        if (quantized is not null)
        {
            renames[codesValue!] = QuantizedInputName;
            if (rowScaleValue is not null)
                renames[rowScaleValue] = RowScaleName;
        }
        // Outputs nobody fetches: dropped with the nodes that only they need (when every fetched output is one of the graph's).
        bool pruned = false;
        if (outputs is { Count: > 0 } && outputs.All(o => graph.Output.Any(g => g.Name == o)) && graph.Output.Any(g => !outputs.Contains(g.Name)))
        {
            foreach (var unused in graph.Output.Where(g => !outputs.Contains(g.Name)).ToList())
                graph.Output.Remove(unused);
            pruned = true;
        }
        if (renames.Count == 0 && !pruned)
            return None(onnx);

        foreach (var node in nodes)
            RenameInputs(node, renames);
        foreach (var output in graph.Output)
            if (renames.ContainsKey(output.Name))
                return None(onnx); // a probe that is a graph output: leave the graph as it is
        RemoveDeadNodes(graph);
        var reads = new HashSet<string>(graph.Output.Select(o => o.Name), StringComparer.Ordinal);
        foreach (var n in graph.Node)
            AddReads(n, reads);
        rowAbsMax &= reads.Contains(RowAbsMaxName); // the row scale may have taken its place
        bool rowScale = reads.Contains(RowScaleName);
        if (quantized is not null)
        {
            if (reads.Contains(x))
                return null; // the float features are read elsewhere too: keep them as the input
            var codes = graph.Input[0].Clone();
            codes.Name = QuantizedInputName;
            codes.Type.TensorType.ElemType = (int)DataType.Uint8;
            graph.Input[0] = codes;
        }
        if (rowProbe)
            graph.Input.Add(FloatInput(RowProbeName, graph.Input[0], keepColumn: true));
        if (rowProbeVector)
            graph.Input.Add(FloatInput(RowProbeVectorName, graph.Input[0], keepColumn: false));
        if (rowAbsMax)
            graph.Input.Add(FloatInput(RowAbsMaxName, graph.Input[0], keepColumn: true));
        if (rowScale)
            graph.Input.Add(FloatInput(RowScaleName, graph.Input[0], keepColumn: true));
        return new(model.ToByteArray(), rowProbe, rowProbeVector, clipLimit, rowAbsMax, quantized, rowScale);
    }

    /// <summary>
    /// The host's form of the one QuantizeLinear reading the features <paramref name="x"/>, or null: a fixed scale and uint8
    /// zero point (initializers), or a per-row (axis 0) scale Squeeze(Max(Div(row |x| max, levels), minimum)) over the range
    /// the host already hands over, with the zero point Expand(uint8 constant) to the row count; then
    /// <paramref name="rowScale"/> names the Max's output (the row scale [N, 1]). <paramref name="codes"/> names the
    /// QuantizeLinear's output.
    /// </summary>
    private static HostQuantizedInput? QuantizedInputOf(GraphProto graph, string x, Dictionary<string, string> renames, Func<string, NodeProto?> producer,
        out string? codes, out string? rowScale)
    {
        codes = rowScale = null;
        var quantize = graph.Node.Where(n => n.OpType == "QuantizeLinear" && n.Input.Count >= 2 && n.Input[0] == x).ToList();
        if (quantize.Count != 1 || graph.Input[0].Type.TensorType.Shape is not { Dim.Count: 2 } shape || shape.Dim[1].DimValue is not (> 0 and <= int.MaxValue))
            return null;
        var q = quantize[0];
        codes = q.Output[0];
        int width = (int)shape.Dim[1].DimValue;
        string? zeroPoint = q.Input.Count > 2 && q.Input[2].Length > 0 ? q.Input[2] : null;
        if (ScalarOf(graph, q.Input[1]) is float scale)
            return scale > 0 && float.IsFinite(scale) && (zeroPoint is null ? (byte)0 : Uint8Of(graph, zeroPoint)) is byte zp
                ? new HostQuantizedInput(width, scale, zp, 0f, 0f) : null;
        if (q.Attribute.FirstOrDefault(a => a.Name == "axis") is not { I: 0 } || zeroPoint is null
            || producer(zeroPoint) is not { OpType: "Expand" } expand || Uint8Of(graph, expand.Input[0]) is not byte rowZeroPoint
            || producer(q.Input[1]) is not { OpType: "Squeeze", Input.Count: 1 } squeeze
            || producer(squeeze.Input[0]) is not { OpType: "Max", Input.Count: 2 } floor || ScalarOf(graph, floor.Input[1]) is not float minimum
            || producer(floor.Input[0]) is not { OpType: "Div" } divide || ScalarOf(graph, divide.Input[1]) is not float levels
            || !renames.TryGetValue(divide.Input[0], out var range) || range != RowAbsMaxName)
            return null;
        rowScale = floor.Output[0];
        return new HostQuantizedInput(width, null, rowZeroPoint, levels, minimum);
    }

    private static byte? Uint8Of(GraphProto graph, string name) =>
        graph.Initializer.FirstOrDefault(t => t.Name == name) is { DataType: (int)DataType.Uint8 } t && t.Dims.Aggregate(1L, (a, b) => a * b) == 1
            ? (t.RawData.Length == 1 ? t.RawData[0] : t.Int32Data.Count == 1 ? (byte)t.Int32Data[0] : null)
            : null;

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
    /// <see cref="ClipLimit"/> set the copy is also cleaned (a non-finite row zeroed, values clipped). When the graph takes the
    /// input codes (<see cref="QuantizedInput"/>) the row is quantized into <see cref="HostRowValues.Codes"/> instead and
    /// <paramref name="destination"/> is not written. The batched view fills its block through this.
    /// </summary>
    public void CopyRow(ReadOnlySpan<float> source, Span<float> destination, HostRowValues values, int row)
    {
        if (source.Length != destination.Length)
            throw new ArgumentException($"The row has {source.Length} values; the block row holds {destination.Length}.", nameof(source));
        if (QuantizedInput is { } quantized)
        {
            QuantizeRow(source, values, row, quantized);
            return;
        }
        ref float src = ref MemoryMarshal.GetReference(source);
        ref float dst = ref MemoryMarshal.GetReference(destination);
        var sum = Vector<float>.Zero;
        var max = Vector<float>.Zero;
        int i = 0;
        bool range = HasRowAbsMax || ClipLimit is not null; // the row's largest magnitude: an input, or the clip's test
        // max |v| with MaxNative (the processor's own MAXPS, no NaN or signed-zero fix-ups), as RowMagnitude computes it: for a
        // finite row exactly the graph's Max(ReduceMax, −ReduceMin); a row with a NaN or an infinity scores NaN through its
        // probe whatever its range is.
        for (; i <= source.Length - Vector<float>.Count; i += Vector<float>.Count)
        {
            var v = Vector.LoadUnsafe(ref src, (nuint)i);
            v.StoreUnsafe(ref dst, (nuint)i);
            sum += v - v;
            if (range)
                max = Vector.MaxNative(max, Vector.Abs(v));
        }
        float tail = 0f, absMax = 0f;
        for (; i < source.Length; i++)
        {
            float v = Unsafe.Add(ref src, i);
            Unsafe.Add(ref dst, i) = v;
            tail += v - v;
            absMax = Math.Max(absMax, Math.Abs(v));
        }
        bool finite = Vector.EqualsAll(sum, Vector<float>.Zero) && tail == 0f;
        values.Probes[row] = finite ? 0f : float.NaN;
        if (range)
        {
            for (int l = 0; l < Vector<float>.Count; l++)
                absMax = Math.Max(absMax, max[l]);
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

    /// <summary>
    /// Writes the row's uint8 codes and probe (and, per-row, its largest magnitude) as the graph's QuantizeLinear and checks
    /// would compute them: a fixed scale in one pass; a per-row scale from the row's range, then the codes in a second pass
    /// over the row (still in cache).
    /// </summary>
    private void QuantizeRow(ReadOnlySpan<float> source, HostRowValues values, int row, HostQuantizedInput quantized)
    {
        if (source.Length != quantized.Width)
            throw new ArgumentException($"The row has {source.Length} values; the model's input has {quantized.Width}.", nameof(source));
        if (values.Codes.Length < (long)(row + 1) * quantized.Width)
            throw new ArgumentException($"Row {row} of {quantized.Width} codes does not fit the {values.Codes.Length} codes these values hold; create them with NewValues.", nameof(values));
        var codes = values.Codes.AsSpan(row * quantized.Width, quantized.Width);
        if (quantized.Scale is float scale)
        {
            values.Probes[row] = HostQuantizedInput.Quantize(source, codes, scale, quantized.ZeroPoint) ? 0f : float.NaN;
            return;
        }
        float absMax = RowMagnitude(source, out bool finite);
        values.Probes[row] = finite ? 0f : float.NaN;
        if (HasRowAbsMax)
            values.AbsMax[row] = absMax;
        float rowScale = quantized.RowScale(absMax);
        values.RowScales[row] = rowScale;
        HostQuantizedInput.Quantize(source, codes, rowScale, quantized.ZeroPoint);
    }

    /// <summary>
    /// The row's largest magnitude (for a finite row exactly the graph's max(ReduceMax, −ReduceMin)) and whether every value is
    /// finite (the sum of v − v is 0), in one pass of 16 values a step (<see cref="Vector512{T}"/>: AVX-512 where the processor
    /// has it, two or four narrower vectors elsewhere); the processor's own MAXPS (a NaN's effect unspecified: such a row
    /// scores NaN through its probe).
    /// </summary>
    internal static float RowMagnitude(ReadOnlySpan<float> source, out bool finite)
    {
        ref float src = ref MemoryMarshal.GetReference(source);
        int i = 0;
        var sum = Vector512<float>.Zero;
        var max = Vector512<float>.Zero;
        for (; i <= source.Length - Vector512<float>.Count; i += Vector512<float>.Count)
        {
            var v = Vector512.LoadUnsafe(ref src, (nuint)i);
            sum += v - v;
            max = Vector512.MaxNative(max, Vector512.Abs(v));
        }
        float top = 0f, tail = 0f;
        for (int l = 0; l < Vector512<float>.Count; l++)
            top = Math.Max(top, max[l]);
        for (; i < source.Length; i++)
        {
            float v = Unsafe.Add(ref src, i);
            tail += v - v;
            top = Math.Max(top, Math.Abs(v));
        }
        finite = Vector512.EqualsAll(sum, Vector512<float>.Zero) && tail == 0f;
        return top;
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

/// <summary>
/// How the host quantizes the features for a graph that takes their uint8 codes (<see cref="HostRowChecks.QuantizedInput"/>):
/// Saturate(RoundToEven(x / scale) + zero point), the ONNX QuantizeLinear formula, with the scale fixed (int8 static) or the
/// row's own, Max(row |x| max / <paramref name="Levels"/>, <paramref name="MinScale"/>) (per-row int8 dynamic), computed with
/// the same float operations as the graph (one IEEE division each), so the codes are the graph's bit for bit.
/// </summary>
/// <param name="Width">Values per row.</param>
/// <param name="Scale">The fixed scale, or null for a per-row one.</param>
/// <param name="ZeroPoint">The uint8 zero point.</param>
/// <param name="Levels">Per-row: the divisor of the row's largest magnitude.</param>
/// <param name="MinScale">Per-row: the scale's floor.</param>
internal sealed record HostQuantizedInput(int Width, float? Scale, byte ZeroPoint, float Levels, float MinScale)
{
    /// <summary>The row's scale from its largest magnitude, as the graph's Div and Max compute it.</summary>
    public float RowScale(float absMax) => Math.Max(absMax / Levels, MinScale);

    /// <summary>
    /// Writes Saturate(RoundToEven(v / <paramref name="scale"/>) + <paramref name="zeroPoint"/>) for each value of
    /// <paramref name="source"/> into <paramref name="codes"/> (as ONNX Runtime's QuantizeLinear: a true division, clamped
    /// to the code range, rounded half to even); returns whether every value was finite (the row's probe). A NaN's code is
    /// unspecified (the row scores NaN through its probe whatever its codes are).
    /// </summary>
    public static bool Quantize(ReadOnlySpan<float> source, Span<byte> codes, float scale, byte zeroPoint)
    {
        if (codes.Length < source.Length)
            throw new ArgumentException($"{source.Length} values need {source.Length} codes; {codes.Length} were given.", nameof(codes));
        return Avx512F.IsSupported ? QuantizeAvx512(source, codes, scale, zeroPoint) : QuantizePortable(source, codes, scale, zeroPoint);
    }

    /// <summary>
    /// <see cref="Quantize"/> with AVX-512: 16 values a step, a true division, MAXPS/MINPS (a NaN gives the lower bound), the
    /// conversion rounding half to even (MXCSR's default, as MLAS assumes) and a truncating narrow to bytes.
    /// </summary>
    internal static bool QuantizeAvx512(ReadOnlySpan<float> source, Span<byte> codes, float scale, byte zeroPoint)
    {
        ref float src = ref MemoryMarshal.GetReference(source);
        ref byte dst = ref MemoryMarshal.GetReference(codes);
        var s = Vector512.Create(scale);
        var lo = Vector512.Create((float)-zeroPoint);
        var hi = Vector512.Create((float)(255 - zeroPoint));
        var zp = Vector512.Create((int)zeroPoint);
        var sum = Vector512<float>.Zero;
        int i = 0;
        for (; i <= source.Length - Vector512<float>.Count; i += Vector512<float>.Count)
        {
            var v = Vector512.LoadUnsafe(ref src, (nuint)i);
            sum = Avx512F.Add(sum, Avx512F.Subtract(v, v));
            var q = Avx512F.Min(Avx512F.Max(Avx512F.Divide(v, s), lo), hi);
            Avx512F.ConvertToVector128Byte(Avx512F.Add(Avx512F.ConvertToVector512Int32(q), zp)).StoreUnsafe(ref dst, (nuint)i);
        }
        return QuantizeTail(source, codes, i, scale, zeroPoint) & Vector512.EqualsAll(sum, Vector512<float>.Zero);
    }

    /// <summary><see cref="Quantize"/> on any hardware (<see cref="Vector{T}"/>, four vectors a step, narrowed to bytes).</summary>
    internal static bool QuantizePortable(ReadOnlySpan<float> source, Span<byte> codes, float scale, byte zeroPoint)
    {
        // After the clamp |q| <= 255 < 2^22: adding and taking away 1.5 * 2^23 rounds to the nearest integer, ties to even.
        ref float src = ref MemoryMarshal.GetReference(source);
        ref byte dst = ref MemoryMarshal.GetReference(codes);
        var s = new Vector<float>(scale);
        var lo = new Vector<float>(-zeroPoint);
        var hi = new Vector<float>(255 - zeroPoint);
        var round = new Vector<float>(RoundingShift);
        var zp = new Vector<int>(zeroPoint);
        var sum = Vector<float>.Zero;
        int n = Vector<float>.Count, i = 0;
        for (; i <= source.Length - 4 * n; i += 4 * n)
        {
            var v0 = Vector.LoadUnsafe(ref src, (nuint)i);
            var v1 = Vector.LoadUnsafe(ref src, (nuint)(i + n));
            var v2 = Vector.LoadUnsafe(ref src, (nuint)(i + 2 * n));
            var v3 = Vector.LoadUnsafe(ref src, (nuint)(i + 3 * n));
            sum += (v0 - v0) + (v1 - v1) + (v2 - v2) + (v3 - v3);
            var c0 = Vector.ConvertToInt32Native(Vector.MinNative(Vector.MaxNative(v0 / s, lo), hi) + round - round) + zp;
            var c1 = Vector.ConvertToInt32Native(Vector.MinNative(Vector.MaxNative(v1 / s, lo), hi) + round - round) + zp;
            var c2 = Vector.ConvertToInt32Native(Vector.MinNative(Vector.MaxNative(v2 / s, lo), hi) + round - round) + zp;
            var c3 = Vector.ConvertToInt32Native(Vector.MinNative(Vector.MaxNative(v3 / s, lo), hi) + round - round) + zp;
            Vector.Narrow(Vector.AsVectorUInt16(Vector.Narrow(c0, c1)), Vector.AsVectorUInt16(Vector.Narrow(c2, c3))).StoreUnsafe(ref dst, (nuint)i);
        }
        return QuantizeTail(source, codes, i, scale, zeroPoint) & Vector.EqualsAll(sum, Vector<float>.Zero);
    }

    private const float RoundingShift = 12582912f;

    /// <summary>The values from <paramref name="start"/> on, one at a time; whether they were finite.</summary>
    private static bool QuantizeTail(ReadOnlySpan<float> source, Span<byte> codes, int start, float scale, byte zeroPoint)
    {
        float tail = 0f;
        for (int i = start; i < source.Length; i++)
        {
            float v = source[i];
            tail += v - v;
            float q = Math.Min(Math.Max(v / scale, -zeroPoint), 255 - zeroPoint);
            codes[i] = float.IsNaN(q) ? zeroPoint : (byte)((int)(q + RoundingShift - RoundingShift) + zeroPoint);
        }
        return tail == 0f;
    }
}

/// <summary>The per-row values the host hands to the in-process graph for one block (<see cref="HostRowChecks"/>).</summary>
/// <param name="capacity">Rows this holds.</param>
/// <param name="codeWidth">Codes per row, when the graph takes the input codes (<see cref="HostRowChecks.NewValues"/>); else 0.</param>
internal sealed class HostRowValues(int capacity, int codeWidth = 0)
{
    /// <summary>Each row's uint8 input codes, row-major, when the graph takes them (pinned; else empty).</summary>
    public byte[] Codes { get; } = codeWidth > 0 ? GC.AllocateUninitializedArray<byte>(checked(capacity * codeWidth), pinned: true) : [];

    /// <summary>Rows this holds.</summary>
    public int Capacity { get; } = capacity;

    /// <summary>Each row's probe: 0 for finite features, NaN otherwise (pinned: ONNX Runtime reads it in place).</summary>
    public float[] Probes { get; } = GC.AllocateUninitializedArray<float>(capacity, pinned: true);

    /// <summary>Each row's scale for the first per-row int8 dynamic layer, when the graph takes it (pinned).</summary>
    public float[] RowScales { get; } = GC.AllocateUninitializedArray<float>(capacity, pinned: true);

    /// <summary>Each row's largest magnitude, when the graph takes it (pinned).</summary>
    public float[] AbsMax { get; } = GC.AllocateUninitializedArray<float>(capacity, pinned: true);
}
