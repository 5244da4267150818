using System.Buffers.Binary;
using System.Collections;
using System.Globalization;
using System.IO.Compression;
using System.Reflection;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Clustering;
using MLNet.Compression.Distillation;
using MLNet.Compression.Networks;
using MLNet.Compression.Quantization;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Training;

/// <summary>The checked-in version-2 checkpoints (see TestData/Checkpoints/README.md) and the scores they gave when written.</summary>
internal static class CheckpointFixtures
{
    public static string Dir => Path.Combine(AppContext.BaseDirectory, "TestData", "Checkpoints");

    public static string Mlp => Path.Combine(Dir, "mlp-v2.checkpoint");

    public static string Incremental => Path.Combine(Dir, "incremental-v2.checkpoint");

    /// <summary>MNIST test rows 0-19, the rows the expected scores are of.</summary>
    public static IDataView TestRows(MLContext ml) => ml.Data.TakeRows(TestMnist.LoadTest(ml), 20);

    public static (float[][] Scores, uint[] Labels) Expected(string checkpoint)
    {
        var lines = File.ReadAllLines(Path.ChangeExtension(checkpoint, ".expected.txt")).Where(l => !l.StartsWith('#')).ToArray();
        var labels = lines.Select(l => uint.Parse(l.Split(' ')[0], CultureInfo.InvariantCulture)).ToArray();
        var scores = lines.Select(l => l.Split(' ').Skip(1)
            .Select(h => BitConverter.Int32BitsToSingle(int.Parse(h, NumberStyles.HexNumber, CultureInfo.InvariantCulture))).ToArray()).ToArray();
        return (scores, labels);
    }
}

public sealed class CheckpointCompatibilityTests
{
    [Theory]
    [InlineData("mlp-v2.checkpoint")]
    [InlineData("incremental-v2.checkpoint")]
    public void AVersion2CheckpointLoadsAndScoresExactlyAsWhenItWasWritten(string name)
    {
        var ml = new MLContext(seed: 1);
        string path = Path.Combine(CheckpointFixtures.Dir, name);
        using (var zip = ZipFile.OpenRead(path))
        using (var s = zip.GetEntry("checkpoint.json")!.Open())
            Assert.Equal(2, (int)JsonNode.Parse(s)!["version"]!);
        using var model = NeuralNetworkTransformer.LoadCheckpoint(ml, path);
        var test = CheckpointFixtures.TestRows(ml);
        var expected = CheckpointFixtures.Expected(path);
        Scoring.AssertIdentical(expected, Scoring.Read(model.Transform(test)));

        // Saved again it is a version-4 checkpoint that scores the same.
        using var dir = TestMnist.NewTempDirectory();
        model.SaveCheckpoint(dir["v4.checkpoint"]);
        using (var zip = ZipFile.OpenRead(dir["v4.checkpoint"]))
        using (var s = zip.GetEntry("checkpoint.json")!.Open())
            Assert.Equal(4, (int)JsonNode.Parse(s)!["version"]!);
        using var again = NeuralNetworkTransformer.LoadCheckpoint(ml, dir["v4.checkpoint"]);
        Scoring.AssertIdentical(expected, Scoring.Read(again.Transform(test)));
        Assert.Equal(model.OptimizerState, again.OptimizerState);
    }

    [Fact]
    public void TheVersion2FixturesKeepTheirOptionsAndIncrementalState()
    {
        var ml = new MLContext(seed: 1);
        using var mlp = NeuralNetworkTransformer.LoadCheckpoint(ml, CheckpointFixtures.Mlp);
        var o = mlp.TrainingOptions;
        Assert.Equal((OptimizerKind.Sgd, 0.8, 32, 0.05, 100, 1), (o.Optimizer, o.Momentum, o.BatchSize, o.LearningRate, o.ScoringBatchSize, o.Epochs));
        Assert.Equal(7, mlp.Seed);
        // Version 2 did not store these: they come back as their defaults, as they always did.
        Assert.True(o.Shuffle);
        Assert.Equal(50, o.ProgressInterval);
        Assert.Null(mlp.IncrementalState);

        using var inc = NeuralNetworkTransformer.LoadCheckpoint(ml, CheckpointFixtures.Incremental);
        var state = inc.IncrementalState!;
        Assert.Equal(40, state.Replay!.Count);
        Assert.Equal(784, state.Replay.FeatureLength);
        Assert.Equal(2, state.Ewc!.Tasks);
        Assert.True(state.Ewc.Matches(inc.Network));
        Assert.NotNull(inc.OptimizerState);
    }

    [Fact]
    public void UnknownJsonFieldsAreIgnored()
    {
        var ml = new MLContext(seed: 1);
        using var dir = TestMnist.NewTempDirectory();
        string path = dir["future.checkpoint"];
        using (var model = NeuralNetworkTransformer.LoadCheckpoint(ml, CheckpointFixtures.Incremental))
            model.SaveCheckpoint(path);
        CheckpointCorruption.EditJson(path, j =>
        {
            j["addedInAFutureVersion"] = new JsonObject { ["anything"] = new JsonArray(1, 2, 3) };
            j["options"]!["someFutureOption"] = "x";
            j["layers"]![0]!["futureLayerField"] = true;
            j["incremental"]!["replay"]!["futureReplayField"] = 1.5;
        });
        using var loaded = NeuralNetworkTransformer.LoadCheckpoint(ml, path);
        Scoring.AssertIdentical(CheckpointFixtures.Expected(CheckpointFixtures.Incremental), Scoring.Read(loaded.Transform(CheckpointFixtures.TestRows(ml))));
    }
}

public sealed class CheckpointRoundTripTests
{
    /// <summary>Options a checkpoint cannot hold by design: live objects (callbacks, models), not settings.</summary>
    private static readonly string[] NotPersisted = ["Progress", "Teacher", "CancellationToken", "Distributed"];

    [Theory]
    [InlineData(4)]
    [InlineData(3)]
    public void EveryOptionSetToANonDefaultValueComesBackEqual(int version)
    {
        var ml = new MLContext(seed: 1);
        using var source = NeuralNetworkTransformer.LoadCheckpoint(ml, CheckpointFixtures.Mlp);
        var options = new NeuralNetworkOptions
        {
            Architecture = source.Architecture,
            LabelColumnName = "Digit",
            FeatureColumnName = "Pixels",
            Epochs = 3,
            BatchSize = 48,
            LearningRate = 0.0123456789,
            LearningRateSchedule = LearningRateSchedule.Cosine,
            Optimizer = OptimizerKind.Sgd,
            Momentum = 0.37,
            WeightDecay = 1.5e-4,
            ValidationFraction = 0.15,
            EarlyStoppingPatience = 2,
            Seed = 123,
            Shuffle = false,
            Device = TrainingDevice.Cuda(1),
            Precision = TrainingPrecision.BFloat16,
            Progress = new Progress<TrainingProgress>(),
            ProgressInterval = 7,
            ScoringBatchSize = 333,
            ShuffleCacheLimitBytes = 12_345_678,
            ShuffleBufferRows = 999,
            Threads = 3,
            CancellationToken = Cancelled(),
            Augmentation = ImageAugmentation.Affine(1.5, 7, (0.95, 1.05)).WithElastic(20, 3).WithImageShape(1, 28, 28),
            MemoryBudgetBytes = 123_456_789,
            AllowLowerPrecisionForBudget = true,
            Distributed = DistributedOptions.Mpi(),
        };
        AssertEveryPropertyDiffers(new NeuralNetworkOptions(), options);
        var quantization = new QuantizationOptions
        {
            Mode = QuantizationMode.Int8Dynamic, ActivationScales = ActivationScaleScope.PerBatch, PerChannel = false, BlockSize = 64, Calibration = CalibrationMethod.Percentile, CalibrationRows = 77,
            Percentile = 99.5, KeepFloat = ["output"], QuantizationAwareTraining = true, QatEpochs = 5, QatLearningRate = 3e-4,
            Progress = new Progress<TrainingProgress>(), BatchSize = 24, ProgressInterval = 9, CancellationToken = Cancelled(),
            Distributed = DistributedOptions.Mpi(), Augmentation = ImageAugmentation.None,
        };
        AssertEveryPropertyDiffers(new QuantizationOptions(), quantization);
        var clustering = new WeightClusteringOptions
        {
            ClusterCount = 16, LayerClusterCount = new Dictionary<string, int> { ["fc1"] = 8 }, KeepFloat = ["output"],
            Initialization = CentroidInitialization.Density, MaxIterations = 9, Epochs = 4, LearningRate = 2e-3, BatchSize = 40,
            Distillation = new DistillationOptions
            {
                Temperature = 2.5, Alpha = 0.3, TeacherScoreColumnName = "TeacherScore", TeacherScoreKind = TeacherScoreKind.Logits,
                CacheTeacherOutputs = true, CacheDirectory = "/tmp/teacher-cache",
            },
            Progress = new Progress<TrainingProgress>(),
            Teacher = source,
            ProgressInterval = 11,
            CancellationToken = Cancelled(),
            Distributed = DistributedOptions.Mpi(),
            Augmentation = ImageAugmentation.Affine(1, 5).WithElastic(10, 2).WithImageShape(1, 28, 28),
        };
        AssertEveryPropertyDiffers(new WeightClusteringOptions(), clustering);
        AssertEveryPropertyDiffers(new DistillationOptions(), clustering.Distillation);

        var schema = new DataViewSchema.Builder();
        schema.AddColumn("Pixels", new VectorDataViewType(NumberDataViewType.Single, 784));
        using var model = NeuralNetworkTransformer.Create(ml, source.Network, source.ClassNames, options, schema.ToSchema(), null, 99,
            recipe: CompressionRecipe.None.Then(new ClusterStep(clustering)).Then(new QuantizeStep(quantization)));
        using var dir = TestMnist.NewTempDirectory();
        model.SaveCheckpoint(dir["all.checkpoint"]);
        using (var zip = ZipFile.OpenRead(dir["all.checkpoint"]))
        using (var s = zip.GetEntry("checkpoint.json")!.Open())
        {
            var recipe = JsonNode.Parse(s)!["recipe"]!.AsArray();
            // The recipe is the steps' own form, enumerations by name.
            Assert.Equal(["clustering", "quantization"], recipe.Select(r => (string)r!["kind"]!));
            Assert.Equal("Int8Dynamic", (string)recipe[1]!["quantization"]!["mode"]!);
            Assert.Equal("PerBatch", (string)recipe[1]!["quantization"]!["activationScales"]!);
            Assert.Equal("Density", (string)recipe[0]!["clustering"]!["initialization"]!);
            Assert.Equal("Logits", (string)recipe[0]!["clustering"]!["distillation"]!["teacherScoreKind"]!);
        }
        if (version == 3)
            CheckpointCorruption.EditJson(dir["all.checkpoint"], j =>
            {
                // Version 3 wrote the same recipe except that quantization's fine-tuning epochs and rate had their QAT names.
                j["version"] = 3;
                var q = j["recipe"]![1]!["quantization"]!.AsObject();
                foreach (var (now, old) in new[] { ("epochs", "qatEpochs"), ("learningRate", "qatLearningRate") })
                {
                    var value = q[now]!.DeepClone();
                    q.Remove(now);
                    q[old] = value;
                }
            });
        using var loaded = NeuralNetworkTransformer.LoadCheckpoint(ml, dir["all.checkpoint"]);

        AssertEveryPropertyEqual(options, loaded.TrainingOptions);
        Assert.Equal(99, loaded.Seed);
        AssertEveryPropertyEqual(quantization, loaded.Recipe.Quantization!);
        AssertEveryPropertyEqual(clustering, loaded.Recipe.Clustering!);
        AssertEveryPropertyEqual(clustering.Distillation, loaded.Recipe.Clustering!.Distillation);
        Assert.Equal(source.ClassNames, loaded.ClassNames);
    }

    [Fact]
    public void ARecipeStepWithUnsetEpochsStaysUnsetSoItStillFitsItsEpochsToTheData()
    {
        var ml = new MLContext(seed: 1);
        using var source = NeuralNetworkTransformer.LoadCheckpoint(ml, CheckpointFixtures.Mlp);
        var quantization = new QuantizationOptions { Mode = QuantizationMode.Int8Static, QuantizationAwareTraining = true };
        var clustering = new WeightClusteringOptions { ClusterCount = 16, Epochs = 4 };
        var schema = new DataViewSchema.Builder();
        schema.AddColumn("Features", new VectorDataViewType(NumberDataViewType.Single, 784));
        using var model = NeuralNetworkTransformer.Create(ml, source.Network, source.ClassNames, source.TrainingOptions, schema.ToSchema(), null, 1,
            recipe: CompressionRecipe.None.Then(new ClusterStep(clustering)).Then(new QuantizeStep(quantization)));
        using var dir = TestMnist.NewTempDirectory();
        model.SaveCheckpoint(dir["a.checkpoint"]);
        using var loaded = NeuralNetworkTransformer.LoadCheckpoint(ml, dir["a.checkpoint"]);
        loaded.SaveCheckpoint(dir["b.checkpoint"]);
        using var zip = ZipFile.OpenRead(dir["b.checkpoint"]);
        using var s = zip.GetEntry("checkpoint.json")!.Open();
        var recipe = JsonNode.Parse(s)!["recipe"]!.AsArray();
        // A set value is stored; an unset one is left out, and after a reload it is still unset (it fits the next data).
        Assert.Equal(4, (int)recipe[0]!["clustering"]!["epochs"]!);
        Assert.False(recipe[1]!["quantization"]!.AsObject().ContainsKey("epochs"));
        var data = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 1_000).Select(_ => new { Features = new float[784] }));
        Assert.Equal(1_000, loaded.Recipe.Quantization!.RowsFor(data));
        Assert.Null(loaded.Recipe.Clustering!.RowsFor(data));
    }

    private static CancellationToken Cancelled()
    {
        using var source = new CancellationTokenSource();
        source.Cancel();
        return source.Token;
    }

    /// <summary>Guards the test itself: each settable property was given a value other than its default.</summary>
    private static void AssertEveryPropertyDiffers<T>(T defaults, T set)
    {
        foreach (var p in Settable<T>())
            Assert.False(Same(p.GetValue(defaults), p.GetValue(set)), $"{typeof(T).Name}.{p.Name} is left at its default; give it another value.");
    }

    private static void AssertEveryPropertyEqual<T>(T expected, T actual)
    {
        foreach (var p in Settable<T>())
        {
            if (NotPersisted.Contains(p.Name))
                continue;
            Assert.True(Same(p.GetValue(expected), p.GetValue(actual)),
                $"{typeof(T).Name}.{p.Name} came back from the checkpoint as {Show(p.GetValue(actual))}, not {Show(p.GetValue(expected))}.");
        }
    }

    private static IEnumerable<PropertyInfo> Settable<T>() =>
        typeof(T).GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanRead && p.CanWrite && p.SetMethod!.IsPublic);

    private static bool Same(object? a, object? b) => (a, b) switch
    {
        (null, null) => true,
        (null, _) or (_, null) => false,
        (NetworkArchitecture x, NetworkArchitecture y) => ArchitectureJson.ToJson(x).ToJsonString() == ArchitectureJson.ToJson(y).ToJsonString(),
        (IDictionary<string, int> x, IDictionary<string, int> y) => x.OrderBy(k => k.Key).SequenceEqual(y.OrderBy(k => k.Key)),
        (string x, string y) => x == y,
        (IEnumerable x, IEnumerable y) => x.Cast<object?>().SequenceEqual(y.Cast<object?>()),
        (DistillationOptions, DistillationOptions) => ReferenceEquals(a, b) || typeof(DistillationOptions).GetProperties().All(p => Equals(p.GetValue(a), p.GetValue(b))),
        _ => Equals(a, b),
    };

    private static string Show(object? v) => v switch
    {
        null => "null",
        string s => $"'{s}'",
        IEnumerable e => "[" + string.Join(", ", e.Cast<object?>()) + "]",
        _ => v.ToString() ?? "",
    };
}

/// <summary>Edits of a checkpoint's zip entries, for the corruption tests.</summary>
internal static class CheckpointCorruption
{
    public static void EditJson(string path, Action<JsonObject> edit)
    {
        using var zip = ZipFile.Open(path, ZipArchiveMode.Update);
        var entry = zip.GetEntry("checkpoint.json")!;
        JsonObject json;
        using (var s = entry.Open())
            json = JsonNode.Parse(s)!.AsObject();
        edit(json);
        entry.Delete();
        using var w = zip.CreateEntry("checkpoint.json").Open();
        w.Write(System.Text.Encoding.UTF8.GetBytes(json.ToJsonString()));
    }

    public static void EditEntry(string path, string name, Func<byte[], byte[]> edit)
    {
        using var zip = ZipFile.Open(path, ZipArchiveMode.Update);
        byte[] bytes = [];
        if (zip.GetEntry(name) is { } entry)
        {
            using (var s = entry.Open())
            using (var ms = new MemoryStream())
            {
                s.CopyTo(ms);
                bytes = ms.ToArray();
            }
            entry.Delete();
        }
        var edited = edit(bytes);
        using var w = zip.CreateEntry(name).Open();
        w.Write(edited);
    }

    public static void DeleteEntry(string path, string name)
    {
        using var zip = ZipFile.Open(path, ZipArchiveMode.Update);
        zip.GetEntry(name)!.Delete();
    }
}

public sealed class CheckpointCorruptionTests
{
    private const long AllocationLimit = 64L << 20;

    private readonly ITestOutputHelper output;

    public CheckpointCorruptionTests(ITestOutputHelper output) => this.output = output;

    /// <summary>Each fault: what is done to a valid version-4 checkpoint (an MLP 784-8-10 with optimizer, replay and EWC state), and the entry and field the error must name.</summary>
    public static readonly Dictionary<string, (Action<string> Corrupt, string Entry, string? Field)> Faults = new()
    {
        ["version -1"] = (p => CheckpointCorruption.EditJson(p, j => j["version"] = -1), "checkpoint.json", "version"),
        ["version from the future"] = (p => CheckpointCorruption.EditJson(p, j => j["version"] = 5), "checkpoint.json", "version"),
        ["version missing"] = (p => CheckpointCorruption.EditJson(p, j => j.Remove("version")), "checkpoint.json", "version"),
        ["not a checkpoint format"] = (p => CheckpointCorruption.EditJson(p, j => j["format"] = "Something.Else"), "checkpoint.json", "format"),
        ["batchSize 0"] = (p => CheckpointCorruption.EditJson(p, j => j["options"]!["batchSize"] = 0), "checkpoint.json", "options.batchSize"),
        ["momentum 1.5"] = (p => CheckpointCorruption.EditJson(p, j => j["options"]!["momentum"] = 1.5), "checkpoint.json", "options.momentum"),
        ["progressInterval -3"] = (p => CheckpointCorruption.EditJson(p, j => j["options"]!["progressInterval"] = -3), "checkpoint.json", "options.progressInterval"),
        ["unknown optimizer"] = (p => CheckpointCorruption.EditJson(p, j => j["options"]!["optimizer"] = "Lion"), "checkpoint.json", "options.optimizer"),
        ["optimizer as a number"] = (p => CheckpointCorruption.EditJson(p, j => j["options"]!["optimizer"] = "7"), "checkpoint.json", "options.optimizer"),
        ["augmentation rotation 500"] = (p => CheckpointCorruption.EditJson(p, j => j["options"]!["augmentation"] = new JsonObject { ["maxRotationDegrees"] = 500 }),
            "checkpoint.json", "options.augmentation.maxRotationDegrees"),
        ["augmentation of 20x20 images on 784 features"] = (p => CheckpointCorruption.EditJson(p, j => j["options"]!["augmentation"] =
            new JsonObject { ["maxShiftPixels"] = 2, ["channels"] = 1, ["height"] = 20, ["width"] = 20 }), "checkpoint.json", "options.augmentation"),
        ["memoryBudgetBytes -1"] = (p => CheckpointCorruption.EditJson(p, j => j["options"]!["memoryBudgetBytes"] = -1), "checkpoint.json", "options.memoryBudgetBytes"),
        ["batchSize missing"] = (p => CheckpointCorruption.EditJson(p, j => j["options"]!.AsObject().Remove("batchSize")), "checkpoint.json", "options.batchSize"),
        ["epochs as text"] = (p => CheckpointCorruption.EditJson(p, j => j["options"]!["epochs"] = "ten"), "checkpoint.json", "$.options.epochs"),
        ["class names all '7'"] = (p => CheckpointCorruption.EditJson(p, j => j["classes"] = new JsonArray(Enumerable.Range(0, 10).Select(_ => (JsonNode?)"7").ToArray())), "checkpoint.json", "classes[1]"),
        ["class name null"] = (p => CheckpointCorruption.EditJson(p, j => j["classes"]![3] = null), "checkpoint.json", "classes[3]"),
        ["class name empty"] = (p => CheckpointCorruption.EditJson(p, j => j["classes"]![0] = ""), "checkpoint.json", "classes[0]"),
        ["classes 10 -> 5"] = (p => CheckpointCorruption.EditJson(p, j => j["classes"] = new JsonArray("0", "1", "2", "3", "4")), "checkpoint.json", "layers[1].weightShape"),
        ["hidden units 8 -> 4"] = (p => CheckpointCorruption.EditJson(p, j => j["architecture"]!["layers"]![0]!["units"] = 4), "checkpoint.json", "layers[0].weightShape"),
        ["hidden units 8 -> 2^30"] = (p => CheckpointCorruption.EditJson(p, j => j["architecture"]!["layers"]![0]!["units"] = 1 << 30), "checkpoint.json", "architecture"),
        ["stored layer shape edited"] = (p => CheckpointCorruption.EditJson(p, j =>
        {
            j["layers"]![0]!["weightShape"] = new JsonArray(4, 784);
            j["layers"]![0]!["bias"] = 4;
        }), "checkpoint.json", "layers[0].weightShape"),
        ["stored bias length edited"] = (p => CheckpointCorruption.EditJson(p, j => j["layers"]![1]!["bias"] = 11), "checkpoint.json", "layers[1].bias"),
        ["stored and architecture shapes both huge"] = (p => CheckpointCorruption.EditJson(p, j =>
        {
            j["architecture"]!["layers"]![0]!["units"] = 1_000_000;
            j["layers"]![0]!["weightShape"] = new JsonArray(1_000_000, 784);
            j["layers"]![0]!["bias"] = 1_000_000;
            j["layers"]![1]!["weightShape"] = new JsonArray(10, 1_000_000);
            j.Remove("weights");
        }), "weights.bin", "length"),
        ["layer list missing"] = (p => CheckpointCorruption.EditJson(p, j => j.Remove("layers")), "checkpoint.json", "layers"),
        ["declared weights length wrong"] = (p => CheckpointCorruption.EditJson(p, j => j["weights"]!["bytes"] = 12), "checkpoint.json", "weights.bytes"),
        ["weights.bin with 4,000 extra bytes"] = (p => CheckpointCorruption.EditEntry(p, "weights.bin", b => [.. b, .. new byte[4000]]), "weights.bin", "length"),
        ["weights.bin 4 bytes short"] = (p => CheckpointCorruption.EditEntry(p, "weights.bin", b => b[..^4]), "weights.bin", "length"),
        ["weights.bin missing"] = (p => CheckpointCorruption.DeleteEntry(p, "weights.bin"), "weights.bin", null),
        ["optimizer.bin 1 MB of zeros"] = (p => CheckpointCorruption.EditEntry(p, "optimizer.bin", _ => new byte[1 << 20]), "checkpoint.json", "optimizer.bytes"),
        ["optimizer.bin 1 MB of zeros, length in JSON too"] = (p =>
        {
            CheckpointCorruption.EditEntry(p, "optimizer.bin", _ => new byte[1 << 20]);
            CheckpointCorruption.EditJson(p, j => j.Remove("optimizer"));
        }, "optimizer.bin", "length"),
        ["optimizer.bin zeros of the right length"] = (p => CheckpointCorruption.EditEntry(p, "optimizer.bin", b => new byte[b.Length]), "optimizer.bin", "kind"),
        ["optimizer.bin tensor length edited"] = (p => CheckpointCorruption.EditEntry(p, "optimizer.bin", b =>
        {
            // "adam" (5 bytes), step count (8), parameter count (4), then the first tensor's value count.
            BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(17), 0x7FFFFFFF);
            return b;
        }), "optimizer.bin", "tensor[0].values"),
        ["optimizer.bin with a trailing byte"] = (p =>
        {
            CheckpointCorruption.EditEntry(p, "optimizer.bin", b => [.. b, 0]);
            CheckpointCorruption.EditJson(p, j => j.Remove("optimizer"));
        }, "optimizer.bin", "length"),
        ["ewc.bin of 29 bytes"] = (p => CheckpointCorruption.EditEntry(p, "ewc.bin", b => b[..29]), "ewc.bin", "length"),
        ["ewc.bin tensor count edited"] = (p => CheckpointCorruption.EditEntry(p, "ewc.bin", b =>
        {
            BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(17), 0x7FFF);
            return b;
        }), "ewc.bin", "tensors"),
        ["ewc.bin first tensor length edited"] = (p => CheckpointCorruption.EditEntry(p, "ewc.bin", b =>
        {
            BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(21), 0x3FFFFFFF);
            return b;
        }), "ewc.bin", "tensor[0].values"),
        ["ewc.bin missing"] = (p => CheckpointCorruption.DeleteEntry(p, "ewc.bin"), "ewc.bin", null),
        ["replay.bin of 40 bytes declaring 2^31-1 capacity"] = (p => CheckpointCorruption.EditEntry(p, "replay.bin", b =>
        {
            var header = b[..40];
            BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(20), int.MaxValue); // capacity
            BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(24), 0); // count
            BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(36), 0); // classes
            return header;
        }), "checkpoint.json", "incremental.replay.exemplars"),
        ["replay.bin declaring 2^31-1 exemplars"] = (p => CheckpointCorruption.EditEntry(p, "replay.bin", b =>
        {
            BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(20), int.MaxValue);
            BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(24), int.MaxValue);
            return b;
        }), "replay.bin", "length"),
        ["replay.bin of another feature length"] = (p => CheckpointCorruption.EditEntry(p, "replay.bin", b =>
        {
            BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(16), 100);
            return b;
        }), "replay.bin", "featureLength"),
        ["replay.bin truncated"] = (p => CheckpointCorruption.EditEntry(p, "replay.bin", b => b[..10]), "replay.bin", "length"),
        ["replay.bin class index out of range"] = (p => CheckpointCorruption.EditEntry(p, "replay.bin", b =>
        {
            int classes = BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(36));
            BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(40 + 8 * classes), 12);
            return b;
        }), "replay.bin", "labels[0]"),
        ["replay.bin missing"] = (p => CheckpointCorruption.DeleteEntry(p, "replay.bin"), "replay.bin", null),
        ["checkpoint.json missing"] = (p => CheckpointCorruption.DeleteEntry(p, "checkpoint.json"), "checkpoint.json", null),
        ["checkpoint.json not JSON"] = (p => CheckpointCorruption.EditEntry(p, "checkpoint.json", _ => "{ not json"u8.ToArray()), "checkpoint.json", "$"),
        ["checkpoint.json of 20 MB"] = (p => CheckpointCorruption.EditEntry(p, "checkpoint.json", _ => new byte[20 << 20]), "checkpoint.json", "length"),
        ["unknown recipe step"] = (p => CheckpointCorruption.EditJson(p, j => j["recipe"] = new JsonArray(new JsonObject { ["kind"] = "pruning" })), "checkpoint.json", "recipe[0].kind"),
        ["recipe with a bad block size"] = (p => CheckpointCorruption.EditJson(p, j => j["recipe"] = new JsonArray(
            new JsonObject { ["kind"] = "quantization", ["quantization"] = new JsonObject { ["blockSize"] = 3 } })), "checkpoint.json", "recipe[0].quantization.blockSize"),
        ["recipe step with a rotation of 500 degrees"] = (p => CheckpointCorruption.EditJson(p, j => j["recipe"] = new JsonArray(
            new JsonObject { ["kind"] = "clustering", ["clustering"] = new JsonObject { ["augmentation"] = new JsonObject { ["maxRotationDegrees"] = 500 } } })),
            "checkpoint.json", "recipe[0].clustering.augmentation.maxRotationDegrees"),
        ["recipe with an unknown mode"] = (p => CheckpointCorruption.EditJson(p, j => j["recipe"] = new JsonArray(
            new JsonObject { ["kind"] = "quantization", ["quantization"] = new JsonObject { ["mode"] = "Int3" } })), "checkpoint.json", "recipe[0].quantization.mode"),
        ["recipe with a mode by number"] = (p => CheckpointCorruption.EditJson(p, j => j["recipe"] = new JsonArray(
            new JsonObject { ["kind"] = "quantization", ["quantization"] = new JsonObject { ["mode"] = 1 } })), "checkpoint.json", "recipe[0].quantization.mode"),
        ["recipe step without its options"] = (p => CheckpointCorruption.EditJson(p, j => j["recipe"] = new JsonArray(
            new JsonObject { ["kind"] = "clustering" })), "checkpoint.json", "recipe[0].clustering"),
        ["recipe with a text cluster count"] = (p => CheckpointCorruption.EditJson(p, j => j["recipe"] = new JsonArray(
            new JsonObject { ["kind"] = "clustering", ["clustering"] = new JsonObject { ["clusterCount"] = "many" } })), "checkpoint.json", "recipe[0].clustering.clusterCount"),
    };

    public static IEnumerable<object[]> FaultNames => Faults.Keys.Select(k => new object[] { k });

    [Theory]
    [InlineData("\"Int3\"", "'Int3'")]
    [InlineData("1", "'1'")]
    public void ARecipeEnumerationThatIsNoNameListsTheNamesAllowed(string mode, string shown)
    {
        var ml = new MLContext(seed: 1);
        using var dir = TestMnist.NewTempDirectory();
        string path = dir["mode.checkpoint"];
        using (var model = NeuralNetworkTransformer.LoadCheckpoint(ml, CheckpointFixtures.Mlp))
            model.SaveCheckpoint(path);
        CheckpointCorruption.EditJson(path, j => j["recipe"] = new JsonArray(
            new JsonObject { ["kind"] = "quantization", ["quantization"] = new JsonObject { ["mode"] = JsonNode.Parse(mode) } }));
        var e = Assert.Throws<CheckpointException>(() => NeuralNetworkTransformer.LoadCheckpoint(ml, path));
        Assert.Equal("recipe[0].quantization.mode", e.FieldName);
        Assert.Contains($"is {shown}, not one of Float16, Int8Dynamic, Int8Static, Int4WeightOnly", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(FaultNames))]
    public void ACorruptedCheckpointFailsNamingTheEntryAndFieldWithoutLargeAllocations(string fault)
    {
        var ml = new MLContext(seed: 1);
        using var dir = TestMnist.NewTempDirectory();
        string path = dir["bad.checkpoint"];
        using (var model = NeuralNetworkTransformer.LoadCheckpoint(ml, CheckpointFixtures.Incremental))
            model.SaveCheckpoint(path);
        // The unedited copy loads: the fault below is what makes it fail.
        NeuralNetworkTransformer.LoadCheckpoint(ml, path).Dispose();
        var (corrupt, entry, field) = Faults[fault];
        corrupt(path);

        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<CheckpointException>(() => NeuralNetworkTransformer.LoadCheckpoint(ml, path));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        output.WriteLine($"{fault}: {allocated:N0} managed bytes allocated; {e.Message}");

        Assert.Equal(entry, e.EntryName);
        Assert.Equal(field, e.FieldName);
        Assert.Contains(path, e.Message);
        Assert.Contains(entry, e.Message);
        if (field is not null)
            Assert.Contains(field, e.Message);
        Assert.True(allocated < AllocationLimit, $"The failed load allocated {allocated:N0} managed bytes.");
    }
}
