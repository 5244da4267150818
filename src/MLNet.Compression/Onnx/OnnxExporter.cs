using System.Reflection;
using System.Text.Json;
using Google.Protobuf;
using MLNet.Compression.Networks;
using MLNet.Compression.Networks.Heads;
using MLNet.Compression.Onnx.Proto;

namespace MLNet.Compression.Onnx;

/// <summary>
/// Writes a <see cref="NetworkModel"/> as an ONNX model: input float [N, InputLength] (symbolic batch), a Reshape to
/// [N, C, H, W] for convolutional networks, each layer's own nodes (<see cref="ModelLayer.EmitOnnx"/>), then the outputs of the model's
/// <see cref="OutputHead"/> (multiclass: Softmax(axis=1) into the score output float [N, classes] and ArgMax(axis=1) into
/// the predicted class index output int64 [N]).
/// </summary>
internal static class OnnxExporter
{
    /// <summary>Metadata key of the architecture display name.</summary>
    public const string ArchitectureKey = "mlnet_compression.architecture";

    /// <summary>Metadata key of the input shape (JSON array, no batch dimension).</summary>
    public const string InputShapeKey = "mlnet_compression.input_shape";

    /// <summary>Metadata key of the class names (JSON array of strings).</summary>
    public const string ClassNamesKey = "mlnet_compression.class_names";

    /// <summary>Producer name written into every model.</summary>
    public const string ProducerName = "MLNet.Compression";

    /// <summary>Exports <paramref name="model"/> and returns the serialized ONNX model.</summary>
    public static byte[] Export(NetworkModel model, OnnxExportOptions? options = null) => BuildModel(model, options ?? new()).ToByteArray();

    /// <summary>ONNX Runtime's contrib-operator domain (int8 dynamic layers use its MatMulIntegerToFloat).</summary>
    internal const string MicrosoftDomain = "com.microsoft";

    /// <summary>Builds the ONNX model message (for callers that post-process it before serializing).</summary>
    public static ModelProto BuildModel(NetworkModel model, OnnxExportOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrWhiteSpace(options.InputName, nameof(options) + "." + nameof(options.InputName));
        ArgumentException.ThrowIfNullOrWhiteSpace(options.ScoreName, nameof(options) + "." + nameof(options.ScoreName));
        ArgumentException.ThrowIfNullOrWhiteSpace(options.LabelIndexName, nameof(options) + "." + nameof(options.LabelIndexName));
        if (new[] { options.InputName, options.ScoreName, options.LabelIndexName }.Distinct(StringComparer.Ordinal).Count() != 3)
            throw new ArgumentException(
                $"The ONNX input and output names must differ, but were input '{options.InputName}', score '{options.ScoreName}', label index '{options.LabelIndexName}'.",
                nameof(options));
        long irVersion = IrVersionForOpset(options.Opset);
        if (options.ClassNames is { } names && names.Count != model.NumClasses)
            throw new ArgumentException(
                $"{names.Count} class names were given but the model has {model.NumClasses} output classes.", nameof(options));
        var head = model.Head;
        if (model.Layers.Count == 0 || model.Layers[^1] is not ParameterizedLayer { CanBeOutputLayer: true } last || last.OutputUnits != head.OutputUnits(model.NumClasses))
            throw new ArgumentException(
                $"The model's last layer must be the dense output layer with the {head.OutputUnits(model.NumClasses)} unit(s) its {head.Name} head needs.", nameof(model));

        var g = new OnnxGraphBuilder(model.Architecture.Name) { Opset = options.Opset };
        var emitter = UsesSparseWeights(options) ? new SparseWeightsEmitter(options) : options.LayerEmitter;
        foreach (var outputName in head.OutputNames(options))
            g.ReserveName(outputName);
        string x = g.AddInput(options.InputName, TensorProto.Types.DataType.Float, [null, model.InputLength]);

        var inputShape = model.InputShape;
        if (inputShape.Length == 3)
        {
            var shape = g.AddInt64Initializer("input_shape", [-1L, inputShape[0], inputShape[1], inputShape[2]], [4]);
            x = g.AddNode("Reshape", [x, shape], "input_nchw");
        }

        LayerEncodings.EnsureSupported(model, emitter.Encoding, emitter.KeptFloat);
        model = BatchNormFolding.Fold(model);
        foreach (var layer in model.Layers)
            x = layer.EmitOnnx(g, emitter, x);

        // The names were reserved above so that no layer takes them; the head adds its final nodes with exactly those names.
        head.EmitOutputs(g, x, model.NumClasses, options);

        var proto = new ModelProto
        {
            IrVersion = irVersion,
            ProducerName = ProducerName,
            ProducerVersion = typeof(OnnxExporter).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0",
            ModelVersion = 1,
            DocString = $"{model.Architecture} with {model.NumClasses} classes, exported by MLNet.Compression.",
            Graph = g.Graph,
        };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = options.Opset });
        if (g.Graph.Node.Any(n => n.Domain == MicrosoftDomain))
            proto.OpsetImport.Add(new OperatorSetIdProto { Domain = MicrosoftDomain, Version = 1 });
        AddMetadata(proto, ArchitectureKey, model.Architecture.Name);
        AddMetadata(proto, InputShapeKey, JsonSerializer.Serialize(inputShape));
        if (head.Kind != OutputHeadKind.Multiclass)
            AddMetadata(proto, OutputHead.MetadataKey, head.Name); // absent = multiclass, so multiclass graphs stay byte-identical
        if (options.ClassNames is { } classNames)
            AddMetadata(proto, ClassNamesKey, JsonSerializer.Serialize(classNames));
        if (options.Metadata is { } extra)
            foreach (var (k, v) in extra)
                AddMetadata(proto, k, v);
        return proto;
    }

    /// <summary>
    /// Whether the export stores sparse weight tensors compactly: only with the default emitter (stages with their own
    /// emitter choose their own encoding) and unless <see cref="OnnxExportOptions.SparseWeights"/> is Never.
    /// </summary>
    public static bool UsesSparseWeights(OnnxExportOptions options) =>
        options.SparseWeights != SparseWeightsMode.Never && options.LayerEmitter.GetType() == typeof(OnnxLayerEmitter);

    /// <summary>The ONNX IR version that goes with a default-domain opset (opset 13–23).</summary>
    public static long IrVersionForOpset(int opset) => opset switch
    {
        13 or 14 => 7,
        >= 15 and <= 18 => 8,
        19 or 20 => 9,
        21 or 22 => 10,
        23 => 11,
        _ => throw new ArgumentOutOfRangeException(nameof(opset), opset,
            "The ONNX opset must be between 13 (per-channel quantization, Softmax over one axis) and 23."),
    };

    /// <summary>Parses the names the scoring chain needs from serialized ONNX bytes.</summary>
    public static OnnxModelSignature ReadSignature(byte[] onnx)
    {
        ArgumentNullException.ThrowIfNull(onnx);
        ModelProto model;
        try
        {
            model = ModelProto.Parser.ParseFrom(onnx);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new ArgumentException("The bytes are not a valid ONNX model: " + e.Message, nameof(onnx), e);
        }
        var graph = model.Graph ?? throw new ArgumentException("The ONNX model has no graph.", nameof(onnx));
        var initializers = graph.Initializer.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var inputs = graph.Input.Where(i => !initializers.Contains(i.Name)).ToArray();
        if (inputs.Length != 1)
            throw new ArgumentException($"The ONNX model must have exactly one input, but has {inputs.Length}.", nameof(onnx));
        var headName = model.MetadataProps.FirstOrDefault(p => p.Key == OutputHead.MetadataKey)?.Value;
        var head = headName is null ? OutputHead.Multiclass : OutputHead.ForName(headName)
            ?? throw new ArgumentException(
                $"The ONNX model's metadata '{OutputHead.MetadataKey}' names the output head '{headName}', which this version of MLNet.Compression does not know. " +
                "Score it with the version that exported it, or re-export it.", nameof(onnx));
        var inputDim = inputs[0].Type?.TensorType?.Shape?.Dim.LastOrDefault();
        if (inputDim is null || !inputDim.HasDimValue)
            throw new ArgumentException("The ONNX model's input and score output must have a fixed last dimension.", nameof(onnx));
        var signature = head.ReadSignature(graph, inputs[0].Name, checked((int)inputDim.DimValue));
        var valueType = model.MetadataProps.FirstOrDefault(p => p.Key == OnnxScoringColumns.ClassValueTypeKey)?.Value;
        return valueType is null || OnnxScoringColumns.ClassValueType(valueType) is null ? signature : signature with { ClassValueType = valueType };
    }

    private static void AddMetadata(ModelProto proto, string key, string value) =>
        proto.MetadataProps.Add(new StringStringEntryProto { Key = key, Value = value });
}

/// <summary>The input and output names and sizes of an exported network; what the outputs mean depends on its head.</summary>
/// <param name="InputName">Graph input (float [N, InputLength]).</param>
/// <param name="InputLength">Features per row.</param>
/// <param name="ScoreName">Score output (multiclass: probabilities, float [N, ClassCount]).</param>
/// <param name="LabelIndexName">Predicted label output (multiclass: class index, int64 [N], 0-based).</param>
/// <param name="ClassCount">Number of classes.</param>
/// <param name="Head">The output head that wrote the outputs (from the model's metadata; absent = multiclass).</param>
internal sealed record OnnxModelSignature(string InputName, int InputLength, string ScoreName, string LabelIndexName, int ClassCount,
    OutputHeadKind Head = OutputHeadKind.Multiclass)
{
    /// <summary>
    /// The numeric type of the label's key values (metadata <see cref="OnnxScoringColumns.ClassValueTypeKey"/>, e.g. <c>Single</c>),
    /// or null when they are text: the predicted label's key values get this type, so <c>MapKeyToValue</c> gives back what the label was.
    /// </summary>
    public string? ClassValueType { get; init; }

    /// <summary>The registered output head of <see cref="Head"/>.</summary>
    public OutputHead OutputHead => OutputHead.For(Head);
}
