using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using MLNet.Compression.Incremental;
using MLNet.Compression.Networks;
using MLNet.Compression.Networks.Heads;

namespace MLNet.Compression.Training;

/// <summary>
/// Training state that ONNX does not carry: architecture, weights, class and column names, options, optimizer state,
/// compression recipe. A zip with <c>checkpoint.json</c> (typed, see <see cref="CheckpointDocument"/>), <c>weights.bin</c>
/// (little-endian float32, layer by layer: weight then bias) and <c>optimizer.bin</c> (the optimizer's moment buffers, see
/// <see cref="ParameterOptimizer.SaveState"/>); for models made by continued training also <c>replay.bin</c> (the exemplar
/// memory) and <c>ewc.bin</c> (Fisher information and anchor weights). Version 3 stores every option, the recipe and each
/// binary entry's length (version 4: the recipe in the steps' own form); versions 1 to 3 still load (missing options take their defaults).
/// </summary>
/// <remarks>
/// Reading validates everything before it is used: the format version, the options (through
/// <see cref="NeuralNetworkOptions.Validate"/>, as new options are), the class names, the stored layer shapes against the
/// architecture, and every binary entry's exact length, computed with checked arithmetic from the architecture and compared
/// with the entry's uncompressed length before anything is allocated; reads are bounded by that length. Every failure is a
/// <see cref="CheckpointException"/> naming the entry and the field.
/// </remarks>
internal sealed record Checkpoint(NetworkModel Network, IReadOnlyList<string> ClassNames, NeuralNetworkOptions Options, byte[]? OptimizerState, int Seed,
    IncrementalState? Incremental = null, CompressionRecipe? Recipe = null, byte[]? Onnx = null,
    IReadOnlyList<CompressionStageReport>? History = null)
{
    /// <summary>How the compression history is written: the reports' own System.Text.Json contracts.</summary>
    private static readonly JsonSerializerOptions HistoryJson = new() { WriteIndented = false };

    /// <summary>
    /// How the recipe is written: the steps' own System.Text.Json form (<see cref="IReapplicableStep"/>), with camelCase
    /// names and enumerations by name (a number is refused, as in the rest of checkpoint.json).
    /// </summary>
    private static readonly JsonSerializerOptions RecipeJson = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        AllowOutOfOrderMetadataProperties = true,
        Converters = { new NamedEnumConverter(), new Augmentation.ImageAugmentationJsonConverter() },
    };

    /// <summary>The recipe step kinds this library reads, as <see cref="IReapplicableStep"/> declares them.</summary>
    private static readonly string[] StepKinds = typeof(IReapplicableStep)
        .GetCustomAttributes(typeof(JsonDerivedTypeAttribute), inherit: false)
        .Select(a => (string)((JsonDerivedTypeAttribute)a).TypeDiscriminator!).ToArray();

    /// <summary>
    /// The format version this library writes. 4: the recipe is stored in the steps' own form (quantization's epochs and
    /// learning rate under their own names); 3: every option, the recipe, the head, the history and the exact ONNX.
    /// </summary>
    public const int FormatVersion = 4;

    /// <summary>The oldest format version this library reads.</summary>
    public const int OldestFormatVersion = 1;

    public const string FormatName = "MLNet.Compression.Checkpoint";
    public const string JsonEntry = "checkpoint.json";
    public const string WeightsEntry = "weights.bin";
    public const string OptimizerEntry = "optimizer.bin";
    public const string OnnxEntry = "model.onnx";

    /// <summary>Largest checkpoint.json read (a real one is a few kilobytes).</summary>
    internal const long MaxJsonBytes = 16L << 20;

    public static void Write(string path, Checkpoint cp) => AtomicFile.Write(path, stream =>
    {
        using var zip = new ZipArchive(stream, ZipArchiveMode.Create, leaveOpen: true);
        var o = cp.Options;
        var layers = cp.Network.ParameterizedLayers.ToArray();
        var doc = new CheckpointDocument
        {
            Format = FormatName,
            Version = FormatVersion,
            Architecture = ArchitectureJson.ToJson(cp.Network.Architecture),
            Classes = cp.ClassNames.ToList()!,
            LabelColumn = o.LabelColumnName,
            FeatureColumn = o.FeatureColumnName,
            Seed = cp.Seed,
            Options = new CheckpointOptions
            {
                Epochs = o.Epochs,
                BatchSize = o.BatchSize,
                LearningRate = o.LearningRate,
                Optimizer = o.Optimizer.ToString(),
                LearningRateSchedule = o.LearningRateSchedule.ToString(),
                Momentum = o.Momentum,
                WeightDecay = o.WeightDecay,
                Precision = o.Precision.ToString(),
                Device = o.Device.ToString(),
                ScoringBatchSize = o.ScoringBatchSize,
                ValidationFraction = o.ValidationFraction,
                EarlyStoppingPatience = o.EarlyStoppingPatience,
                Seed = o.Seed,
                Shuffle = o.Shuffle,
                ProgressInterval = o.ProgressInterval,
                ShuffleCacheLimitBytes = o.ShuffleCacheLimitBytes,
                ShuffleBufferRows = o.ShuffleBufferRows,
                Threads = o.Threads,
                Augmentation = Augmentation.CheckpointAugmentation.From(o.Augmentation),
                MemoryBudgetBytes = o.MemoryBudgetBytes,
                AllowLowerPrecisionForBudget = o.AllowLowerPrecisionForBudget,
            },
            Layers = layers.Select(l => (CheckpointLayer?)new CheckpointLayer { Name = l.Name, WeightShape = l.WeightShape.ToList(), Bias = l.Bias.Length }).ToList(),
            Weights = new CheckpointEntry { Bytes = cp.Network.ParameterCount * sizeof(float) },
            Optimizer = cp.OptimizerState is { } st ? new CheckpointEntry { Bytes = st.LongLength } : null,
            Recipe = RecipeToJson(cp.Recipe ?? CompressionRecipe.None),
            Head = cp.Network.HeadKind == OutputHeadKind.Multiclass ? null : cp.Network.HeadKind.ToString(),
            Onnx = cp.Onnx is { } onnxBytes ? new CheckpointEntry { Bytes = onnxBytes.LongLength } : null,
            History = cp.History is { Count: > 0 } history ? JsonSerializer.SerializeToNode(history, HistoryJson) : null,
        };
        if (cp.Onnx is { } onnx)
            using (var s = zip.CreateEntry(OnnxEntry, CompressionLevel.Fastest).Open())
                s.Write(onnx);
        using (var s = zip.CreateEntry(WeightsEntry, CompressionLevel.Fastest).Open())
            foreach (var layer in layers)
            {
                WriteFloats(s, layer.Weight);
                WriteFloats(s, layer.Bias);
            }
        BatchNormFolding.WriteState(zip, cp.Network);
        if (cp.OptimizerState is { } state)
            using (var s = zip.CreateEntry(OptimizerEntry, CompressionLevel.Fastest).Open())
                s.Write(state);
        doc.Incremental = cp.Incremental?.WriteTo(zip);
        using (var s = zip.CreateEntry(JsonEntry).Open())
            JsonSerializer.Serialize(s, doc, CheckpointJsonContext.Default.CheckpointDocument);
    });

    public static Checkpoint Read(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"The checkpoint '{path}' does not exist. Write one with NeuralNetworkTransformer.SaveCheckpoint.", path);
        try
        {
            using var zip = ZipFile.OpenRead(path);
            return Read(zip);
        }
        catch (CheckpointFormatException e)
        {
            throw Bad(path, e.Entry, e.Field, e.Message, e.InnerException);
        }
        catch (JsonException e)
        {
            throw Bad(path, JsonEntry, e.Path, e.Message, e);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or NotSupportedException && e is not CheckpointException)
        {
            throw Bad(path, null, null, "it is not a readable zip archive (" + e.Message + ")", e);
        }
    }

    private static Checkpoint Read(ZipArchive zip)
    {
        var doc = ReadDocument(zip);
        if (doc.Format != FormatName)
            throw Fault(JsonEntry, "format", $"is '{doc.Format}', not '{FormatName}': this is not an MLNet.Compression checkpoint");
        int version = doc.Version ?? throw Fault(JsonEntry, "version", "is missing");
        if (version > FormatVersion)
            throw Fault(JsonEntry, "version", $"is {version}, newer than this library reads ({FormatVersion}); update MLNet.Compression");
        if (version < OldestFormatVersion)
            throw Fault(JsonEntry, "version", $"is {version}; format versions start at {OldestFormatVersion}");
        int seed = doc.Seed ?? throw Fault(JsonEntry, "seed", "is missing");

        NetworkArchitecture architecture;
        try
        {
            architecture = ArchitectureJson.FromJson(doc.Architecture ?? throw Fault(JsonEntry, "architecture", "is missing"));
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException or ArgumentException or NullReferenceException
                                      or OverflowException or JsonException)
        {
            throw Fault(JsonEntry, "architecture", e.Message, e);
        }
        var classes = ReadClasses(doc);
        var options = ReadOptions(doc, architecture);

        // Shapes: what checkpoint.json declares must equal what the architecture makes, and weights.bin must hold exactly
        // that many bytes, all before a single weight is allocated.
        var declared = ReadDeclaredLayers(doc);
        var headKind = doc.Head is null ? OutputHeadKind.Multiclass : ParseEnum<OutputHeadKind>(doc.Head, "head");
        // NetworkModel.Create resolves every layer's shape (each weight count checked against the largest array) without
        // allocating its weights: they are allocated on first use, below, once weights.bin is known to hold exactly them.
        var network = CreateNetwork(architecture, classes.Length, headKind);
        var weighted = network.ParameterizedLayers.ToArray();
        if (weighted.Length != declared.Count)
            throw Fault(JsonEntry, "layers", $"declares {declared.Count} weighted layers but the architecture (with {classes.Length} classes) makes {weighted.Length}");
        for (int i = 0; i < weighted.Length; i++)
            if (!weighted[i].WeightShape.SequenceEqual(declared[i]))
                throw Fault(JsonEntry, $"layers[{i}].weightShape",
                    $"is [{string.Join(", ", declared[i])}] but the architecture (with {classes.Length} classes) makes [{string.Join(", ", weighted[i].WeightShape)}] for that layer");
        long weightBytes = checked(network.ParameterCount * sizeof(float));
        if (doc.Weights?.Bytes is { } declaredWeightBytes && declaredWeightBytes != weightBytes)
            throw Fault(JsonEntry, "weights.bytes", $"is {declaredWeightBytes} but the layers hold {weightBytes} bytes of float32");
        var weightsEntry = zip.GetEntry(WeightsEntry) ?? throw Fault(WeightsEntry, null, "is missing");
        if (weightsEntry.Length != weightBytes)
            throw Fault(WeightsEntry, "length", $"is {weightsEntry.Length} bytes but the layers in checkpoint.json need exactly {weightBytes}");

        using (var s = weightsEntry.Open())
        {
            foreach (var layer in weighted)
            {
                layer.Weight = ReadFloats(s, layer.WeightCount, WeightsEntry);
                layer.Bias = ReadFloats(s, layer.OutputUnits, WeightsEntry);
            }
            if (s.ReadByte() != -1)
                throw Fault(WeightsEntry, "length", $"holds more than the {weightBytes} bytes its zip entry declares");
        }
        BatchNormFolding.ReadState(zip, network);

        byte[]? state = null;
        if (zip.GetEntry(OptimizerEntry) is { } opt)
        {
            var sizes = network.Layers.SelectMany(BatchNormFolding.TrainedTensorSizes).ToArray();
            long max = ParameterOptimizer.MaxStateBytes(sizes);
            if (doc.Optimizer?.Bytes is { } declaredBytes && declaredBytes != opt.Length)
                throw Fault(JsonEntry, "optimizer.bytes", $"is {declaredBytes} but optimizer.bin holds {opt.Length} bytes");
            if (opt.Length > max)
                throw Fault(OptimizerEntry, "length", $"is {opt.Length} bytes, more than any optimizer state of this network can take ({max})");
            state = ReadEntry(opt, OptimizerEntry);
            ParameterOptimizer.ValidateState(state, sizes);
        }
        else if (doc.Optimizer is not null)
            throw Fault(OptimizerEntry, null, "is missing but checkpoint.json's 'optimizer' declares it");

        var incremental = version >= 2 ? IncrementalState.ReadFrom(zip, doc.Incremental, network) : null;
        var recipe = ReadRecipe(doc.Recipe, version);
        var onnx = ReadOnnx(zip, doc, network, classes.Length, weightBytes);
        var history = ReadHistory(doc);
        return new Checkpoint(network, classes, options, state, seed, incremental, recipe, onnx, history);
    }

    private static byte[]? ReadOnnx(ZipArchive zip, CheckpointDocument doc, NetworkModel network, int classCount, long weightBytes)
    {
        var entry = zip.GetEntry(OnnxEntry);
        if (entry is null)
            return doc.Onnx is null ? null : throw Fault(OnnxEntry, null, "is missing but checkpoint.json's 'onnx' declares it");
        if (doc.Onnx?.Bytes is not { } declared || declared != entry.Length)
            throw Fault(JsonEntry, "onnx.bytes", $"is {doc.Onnx?.Bytes?.ToString(CultureInfo.InvariantCulture) ?? "missing"} but model.onnx holds {entry.Length} bytes");
        // An export holds at most the float32 weights plus its graph; anything larger is not this model's.
        long max = checked(weightBytes + (16L << 20));
        if (entry.Length > max)
            throw Fault(OnnxEntry, "length", $"is {entry.Length} bytes, more than an export of this network can take ({max})");
        var onnx = ReadEntry(entry, OnnxEntry);
        MLNet.Compression.Onnx.OnnxModelSignature sig;
        try
        {
            sig = MLNet.Compression.Onnx.OnnxExporter.ReadSignature(onnx);
        }
        catch (ArgumentException e)
        {
            throw Fault(OnnxEntry, null, e.Message, e);
        }
        if (sig.InputLength != network.InputLength)
            throw Fault(OnnxEntry, "input", $"takes {sig.InputLength} features but the architecture takes {network.InputLength}");
        if (sig.Head != network.HeadKind || sig.ClassCount != classCount)
            throw Fault(OnnxEntry, "output", $"is a {sig.Head} model with {sig.ClassCount} outputs but checkpoint.json describes a {network.HeadKind} model with {classCount} classes");
        return onnx;
    }

    private static IReadOnlyList<CompressionStageReport>? ReadHistory(CheckpointDocument doc)
    {
        if (doc.History is null)
            return null;
        try
        {
            var history = doc.History.Deserialize<List<CompressionStageReport>>(HistoryJson);
            if (history is null || history.Any(r => r is null))
                throw Fault(JsonEntry, "history", "holds a null report");
            return history;
        }
        catch (Exception e) when (e is JsonException or NotSupportedException or InvalidOperationException)
        {
            throw Fault(JsonEntry, "history", e.Message, e);
        }
    }

    private static NetworkModel CreateNetwork(NetworkArchitecture architecture, int classes, OutputHeadKind headKind)
    {
        try
        {
            return NetworkModel.Create(architecture, classes, headKind);
        }
        catch (Exception e) when (e is ArgumentException or OverflowException)
        {
            throw Fault(JsonEntry, "architecture", e.Message, e);
        }
    }

    private static CheckpointDocument ReadDocument(ZipArchive zip)
    {
        var entry = zip.GetEntry(JsonEntry) ?? throw Fault(JsonEntry, null, "is missing");
        if (entry.Length > MaxJsonBytes)
            throw Fault(JsonEntry, "length", $"is {entry.Length} bytes; a checkpoint's JSON is at most {MaxJsonBytes}");
        var bytes = ReadEntry(entry, JsonEntry);
        return JsonSerializer.Deserialize(bytes, CheckpointJsonContext.Default.CheckpointDocument)
               ?? throw Fault(JsonEntry, null, "is the JSON value null");
    }

    private static string[] ReadClasses(CheckpointDocument doc)
    {
        var list = doc.Classes ?? throw Fault(JsonEntry, "classes", "is missing");
        bool regression = doc.Head == nameof(OutputHeadKind.Regression);
        if (list.Count < (regression ? 1 : 2) || (regression && list.Count != 1))
            throw Fault(JsonEntry, "classes", regression
                ? $"holds {list.Count} names; a regression has exactly one output name"
                : $"holds {list.Count} names; a classifier has at least two classes");
        var seen = new Dictionary<string, int>(StringComparer.Ordinal);
        var classes = new string[list.Count];
        for (int i = 0; i < list.Count; i++)
        {
            var c = list[i];
            if (string.IsNullOrEmpty(c))
                throw Fault(JsonEntry, $"classes[{i}]", $"is {(c is null ? "null" : "empty")}; every class needs a name");
            if (seen.TryGetValue(c, out int first))
                throw Fault(JsonEntry, $"classes[{i}]", $"repeats '{c}' (also classes[{first}]); class names must be distinct");
            seen[c] = i;
            classes[i] = c;
        }
        return classes;
    }

    private static NeuralNetworkOptions ReadOptions(CheckpointDocument doc, NetworkArchitecture architecture)
    {
        var o = doc.Options ?? throw Fault(JsonEntry, "options", "is missing");
        var d = new NeuralNetworkOptions();
        var options = new NeuralNetworkOptions
        {
            Architecture = architecture,
            LabelColumnName = doc.LabelColumn ?? throw Fault(JsonEntry, "labelColumn", "is missing"),
            FeatureColumnName = doc.FeatureColumn ?? throw Fault(JsonEntry, "featureColumn", "is missing"),
            Epochs = o.Epochs ?? throw Missing("options.epochs"),
            BatchSize = o.BatchSize ?? throw Missing("options.batchSize"),
            LearningRate = o.LearningRate ?? throw Missing("options.learningRate"),
            Optimizer = ParseEnum<OptimizerKind>(o.Optimizer ?? throw Missing("options.optimizer"), "options.optimizer"),
            LearningRateSchedule = o.LearningRateSchedule is null ? d.LearningRateSchedule : ParseEnum<LearningRateSchedule>(o.LearningRateSchedule, "options.learningRateSchedule"),
            Momentum = o.Momentum ?? throw Missing("options.momentum"),
            WeightDecay = o.WeightDecay ?? throw Missing("options.weightDecay"),
            Precision = ParseEnum<TrainingPrecision>(o.Precision ?? throw Missing("options.precision"), "options.precision"),
            Device = ParseDevice(o.Device ?? throw Missing("options.device")),
            ScoringBatchSize = o.ScoringBatchSize ?? throw Missing("options.scoringBatchSize"),
            // Not stored before version 3: the defaults, as those versions loaded them.
            ValidationFraction = o.ValidationFraction ?? d.ValidationFraction,
            EarlyStoppingPatience = o.EarlyStoppingPatience ?? d.EarlyStoppingPatience,
            Seed = o.Seed,
            Shuffle = o.Shuffle ?? d.Shuffle,
            ProgressInterval = o.ProgressInterval ?? d.ProgressInterval,
            ShuffleCacheLimitBytes = o.ShuffleCacheLimitBytes ?? d.ShuffleCacheLimitBytes,
            ShuffleBufferRows = o.ShuffleBufferRows ?? d.ShuffleBufferRows,
            Threads = o.Threads,
            Augmentation = Augmentation.CheckpointAugmentation.To(o.Augmentation),
            MemoryBudgetBytes = o.MemoryBudgetBytes,
            AllowLowerPrecisionForBudget = o.AllowLowerPrecisionForBudget ?? d.AllowLowerPrecisionForBudget,
        };
        try
        {
            options.Validate();
        }
        catch (ArgumentException e)
        {
            string field = e.ParamName switch
            {
                nameof(NeuralNetworkOptions.Architecture) => "architecture",
                nameof(NeuralNetworkOptions.LabelColumnName) => "labelColumn",
                nameof(NeuralNetworkOptions.FeatureColumnName) => "featureColumn",
                { } p => "options." + JsonNamingPolicy.CamelCase.ConvertName(p),
                null => "options",
            };
            throw Fault(JsonEntry, field, e.Message, e);
        }
        return options;
    }

    private static TrainingDevice ParseDevice(string text)
    {
        try
        {
            return TrainingDevice.Parse(text);
        }
        catch (Exception e) when (e is FormatException or ArgumentException)
        {
            throw Fault(JsonEntry, "options.device", e.Message, e);
        }
    }

    private static List<int[]> ReadDeclaredLayers(CheckpointDocument doc)
    {
        var layers = doc.Layers ?? throw Fault(JsonEntry, "layers", "is missing");
        var shapes = new List<int[]>(Math.Min(layers.Count, 1024));
        for (int i = 0; i < layers.Count; i++)
        {
            var l = layers[i] ?? throw Fault(JsonEntry, $"layers[{i}]", "is null");
            var shape = l.WeightShape ?? throw Fault(JsonEntry, $"layers[{i}].weightShape", "is missing");
            if (shape.Count is not (2 or 4) || shape.Any(x => x <= 0))
                throw Fault(JsonEntry, $"layers[{i}].weightShape", $"is [{string.Join(", ", shape)}]; a weight shape has 2 or 4 positive sizes");
            if (l.Bias != shape[0])
                throw Fault(JsonEntry, $"layers[{i}].bias", $"is {l.Bias?.ToString(CultureInfo.InvariantCulture) ?? "missing"} but the weight has {shape[0]} output units");
            shapes.Add(shape.ToArray());
        }
        return shapes;
    }

    private static JsonNode RecipeToJson(CompressionRecipe recipe) =>
        // The steps in the order they were applied (CompressionRecipe.Then keeps only the ones still in force).
        JsonSerializer.SerializeToNode(recipe.Steps, RecipeJson)!;

    private static CompressionRecipe ReadRecipe(JsonNode? node, int version)
    {
        if (node is null)
            return CompressionRecipe.None;
        if (node is not JsonArray steps)
            throw Fault(JsonEntry, "recipe", "is not a list of steps");
        var recipe = CompressionRecipe.None;
        for (int i = 0; i < steps.Count; i++)
        {
            string at = $"recipe[{i}]";
            if (steps[i] is not JsonObject step)
                throw Fault(JsonEntry, at, steps[i] is null ? "is null" : "is not an object");
            string? kind = step["kind"] is JsonValue k && k.TryGetValue<string>(out var name) ? name : null;
            if (kind is null || !StepKinds.Contains(kind))
                throw Fault(JsonEntry, at + ".kind", $"is '{kind}', a step this library does not know ({string.Join(", ", StepKinds)}); update MLNet.Compression");
            if (step[kind] is not JsonObject options)
                throw Fault(JsonEntry, $"{at}.{kind}", step[kind] is null ? "is missing" : "is not an object");
            if (version < 4 && kind == "quantization")
                RenameVersion3QuantizationFields(options);
            IReapplicableStep read;
            try
            {
                read = step.Deserialize<IReapplicableStep>(RecipeJson) ?? throw Fault(JsonEntry, at, "is null");
            }
            catch (JsonException e)
            {
                // e.Path is relative to the step ("$.quantization.mode").
                // A rule broken inside a value (an augmentation's rotation) names its field through the inner ArgumentException.
                string field = e.Path is { Length: > 1 } p ? at + p[1..] : at;
                if (e.InnerException is ArgumentException { ParamName: { Length: > 0 } param })
                    field += "." + param;
                throw Fault(JsonEntry, field, e.Message, e);
            }
            switch (read)
            {
                case QuantizeStep q:
                    Validated(q.Options.Validate, $"{at}.{kind}");
                    break;
                case ClusterStep c:
                    if (c.Options.Distillation is null)
                        throw Fault(JsonEntry, $"{at}.{kind}.distillation", "is null; leave it out for the default settings");
                    Validated(c.Options.Validate, $"{at}.{kind}");
                    break;
            }
            recipe = recipe.Then(read);
        }
        return recipe;
    }

    /// <summary>Version 3 wrote quantization's fine-tuning epochs and rate under their QAT names; version 4 uses the options' own.</summary>
    private static void RenameVersion3QuantizationFields(JsonObject options)
    {
        foreach (var (old, now) in new[] { ("qatEpochs", "epochs"), ("qatLearningRate", "learningRate") })
            if (options[old] is { } value && !options.ContainsKey(now))
            {
                options.Remove(old);
                options[now] = value;
            }
    }

    private static void Validated(Action validate, string at)
    {
        try
        {
            validate();
        }
        catch (ArgumentException e)
        {
            throw Fault(JsonEntry, e.ParamName is { } p ? at + "." + JsonNamingPolicy.CamelCase.ConvertName(p) : at, e.Message, e);
        }
    }

    private static T ParseEnum<T>(string text, string field) where T : struct, Enum
    {
        if (text.Length > 0 && !char.IsDigit(text[0]) && text[0] != '-' && Enum.TryParse<T>(text, ignoreCase: false, out var value) && Enum.IsDefined(value))
            return value;
        throw Fault(JsonEntry, field, $"is '{text}', not one of {string.Join(", ", Enum.GetNames<T>())}");
    }

    private static CheckpointFormatException Missing(string field) => Fault(JsonEntry, field, "is missing");

    internal static CheckpointFormatException Fault(string entry, string? field, string what, Exception? inner = null) => new(entry, field, what, inner);

    private static CheckpointException Bad(string path, string? entry, string? field, string what, Exception? inner = null)
    {
        string where = entry is null ? "" : field is null ? $"{entry}: " : $"{entry}, field '{field}': ";
        return new CheckpointException(
            $"'{path}' is not a usable checkpoint: {where}{what.TrimEnd('.')}. Write checkpoints with NeuralNetworkTransformer.SaveCheckpoint; " +
            "a damaged or hand-edited checkpoint cannot be loaded.", entry, field, inner);
    }

    /// <summary>
    /// Reads the whole of <paramref name="entry"/> into an array of its declared uncompressed length (the caller has bounded
    /// it), failing when the data is shorter or longer than declared.
    /// </summary>
    internal static byte[] ReadEntry(ZipArchiveEntry entry, string name)
    {
        if (entry.Length > Array.MaxLength)
            throw Fault(name, "length", $"is {entry.Length} bytes, too large to read");
        var bytes = new byte[entry.Length];
        using var s = entry.Open();
        ReadExactly(s, bytes, name);
        if (s.ReadByte() != -1)
            throw Fault(name, "length", $"holds more than the {entry.Length} bytes its zip entry declares");
        return bytes;
    }

    /// <summary>
    /// Reads the <paramref name="headerBytes"/>-byte header of the binary entry <paramref name="entry"/>, which starts with the
    /// length of <paramref name="magic"/> in one byte and its ASCII text, and returns the bytes after the magic; throws a
    /// fault on the field "magic" saying the entry is not <paramref name="what"/> when the magic differs.
    /// </summary>
    internal static byte[] ReadMagicHeader(Stream stream, int headerBytes, string magic, string entry, string what)
    {
        var header = new byte[headerBytes];
        ReadExactly(stream, header, entry);
        if (header[0] != magic.Length || System.Text.Encoding.ASCII.GetString(header, 1, magic.Length) != magic)
            throw Fault(entry, "magic", $"is not '{magic}': this is not {what}");
        return header[(1 + magic.Length)..];
    }

    internal static void ReadExactly(Stream s, Span<byte> destination, string name)
    {
        int read = 0;
        while (read < destination.Length)
        {
            int n = s.Read(destination[read..]);
            if (n == 0)
                throw Fault(name, "length", "is shorter than its zip entry declares");
            read += n;
        }
    }

    private static void WriteFloats(Stream s, float[] values)
    {
        if (BitConverter.IsLittleEndian)
            s.Write(MemoryMarshal.AsBytes(values.AsSpan()));
        else
        {
            var b = new byte[4];
            foreach (var v in values)
            {
                BinaryPrimitives.WriteSingleLittleEndian(b, v);
                s.Write(b);
            }
        }
    }

    private static float[] ReadFloats(Stream s, int count, string name)
    {
        var result = new float[count];
        var bytes = MemoryMarshal.AsBytes(result.AsSpan());
        ReadExactly(s, bytes, name);
        if (!BitConverter.IsLittleEndian)
            for (int i = 0; i < count; i++)
                result[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.Slice(i * 4, 4));
        return result;
    }
}

/// <summary>A fault in one entry and field of a checkpoint; <see cref="Checkpoint.Read(string)"/> turns it into a <see cref="CheckpointException"/> naming the file.</summary>
internal sealed class CheckpointFormatException : IOException
{
    public CheckpointFormatException(string entry, string? field, string message, Exception? inner = null) : base(message, inner)
    {
        Entry = entry;
        Field = field;
    }

    public string Entry { get; }

    public string? Field { get; }
}

/// <summary>
/// Enumerations by name, as the rest of checkpoint.json stores them: an unknown name or a number is a <see cref="JsonException"/>
/// that lists the names allowed (the reader adds the field).
/// </summary>
internal sealed class NamedEnumConverter : JsonConverterFactory
{
    /// <inheritdoc />
    public override bool CanConvert(Type typeToConvert) => typeToConvert.IsEnum;

    /// <inheritdoc />
    public override JsonConverter CreateConverter(Type typeToConvert, JsonSerializerOptions options) =>
        (JsonConverter)Activator.CreateInstance(typeof(Named<>).MakeGenericType(typeToConvert))!;

    private sealed class Named<T> : JsonConverter<T> where T : struct, Enum
    {
        public override T Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        {
            string text = reader.TokenType == JsonTokenType.String ? reader.GetString()! : System.Text.Encoding.UTF8.GetString(reader.ValueSpan);
            if (reader.TokenType == JsonTokenType.String && text.Length > 0 && !char.IsDigit(text[0]) && text[0] != '-'
                && Enum.TryParse<T>(text, ignoreCase: false, out var value) && Enum.IsDefined(value))
                return value;
            throw new JsonException($"is '{text}', not one of {string.Join(", ", Enum.GetNames<T>())}");
        }

        public override void Write(Utf8JsonWriter writer, T value, JsonSerializerOptions options) => writer.WriteStringValue(value.ToString());
    }
}
