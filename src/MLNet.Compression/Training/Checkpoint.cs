using System.Buffers.Binary;
using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using MLNet.Compression.Networks;

namespace MLNet.Compression;

/// <summary>
/// Training state that ONNX does not carry: architecture, weights, class and column names, options, optimizer state.
/// A zip with <c>checkpoint.json</c>, <c>weights.bin</c> (little-endian float32, layer by layer: weight then bias) and
/// <c>optimizer.bin</c> (the optimizer's moment buffers, see <see cref="ParameterOptimizer.SaveState"/>). Version 2 adds, for
/// models made by continued training, <c>replay.bin</c> (the exemplar memory, uint8 pixels) and <c>ewc.bin</c> (Fisher
/// information and anchor weights) plus an <c>incremental</c> object in <c>checkpoint.json</c>; version 1 files (without
/// them) still load.
/// </summary>
internal sealed record Checkpoint(NetworkModel Network, IReadOnlyList<string> ClassNames, NeuralNetworkOptions Options, byte[]? OptimizerState, int Seed,
    MLNet.Compression.Incremental.IncrementalState? Incremental = null)
{
    public const int FormatVersion = 2;

    public static void Write(string path, Checkpoint cp) => AtomicFile.Write(path, stream =>
    {
        using var zip = new ZipArchive(stream, ZipArchiveMode.Create, leaveOpen: true);
        var meta = new JsonObject
        {
            ["format"] = "MLNet.Compression.Checkpoint",
            ["version"] = FormatVersion,
            ["architecture"] = ArchitectureJson.ToJson(cp.Network.Architecture),
            ["classes"] = new JsonArray(cp.ClassNames.Select(c => (JsonNode?)JsonValue.Create(c)).ToArray()),
            ["labelColumn"] = cp.Options.LabelColumnName,
            ["featureColumn"] = cp.Options.FeatureColumnName,
            ["seed"] = cp.Seed,
            ["options"] = new JsonObject
            {
                ["epochs"] = cp.Options.Epochs,
                ["batchSize"] = cp.Options.BatchSize,
                ["learningRate"] = cp.Options.LearningRate,
                ["optimizer"] = cp.Options.Optimizer.ToString(),
                ["learningRateSchedule"] = cp.Options.LearningRateSchedule.ToString(),
                ["momentum"] = cp.Options.Momentum,
                ["weightDecay"] = cp.Options.WeightDecay,
                ["precision"] = cp.Options.Precision.ToString(),
                ["device"] = cp.Options.Device.ToString(),
                ["scoringBatchSize"] = cp.Options.ScoringBatchSize,
            },
            ["layers"] = new JsonArray(cp.Network.ParameterizedLayers.Select(l => (JsonNode?)new JsonObject
            {
                ["name"] = l.Name,
                ["weightShape"] = new JsonArray(l.WeightShape.Select(d => (JsonNode?)JsonValue.Create(d)).ToArray()),
                ["bias"] = l.Bias.Length,
            }).ToArray()),
        };
        using (var s = zip.CreateEntry("weights.bin", CompressionLevel.Fastest).Open())
            foreach (var layer in cp.Network.ParameterizedLayers)
            {
                WriteFloats(s, layer.Weight);
                WriteFloats(s, layer.Bias);
            }
        if (cp.OptimizerState is { } state)
            using (var s = zip.CreateEntry("optimizer.bin", CompressionLevel.Fastest).Open())
                s.Write(state);
        cp.Incremental?.WriteTo(zip, meta);
        using (var s = zip.CreateEntry("checkpoint.json").Open())
        using (var w = new Utf8JsonWriter(s, new JsonWriterOptions { Indented = true }))
            meta.WriteTo(w);
    });

    public static Checkpoint Read(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"The checkpoint '{path}' does not exist. Write one with NeuralNetworkTransformer.SaveCheckpoint.", path);
        try
        {
            using var zip = ZipFile.OpenRead(path);
            var metaEntry = zip.GetEntry("checkpoint.json") ?? throw Bad(path, "it has no checkpoint.json entry");
            JsonNode meta;
            using (var s = metaEntry.Open())
                meta = JsonNode.Parse(s) ?? throw Bad(path, "checkpoint.json is empty");
            if ((string?)meta["format"] != "MLNet.Compression.Checkpoint")
                throw Bad(path, "it is not an MLNet.Compression checkpoint");
            int version = (int?)meta["version"] ?? 0;
            if (version > FormatVersion)
                throw Bad(path, $"it has format version {version}, newer than this library reads ({FormatVersion}); update MLNet.Compression");
            var architecture = ArchitectureJson.FromJson(meta["architecture"] ?? throw Bad(path, "the architecture is missing"));
            var classes = meta["classes"]!.AsArray().Select(c => (string)c!).ToArray();
            var network = NetworkModel.Create(architecture, classes.Length);
            var o = meta["options"]!;
            var options = new NeuralNetworkOptions
            {
                Architecture = architecture,
                LabelColumnName = (string)meta["labelColumn"]!,
                FeatureColumnName = (string)meta["featureColumn"]!,
                Epochs = (int)o["epochs"]!,
                BatchSize = (int)o["batchSize"]!,
                LearningRate = (double)o["learningRate"]!,
                Optimizer = Enum.Parse<OptimizerKind>((string)o["optimizer"]!),
                LearningRateSchedule = Enum.Parse<LearningRateSchedule>((string?)o["learningRateSchedule"] ?? nameof(LearningRateSchedule.Constant)),
                Momentum = (double)o["momentum"]!,
                WeightDecay = (double)o["weightDecay"]!,
                Precision = Enum.Parse<TrainingPrecision>((string)o["precision"]!),
                Device = TrainingDevice.Parse((string)o["device"]!),
                ScoringBatchSize = (int)o["scoringBatchSize"]!,
            };
            using (var s = (zip.GetEntry("weights.bin") ?? throw Bad(path, "it has no weights.bin entry")).Open())
                foreach (var layer in network.ParameterizedLayers)
                {
                    layer.Weight = ReadFloats(s, layer.Weight.Length, path);
                    layer.Bias = ReadFloats(s, layer.Bias.Length, path);
                }
            byte[]? state = null;
            if (zip.GetEntry("optimizer.bin") is { } opt)
            {
                using var s = opt.Open();
                using var ms = new MemoryStream();
                s.CopyTo(ms);
                state = ms.ToArray();
            }
            var incremental = version >= 2 ? MLNet.Compression.Incremental.IncrementalState.ReadFrom(zip, meta, network) : null;
            return new Checkpoint(network, classes, options, state, (int)meta["seed"]!, incremental);
        }
        catch (Exception e) when (e is InvalidDataException or JsonException or NullReferenceException or FormatException or InvalidOperationException
                                      or ArgumentException && e is not CheckpointException)
        {
            throw Bad(path, e.Message, e);
        }
    }

    private static CheckpointException Bad(string path, string what, Exception? inner = null) =>
        new($"'{path}' is not a readable checkpoint: {what}. Write checkpoints with NeuralNetworkTransformer.SaveCheckpoint.", inner);

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

    private static float[] ReadFloats(Stream s, int count, string path)
    {
        var result = new float[count];
        var bytes = MemoryMarshal.AsBytes(result.AsSpan());
        int read = 0;
        while (read < bytes.Length)
        {
            int n = s.Read(bytes[read..]);
            if (n == 0)
                throw Bad(path, "weights.bin is shorter than the architecture needs");
            read += n;
        }
        if (!BitConverter.IsLittleEndian)
            for (int i = 0; i < count; i++)
                result[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.Slice(i * 4, 4));
        return result;
    }
}

/// <summary>Thrown when a checkpoint file cannot be read.</summary>
public sealed class CheckpointException : IOException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What is wrong and what to do.</param>
    /// <param name="inner">The underlying error, if any.</param>
    public CheckpointException(string message, Exception? inner = null) : base(message, inner)
    {
    }
}
