using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Incremental;
using MLNet.Compression.Networks;
using Xunit;
using Xunit.Abstractions;
using static MLNet.Compression.Tests.Heads.TaskData;

namespace MLNet.Compression.Tests.Heads;

/// <summary>
/// Two tasks per head, generated: task A (the rule of <see cref="TaskData"/>) and a shifted task B (a domain feature moved
/// away from A's range and a different, partly conflicting rule), and a binary and a regression network trained on A.
/// </summary>
public sealed class TaskIncrementFixture : IDisposable
{
    public TaskIncrementFixture()
    {
        Ml = new MLContext(seed: 3);
        BinaryA = Load(Ml, BinaryTask(1000, 21, shifted: false));
        BinaryB = Load(Ml, BinaryTask(1000, 22, shifted: true));
        BinaryTestA = Load(Ml, BinaryTask(500, 23, shifted: false));
        BinaryTestB = Load(Ml, BinaryTask(500, 24, shifted: true));
        RegressionA = Load(Ml, RegressionTask(1000, 31, shifted: false));
        RegressionB = Load(Ml, RegressionTask(1000, 32, shifted: true));
        RegressionTestA = Load(Ml, RegressionTask(500, 33, shifted: false));
        RegressionTestB = Load(Ml, RegressionTask(500, 34, shifted: true));
        Binary = new MLContext(seed: 5).BinaryClassification.Trainers.NeuralNetwork(hiddenLayers: [32, 16], epochs: 20, batchSize: 32).Fit(BinaryA);
        Regression = new MLContext(seed: 6).Regression.Trainers.NeuralNetwork(hiddenLayers: [32, 16], epochs: 25, batchSize: 32).Fit(RegressionA);
    }

    public MLContext Ml { get; }
    public IDataView BinaryA { get; }
    public IDataView BinaryB { get; }
    public IDataView BinaryTestA { get; }
    public IDataView BinaryTestB { get; }
    public IDataView RegressionA { get; }
    public IDataView RegressionB { get; }
    public IDataView RegressionTestA { get; }
    public IDataView RegressionTestB { get; }
    public NeuralNetworkTransformer Binary { get; }
    public NeuralNetworkTransformer Regression { get; }

    /// <summary>
    /// Task A: Gaussian features, label x0 + x1·x2 − 0.5·x3 &gt; 0. Task B: feature 11 moved by +4 (the domain) and the label
    /// −x0 + x4·x5 + 0.5·x6 &gt; 0 (x0 counts the other way).
    /// </summary>
    internal static BinaryRow[] BinaryTask(int rows, int seed, bool shifted)
    {
        var rand = new Random(seed);
        var result = new BinaryRow[rows];
        for (int i = 0; i < rows; i++)
        {
            var x = new float[BinaryFeatures];
            for (int j = 0; j < x.Length; j++)
                x[j] = (float)Gaussian(rand);
            bool label;
            if (shifted)
            {
                x[11] += 4;
                label = -x[0] + x[4] * x[5] + 0.5 * x[6] > 0;
            }
            else
                label = x[0] + x[1] * x[2] - 0.5 * x[3] > 0;
            result[i] = new BinaryRow { Features = x, Label = label };
        }
        return result;
    }

    /// <summary>
    /// Task A: uniform features in [−1, 1], y = 1000 · (3 sin(2 x0) + 2 x1² + x2 x3) + 5000. Task B: feature 7 in [2, 4]
    /// (the domain) and y = 1000 · (−3 sin(2 x0) + 2 x4) + 9000: other units' mean, x0 counting the other way.
    /// </summary>
    internal static RegressionRow[] RegressionTask(int rows, int seed, bool shifted)
    {
        var rand = new Random(seed);
        var result = new RegressionRow[rows];
        for (int i = 0; i < rows; i++)
        {
            var x = new float[RegressionFeatures];
            for (int j = 0; j < x.Length; j++)
                x[j] = (float)(rand.NextDouble() * 2 - 1);
            double y;
            if (shifted)
            {
                x[7] += 3;
                y = 1000 * (-3 * Math.Sin(2 * x[0]) + 2 * x[4]) + 9000;
            }
            else
                y = 1000 * (3 * Math.Sin(2 * x[0]) + 2 * x[1] * x[1] + x[2] * x[3]) + 5000;
            result[i] = new RegressionRow { Features = x, Label = (float)y };
        }
        return result;
    }

    private static double Gaussian(Random rand) => Math.Sqrt(-2 * Math.Log(1 - rand.NextDouble())) * Math.Cos(2 * Math.PI * rand.NextDouble());

    public void Dispose()
    {
        Binary.Dispose();
        Regression.Dispose();
    }
}

/// <summary>
/// Continued training of binary and regression networks: plain warm start, replay (class-balanced for binary, a uniform
/// reservoir of targets for regression), learning without forgetting (the head's own distillation loss) and EWC (the head's
/// own Fisher). Every test uses its own contexts and seeds, so its figures do not depend on the order the tests run in.
/// </summary>
public sealed class TaskContinueTrainingTests(TaskIncrementFixture f, ITestOutputHelper output) : IClassFixture<TaskIncrementFixture>
{
    private const int Epochs = 10;

    // Task B contradicts task A on x0, so one output cannot serve both: LwF and EWC trade A against B. At the defaults
    // (LwfWeight 1, EwcLambda 5,000) they keep A and hardly learn B; these settings learn B and keep much of A (measured,
    // loaded 2-core machine: LwF weight 0.02-0.3 and λ 1-1,000 swept, see the README).
    private const double LwfWeight = 0.3;
    private const double EwcLambda = 100;

    [Fact]
    public void Binary_ReplayAndLwf_KeepTaskA_FarBetterThanPlainFineTuning_AndLearnTaskB()
    {
        double baseA = Auc(f.Binary, f.BinaryTestA), baseB = Auc(f.Binary, f.BinaryTestB);
        var budget = ReplayBudget.Bytes(4096);
        using var plain = Continue(f.Binary, f.BinaryB, new ContinueTrainingOptions { Epochs = Epochs });
        using var replay = Continue(f.Binary, f.BinaryB, new ContinueTrainingOptions
        {
            Epochs = Epochs, Strategies = ContinualStrategies.Replay, ReplayBudget = budget, PreviousData = f.BinaryA,
        });
        using var lwf = Continue(f.Binary, f.BinaryB, new ContinueTrainingOptions
        {
            Epochs = Epochs, Strategies = ContinualStrategies.LearningWithoutForgetting, LwfWeight = LwfWeight,
        });
        using var ewc = Continue(f.Binary, f.BinaryB, new ContinueTrainingOptions
        {
            Epochs = Epochs, Strategies = ContinualStrategies.ElasticWeightConsolidation, EwcLambda = EwcLambda, PreviousData = f.BinaryA,
        });
        var a = new[] { plain, replay, lwf, ewc }.Select(m => Auc(m, f.BinaryTestA)).ToArray();
        var b = new[] { plain, replay, lwf, ewc }.Select(m => Auc(m, f.BinaryTestB)).ToArray();
        output.WriteLine($"binary AUC on A / B: base {baseA:F4} / {baseB:F4}; plain {a[0]:F4} / {b[0]:F4}; replay {a[1]:F4} / {b[1]:F4}; " +
                         $"LwF {a[2]:F4} / {b[2]:F4}; EWC {a[3]:F4} / {b[3]:F4}");
        // Measured: AUC on A plain 0.43, replay 0.90, LwF 0.80, EWC 0.68; on B 0.94, 0.93, 0.85, 0.90 (before: 0.20).
        Assert.True(a[1] > a[0] + 0.3, $"replay keeps A: {a[1]:F4} vs plain {a[0]:F4}");
        Assert.True(a[2] > a[0] + 0.2, $"LwF keeps A: {a[2]:F4} vs plain {a[0]:F4}");
        Assert.True(a[3] > a[0] + 0.1, $"EWC keeps A: {a[3]:F4} vs plain {a[0]:F4}");
        foreach (var (auc, what) in b.Zip(new[] { "plain", "replay", "LwF", "EWC" }))
            Assert.True(auc > 0.8, $"{what} learns B: AUC {auc:F4} (before {baseB:F4})");

        // The memory: class-balanced, within the byte budget, carried by the model; the saved zip scores as the model does.
        var report = (ContinueTrainingReport)replay.CompressionHistory[^1];
        output.WriteLine(report.ToString());
        Assert.True(report.ReplayBytes <= 4096 && report.ReplayBytes > 2048, $"replay memory {report.ReplayBytes} bytes for a 4,096-byte budget");
        Assert.Equal(report.ReplayBytes, replay.IncrementalState!.ReplayBytes);
        Assert.Equal(["False", "True"], report.ExemplarsPerClass.Keys.Order());
        Assert.True(Math.Abs(report.ExemplarsPerClass["False"] - report.ExemplarsPerClass["True"]) <= 1, "the two classes share the memory");
        Assert.True(report.ExemplarsReplayed > 0);
        AssertSavedZipScoresTheSame(replay, f.BinaryTestA, binary: true);
        AssertSavedZipScoresTheSame(lwf, f.BinaryTestA, binary: true);
    }

    [Fact]
    public void Regression_ReplayAndLwf_KeepTaskA_FarBetterThanPlainFineTuning_AndLearnTaskB()
    {
        double baseA = RSquared(f.Regression, f.RegressionTestA), baseB = RSquared(f.Regression, f.RegressionTestB);
        var budget = ReplayBudget.Bytes(4096);
        using var plain = Continue(f.Regression, f.RegressionB, new ContinueTrainingOptions { Epochs = Epochs });
        using var replay = Continue(f.Regression, f.RegressionB, new ContinueTrainingOptions
        {
            Epochs = Epochs, Strategies = ContinualStrategies.Replay, ReplayBudget = budget, PreviousData = f.RegressionA,
        });
        using var lwf = Continue(f.Regression, f.RegressionB, new ContinueTrainingOptions
        {
            Epochs = Epochs, Strategies = ContinualStrategies.LearningWithoutForgetting, LwfWeight = LwfWeight,
        });
        using var ewc = Continue(f.Regression, f.RegressionB, new ContinueTrainingOptions
        {
            Epochs = Epochs, Strategies = ContinualStrategies.ElasticWeightConsolidation, EwcLambda = EwcLambda, PreviousData = f.RegressionA,
        });
        var a = new[] { plain, replay, lwf, ewc }.Select(m => RSquared(m, f.RegressionTestA)).ToArray();
        var b = new[] { plain, replay, lwf, ewc }.Select(m => RSquared(m, f.RegressionTestB)).ToArray();
        output.WriteLine($"regression R² on A / B: base {baseA:F4} / {baseB:F4}; plain {a[0]:F4} / {b[0]:F4}; replay {a[1]:F4} / {b[1]:F4}; " +
                         $"LwF {a[2]:F4} / {b[2]:F4}; EWC {a[3]:F4} / {b[3]:F4}");
        // Measured: R² on A plain −2.26, replay 0.74, LwF −0.97, EWC −0.17; on B 0.89, 0.81, 0.71, 0.68 (before: −2.33).
        Assert.True(a[1] > a[0] + 1.0, $"replay keeps A: {a[1]:F4} vs plain {a[0]:F4}");
        Assert.True(a[2] > a[0] + 0.5, $"LwF keeps A: {a[2]:F4} vs plain {a[0]:F4}");
        Assert.True(a[3] > a[0] + 0.5, $"EWC keeps A: {a[3]:F4} vs plain {a[0]:F4}");
        Assert.True(a[1] > 0.5, $"replay keeps A usable: R² {a[1]:F4}");
        foreach (var (r2, what) in b.Zip(new[] { "plain", "replay", "LwF", "EWC" }))
            Assert.True(r2 > 0.5, $"{what} learns B: R² {r2:F4} (before {baseB:F4})");

        // The memory: one uniform reservoir of (features, target) within the byte budget; targets stored exactly.
        var report = (ContinueTrainingReport)replay.CompressionHistory[^1];
        output.WriteLine(report.ToString());
        var memory = replay.IncrementalState!.Replay!;
        Assert.True(memory.HoldsTargets);
        Assert.True(report.ReplayBytes <= 4096 && report.ReplayBytes > 2048, $"replay memory {report.ReplayBytes} bytes for a 4,096-byte budget");
        var targetsA = f.RegressionA.GetColumn<float>("Label").ToHashSet();
        var targetsB = f.RegressionB.GetColumn<float>("Label").ToHashSet();
        int fromA = 0, fromB = 0;
        for (int s = 0; s < memory.Count; s++)
        {
            float t = memory.TargetAt(s);
            Assert.True(targetsA.Contains(t) || targetsB.Contains(t), $"exemplar {s}: target {t} is no row's label");
            if (targetsA.Contains(t)) fromA++; else fromB++;
        }
        output.WriteLine($"next memory: {fromA} exemplars of A, {fromB} of B");
        Assert.True(fromA > memory.Count / 4 && fromB > memory.Count / 4, $"a uniform sample of both tasks: {fromA} of A, {fromB} of B");
        AssertSavedZipScoresTheSame(replay, f.RegressionTestA, binary: false);
        AssertSavedZipScoresTheSame(lwf, f.RegressionTestA, binary: false);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Checkpoint_OfAContinuedModelWithReplay_RoundTrips_AndContinuesIdentically(bool binary)
    {
        var (model, a, b, test) = binary ? (f.Binary, f.BinaryA, f.BinaryB, f.BinaryTestA) : (f.Regression, f.RegressionA, f.RegressionB, f.RegressionTestA);
        var options = new ContinueTrainingOptions
        {
            Epochs = 2, Strategies = ContinualStrategies.Replay | ContinualStrategies.LearningWithoutForgetting | ContinualStrategies.ElasticWeightConsolidation,
            ReplayBudget = ReplayBudget.Rows(100), PreviousData = a,
        };
        using var continued = Continue(model, b, options);
        var dir = Directory.CreateTempSubdirectory("heads-ct");
        try
        {
            string path = Path.Combine(dir.FullName, "continued.ckpt");
            continued.SaveCheckpoint(path);
            using var loaded = NeuralNetworkTransformer.LoadCheckpoint(new MLContext(seed: 1), path);
            Assert.Equal(continued.HeadKind, loaded.HeadKind);
            Assert.Equal(Scores(continued, test), Scores(loaded, test));
            var (m0, m1) = (continued.IncrementalState!.Replay!, loaded.IncrementalState!.Replay!);
            Assert.Equal(m0.HoldsTargets, m1.HoldsTargets);
            Assert.Equal(!binary, m1.HoldsTargets);
            Assert.Equal(m0.Count, m1.Count);
            for (int s = 0; s < m0.Count; s++)
            {
                Assert.True(m0.CodesAt(s).SequenceEqual(m1.CodesAt(s)), $"exemplar {s}");
                if (binary)
                    Assert.Equal(m0.LabelAt(s), m1.LabelAt(s));
                else
                    Assert.Equal(m0.TargetAt(s), m1.TargetAt(s));
            }
            // The next increment from the checkpoint is the next increment from the model in memory.
            var next = new ContinueTrainingOptions { Epochs = 1, Strategies = options.Strategies, ReplayBudget = options.ReplayBudget };
            using var fromMemory = Continue(continued, a, next);
            using var fromCheckpoint = Continue(loaded, a, next);
            Assert.Equal(Scores(fromMemory, test), Scores(fromCheckpoint, test));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void FittedPipelines_OfBinaryAndRegressionTrainers_ContinueTraining()
    {
        var ml = new MLContext(seed: 9);
        var binary = ml.Transforms.NormalizeMeanVariance("Features")
            .Append(ml.BinaryClassification.Trainers.NeuralNetwork(hiddenLayers: [16], epochs: 10, batchSize: 32)).Fit(f.BinaryA);
        var regression = ml.Transforms.NormalizeMeanVariance("Features")
            .Append(ml.Regression.Trainers.NeuralNetwork(hiddenLayers: [16], epochs: 10, batchSize: 32)).Fit(f.RegressionA);
        // No PreviousData: nothing to replay in this increment, but the memory is filled from B for the next one.
        var options = new ContinueTrainingOptions { Epochs = 20, Strategies = ContinualStrategies.Replay, ReplayBudget = ReplayBudget.Rows(200) };
        var binaryNext = ml.Compression().ContinueTraining(binary, options).Fit(f.BinaryB);
        var regressionNext = ml.Compression().ContinueTraining(regression, options).Fit(f.RegressionB);
        try
        {
            var bBefore = ml.BinaryClassification.Evaluate(binary.Transform(f.BinaryTestB)).AreaUnderRocCurve;
            var rBefore = ml.Regression.Evaluate(regression.Transform(f.RegressionTestB)).RSquared;
            var bAuc = ml.BinaryClassification.Evaluate(binaryNext.Transform(f.BinaryTestB)).AreaUnderRocCurve;
            var rR2 = ml.Regression.Evaluate(regressionNext.Transform(f.RegressionTestB)).RSquared;
            output.WriteLine($"pipelines on B before / after continued training: binary AUC {bBefore:F4} / {bAuc:F4}, regression R² {rBefore:F4} / {rR2:F4}");
            Assert.True(bAuc > 0.8, $"binary pipeline learns B: {bAuc:F4}");
            Assert.True(rR2 > 0.5, $"regression pipeline learns B: {rR2:F4}");
            Assert.Equal(200, binaryNext.GetNeuralNetwork().IncrementalState!.Replay!.Count);
            Assert.Equal(200, regressionNext.GetNeuralNetwork().IncrementalState!.Replay!.Count);
            Assert.IsType<ContinueTrainingReport>(binaryNext.GetNeuralNetwork().CompressionHistory[^1]);
            Assert.IsType<ContinueTrainingReport>(regressionNext.GetNeuralNetwork().CompressionHistory[^1]);
            Assert.Equal(binaryNext.Transform(f.BinaryTestB).GetColumn<float>("Score").ToArray(),
                TaskHeadsTests.SaveAndLoad(binaryNext, f.BinaryA.Schema).Transform(f.BinaryTestB).GetColumn<float>("Score").ToArray());
            Assert.Equal(regressionNext.Transform(f.RegressionTestB).GetColumn<float>("Score").ToArray(),
                TaskHeadsTests.SaveAndLoad(regressionNext, f.RegressionA.Schema).Transform(f.RegressionTestB).GetColumn<float>("Score").ToArray());
        }
        finally
        {
            binaryNext.GetNeuralNetwork().Dispose();
            regressionNext.GetNeuralNetwork().Dispose();
            binary.LastTransformer.Dispose();
            regression.LastTransformer.Dispose();
        }
    }

    [Fact]
    public void BadCombinations_AreRefused_SayingWhatToDo()
    {
        var ml = new MLContext(seed: 1);
        // Class growth: a key label for a regression (or binary) network.
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(f.BinaryB).Transform(f.BinaryB);
        var growth = Assert.Throws<ArgumentException>(() => ml.Compression().ContinueTraining(f.Binary).Fit(keyed));
        Assert.Equal("input", growth.ParamName);
        Assert.Contains("adding classes is for multiclass networks only", growth.Message);
        var binned = ml.Transforms.Conversion.MapValueToKey("Label").Fit(f.RegressionB).Transform(f.RegressionB);
        var growth2 = Assert.Throws<ArgumentException>(() => ml.Compression().ContinueTraining(f.Regression).Fit(binned));
        Assert.Contains("regression network", growth2.Message);
        Assert.Contains("(Single)", growth2.Message);
        // The wrong label type (a Single label for a binary network) is the head's own error, naming the column.
        var floatLabels = Load(ml, TaskData.Regression(50, 1).Select(r => new BinaryLike { Features = Pad(r.Features), Label = r.Label }).ToArray());
        var wrongType = Assert.Throws<ArgumentException>(() => ml.Compression().ContinueTraining(f.Binary).Fit(floatLabels));
        Assert.Contains("'Label'", wrongType.Message);
        Assert.Contains("Boolean", wrongType.Message);
        // DER++ (stored-output replay) and herding: refused where they do not apply.
        var der = Assert.Throws<ArgumentException>(() => ml.Compression().ContinueTraining(f.Binary,
            new ContinueTrainingOptions { Strategies = ContinualStrategies.Replay, ReplayLogitWeight = 0.5 }));
        Assert.Equal("options", der.ParamName);
        Assert.Contains("ReplayLogitWeight", der.Message);
        var herding = Assert.Throws<ArgumentException>(() => ml.Compression().ContinueTraining(f.Regression,
            new ContinueTrainingOptions { Strategies = ContinualStrategies.Replay, ReplaySelection = ExemplarSelection.Herding }));
        Assert.Contains("Herding", herding.Message);
        Assert.Contains("Reservoir", herding.Message);
        // Binary herding is class-based and allowed.
        using var herded = ml.Compression().ContinueTraining(f.Binary, new ContinueTrainingOptions
        {
            Epochs = 1, Strategies = ContinualStrategies.Replay, ReplaySelection = ExemplarSelection.Herding, ReplayBudget = ReplayBudget.Rows(40), PreviousData = f.BinaryA,
        }).Fit(f.BinaryB);
        var counts = ((ContinueTrainingReport)herded.CompressionHistory[^1]).ExemplarsPerClass;
        Assert.Equal(40, counts.Values.Sum());
    }

    private sealed class BinaryLike
    {
        [VectorType(BinaryFeatures)]
        public float[] Features { get; set; } = [];

        public float Label { get; set; }
    }

    private static float[] Pad(float[] x)
    {
        var padded = new float[BinaryFeatures];
        x.CopyTo(padded, 0);
        return padded;
    }

    private static NeuralNetworkTransformer Continue(NeuralNetworkTransformer model, IDataView data, ContinueTrainingOptions options) =>
        new MLContext(seed: 17).Compression().ContinueTraining(model, options).Fit(data);

    private double Auc(ITransformer model, IDataView test) => f.Ml.BinaryClassification.Evaluate(model.Transform(test)).AreaUnderRocCurve;

    private double RSquared(ITransformer model, IDataView test) => f.Ml.Regression.Evaluate(model.Transform(test)).RSquared;

    private static float[] Scores(ITransformer model, IDataView test) => model.Transform(test).GetColumn<float>("Score").ToArray();

    private static void AssertSavedZipScoresTheSame(NeuralNetworkTransformer model, IDataView test, bool binary)
    {
        var scored = model.Transform(test);
        var reloaded = TaskHeadsTests.SaveAndLoad(model, test.Schema).Transform(test);
        Assert.Equal(scored.GetColumn<float>("Score").ToArray(), reloaded.GetColumn<float>("Score").ToArray());
        if (binary)
            Assert.Equal(scored.GetColumn<bool>("PredictedLabel").ToArray(), reloaded.GetColumn<bool>("PredictedLabel").ToArray());
    }
}
