using System.Reflection;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Clustering;
using MLNet.Compression.Incremental;
using MLNet.Compression.Networks;
using MLNet.Compression.Pruning;
using MLNet.Compression.Quantization;
using MLNet.Compression.Tests.Training;
using Xunit;

namespace MLNet.Compression.Tests.Conformance;

/// <summary>
/// A small MNIST slice and a base model (784-32-10, one epoch on 1,000 rows) trained with every
/// <see cref="NeuralNetworkOptions"/> property that a test can set away from its default, for the post-training forms.
/// </summary>
public sealed class ConformanceFixture : IDisposable
{
    public ConformanceFixture()
    {
        Context = new MLContext(seed: 5);
        Train = Context.Data.TakeRows(TestMnist.LoadTrain(Context), 1000);
        Test = Context.Data.TakeRows(TestMnist.LoadTest(Context), 200);
        Model = Context.Compression().NeuralNetwork(Options()).Fit(Train);
    }

    /// <summary>Every option that can differ from its default without renaming the data's columns does.</summary>
    public static NeuralNetworkOptions Options() => new()
    {
        Architecture = NetworkArchitecture.Mlp(32),
        Epochs = 2,
        BatchSize = 64,
        LearningRate = 2e-3,
        LearningRateSchedule = LearningRateSchedule.Cosine,
        Optimizer = OptimizerKind.Sgd,
        Momentum = 0.8,
        WeightDecay = 1e-5,
        ValidationFraction = 0.1,
        EarlyStoppingPatience = 3,
        Seed = 11,
        Shuffle = false,
        Device = TrainingDevice.Cpu,
        Precision = TrainingPrecision.Float32,
        ProgressInterval = 7,
        ScoringBatchSize = 100,
        ShuffleCacheLimitBytes = 1 << 20,
        ShuffleBufferRows = 500,
        Threads = 1,
        Augmentation = ImageAugmentation.Affine(1, 5).WithImageShape(1, 28, 28),
        MemoryBudgetBytes = 1L << 30,
        AllowLowerPrecisionForBudget = true,
    };

    public MLContext Context { get; }

    public IDataView Train { get; }

    public IDataView Test { get; }

    public NeuralNetworkTransformer Model { get; }

    public void Dispose() => Model.Dispose();
}

/// <summary>
/// One shared routine, in the spirit of ML.NET's <c>TestEstimatorCore</c>, run for every estimator of the library in each of
/// its forms: the output shape <c>GetOutputSchema</c> promises is the fitted model's; input without the feature column or
/// with the wrong feature type is refused with an <see cref="ArgumentException"/> (or a subclass) naming the column;
/// <c>ml.Model.Save</c>/<c>Load</c> into a fresh context scores identically; and a checkpoint round trip gives back the
/// same scores and the same options.
/// </summary>
public sealed class EstimatorConformanceTests : IClassFixture<ConformanceFixture>
{
    /// <summary>The options the checkpoint does not keep: a live progress callback, a live cancellation token, and the MPI job a run belongs to (a deployment setting).</summary>
    private static readonly string[] NotPersistable = [nameof(NeuralNetworkOptions.Progress), nameof(NeuralNetworkOptions.CancellationToken), nameof(NeuralNetworkOptions.Distributed)];

    /// <summary>Every other public option, found by reflection, so a new option is in the round trip the day it is added.</summary>
    internal static readonly string[] Persisted = typeof(NeuralNetworkOptions).GetProperties(BindingFlags.Public | BindingFlags.Instance)
        .Select(p => p.Name).Except(NotPersistable).ToArray();

    private readonly ConformanceFixture fixture;

    public EstimatorConformanceTests(ConformanceFixture fixture) => this.fixture = fixture;

    /// <summary>Every estimator of the library, by name; the chained forms train their own base network.</summary>
    private static readonly Dictionary<string, Func<MLContext, NeuralNetworkTransformer, IEstimator<NeuralNetworkTransformer>>> Estimators = new()
    {
        ["Trainer"] = (ml, _) => ml.Compression().NeuralNetwork(ConformanceFixture.Options()),
        ["Trainer BatchNorm"] = (ml, _) => ml.Compression().NeuralNetwork(WithBatchNorm(ConformanceFixture.Options())),
        ["Prune BatchNorm chained"] = (ml, _) => ml.Compression().NeuralNetwork(WithBatchNorm(ConformanceFixture.Options())).Prune(Prune()),
        ["Quantize Int8Static BatchNorm chained"] = (ml, _) => ml.Compression().NeuralNetwork(WithBatchNorm(ConformanceFixture.Options())).Quantize(QuantizationMode.Int8Static),
        ["Prune chained"] = (ml, _) => ml.Compression().NeuralNetwork(ConformanceFixture.Options()).Prune(Prune()),
        ["Prune"] = (ml, model) => ml.Compression().Prune(model, Prune()),
        ["Prune structured"] = (ml, model) => ml.Compression().Prune(model, new PruningOptions { Granularity = PruningGranularity.StructuredNeurons, Epochs = 1 }),
        ["Quantize Float16 chained"] = (ml, _) => ml.Compression().NeuralNetwork(ConformanceFixture.Options()).Quantize(QuantizationMode.Float16),
        ["Quantize Float16"] = (ml, model) => ml.Compression().Quantize(model, new QuantizationOptions { Mode = QuantizationMode.Float16 }),
        ["Quantize Int8Dynamic"] = (ml, model) => ml.Compression().Quantize(model, new QuantizationOptions { Mode = QuantizationMode.Int8Dynamic }),
        ["Quantize Int8Dynamic PerBatch"] = (ml, model) => ml.Compression().Quantize(model,
            new QuantizationOptions { Mode = QuantizationMode.Int8Dynamic, ActivationScales = ActivationScaleScope.PerBatch }),
        ["Quantize Int8Static chained"] = (ml, _) => ml.Compression().NeuralNetwork(ConformanceFixture.Options()).Quantize(QuantizationMode.Int8Static),
        ["Quantize Int8Static"] = (ml, model) => ml.Compression().Quantize(model, new QuantizationOptions { Mode = QuantizationMode.Int8Static, CalibrationRows = 200 }),
        ["Quantize Int8Static QAT"] = (ml, model) => ml.Compression().Quantize(model,
            new QuantizationOptions { Mode = QuantizationMode.Int8Static, QuantizationAwareTraining = true, QatEpochs = 1 }),
        ["Quantize Int4WeightOnly"] = (ml, model) => ml.Compression().Quantize(model, new QuantizationOptions { Mode = QuantizationMode.Int4WeightOnly, BlockSize = 16 }),
        ["ClusterWeights chained"] = (ml, _) => ml.Compression().NeuralNetwork(ConformanceFixture.Options()).ClusterWeights(Cluster()),
        ["ClusterWeights"] = (ml, model) => ml.Compression().ClusterWeights(model, Cluster()),
        ["Distill"] = (ml, model) => ml.Compression().Distill(model, ConformanceFixture.Options()),
        ["ContinueTraining"] = (ml, model) => ml.Compression().ContinueTraining(model, new ContinueTrainingOptions { Epochs = 1 }),
        ["ContinueTraining replay+LwF"] = (ml, model) => ml.Compression().ContinueTraining(model,
            new ContinueTrainingOptions { Epochs = 1, Strategies = ContinualStrategies.Replay | ContinualStrategies.LearningWithoutForgetting }),
    };

    public static TheoryData<string> EstimatorNames()
    {
        var data = new TheoryData<string>();
        foreach (var name in Estimators.Keys)
            data.Add(name);
        return data;
    }

    /// <summary>The options with a hidden layer normalized by a <see cref="BatchNormLayer"/> (folded into it at export).</summary>
    private static NeuralNetworkOptions WithBatchNorm(NeuralNetworkOptions options)
    {
        options.Architecture = new NetworkArchitecture("MLP-32-bn", [784], [new DenseLayer(32, Activation.None), new BatchNormLayer(Activation.Relu)]);
        return options;
    }

    private static PruningOptions Prune() => new() { Schedule = PruningSchedule.ConstantSparsity(0.5), Epochs = 1 };

    private static WeightClusteringOptions Cluster() => new() { ClusterCount = 8, Epochs = 1 };

    [Theory]
    [MemberData(nameof(EstimatorNames))]
    public void Estimator_conforms(string name)
    {
        var ml = fixture.Context;
        var estimator = Estimators[name](ml, fixture.Model);

        // 1. The promised shape is the fitted one: names, kinds, item types, keys and annotations.
        var promised = estimator.GetOutputSchema(ShapeOf(fixture.Train.Schema));
        using var model = estimator.Fit(fixture.Train);
        var fitted = model.GetOutputSchema(fixture.Train.Schema);
        var scored = model.Transform(fixture.Test);
        AssertShapeMatches(promised, fitted, name);
        AssertShapeMatches(promised, scored.Schema, name);
        // Sizes SchemaShape cannot hold: one score per class, and the label's key count for PredictedLabel.
        int classes = (int)((KeyDataViewType)fixture.Train.Schema["Label"].Type).Count;
        Assert.Equal(new VectorDataViewType(NumberDataViewType.Single, classes), fitted["Score"].Type);
        Assert.Equal(new KeyDataViewType(typeof(uint), classes), fitted["PredictedLabel"].Type);
        Assert.Equal(fitted["Score"].Type, scored.Schema["Score"].Type);
        Assert.Equal(fitted["PredictedLabel"].Type, scored.Schema["PredictedLabel"].Type);
        Assert.Equal(classes, model.ClassNames.Count);

        // 2. Bad input is refused, naming the column: no feature column, and a feature column of the wrong type.
        var noFeatures = ml.Transforms.DropColumns("Features").Fit(fixture.Train).Transform(fixture.Train);
        var doubles = ml.Transforms.Conversion.ConvertType("Features", outputKind: DataKind.Double).Fit(fixture.Train).Transform(fixture.Train);
        foreach (var (bad, what) in new[] { (noFeatures, "missing"), (doubles, "Double") })
        {
            var shapeError = Record.Exception(() => estimator.GetOutputSchema(ShapeOf(bad.Schema)));
            Assert.True(shapeError is ArgumentException, $"{name}: GetOutputSchema with a {what} feature column threw {shapeError?.GetType().Name ?? "nothing"}.");
            Assert.Contains("Features", shapeError!.Message, StringComparison.Ordinal);
            var fitError = Record.Exception(() => estimator.Fit(bad).Dispose());
            Assert.True(fitError is ArgumentException, $"{name}: Fit with a {what} feature column threw {fitError?.GetType().Name ?? "nothing"}: {fitError?.Message}");
            Assert.Contains("Features", fitError!.Message, StringComparison.Ordinal);
        }

        // 3. ml.Model.Save / Load into a fresh context scores exactly as the model does in-process.
        var expected = Scoring.Read(scored);
        using (var zip = new MemoryStream())
        {
            ml.Model.Save(model, fixture.Train.Schema, zip);
            zip.Position = 0;
            var fresh = new MLContext(seed: 99);
            var loaded = fresh.Model.Load(zip, out var loadedSchema);
            Assert.Equal(fixture.Train.Schema["Features"].Type, loadedSchema["Features"].Type);
            if (name.EndsWith(" PerBatch", StringComparison.Ordinal))
                AssertWithinPerBatchBound(expected, Scoring.Read(loaded.Transform(fixture.Test)), name);
            else
                Scoring.AssertIdentical(expected, Scoring.Read(loaded.Transform(fixture.Test)));
        }

        // 4. A checkpoint round trip: every option, the recipe and the history come back, and the model scores the same in every encoding.
        using var dir = TestMnist.NewTempDirectory();
        string path = Path.Combine(dir.Path, "model.ckpt");
        model.SaveCheckpoint(path);
        using var restored = NeuralNetworkTransformer.LoadCheckpoint(new MLContext(seed: 99), path);
        AssertOptionsEqual(model.TrainingOptions, restored.TrainingOptions, Persisted, name);
        Scoring.AssertIdentical(expected, Scoring.Read(restored.Transform(fixture.Test)));
        Assert.Equal(model.Recipe.Steps.Select(s => s.GetType()), restored.Recipe.Steps.Select(s => s.GetType()));
        Assert.Equal(model.CompressionHistory.Select(r => r.GetType()), restored.CompressionHistory.Select(r => r.GetType()));
        // The memory report describes the same export: a quantized model's resident weights are not reported as float32 after loading.
        Assert.True(model.Memory.ResidentWeightBytes == restored.Memory.ResidentWeightBytes,
            $"{name}: resident weights {model.Memory.ResidentWeightBytes:N0} B before the checkpoint, {restored.Memory.ResidentWeightBytes:N0} B after");
        Assert.Equal(model.Memory.ArtifactBytes, restored.Memory.ArtifactBytes);
    }

    /// <summary>
    /// Int8Dynamic with per-batch activation scales: the saved zip scores one row per run, so a row's activation scale differs
    /// from the batched in-process one. The stated bound (PerBatchActivationScaleTests): every score within 5e-2, a label
    /// differs only on a near-tie (the two best in-process scores closer than twice that row's score difference).
    /// </summary>
    private static void AssertWithinPerBatchBound((float[][] Scores, uint[] Labels) expected, (float[][] Scores, uint[] Labels) actual, string name)
    {
        Assert.Equal(expected.Labels.Length, actual.Labels.Length);
        for (int row = 0; row < expected.Labels.Length; row++)
        {
            float diff = expected.Scores[row].Zip(actual.Scores[row]).Max(p => Math.Abs(p.First - p.Second));
            Assert.True(diff <= 5e-2f, $"{name}: row {row}'s scores differ by {diff:G3} after reload, more than 5e-2.");
            var top = expected.Scores[row].OrderByDescending(v => v).Take(2).ToArray();
            Assert.True(expected.Labels[row] == actual.Labels[row] || top[0] - top[1] < 2 * diff,
                $"{name}: row {row}'s label changed after reload without a near-tie ({top[0]:G5} vs {top[1]:G5}).");
        }
    }

    /// <summary>The fixture sets every option the round trip compares away from its default, so equality after it means something.</summary>
    [Fact]
    public void The_round_trip_checks_cover_every_public_option()
    {
        var defaults = new NeuralNetworkOptions();
        var set = ConformanceFixture.Options();
        // The fixture's options differ from the defaults wherever the data allows, so equality after a round trip means something.
        foreach (var p in typeof(NeuralNetworkOptions).GetProperties(BindingFlags.Public | BindingFlags.Instance))
        {
            if (p.Name is nameof(NeuralNetworkOptions.LabelColumnName) or nameof(NeuralNetworkOptions.FeatureColumnName)
                or nameof(NeuralNetworkOptions.Progress) or nameof(NeuralNetworkOptions.Precision) or nameof(NeuralNetworkOptions.CancellationToken)
                or nameof(NeuralNetworkOptions.Distributed))
                continue; // the data's column names; a callback; float32 is the only precision a CPU trains in; a live token; an MPI job (not persisted, tested under mpiexec)
            Assert.False(Equals(Describe(p.GetValue(defaults)), Describe(p.GetValue(set))), $"The conformance options leave {p.Name} at its default.");
        }
    }

    internal static void AssertOptionsEqual(NeuralNetworkOptions expected, NeuralNetworkOptions actual, IEnumerable<string> names, string estimator)
    {
        foreach (var name in names)
        {
            var p = typeof(NeuralNetworkOptions).GetProperty(name)!;
            Assert.True(Equals(Describe(p.GetValue(expected)), Describe(p.GetValue(actual))),
                $"{estimator}: NeuralNetworkOptions.{name} was {Describe(p.GetValue(expected))} before the checkpoint and {Describe(p.GetValue(actual))} after it.");
        }
    }

    /// <summary>A comparable form of an option's value (an architecture by its name, input shape and layers).</summary>
    private static object? Describe(object? value) => value is NetworkArchitecture a
        ? $"{a.Name} [{string.Join("x", a.InputShape)}]: {string.Join(", ", a.Layers)}"
        : value;

    /// <summary>ML.NET's <c>SchemaShape.Create</c>, internal to it, reached by reflection (as <c>TrainerBehaviourTests</c> does).</summary>
    internal static SchemaShape ShapeOf(DataViewSchema schema)
    {
        var create = typeof(SchemaShape).GetMethod("Create", BindingFlags.NonPublic | BindingFlags.Static, [typeof(DataViewSchema)])!;
        return (SchemaShape)create.Invoke(null, [schema])!;
    }

    internal static void AssertShapeMatches(SchemaShape promised, DataViewSchema actual, string estimator, string[]? required = null, bool annotations = true)
    {
        var actualShape = ShapeOf(actual);
        foreach (var column in promised)
        {
            var found = actualShape.FirstOrDefault(c => c.Name == column.Name);
            Assert.True(found.Name is not null, $"{estimator}: GetOutputSchema promises '{column.Name}', which the fitted model does not produce.");
            Assert.True(column.Kind == found.Kind, $"{estimator}: '{column.Name}' is promised as {column.Kind} but is {found.Kind}.");
            Assert.True(column.ItemType.Equals(found.ItemType), $"{estimator}: '{column.Name}' is promised with items {column.ItemType} but has {found.ItemType}.");
            Assert.True(column.IsKey == found.IsKey, $"{estimator}: '{column.Name}' is promised {(column.IsKey ? "as" : "not as")} a key.");
            if (annotations)
                Assert.Equal(column.Annotations.Select(a => a.Name).OrderBy(n => n), found.Annotations.Select(a => a.Name).OrderBy(n => n));
        }
        foreach (var name in required ?? ["Score", "PredictedLabel"])
            Assert.Contains(promised, c => c.Name == name);
    }
}
