using System.Text.Json;
using Microsoft.ML;
using MLNet.Compression.Clustering;
using MLNet.Compression.Distillation;
using MLNet.Compression.Incremental;
using MLNet.Compression.Pruning;
using MLNet.Compression.Quantization;
using MLNet.Compression.Tests.Training;
using Xunit;

namespace MLNet.Compression.Tests.Conformance;

/// <summary>
/// What every stage shares: the fine-tuning settings derived in one place from the model's own, cancellation within one
/// batch, the history of stage reports the model carries, and the recipe continued training re-applies.
/// </summary>
public sealed class CompressionStageTests : IClassFixture<ConformanceFixture>
{
    private readonly ConformanceFixture fixture;

    public CompressionStageTests(ConformanceFixture fixture) => this.fixture = fixture;

    private MLContext Ml => fixture.Context;

    [Fact]
    public void Fine_tuning_settings_are_derived_from_the_models_own_in_one_place()
    {
        var model = ConformanceFixture.Options();
        var pruning = new PruningOptions { Epochs = 3 }.Derive(model);
        Assert.Equal(3, pruning.Epochs);
        Assert.Equal(model.LearningRate, pruning.LearningRate); // measured by --finetune-sweep: the model's own rate recovers best
        Assert.Equal(model.LearningRate / 10, new QuantizationOptions().Derive(model).LearningRate); // QAT keeps a tenth
        Assert.Equal(model.BatchSize, pruning.BatchSize);
        Assert.Equal(model.ProgressInterval, pruning.ProgressInterval);
        Assert.Equal(0, pruning.ValidationFraction);
        Assert.Equal(0, pruning.EarlyStoppingPatience);
        Assert.Equal(model.Optimizer, pruning.Optimizer);
        Assert.Equal(model.Seed, pruning.Seed);

        var continued = new ContinueTrainingOptions().Derive(model);
        Assert.Equal(5, continued.Epochs);
        Assert.Equal(model.LearningRate, continued.LearningRate); // continued training keeps the model's rate

        var set = new WeightClusteringOptions { Epochs = 1, LearningRate = 0.5, BatchSize = 7, ProgressInterval = 3 }.Derive(model);
        Assert.Equal((1, 0.5, 7, 3), (set.Epochs, set.LearningRate, set.BatchSize, set.ProgressInterval));

        // Today's property names still work and are the shared settings.
        var quantization = new QuantizationOptions { QatEpochs = 4, QatLearningRate = 0.01 };
        Assert.Equal((4, 0.01), (quantization.Epochs, quantization.LearningRate));
        Assert.Equal((4, 0.01), (quantization.Derive(model).Epochs, quantization.Derive(model).LearningRate));
        Assert.Equal("ProgressInterval", Assert.Throws<ArgumentOutOfRangeException>(() =>
            Ml.Compression().Prune(fixture.Model, new PruningOptions { ProgressInterval = 0 })).ParamName);
        Assert.Equal("BatchSize", Assert.Throws<ArgumentOutOfRangeException>(() =>
            Ml.Compression().Quantize(fixture.Model, new QuantizationOptions { BatchSize = 0 })).ParamName);
    }

    public static TheoryData<string> FineTuningStages() => new() { "prune", "cluster", "quantize", "continue" };

    [Theory]
    [MemberData(nameof(FineTuningStages))]
    public void Cancellation_stops_fine_tuning_within_one_batch(string stage)
    {
        using var cts = new CancellationTokenSource();
        var reports = new List<TrainingProgress>();
        var progress = new Callback(p =>
        {
            reports.Add(p);
            cts.Cancel();
        });
        var before = Scoring.Read(fixture.Model.Transform(fixture.Test));
        var estimator = Stage(stage, o =>
        {
            o.Progress = progress;
            o.ProgressInterval = 1;
            o.Epochs = 3;
            o.CancellationToken = cts.Token;
        });
        Assert.Throws<OperationCanceledException>(() => estimator.Fit(fixture.Train));
        // The token was cancelled in the report of step 1; the next batch did not start.
        var report = Assert.Single(reports);
        Assert.Equal(1, report.Step);
        Assert.Equal(stage, report.Stage);
        Scoring.AssertIdentical(before, Scoring.Read(fixture.Model.Transform(fixture.Test)));

        // A token cancelled before Fit stops it before the first batch.
        reports.Clear();
        Assert.Throws<OperationCanceledException>(() => estimator.Fit(fixture.Train));
        Assert.Empty(reports);
    }

    [Fact]
    public void Each_model_carries_the_reports_of_every_stage_that_made_it()
    {
        Assert.Empty(fixture.Model.CompressionHistory);
        var prune = Ml.Compression().Prune(fixture.Model, new PruningOptions { Schedule = PruningSchedule.ConstantSparsity(0.5), Epochs = 1 });
        using var pruned = prune.Fit(fixture.Train);
        var cluster = Ml.Compression().ClusterWeights(pruned, new WeightClusteringOptions { ClusterCount = 8, Epochs = 1 });
        using var clustered = cluster.Fit(fixture.Train);
        var quantize = Ml.Compression().Quantize(clustered, new QuantizationOptions { Mode = QuantizationMode.Int8Dynamic });
        using var quantized = quantize.Fit(fixture.Train);
        var proceed = Ml.Compression().ContinueTraining(quantized, new ContinueTrainingOptions { Epochs = 1 });
        using var continued = proceed.Fit(fixture.Train);

        Assert.Equal([typeof(PruningReport)], pruned.CompressionHistory.Select(r => r.GetType()));
        Assert.Equal([typeof(PruningReport), typeof(WeightClusteringReport), typeof(QuantizationReport), typeof(ContinueTrainingReport)],
            continued.CompressionHistory.Select(r => r.GetType()));
        Assert.Same(prune.Report, pruned.CompressionHistory[0]);
        Assert.Same(prune.Report, continued.CompressionHistory[0]);
        Assert.Same(cluster.Report, continued.CompressionHistory[1]);
        Assert.Same(quantize.Report, continued.CompressionHistory[2]);
        Assert.Same(proceed.Report, continued.CompressionHistory[3]);
        Assert.Equal(0.5, ((PruningReport)continued.CompressionHistory[0]).Sparsity, 2);

        // Continued training re-applied the recipe's steps (clustering, then quantization) without naming them.
        Assert.Equal([typeof(ClusterStep), typeof(QuantizeStep)], continued.Recipe.Steps.Select(s => s.GetType()));
        Assert.Equal(QuantizationMode.Int8Dynamic, proceed.Report!.Requantized);
        Assert.All(continued.Network.ParameterizedLayers, l => Assert.True(WeightClusteringEstimator.CountDistinctNonZero(l.Weight) <= 8));

        // The estimator's Report is a view of its last fit: a second fit does not change the first model's history.
        var first = prune.Report;
        using var again = prune.Fit(fixture.Train);
        Assert.NotSame(first, prune.Report);
        Assert.Same(prune.Report, again.CompressionHistory[0]);
        Assert.Same(first, pruned.CompressionHistory[0]);

        // A distilled student starts its own history.
        var distill = Ml.Compression().Distill(continued, ConformanceFixture.Options());
        using var student = distill.Fit(fixture.Train);
        Assert.Same(distill.Report, Assert.Single(student.CompressionHistory));
    }

    [Fact]
    public void History_and_recipe_round_trip_through_System_Text_Json()
    {
        using var clustered = Ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { ClusterCount = 8, Epochs = 0 }).Fit(fixture.Train);
        using var quantized = Ml.Compression().Quantize(clustered, new QuantizationOptions { Mode = QuantizationMode.Int8Static, CalibrationRows = 100 })
            .Fit(fixture.Train);
        using var continued = Ml.Compression().ContinueTraining(quantized, new ContinueTrainingOptions { Epochs = 1 }).Fit(fixture.Train);
        using var student = Ml.Compression().Distill(fixture.Model, ConformanceFixture.Options(), new DistillationOptions { Temperature = 3 }).Fit(fixture.Train);
        using var pruned = Ml.Compression().Prune(fixture.Model, new PruningOptions { Epochs = 0 }).Fit(fixture.Train);
        var history = continued.CompressionHistory.Concat(student.CompressionHistory).Concat(pruned.CompressionHistory).ToArray();

        string json = JsonSerializer.Serialize<IReadOnlyList<CompressionStageReport>>(history);
        var back = JsonSerializer.Deserialize<List<CompressionStageReport>>(json)!;
        Assert.Equal(history.Select(r => r.GetType()), back.Select(r => r.GetType()));
        var (c0, c1) = ((WeightClusteringReport)history[0], (WeightClusteringReport)back[0]);
        Assert.Equal(c0.Layers, c1.Layers);
        Assert.Equal((c0.OnnxBytes, c0.FineTuningEpochs, c0.FineTuningSteps), (c1.OnnxBytes, c1.FineTuningEpochs, c1.FineTuningSteps));
        var (q0, q1) = ((QuantizationReport)history[1], (QuantizationReport)back[1]);
        Assert.Equal(q0.Layers, q1.Layers);
        Assert.Equal((q0.Mode, q0.CalibrationRows, q0.OnnxBytes), (q1.Mode, q1.CalibrationRows, q1.OnnxBytes));
        var (k0, k1) = ((ContinueTrainingReport)history[2], (ContinueTrainingReport)back[2]);
        Assert.Equal(k0.ZeroWeights, k1.ZeroWeights);
        Assert.Equal(k0.Classes, k1.Classes);
        Assert.Equal((k0.Increment, k0.Steps, k0.Requantized, k0.ModelBytes), (k1.Increment, k1.Steps, k1.Requantized, k1.ModelBytes));
        Assert.Equal(history[3], back[3]); // DistillationReport: a positional record, equal member by member
        var (p0, p1) = ((PruningReport)history[4], (PruningReport)back[4]);
        Assert.Equal(p0.Layers, p1.Layers);
        Assert.Equal((p0.Sparsity, p0.StepsRun, p0.Granularity), (p1.Sparsity, p1.StepsRun, p1.Granularity));

        string recipeJson = JsonSerializer.Serialize(continued.Recipe);
        var recipe = JsonSerializer.Deserialize<CompressionRecipe>(recipeJson)!;
        Assert.Equal([typeof(ClusterStep), typeof(QuantizeStep)], recipe.Steps.Select(s => s.GetType()));
        Assert.Equal(8, recipe.Clustering!.ClusterCount);
        Assert.Equal((QuantizationMode.Int8Static, 100), (recipe.Quantization!.Mode, recipe.Quantization.CalibrationRows));
    }

    private CompressionStageEstimator Stage(string stage, Action<FineTuningOptions> set)
    {
        switch (stage)
        {
            case "prune":
                var p = new PruningOptions();
                set(p);
                return Ml.Compression().Prune(fixture.Model, p);
            case "cluster":
                var c = new WeightClusteringOptions { ClusterCount = 8 };
                set(c);
                return Ml.Compression().ClusterWeights(fixture.Model, c);
            case "quantize":
                var q = new QuantizationOptions { QuantizationAwareTraining = true };
                set(q);
                return Ml.Compression().Quantize(fixture.Model, q);
            default:
                var k = new ContinueTrainingOptions();
                set(k);
                return Ml.Compression().ContinueTraining(fixture.Model, k);
        }
    }

    /// <summary>Reports synchronously on the training thread (unlike <see cref="Progress{T}"/>).</summary>
    private sealed class Callback(Action<TrainingProgress> action) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => action(value);
    }
}
