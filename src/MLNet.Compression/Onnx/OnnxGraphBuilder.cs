using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Google.Protobuf;
using MLNet.Compression.Onnx.Proto;

namespace MLNet.Compression.Onnx;

/// <summary>
/// Builds an ONNX <see cref="GraphProto"/> step by step: unique value names, initializers (weights stored little-endian in
/// <c>raw_data</c>), sparse initializers, nodes with typed attributes, and typed graph inputs and outputs.
/// The exporter and the weight emitters of the compression stages use it; it knows nothing about networks.
/// </summary>
internal sealed class OnnxGraphBuilder
{
    private readonly HashSet<string> usedNames = new(StringComparer.Ordinal);
    private readonly HashSet<string> reservedNames = new(StringComparer.Ordinal);

    /// <summary>Creates a builder for a graph called <paramref name="graphName"/>.</summary>
    public OnnxGraphBuilder(string graphName)
    {
        Graph = new GraphProto { Name = graphName };
    }

    /// <summary>The graph being built.</summary>
    public GraphProto Graph { get; }

    /// <summary>
    /// Known bounds on the magnitude of every element of some values (value name → bound), written by emitters that can prove
    /// one (per-batch int8 layers after the clipped input) and read by the layers after them to leave out checks that could
    /// never fire.
    /// </summary>
    public Dictionary<string, double> MagnitudeBounds { get; } = new(StringComparer.Ordinal);

    /// <summary>The opset the graph is written for (0: not stated), for emitters whose operator form depends on it.</summary>
    public int Opset { get; init; }

    /// <summary>Reserves <paramref name="name"/> exactly for a later <see cref="AddNodeWithReservedOutput"/>; throws if it is already used.</summary>
    public string ReserveName(string name)
    {
        if (!usedNames.Add(name) || !reservedNames.Add(name))
            throw new InvalidOperationException($"The ONNX value name '{name}' is already used in graph '{Graph.Name}'.");
        return name;
    }

    /// <summary>Returns <paramref name="prefix"/>, or <paramref name="prefix"/> with a numeric suffix, that is not used yet.</summary>
    public string UniqueName(string prefix)
    {
        if (usedNames.Add(prefix))
            return prefix;
        for (int i = 1; ; i++)
        {
            var candidate = $"{prefix}_{i}";
            if (usedNames.Add(candidate))
                return candidate;
        }
    }

    /// <summary>Adds a graph input of element type <paramref name="elementType"/>; a null dimension is symbolic (named <paramref name="symbolicDim"/>).</summary>
    public string AddInput(string name, TensorProto.Types.DataType elementType, IReadOnlyList<long?> dims, string symbolicDim = "N")
    {
        if (!usedNames.Add(name))
            throw new InvalidOperationException($"The ONNX value name '{name}' is already used in graph '{Graph.Name}'.");
        Graph.Input.Add(ValueInfo(name, elementType, dims, symbolicDim));
        return name;
    }

    /// <summary>Declares an existing value as a graph output with the given type and shape.</summary>
    public void AddOutput(string name, TensorProto.Types.DataType elementType, IReadOnlyList<long?> dims, string symbolicDim = "N")
    {
        if (!usedNames.Contains(name) || reservedNames.Contains(name))
            throw new InvalidOperationException($"The graph output '{name}' is not produced by any node or input.");
        Graph.Output.Add(ValueInfo(name, elementType, dims, symbolicDim));
    }

    /// <summary>Adds a float initializer with its data in little-endian <c>raw_data</c>; returns its (unique) name.</summary>
    public string AddFloatInitializer(string name, ReadOnlySpan<float> values, IReadOnlyList<int> dims) =>
        AddRawInitializer(name, TensorProto.Types.DataType.Float, MemoryMarshal.AsBytes(values), sizeof(float), dims.Select(d => (long)d).ToArray(), values.Length);

    /// <summary>Adds an int64 initializer (shapes, axes) in little-endian <c>raw_data</c>; returns its (unique) name.</summary>
    public string AddInt64Initializer(string name, ReadOnlySpan<long> values, IReadOnlyList<long> dims) =>
        AddRawInitializer(name, TensorProto.Types.DataType.Int64, MemoryMarshal.AsBytes(values), sizeof(long), dims.ToArray(), values.Length);

    /// <summary>
    /// Adds an initializer whose data is already encoded: <paramref name="littleEndianData"/> holds the elements of
    /// <paramref name="elementType"/> in row-major order, each <paramref name="elementSize"/> bytes, little-endian.
    /// Sub-byte types (int4) pass the packed bytes and an element size of 0 to skip the length check.
    /// </summary>
    public string AddRawInitializer(string name, TensorProto.Types.DataType elementType, ReadOnlySpan<byte> littleEndianData,
        int elementSize, long[] dims, long elementCount)
    {
        long expected = dims.Aggregate(1L, (a, b) => a * b);
        if (elementSize > 0 && (expected != elementCount || littleEndianData.Length != expected * elementSize))
            throw new ArgumentException(
                $"Initializer '{name}' has {elementCount} elements ({littleEndianData.Length} bytes) but its shape [{string.Join(", ", dims)}] needs {expected}.");
        var unique = UniqueName(name);
        var tensor = new TensorProto { Name = unique, DataType = (int)elementType };
        tensor.Dims.AddRange(dims);
        tensor.RawData = BitConverter.IsLittleEndian || elementSize <= 1
            ? ByteString.CopyFrom(littleEndianData)
            : ByteString.CopyFrom(ToLittleEndian(littleEndianData, elementSize));
        Graph.Initializer.Add(tensor);
        return unique;
    }

    /// <summary>
    /// Adds a node. Outputs are given as name prefixes and made unique; the actual output names are returned.
    /// Attribute values may be <see cref="long"/>/<see cref="int"/>, <see cref="float"/>, <see cref="string"/>,
    /// <see cref="long"/>[]/<see cref="int"/>[], <see cref="float"/>[], <see cref="TensorProto"/> or <see cref="GraphProto"/> (an If branch).
    /// </summary>
    public string[] AddNode(string opType, IReadOnlyList<string> inputs, IReadOnlyList<string> outputPrefixes,
        IReadOnlyDictionary<string, object>? attributes = null, string? domain = null)
    {
        var node = new NodeProto { OpType = opType, Name = UniqueName("node_" + opType + "_" + outputPrefixes[0]) };
        node.Input.AddRange(inputs);
        var outputs = outputPrefixes.Select(UniqueName).ToArray();
        node.Output.AddRange(outputs);
        if (domain is not null)
            node.Domain = domain;
        if (attributes is not null)
            foreach (var (key, value) in attributes)
                node.Attribute.Add(Attribute(key, value));
        Graph.Node.Add(node);
        return outputs;
    }

    /// <summary>
    /// [N, 1]: each row's mean of (x − x) for <paramref name="x"/> [N, D]: exactly 0 for a row of finite values however large,
    /// NaN for a row holding a NaN or an infinity. Its nodes' outputs are <paramref name="prefix"/> + "zero" and + "row_zero".
    /// Up to opset 17 ReduceMean's axes are an attribute; from opset 18 they are an int64 initializer (prefix + "row_axis").
    /// One place writes it, so two users of the same x (the output head's non-finite guard, the per-batch int8 input clean)
    /// build identical nodes, which ONNX Runtime's common-subexpression elimination computes once.
    /// </summary>
    public string NonFiniteRowProbe(string x, string prefix)
    {
        var difference = AddNode("Sub", [x, x], prefix + "zero");
        return Opset is > 0 and <= 17
            ? AddNode("ReduceMean", [difference], prefix + "row_zero", new Dictionary<string, object> { ["axes"] = new long[] { 1 }, ["keepdims"] = 1L })
            : AddNode("ReduceMean", [difference, AddInt64Initializer(prefix + "row_axis", [1L], [1])], prefix + "row_zero",
                new Dictionary<string, object> { ["keepdims"] = 1L });
    }

    /// <summary>
    /// A branch graph for an If node: <paramref name="nodes"/> (op type, inputs, output) run in order, reading values of the
    /// enclosing graph by name; the last node's output, a float tensor, is the branch's output. Names are made unique in this graph.
    /// </summary>
    public GraphProto Branch(string name, params (string OpType, string[] Inputs)[] nodes)
    {
        var branch = new GraphProto { Name = UniqueName(name) };
        string previous = "";
        foreach (var (op, inputs) in nodes)
        {
            var output = UniqueName(name + "." + op.ToLowerInvariant());
            var node = new NodeProto { OpType = op, Name = UniqueName("node_" + op + "_" + output) };
            node.Input.AddRange(inputs.Select(i => i == "$previous" ? previous : i));
            node.Output.Add(output);
            branch.Node.Add(node);
            previous = output;
        }
        branch.Output.Add(new ValueInfoProto
        {
            Name = previous,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float } },
        });
        return branch;
    }

    /// <summary>Adds a single-output node and returns the output name.</summary>
    public string AddNode(string opType, IReadOnlyList<string> inputs, string outputPrefix,
        IReadOnlyDictionary<string, object>? attributes = null, string? domain = null) =>
        AddNode(opType, inputs, [outputPrefix], attributes, domain)[0];

    /// <summary>
    /// Adds a single-output node whose output is exactly <paramref name="reservedName"/>, a name reserved earlier with
    /// <see cref="ReserveName"/> (graph outputs whose names are part of the contract, e.g. "Score").
    /// </summary>
    public string AddNodeWithReservedOutput(string opType, IReadOnlyList<string> inputs, string reservedName,
        IReadOnlyDictionary<string, object>? attributes = null)
    {
        if (!reservedNames.Remove(reservedName))
            throw new InvalidOperationException($"The ONNX value name '{reservedName}' was not reserved or is already produced in graph '{Graph.Name}'.");
        var node = new NodeProto { OpType = opType, Name = UniqueName("node_" + opType + "_" + reservedName) };
        node.Input.AddRange(inputs);
        node.Output.Add(reservedName);
        if (attributes is not null)
            foreach (var (key, value) in attributes)
                node.Attribute.Add(Attribute(key, value));
        Graph.Node.Add(node);
        return reservedName;
    }

    private static AttributeProto Attribute(string name, object value)
    {
        var a = new AttributeProto { Name = name };
        switch (value)
        {
            case int i: a.Type = AttributeProto.Types.AttributeType.Int; a.I = i; break;
            case long l: a.Type = AttributeProto.Types.AttributeType.Int; a.I = l; break;
            case float f: a.Type = AttributeProto.Types.AttributeType.Float; a.F = f; break;
            case string s: a.Type = AttributeProto.Types.AttributeType.String; a.S = ByteString.CopyFromUtf8(s); break;
            case int[] ia: a.Type = AttributeProto.Types.AttributeType.Ints; a.Ints.AddRange(ia.Select(x => (long)x)); break;
            case long[] la: a.Type = AttributeProto.Types.AttributeType.Ints; a.Ints.AddRange(la); break;
            case float[] fa: a.Type = AttributeProto.Types.AttributeType.Floats; a.Floats.AddRange(fa); break;
            case TensorProto t: a.Type = AttributeProto.Types.AttributeType.Tensor; a.T = t; break;
            case GraphProto g: a.Type = AttributeProto.Types.AttributeType.Graph; a.G = g; break;
            default: throw new ArgumentException($"Attribute '{name}' has unsupported value type {value?.GetType().Name ?? "null"}.", nameof(value));
        }
        return a;
    }

    private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType elementType, IReadOnlyList<long?> dims, string symbolicDim)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
            shape.Dim.Add(d is long v ? new TensorShapeProto.Types.Dimension { DimValue = v } : new TensorShapeProto.Types.Dimension { DimParam = symbolicDim });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)elementType, Shape = shape } },
        };
    }

    private static byte[] ToLittleEndian(ReadOnlySpan<byte> data, int elementSize)
    {
        var copy = data.ToArray();
        for (int i = 0; i + elementSize <= copy.Length; i += elementSize)
            copy.AsSpan(i, elementSize).Reverse();
        return copy;
    }

    /// <summary>Reads a little-endian float from <paramref name="raw"/> at element <paramref name="index"/> (for tests and inspection).</summary>
    public static float ReadFloat(ReadOnlySpan<byte> raw, int index) =>
        BinaryPrimitives.ReadSingleLittleEndian(raw.Slice(index * sizeof(float), sizeof(float)));
}
