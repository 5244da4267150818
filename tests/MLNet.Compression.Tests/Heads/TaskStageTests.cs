using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Clustering;
using MLNet.Compression.Networks;
using MLNet.Compression.Pruning;
using MLNet.Compression.Quantization;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Heads;

/// <summary>A binary and a regression network trained once, shared by the stage tests.</summary>
public sealed class TaskModelsFixture : IDisposable
{
    public TaskModelsFixture()
    {
        Ml = new MLContext(seed: 7);
        BinaryTrain = TaskData.Load(Ml, TaskData.Binary(1000, 11));
        BinaryTest = TaskData.Load(Ml, TaskData.Binary(400, 12));
        RegressionTrain = TaskData.Load(Ml, TaskData.Regression(1000, 13));
        RegressionTest = TaskData.Load(Ml, TaskData.Regression(400, 14));
        Binary = Ml.BinaryClassification.Trainers.NeuralNetwork(hiddenLayers: [32, 16], epochs: 25, batchSize: 32).Fit(BinaryTrain);
        Regression = Ml.Regression.Trainers.NeuralNetwork(hiddenLayers: [32, 16], epochs: 25, batchSize: 64).Fit(RegressionTrain);
    }

    public MLContext Ml { get; }
    public IDataView BinaryTrain { get; }
    public IDataView BinaryTest { get; }
    public IDataView RegressionTrain { get; }
    public IDataView RegressionTest { get; }
    public NeuralNetworkTransformer Binary { get; }
    public NeuralNetworkTransformer Regression { get; }

    public void Dispose()
    {
        Binary.Dispose();
        Regression.Dispose();
    }
}

/// <summary>
/// Every compression stage on the binary and regression heads: the result still evaluates with ML.NET's evaluators above a
/// threshold (measured, with margin), and its saved zip scores identically in a fresh context.
/// </summary>
public class TaskStageTests(TaskModelsFixture f, ITestOutputHelper output) : IClassFixture<TaskModelsFixture>
{
    // Measured on the fixture's models (loaded 2-core machine): binary AUC about 0.93-0.95, regression R² about 0.9.
    private const double MinAuc = 0.88;
    private const double MinRSquared = 0.8;

    [Fact]
    public void BaseModels_ReachTheirThresholds()
    {
        CheckBinary(f.Binary, "base");
        CheckRegression(f.Regression, "base");
    }

    [Fact]
    public void Pruning_WorksForBinaryAndRegression()
    {
        // Half the hidden weights; the one-unit output layer stays dense (it tolerates pruning least, as Han et al. found).
        var options = new PruningOptions { Schedule = PruningSchedule.ConstantSparsity(0.5), KeepDense = { "output" }, Epochs = 3, LearningRate = 1e-3 };
        using var binary = Stage(21).Prune(f.Binary, options).Fit(f.BinaryTrain);
        using var regression = Stage(22).Prune(f.Regression, options).Fit(f.RegressionTrain);
        Assert.True(binary.NonZeroParameterCount < 0.6 * binary.ParameterCount);
        Assert.True(regression.NonZeroParameterCount < 0.6 * regression.ParameterCount);
        CheckBinary(binary, "pruned");
        CheckRegression(regression, "pruned");
    }

    [Theory]
    [InlineData(QuantizationMode.Float16)]
    [InlineData(QuantizationMode.Int8Dynamic)]
    [InlineData(QuantizationMode.Int8Static)]
    [InlineData(QuantizationMode.Int4WeightOnly)]
    public void Quantization_EveryMode_WorksForBinaryAndRegression(QuantizationMode mode)
    {
        var options = new QuantizationOptions { Mode = mode };
        using var binary = Stage(31).Quantize(f.Binary, options).Fit(f.BinaryTrain);
        using var regression = Stage(32).Quantize(f.Regression, options).Fit(f.RegressionTrain);
        Assert.NotEqual(f.Regression.GetOnnxModel(), regression.GetOnnxModel());
        // ONNX Runtime's 4-bit MatMul runs another kernel for one row than for many: the saved zip agrees to rounding only.
        double tolerance = mode == QuantizationMode.Int4WeightOnly ? 2e-3 : 0;
        CheckBinary(binary, mode.ToString(), tolerance);
        CheckRegression(regression, mode.ToString(), tolerance);
    }

    /// <summary>
    /// Per-batch int8 dynamic (opt-in) on the binary and regression heads: the saved zip scores each row alone, so its scores
    /// are not the batched in-process ones. What the README promises and this checks: a binary probability within 0.1 and a
    /// predicted label that differs only on a near-tie (a probability closer to 0.5 than the row's difference); a regression
    /// output within 5e-2 relative (|Δ| ≤ 5e-2 · max(1, |score|)); a binary Score (the logit, whose changes near 0 move the
    /// probability by at most a quarter of them) within 0.5 · max(1, |score|). Measured here 0.033 / 0.0092 / 0.13, and on a
    /// tabular CSV tried as a new user 0.041 / – / 0.17: the bounds keep a margin of 2-3×.
    /// </summary>
    [Fact]
    public void PerBatchQuantization_BinaryAndRegression_SavedZipWithinTheStatedBounds()
    {
        var options = new QuantizationOptions { Mode = QuantizationMode.Int8Dynamic, ActivationScales = ActivationScaleScope.PerBatch };
        using var binary = Stage(33).Quantize(f.Binary, options).Fit(f.BinaryTrain);
        using var regression = Stage(34).Quantize(f.Regression, options).Fit(f.RegressionTrain);
        var scored = binary.Transform(f.BinaryTest);
        var reloaded = TaskHeadsTests.SaveAndLoad(binary, f.BinaryTrain.Schema).Transform(f.BinaryTest);
        var p = scored.GetColumn<float>("Probability").ToArray();
        var pr = reloaded.GetColumn<float>("Probability").ToArray();
        var labels = scored.GetColumn<bool>("PredictedLabel").ToArray();
        var reloadedLabels = reloaded.GetColumn<bool>("PredictedLabel").ToArray();
        double maxP = 0;
        for (int i = 0; i < p.Length; i++)
        {
            double d = Math.Abs(p[i] - pr[i]);
            maxP = Math.Max(maxP, d);
            Assert.True(d <= 0.1, $"binary row {i}: probability {p[i]} vs {pr[i]}");
            if (labels[i] != reloadedLabels[i])
                Assert.True(Math.Abs(p[i] - 0.5) <= d, $"binary row {i}: label differs but {p[i]} is not a near-tie ({pr[i]} after reload)");
        }
        double maxBinary = MaxRelative(scored.GetColumn<float>("Score").ToArray(), reloaded.GetColumn<float>("Score").ToArray());
        var rScored = regression.Transform(f.RegressionTest).GetColumn<float>("Score").ToArray();
        var rReloaded = TaskHeadsTests.SaveAndLoad(regression, f.RegressionTrain.Schema).Transform(f.RegressionTest).GetColumn<float>("Score").ToArray();
        double maxRegression = MaxRelative(rScored, rReloaded);
        output.WriteLine($"per-batch, saved zip vs in-process: binary probability max |Δ| {maxP:G3}, labels differing {labels.Zip(reloadedLabels).Count(q => q.First != q.Second)}, " +
                         $"binary Score max relative {maxBinary:G3}; regression Score max relative {maxRegression:G3}");
        Assert.True(maxBinary <= 0.5, $"binary Score differs by {maxBinary:G3} relative");
        Assert.True(maxRegression <= 5e-2, $"regression Score differs by {maxRegression:G3} relative");
        Assert.True(maxP > 0 || maxRegression > 0, "per-batch scales should change some score when a row is scored alone");

        static double MaxRelative(float[] expected, float[] actual) =>
            expected.Zip(actual).Max(q => Math.Abs(q.First - q.Second) / Math.Max(1, Math.Abs(q.First)));
    }

    [Fact]
    public void WeightClustering_WorksForBinaryAndRegression()
    {
        var options = new WeightClusteringOptions { ClusterCount = 16, Epochs = 1 };
        using var binary = Stage(41).ClusterWeights(f.Binary, options).Fit(f.BinaryTrain);
        using var regression = Stage(42).ClusterWeights(f.Regression, options).Fit(f.RegressionTrain);
        // Every weight matrix holds at most 16 distinct values.
        foreach (var layer in regression.Network.Layers.OfType<ParameterizedLayer>())
            Assert.True(layer.Weight.Distinct().Count() <= 16, $"{layer.Name}: {layer.Weight.Distinct().Count()} distinct weights");
        CheckBinary(binary, "clustered");
        CheckRegression(regression, "clustered");
    }

    [Fact]
    public void Distillation_TrainsBinaryAndRegressionStudents_FromTheTeachersScore()
    {
        var student = new NeuralNetworkOptions { Architecture = NetworkArchitecture.Mlp([16], TaskData.BinaryFeatures), Epochs = 25, BatchSize = 32, Seed = 1 };
        using var binary = Stage(51).Distill(f.Binary, student, temperature: 2, alpha: 0.7).Fit(f.BinaryTrain);
        var regressionStudent = new NeuralNetworkOptions { Architecture = NetworkArchitecture.Mlp([16], TaskData.RegressionFeatures), Epochs = 25, BatchSize = 64, Seed = 1 };
        using var regression = Stage(52).Distill(f.Regression, regressionStudent, temperature: 1, alpha: 0.7).Fit(f.RegressionTrain);
        Assert.Equal(MLNet.Compression.Networks.Heads.OutputHeadKind.Binary, binary.HeadKind);
        Assert.Equal(MLNet.Compression.Networks.Heads.OutputHeadKind.Regression, regression.HeadKind);
        CheckBinary(binary, "distilled");
        CheckRegression(regression, "distilled");
    }

    [Fact]
    public void Checkpoints_KeepTheHead_AndScoreIdentically()
    {
        var dir = Directory.CreateTempSubdirectory("heads-cp");
        try
        {
            foreach (var (model, test) in new[] { (f.Binary, f.BinaryTest), (f.Regression, f.RegressionTest) })
            {
                var path = Path.Combine(dir.FullName, model.HeadKind + ".zip");
                model.SaveCheckpoint(path);
                using var loaded = NeuralNetworkTransformer.LoadCheckpoint(new MLContext(), path);
                Assert.Equal(model.HeadKind, loaded.HeadKind);
                Assert.Equal(model.Transform(test).GetColumn<float>("Score").ToArray(), loaded.Transform(test).GetColumn<float>("Score").ToArray());
            }
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    /// <summary>
    /// A fresh context with a fixed seed for one stage of one test: a stage that draws its seed from the context gets the same
    /// one whatever tests ran before (the fixture's shared context would give each test the next seed in run order).
    /// </summary>
    private static CompressionCatalog Stage(int seed) => new MLContext(seed: seed).Compression();

    private void CheckBinary(NeuralNetworkTransformer model, string what, double tolerance = 0)
    {
        var scored = model.Transform(f.BinaryTest);
        var metrics = f.Ml.BinaryClassification.Evaluate(scored);
        output.WriteLine($"binary {what}: AUC {metrics.AreaUnderRocCurve:F4}, F1 {metrics.F1Score:F4}");
        Assert.True(metrics.AreaUnderRocCurve > MinAuc, $"binary {what}: AUC {metrics.AreaUnderRocCurve}");
        var reloaded = TaskHeadsTests.SaveAndLoad(model, f.BinaryTrain.Schema).Transform(f.BinaryTest);
        AssertClose(scored.GetColumn<float>("Score").ToArray(), reloaded.GetColumn<float>("Score").ToArray(), tolerance);
        AssertClose(scored.GetColumn<float>("Probability").ToArray(), reloaded.GetColumn<float>("Probability").ToArray(), tolerance);
        var labels = scored.GetColumn<bool>("PredictedLabel").ToArray();
        var reloadedLabels = reloaded.GetColumn<bool>("PredictedLabel").ToArray();
        if (tolerance == 0)
            Assert.Equal(labels, reloadedLabels);
        else
            Assert.True(labels.Zip(reloadedLabels).Count(p => p.First != p.Second) <= 2, $"binary {what}: predicted labels differ");
    }

    private static void AssertClose(float[] expected, float[] actual, double relative)
    {
        if (relative == 0)
        {
            Assert.Equal(expected, actual);
            return;
        }
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= relative * Math.Max(1, Math.Abs(expected[i])), $"row {i}: {expected[i]} vs {actual[i]}");
    }

    private void CheckRegression(NeuralNetworkTransformer model, string what, double tolerance = 0)
    {
        var scored = model.Transform(f.RegressionTest);
        var metrics = f.Ml.Regression.Evaluate(scored);
        output.WriteLine($"regression {what}: R² {metrics.RSquared:F4}");
        Assert.True(metrics.RSquared > MinRSquared, $"regression {what}: R² {metrics.RSquared}");
        var reloaded = TaskHeadsTests.SaveAndLoad(model, f.RegressionTrain.Schema).Transform(f.RegressionTest);
        AssertClose(scored.GetColumn<float>("Score").ToArray(), reloaded.GetColumn<float>("Score").ToArray(), tolerance);
    }
}
