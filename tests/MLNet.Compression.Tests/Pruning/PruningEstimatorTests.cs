using Microsoft.ML;
using Microsoft.ML.Runtime;
using MLNet.Compression.Networks;
using MLNet.Compression.Pruning;
using MLNet.Compression.Tests.Training;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Pruning;

/// <summary>A small MLP trained once on 4,000 MNIST rows, shared by the pruning tests.</summary>
public sealed class PrunableMlpFixture : IDisposable
{
    public PrunableMlpFixture()
    {
        Context = new MLContext(seed: 1);
        Train = Context.Data.TakeRows(TestMnist.LoadTrain(Context), 4000);
        Test = Context.Data.TakeRows(TestMnist.LoadTest(Context), 2000);
        Model = Context.Compression().NeuralNetwork(Options(NetworkArchitecture.Mlp(128, 64))).Fit(Train);
        BaseAccuracy = Context.MulticlassClassification.Evaluate(Model.Transform(Test)).MicroAccuracy;
    }

    public static NeuralNetworkOptions Options(NetworkArchitecture architecture, int epochs = 3) => new()
    {
        Architecture = architecture,
        Epochs = epochs,
        BatchSize = 64,
        LearningRate = 1e-3,
        Seed = 11,
        Device = TrainingDevice.Cpu,
    };

    public MLContext Context { get; }

    public IDataView Train { get; }

    public IDataView Test { get; }

    public NeuralNetworkTransformer Model { get; }

    public double BaseAccuracy { get; }

    public void Dispose() => Model.Dispose();
}

public sealed class PruningEstimatorTests : IClassFixture<PrunableMlpFixture>
{
    private readonly PrunableMlpFixture fixture;
    private readonly ITestOutputHelper output;

    public PruningEstimatorTests(PrunableMlpFixture fixture, ITestOutputHelper output)
    {
        this.fixture = fixture;
        this.output = output;
    }

    private MLContext Ml => fixture.Context;

    private double Accuracy(ITransformer model) => Ml.MulticlassClassification.Evaluate(model.Transform(fixture.Test)).MicroAccuracy;

    [Fact]
    public void PerLayerReachesEachTargetAndFineTuningKeepsThePrunedWeightsExactlyZero()
    {
        // Masks computed once, at step 0, from the trained weights; then two epochs of fine-tuning.
        var options = new PruningOptions
        {
            Schedule = PruningSchedule.ConstantSparsity(0.8, frequency: 1_000_000),
            LayerSparsity = { ["output"] = 0.5 },
            Epochs = 2,
        };
        var estimator = Ml.Compression().Prune(fixture.Model, options);
        using var pruned = estimator.Fit(fixture.Train);
        var report = estimator.Report!;
        output.WriteLine(report.ToString());
        var targets = new Dictionary<string, double> { ["fc1"] = 0.8, ["fc2"] = 0.8, ["output"] = 0.5 };
        Assert.Equal(targets.Keys, report.Layers.Select(l => l.Name));
        foreach (var layer in report.Layers)
        {
            Assert.Equal(targets[layer.Name], layer.TargetSparsity);
            Assert.InRange(layer.Sparsity, targets[layer.Name] - 0.01, targets[layer.Name] + 0.01);
        }
        Assert.True(report.ScheduleCompleted);
        Assert.Equal(2 * 63, report.StepsRun); // 4,000 rows at batch 64: 63 steps per epoch

        var before = fixture.Model.Network.ParameterizedLayers.ToArray();
        var after = pruned.Network.ParameterizedLayers.ToArray();
        for (int i = 0; i < before.Length; i++)
        {
            // The zeros are exactly the round(s·n) weights that were smallest in magnitude before fine-tuning ...
            int prune = (int)Math.Round(targets[before[i].Name] * before[i].Weight.Length);
            var expectedZeros = Enumerable.Range(0, before[i].Weight.Length).OrderBy(j => Math.Abs(before[i].Weight[j])).Take(prune).ToHashSet();
            var zeros = Enumerable.Range(0, after[i].Weight.Length).Where(j => after[i].Weight[j] == 0f).ToHashSet();
            Assert.True(expectedZeros.SetEquals(zeros), $"Layer {before[i].Name}: the zero weights are not the pruned ones.");
            // ... while the weights that were kept did train, and biases are never pruned.
            int kept = before[i].Weight.Length - prune;
            int changed = Enumerable.Range(0, before[i].Weight.Length).Count(j => !expectedZeros.Contains(j) && after[i].Weight[j] != before[i].Weight[j]);
            Assert.True(changed > 0.7 * kept, $"Layer {before[i].Name}: only {changed} of {kept} kept weights changed during fine-tuning.");
            Assert.DoesNotContain(0f, after[i].Bias);
        }
        // The input model is untouched.
        Assert.True(fixture.Model.GetSparsity().Sparsity < 0.001);
        double accuracy = Accuracy(pruned);
        output.WriteLine($"base accuracy {fixture.BaseAccuracy:F4}, pruned {accuracy:F4}");
        Assert.True(accuracy > fixture.BaseAccuracy - 0.03, $"accuracy {accuracy:F4} vs base {fixture.BaseAccuracy:F4}");
        Assert.Equal(report.ZeroWeights, pruned.GetSparsity().ZeroWeights);
        Assert.Equal(pruned.ParameterCount - report.ZeroWeights, pruned.NonZeroParameterCount);
    }

    [Fact]
    public void GlobalReachesTheOverallTargetAndPrunesBigLayersHarder()
    {
        var estimator = Ml.Compression().Prune(fixture.Model, new PruningOptions
        {
            Schedule = PruningSchedule.ConstantSparsity(0.9, frequency: 50),
            Granularity = PruningGranularity.Global,
        });
        using var pruned = estimator.Fit(fixture.Train);
        var report = estimator.Report!;
        output.WriteLine(report.ToString());
        Assert.Equal(0.9, report.TargetSparsity);
        Assert.InRange(report.Sparsity, 0.89, 0.91);
        var byName = report.Layers.ToDictionary(l => l.Name);
        Assert.True(byName["fc1"].Sparsity > byName["output"].Sparsity, "One global threshold should prune the 784-input layer harder than the output layer.");
        var fromWeights = pruned.GetSparsity();
        Assert.Equal(report.Layers.Select(l => l.ZeroWeights), fromWeights.Layers.Select(l => l.ZeroWeights));
        double accuracy = Accuracy(pruned);
        output.WriteLine($"base accuracy {fixture.BaseAccuracy:F4}, 90% global {accuracy:F4}");
        Assert.True(accuracy > 0.85, $"accuracy {accuracy:F4}");
    }

    [Fact]
    public void OneShotWithoutFineTuningPrunesExactly()
    {
        var estimator = Ml.Compression().Prune(fixture.Model, new PruningOptions
        {
            Schedule = PruningSchedule.ConstantSparsity(0.5),
            KeepDense = { "output" },
            Epochs = 0,
        });
        using var pruned = estimator.Fit(fixture.Train);
        var report = estimator.Report!;
        Assert.Equal(0, report.StepsRun);
        Assert.Equal(0.5, report.Layers[0].Sparsity, 6);
        Assert.Equal(0.5, report.Layers[1].Sparsity, 6);
        Assert.Null(report.Layers[2].TargetSparsity);
        Assert.Equal(0, report.Layers[2].ZeroWeights);
        Assert.Equal(fixture.Model.Network.ParameterizedLayers.Last().Weight, pruned.Network.ParameterizedLayers.Last().Weight);
    }

    [Fact]
    public void SavedZipAndCheckpointKeepTheZerosAndThePredictions()
    {
        var estimator = Ml.Compression().Prune(fixture.Model, new PruningOptions
        {
            Schedule = PruningSchedule.PolynomialDecay(0.3, 0.9, beginStep: 0, endStep: 100, frequency: 20),
            LayerSparsity = { ["output"] = 0.5 },
            Epochs = 2,
        });
        using var pruned = estimator.Fit(fixture.Train);
        output.WriteLine(estimator.Report!.ToString());
        Assert.True(estimator.Report.ScheduleCompleted);
        Assert.All(estimator.Report.Layers, l => Assert.InRange(l.Sparsity, l.TargetSparsity!.Value - 0.01, l.TargetSparsity.Value + 0.01));
        var expected = Scoring.Read(pruned.Transform(fixture.Test));
        double accuracy = Accuracy(pruned);
        Assert.True(accuracy > 0.8, $"accuracy {accuracy:F4}");
        using var dir = TestMnist.NewTempDirectory();

        Ml.Model.Save(pruned, fixture.Train.Schema, dir["pruned.zip"]);
        var loaded = Ml.Model.Load(dir["pruned.zip"], out _);
        Scoring.AssertIdentical(expected, Scoring.Read(loaded.Transform(fixture.Test)));
        Assert.Equal(accuracy, Accuracy(loaded));
        (loaded as IDisposable)?.Dispose();

        pruned.SaveCheckpoint(dir["pruned.checkpoint"]);
        using var restored = NeuralNetworkTransformer.LoadCheckpoint(Ml, dir["pruned.checkpoint"]);
        var a = pruned.Network.ParameterizedLayers.ToArray();
        var b = restored.Network.ParameterizedLayers.ToArray();
        for (int i = 0; i < a.Length; i++)
        {
            Assert.Equal(a[i].Weight, b[i].Weight);
            Assert.Equal(a[i].Bias, b[i].Bias);
        }
        Assert.Equal(pruned.GetSparsity().ZeroWeights, restored.GetSparsity().ZeroWeights);
        Scoring.AssertIdentical(expected, Scoring.Read(restored.Transform(fixture.Test)));
        output.WriteLine($"accuracy {accuracy:F4}, sparsity {estimator.Report.Sparsity:P2}, ONNX {pruned.Memory.ArtifactBytes:N0} bytes " +
                         $"(dense {fixture.Model.Memory.ArtifactBytes:N0})");
    }

    [Fact]
    public void ChainedAndPostTrainingFormsGiveTheSameModel()
    {
        var ml = new MLContext(seed: 3);
        var train = ml.Data.TakeRows(TestMnist.LoadTrain(ml), 2000);
        var trainerOptions = PrunableMlpFixture.Options(NetworkArchitecture.Mlp(64), epochs: 2);
        var pruning = new PruningOptions
        {
            Schedule = PruningSchedule.PolynomialDecay(0.2, 0.85, beginStep: 0, endStep: 60, frequency: 10),
            Epochs = 2,
        };
        var chained = ml.Compression().NeuralNetwork(trainerOptions).Prune(pruning);
        using var a = chained.Fit(train);
        using var trained = ml.Compression().NeuralNetwork(trainerOptions).Fit(train);
        var post = ml.Compression().Prune(trained, pruning);
        using var b = post.Fit(train);
        output.WriteLine(chained.Report!.ToString());
        Assert.InRange(chained.Report.Sparsity, 0.84, 0.86);
        Assert.True(chained.Report.ScheduleCompleted);
        Assert.Equal(chained.Report.ZeroWeights, post.Report!.ZeroWeights);
        var test = ml.Data.TakeRows(TestMnist.LoadTest(ml), 500);
        Scoring.AssertIdentical(Scoring.Read(a.Transform(test)), Scoring.Read(b.Transform(test)));

        // The chained form also composes after ML.NET's own transforms.
        var pipeline = ml.Transforms.CopyColumns("Pixels", "Features")
            .Append(ml.Compression().NeuralNetwork(new NeuralNetworkOptions
            {
                Architecture = NetworkArchitecture.Mlp(32), Epochs = 3, BatchSize = 64, Device = TrainingDevice.Cpu, FeatureColumnName = "Pixels",
            }).Prune(new PruningOptions { Schedule = PruningSchedule.ConstantSparsity(0.5), KeepDense = { "output" }, Epochs = 1 }));
        var model = pipeline.Fit(train);
        var sparsity = model.LastTransformer.GetSparsity();
        Assert.Equal(0.5, sparsity.Layers[0].Sparsity, 6);
        Assert.Equal(0, sparsity.Layers[1].ZeroWeights);
        double accuracy = ml.MulticlassClassification.Evaluate(model.Transform(test)).MicroAccuracy;
        output.WriteLine($"pipeline accuracy {accuracy:F4}");
        Assert.True(accuracy > 0.75, $"accuracy {accuracy:F4}");
    }

    [Fact]
    public void ScheduleThatCannotFinishWarnsAndReportsTheSparsityReached()
    {
        // The Keras/TF-MOT tutorial recipe: PolynomialDecay 0.5 -> 0.8 ending at step 1000, but 1,000 rows x 5 epochs at
        // batch 32 is only 160 steps. The last mask update is at step 100, where the schedule is at 0.8 - 0.3 * 0.9^3.
        var ml = new MLContext(seed: 1);
        var warnings = new List<string>();
        ml.Log += (_, e) =>
        {
            if (e.Kind == ChannelMessageKind.Warning)
                lock (warnings)
                    warnings.Add(e.Message);
        };
        var estimator = ml.Compression().Prune(fixture.Model, new PruningOptions
        {
            Schedule = PruningSchedule.PolynomialDecay(0.5, 0.8, beginStep: 0, endStep: 1000),
            Epochs = 5,
            BatchSize = 32,
        });
        using var pruned = estimator.Fit(ml.Data.TakeRows(TestMnist.LoadTrain(ml), 1000));
        var report = estimator.Report!;
        output.WriteLine(report.ToString());
        foreach (var w in warnings)
            output.WriteLine(w);
        Assert.Equal(160, report.StepsRun);
        Assert.Equal(1000, report.PlannedEndStep);
        Assert.False(report.ScheduleCompleted);
        var warning = Assert.Single(warnings, w => w.Contains("pruning schedule", StringComparison.Ordinal));
        Assert.Contains("step 1000", warning);
        Assert.Contains("only 160 steps", warning);
        double reached = 0.8 - 0.3 * Math.Pow(0.9, 3);
        Assert.InRange(report.Sparsity, reached - 0.005, reached + 0.005);
        Assert.True(report.Sparsity < 0.7, $"sparsity {report.Sparsity:P1}");
    }

    [Fact]
    public void StructuredNeuronsShrinksTheLayersAndStillScores()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.TakeRows(TestMnist.LoadTrain(ml), 4000);
        using var dense = ml.Compression().NeuralNetwork(PrunableMlpFixture.Options(NetworkArchitecture.Mlp(300, 100), epochs: 2)).Fit(train);
        var estimator = ml.Compression().Prune(dense, new PruningOptions
        {
            Schedule = PruningSchedule.ConstantSparsity(0.5),
            Granularity = PruningGranularity.StructuredNeurons,
            Epochs = 2,
        });
        using var small = estimator.Fit(train);
        var report = estimator.Report!;
        output.WriteLine(report.ToString());
        var layers = small.Network.ParameterizedLayers.Cast<DenseModelLayer>().ToArray();
        Assert.Equal(new[] { (784, 150), (150, 50), (50, 10) }, layers.Select(l => (l.InFeatures, l.OutFeatures)));
        Assert.Equal("MLP-150-50", small.Architecture.Name);
        Assert.Equal(784 * 150 + 150 + 150 * 50 + 50 + 50 * 10 + 10, small.ParameterCount);
        Assert.Equal(new[] { 150, 50, 10 }, report.Layers.Select(l => l.Units));
        Assert.Equal(new[] { 300, 100, 10 }, report.Layers.Select(l => l.OriginalUnits));
        Assert.True(small.Memory.ArtifactBytes < dense.Memory.ArtifactBytes * 0.55);
        var test = ml.Data.TakeRows(TestMnist.LoadTest(ml), 2000);
        double denseAccuracy = ml.MulticlassClassification.Evaluate(dense.Transform(test)).MicroAccuracy;
        double accuracy = ml.MulticlassClassification.Evaluate(small.Transform(test)).MicroAccuracy;
        output.WriteLine($"dense {denseAccuracy:F4} ({dense.ParameterCount:N0} parameters), structured 50% {accuracy:F4} ({small.ParameterCount:N0})");
        Assert.True(accuracy > 0.85, $"accuracy {accuracy:F4}");

        using var dir = TestMnist.NewTempDirectory();
        small.SaveCheckpoint(dir["small.checkpoint"]);
        using var restored = NeuralNetworkTransformer.LoadCheckpoint(ml, dir["small.checkpoint"]);
        Assert.Equal(small.ParameterCount, restored.ParameterCount);
        Scoring.AssertIdentical(Scoring.Read(small.Transform(test), 300), Scoring.Read(restored.Transform(test), 300));
    }

    [Fact]
    public void RejectsBadInputWithMessagesThatNameTheProblem()
    {
        var all = Assert.Throws<ArgumentException>(() => Ml.Compression().Prune(fixture.Model, new PruningOptions { KeepDense = { "fc1", "fc2", "output" } }));
        Assert.Contains("Nothing to prune", all.Message);
        var zero = Assert.Throws<ArgumentException>(() => Ml.Compression().Prune(fixture.Model, new PruningOptions
        {
            KeepDense = { "fc1", "fc2" }, LayerSparsity = { ["output"] = 0 },
        }));
        Assert.Contains("Nothing to prune", zero.Message);
        var unknownKeep = Assert.Throws<ArgumentException>(() => Ml.Compression().Prune(fixture.Model, new PruningOptions { KeepDense = { "fc9" } }));
        Assert.Contains("'fc9'", unknownKeep.Message);
        Assert.Contains("fc1, fc2, output", unknownKeep.Message);
        var unknownTarget = Assert.Throws<ArgumentException>(() => Ml.Compression().Prune(fixture.Model, new PruningOptions { LayerSparsity = { ["conv7"] = 0.5 } }));
        Assert.Contains("'conv7'", unknownTarget.Message);
        // In the chained form the layers are known only after training: the same check runs at Fit, before fine-tuning.
        var chained = Assert.Throws<ArgumentException>(() => Ml.Compression().NeuralNetwork(PrunableMlpFixture.Options(NetworkArchitecture.Mlp(16), epochs: 1))
            .Prune(new PruningOptions { KeepDense = { "fc2" } }).Fit(Ml.Data.TakeRows(fixture.Train, 200)));
        Assert.Contains("'fc2'", chained.Message);

        var badTarget = Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().Prune(fixture.Model, new PruningOptions { LayerSparsity = { ["fc1"] = 1.0 } }));
        Assert.Equal("LayerSparsity", badTarget.ParamName);
        Assert.Contains("fc1", badTarget.Message);
        Assert.Equal("Epochs", Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().Prune(fixture.Model, new PruningOptions { Epochs = -1 })).ParamName);
        Assert.Equal("LearningRate", Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().Prune(fixture.Model, new PruningOptions { LearningRate = 0 })).ParamName);
        Assert.Equal("BatchSize", Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().Prune(fixture.Model, new PruningOptions { BatchSize = 0 })).ParamName);
        Assert.Equal("Schedule", Assert.Throws<ArgumentNullException>(() => Ml.Compression().Prune(fixture.Model, new PruningOptions { Schedule = null! })).ParamName);
        Assert.Equal("options", Assert.Throws<ArgumentNullException>(() => Ml.Compression().Prune(fixture.Model, null!)).ParamName);
        Assert.Equal("fittedModel", Assert.Throws<ArgumentNullException>(() => Ml.Compression().Prune(null!, new PruningOptions())).ParamName);
        var structuredOutput = Assert.Throws<ArgumentException>(() => Ml.Compression().Prune(fixture.Model, new PruningOptions
        {
            Granularity = PruningGranularity.StructuredNeurons, LayerSparsity = { ["output"] = 0.5 },
        }));
        Assert.Contains("output layer", structuredOutput.Message);
        var structuredNothing = Assert.Throws<ArgumentException>(() => Ml.Compression().Prune(fixture.Model, new PruningOptions
        {
            Granularity = PruningGranularity.StructuredNeurons, KeepDense = { "fc1", "fc2" },
        }));
        Assert.Contains("Nothing to prune", structuredNothing.Message);
    }
}
