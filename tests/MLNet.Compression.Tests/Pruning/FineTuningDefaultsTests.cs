using Microsoft.ML;
using Microsoft.ML.Runtime;
using MLNet.Compression.Clustering;
using MLNet.Compression.Incremental;
using MLNet.Compression.Networks;
using MLNet.Compression.Pruning;
using MLNet.Compression.Quantization;
using MLNet.Compression.Tests.Training;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Pruning;

/// <summary>LeNet-300-100 trained with the trainer's defaults on the first 1,000 MNIST rows, shared by the fine-tuning default tests.</summary>
public sealed class ThousandRowMlpFixture : IDisposable
{
    public ThousandRowMlpFixture()
    {
        Context = new MLContext(seed: 1);
        Train = Context.Data.Cache(Context.Data.TakeRows(TestMnist.LoadTrain(Context), 1000));
        Test = Context.Data.Cache(Context.Data.TakeRows(TestMnist.LoadTest(Context), 2000));
        Model = Context.Compression().NeuralNetwork(new NeuralNetworkOptions { Architecture = NetworkArchitecture.Mlp(300, 100), Device = TrainingDevice.Cpu, Seed = 3 })
            .Fit(Train);
        BaseAccuracy = Accuracy(Model);
    }

    public MLContext Context { get; }

    public IDataView Train { get; }

    public IDataView Test { get; }

    public NeuralNetworkTransformer Model { get; }

    public double BaseAccuracy { get; }

    public double Accuracy(ITransformer model) => Context.MulticlassClassification.Evaluate(model.Transform(Test)).MicroAccuracy;

    public void Dispose() => Model.Dispose();
}

public sealed class FineTuningDefaultsTests : IClassFixture<ThousandRowMlpFixture>
{
    private readonly ThousandRowMlpFixture fixture;
    private readonly ITestOutputHelper output;

    public FineTuningDefaultsTests(ThousandRowMlpFixture fixture, ITestOutputHelper output)
    {
        this.fixture = fixture;
        this.output = output;
    }

    [Fact]
    public void DefaultEpochsGrowOnSmallDataAndSetValuesWin()
    {
        // 2 epochs of 60,000 rows at batch 128 already make 938 >= 900 steps: the same as before the rule.
        Assert.Equal(2, FineTuningOptions.EpochsFor(60_000, 128, 2));
        Assert.Equal(20, FineTuningOptions.EpochsFor(6_000, 128, 2));   // 47 steps per epoch
        Assert.Equal(50, FineTuningOptions.EpochsFor(1_000, 128, 2));   // capped: 8 steps per epoch
        Assert.Equal(25, FineTuningOptions.EpochsFor(1_169, 32, 2));    // the Seattle-rain set at the catalog trainer's batch 32
        Assert.Equal(7, FineTuningOptions.EpochsFor(100_000, 128, 7));  // never below the stage's own default

        var model = new NeuralNetworkOptions { LearningRate = 2e-3, BatchSize = 100 };
        var defaults = new PruningOptions().Derive(model, 1_000);
        Assert.Equal(50, defaults.Epochs);
        Assert.Equal(2e-3, defaults.LearningRate); // pruning fine-tunes at the model's own rate
        Assert.Equal(2, new PruningOptions().Epochs); // unset reads as the stage default
        Assert.Equal(2, new PruningOptions().Derive(model).Epochs); // rows unknown: the stage default

        var set = new PruningOptions { Epochs = 3, LearningRate = 1e-5 };
        Assert.Equal(3, set.Derive(model, 1_000).Epochs);
        Assert.Equal(1e-5, set.Derive(model, 1_000).LearningRate);
        Assert.Equal(3, set.Clone().Derive(model, 1_000).Epochs);
        Assert.Equal(50, new PruningOptions().Clone().Derive(model, 1_000).Epochs); // a clone stays unset
        Assert.Equal(2, new PruningOptions { Epochs = 2 }.Derive(model, 1_000).Epochs); // set to the default value: still set

        Assert.Equal(50, new WeightClusteringOptions().Derive(model, 1_000).Epochs);
        Assert.Equal(2e-3, new WeightClusteringOptions().Derive(model, 1_000).LearningRate);
        var qat = new QuantizationOptions { QuantizationAwareTraining = true }.Derive(model, 1_000);
        Assert.Equal(50, qat.Epochs);
        Assert.Equal(2e-4, qat.LearningRate, 12); // quantization-aware training keeps a tenth of the model's rate
        var continued = new ContinueTrainingOptions().Derive(model, 1_000);
        Assert.Equal(5, continued.Epochs); // continued training keeps its 5 epochs and the model's rate
        Assert.Equal(2e-3, continued.LearningRate);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void DefaultsReachNinetyPercentOnAThousandRowsAndKeepTheAccuracy(bool polynomial)
    {
        var ml = fixture.Context;
        var estimator = ml.Compression().Prune(fixture.Model, new PruningOptions
        {
            Schedule = polynomial ? PruningSchedule.PolynomialDecay(0.5, 0.9) : PruningSchedule.ConstantSparsity(0.9),
        });
        using var pruned = estimator.Fit(fixture.Train);
        var report = estimator.Report!;
        double accuracy = fixture.Accuracy(pruned);
        output.WriteLine(report.ToString());
        output.WriteLine($"accuracy before {fixture.BaseAccuracy:P2}, after {accuracy:P2}");

        // 1,000 rows at batch 128 = 8 steps per epoch: the default grows to the cap of 50 epochs, 400 steps.
        Assert.Equal(FineTuningOptions.MaxDefaultEpochs, report.FineTuningEpochs);
        Assert.Equal(400, report.StepsRun);
        Assert.Equal(fixture.Model.TrainingOptions.LearningRate, report.FineTuningLearningRate);
        Assert.True(report.ScheduleCompleted);
        Assert.InRange(report.Sparsity, 0.895, 0.905);
        Assert.Empty(report.Warnings);
        Assert.Contains("fine-tuning 50 epoch(s)", report.ToString(), StringComparison.Ordinal);
        // Measured (fine-tuning sweep, 10,000 test rows, another seed): 86.72 % before; 87.80 % (constant) and 88.01 % (polynomial)
        // after with these defaults; the old defaults (2 epochs at a tenth of the rate) gave 45.5 % and 47.5 %.
        Assert.True(accuracy > fixture.BaseAccuracy - 0.02, $"accuracy {accuracy:P2} after 90 % pruning, {fixture.BaseAccuracy:P2} before");
    }

    [Fact]
    public void StarvedFineTuningWarnsThatTheAccuracyCollapsed()
    {
        var ml = new MLContext(seed: 1);
        var logged = new List<string>();
        ml.Log += (_, e) =>
        {
            if (e.Kind == ChannelMessageKind.Warning)
                lock (logged)
                    logged.Add(e.Message);
        };
        var estimator = ml.Compression().Prune(fixture.Model, new PruningOptions
        {
            Schedule = PruningSchedule.ConstantSparsity(0.97),
            Epochs = 1,
            LearningRate = 1e-6,
        });
        using var pruned = estimator.Fit(fixture.Train);
        var report = estimator.Report!;
        output.WriteLine(report.ToString());
        var warning = Assert.Single(report.Warnings);
        Assert.Contains("lost", warning, StringComparison.Ordinal);
        Assert.Contains("PruningOptions.Epochs", warning, StringComparison.Ordinal);
        Assert.Contains("a higher learning rate (PruningOptions.LearningRate", warning, StringComparison.Ordinal);
        Assert.Contains("lower target sparsity", warning, StringComparison.Ordinal);
        Assert.Contains("1 epoch(s), 8 steps", warning, StringComparison.Ordinal);
        Assert.Contains("WARNING: " + warning, report.ToString(), StringComparison.Ordinal);
        Assert.Contains(logged, m => m.Contains(warning, StringComparison.Ordinal));
        double accuracy = fixture.Accuracy(pruned);
        output.WriteLine($"accuracy before {fixture.BaseAccuracy:P2}, after {accuracy:P2}");
        Assert.True(accuracy < fixture.BaseAccuracy - 0.05, "the warning must come from a real loss");
    }

    [Fact]
    public void StarvedClusteringWarnsAndAHealthyOneDoesNot()
    {
        var ml = fixture.Context;
        var starved = ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { ClusterCount = 4, Epochs = 1, LearningRate = 0.5 });
        using (var clustered = starved.Fit(fixture.Train))
        {
            output.WriteLine(starved.Report!.ToString());
            output.WriteLine($"accuracy before {fixture.BaseAccuracy:P2}, after {fixture.Accuracy(clustered):P2}");
        }
        var warning = Assert.Single(starved.Report!.Warnings);
        Assert.Contains("WeightClusteringOptions.ClusterCount", warning, StringComparison.Ordinal);
        Assert.Contains("a lower learning rate", warning, StringComparison.Ordinal); // 0.5 is above the model's 0.001
        Assert.Contains("WARNING: ", starved.Report.ToString(), StringComparison.Ordinal);

        var healthy = ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { ClusterCount = 32 });
        using var ok = healthy.Fit(fixture.Train);
        output.WriteLine(healthy.Report!.ToString());
        Assert.Empty(healthy.Report.Warnings);
        Assert.Equal(FineTuningOptions.MaxDefaultEpochs, healthy.Report.FineTuningEpochs);
        Assert.Equal(400, healthy.Report.FineTuningSteps);
    }
}
