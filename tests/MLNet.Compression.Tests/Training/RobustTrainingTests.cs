using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Networks;
using MLNet.Compression.Training;
using Xunit;
using static TorchSharp.torch;

namespace MLNet.Compression.Tests.Training;

/// <summary>
/// Never silently wrong: rows with NaN or infinite features are skipped and counted, a diverging run stops naming the epoch and
/// step, no model with non-finite weights is returned, cancellation stops within one batch, and bad settings or empty data fail
/// with messages that say what to do.
/// </summary>
public sealed class RobustTrainingTests
{
    private static NeuralNetworkOptions Options(int epochs = 3) => new()
    {
        Architecture = NetworkArchitecture.Mlp(32), Epochs = epochs, BatchSize = 128, LearningRate = 3e-3, Device = TrainingDevice.Cpu,
    };

    private static (IDataView Train, IDataView Test, ITransformer Keys) Gaussian(MLContext ml, int rows, Action<List<GaussianClasses.Row>>? edit = null)
    {
        var trainRows = GaussianClasses.Generate(rows, 4, problemSeed: 11, rowSeed: 12, spread: 3);
        edit?.Invoke(trainRows);
        var raw = ml.Data.LoadFromEnumerable(trainRows);
        var keys = ml.Transforms.Conversion.MapValueToKey("Label").Fit(raw);
        var test = keys.Transform(ml.Data.LoadFromEnumerable(GaussianClasses.Generate(1000, 4, problemSeed: 11, rowSeed: 13, spread: 3)));
        return (keys.Transform(raw), test, keys);
    }

    private static List<string> CaptureLog(MLContext ml)
    {
        var messages = new List<string>();
        ml.Log += (_, e) =>
        {
            lock (messages)
                messages.Add(e.Message);
        };
        return messages;
    }

    [Fact]
    public void OneInfiniteFeatureInOneRowIsSkippedCountedAndReported()
    {
        var ml = new MLContext(seed: 1);
        var log = CaptureLog(ml);
        var (train, test, _) = Gaussian(ml, 3000, rows => rows[1234].Features[3] = float.PositiveInfinity);
        using var model = ml.Compression().NeuralNetwork(Options()).Fit(train);

        Assert.All(model.TrainingHistory, e => Assert.Equal(1, e.SkippedRows));
        Assert.All(model.TrainingHistory, e => Assert.Equal(2999, e.Rows));
        Assert.Contains(log, m => m.Contains("Skipped 1 row(s)", StringComparison.Ordinal) && m.Contains("NaN or infinite", StringComparison.Ordinal));
        Assert.True(model.Network.ParameterizedLayers.All(l => l.Weight.All(float.IsFinite) && l.Bias.All(float.IsFinite)));
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
        Assert.True(metrics.MicroAccuracy > 0.9, $"Accuracy {metrics.MicroAccuracy:P2} after skipping one row.");
    }

    [Fact]
    public void AllRowsNonFiniteIsAClearError()
    {
        var ml = new MLContext(seed: 1);
        var (train, _, _) = Gaussian(ml, 300, rows => rows.ForEach(r => r.Features[0] = float.NaN));
        var e = Assert.Throws<ArgumentException>(() => ml.Compression().NeuralNetwork(Options()).Fit(train));
        Assert.Contains("None of the 300 training rows can be used", e.Message);
        Assert.Contains("300 have a NaN or infinite value in 'Features'", e.Message);
        Assert.Contains("ReplaceMissingValues", e.Message);
    }

    [Fact]
    public void ADivergingRunStopsNamingTheEpochAndStepAndWhatToTry()
    {
        var ml = new MLContext(seed: 1);
        var (train, _, _) = Gaussian(ml, 2000);
        var options = Options();
        options.Optimizer = OptimizerKind.Sgd;
        options.LearningRate = 1e6;
        var e = Assert.Throws<InvalidOperationException>(() => ml.Compression().NeuralNetwork(options).Fit(train));
        Assert.Matches(@"at epoch \d+, step \d+ of the epoch", e.Message);
        Assert.Contains("lower learning rate", e.Message);
    }

    [Fact]
    public void APoisonedLossStopsAtTheStepWhereItHappened()
    {
        var ml = new MLContext(seed: 1);
        var (train, _, _) = Gaussian(ml, 1000);
        var model = NetworkModel.Create(NetworkArchitecture.Mlp([8], GaussianClasses.Dimensions), 4);
        NeuralNetworkTrainer.InitializeWeights(model, 1);
        var before = model.Clone();
        int calls = 0;
        var hooks = new TrainingHooks
        {
            // 1,000 rows at batch 128 are 8 steps per epoch: the 11th step is epoch 2, step 3.
            ExtraLoss = (logits, _) => ++calls == 11 ? full(1, float.NaN) : zeros(1),
        };
        var e = Assert.Throws<InvalidOperationException>(() => new TrainingSession(ml, Options()).Run(train, model, 1, null, hooks));
        Assert.Contains("at epoch 2, step 3 of the epoch (step 11 overall)", e.Message);
        // The caller's model keeps its weights: nothing half-trained is stored into it.
        Assert.Equal(before.Layers.OfType<ParameterizedLayer>().SelectMany(l => l.Weight), model.Layers.OfType<ParameterizedLayer>().SelectMany(l => l.Weight));
    }

    [Fact]
    public void AModelWithNonFiniteWeightsIsNeverReturned()
    {
        var model = NetworkModel.Create(NetworkArchitecture.Mlp([4], 3), 2);
        TrainingSession.EnsureFinite(model, "train");
        ((ParameterizedLayer)model.Layers[^1]).Bias[1] = float.NegativeInfinity;
        var e = Assert.Throws<InvalidOperationException>(() => TrainingSession.EnsureFinite(model, "train"));
        Assert.Contains("layer 'output'", e.Message);
        Assert.Contains("1 NaN or infinite weight", e.Message);
    }

    [Fact]
    public void CancellationStopsWithinOneBatch()
    {
        var ml = new MLContext(seed: 1);
        var (train, _, _) = Gaussian(ml, 3000);
        using var cts = new CancellationTokenSource();
        long lastStep = 0;
        var options = Options(epochs: 5);
        options.ProgressInterval = 1;
        options.CancellationToken = cts.Token;
        options.Progress = new SyncProgress<TrainingProgress>(p =>
        {
            lastStep = Math.Max(lastStep, p.Step);
            if (p.Step == 30)
                cts.Cancel();
        });
        var trainer = ml.Compression().NeuralNetwork(options);
        Assert.ThrowsAny<OperationCanceledException>(() => trainer.Fit(train));
        Assert.Equal(30, lastStep); // not one more step after the request
        // A token already cancelled stops before any work; the trainer's own options do not keep the token.
        Assert.ThrowsAny<OperationCanceledException>(() => trainer.Fit(train));
        options.CancellationToken = default;
        options.Progress = null;
        options.Epochs = 1;
        using var model = ml.Compression().NeuralNetwork(options).Fit(train);
        Assert.False(model.TrainingOptions.CancellationToken.CanBeCanceled);
    }

    [Fact]
    public void ACancelledDistillationLeavesNoTeacherCacheBehind()
    {
        var ml = new MLContext(seed: 1);
        var (train, _, _) = Gaussian(ml, 2000);
        using var teacher = ml.Compression().NeuralNetwork(Options(epochs: 1)).Fit(train);
        var cache = Directory.CreateTempSubdirectory("mlnet-cancel-");
        try
        {
            using var cts = new CancellationTokenSource();
            var student = Options(epochs: 3);
            student.Architecture = NetworkArchitecture.Mlp(8);
            student.ProgressInterval = 1;
            student.CancellationToken = cts.Token;
            bool sawCache = false;
            student.Progress = new SyncProgress<TrainingProgress>(p =>
            {
                sawCache |= cache.EnumerateFiles("*", SearchOption.AllDirectories).Any();
                if (p.Step == 5)
                    cts.Cancel();
            });
            var distill = ml.Compression().Distill(teacher, student,
                new MLNet.Compression.Distillation.DistillationOptions { CacheTeacherOutputs = true, CacheDirectory = cache.FullName });
            Assert.ThrowsAny<OperationCanceledException>(() => distill.Fit(train));
            Assert.True(sawCache, "The teacher cache was never written, so this test proves nothing.");
            Assert.Empty(cache.EnumerateFileSystemInfos("*", SearchOption.AllDirectories));
        }
        finally
        {
            cache.Delete(recursive: true);
        }
    }

    private sealed class KeyedRow
    {
        [KeyType(5)]
        public uint Label { get; set; }

        [VectorType(GaussianClasses.Dimensions)]
        public float[] Features { get; set; } = [];
    }

    [Fact]
    public void CancellationAlsoStopsTheShuffleCacheWhileItFills()
    {
        var ml = new MLContext(seed: 1);
        using var cts = new CancellationTokenSource();
        int produced = 0;
        IEnumerable<KeyedRow> Rows()
        {
            for (int i = 0; i < 100_000; i++)
            {
                if (++produced == 3000)
                    cts.Cancel();
                yield return new KeyedRow { Label = (uint)(i % 4) + 1, Features = new float[GaussianClasses.Dimensions] };
            }
        }
        var options = Options();
        options.CancellationToken = cts.Token;
        // LoadFromEnumerable cannot shuffle: the first epoch starts by caching the rows, and the token stops that pass.
        Assert.ThrowsAny<OperationCanceledException>(() => ml.Compression().NeuralNetwork(options).Fit(ml.Data.LoadFromEnumerable(Rows())));
        Assert.InRange(produced, 3000, 3000 + 1100);
    }

    [Fact]
    public void ZeroEpochsAndEmptyDataAreRejectedSayingWhy()
    {
        var ml = new MLContext(seed: 1);
        var options = Options();
        options.Epochs = 0;
        var epochs = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Compression().NeuralNetwork(options));
        Assert.Equal("Epochs", epochs.ParamName);

        var empty = ml.Data.LoadFromEnumerable(new List<GaussianClasses.Row>());
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(empty).Transform(empty);
        var e = Assert.Throws<ArgumentException>(() => ml.Compression().NeuralNetwork(Options()).Fit(keyed));
        Assert.Contains("no rows", e.Message);
        Assert.DoesNotContain("classes", e.Message);
        // Filtered to nothing: the row count is unknown until read.
        var (_, _, keys) = Gaussian(ml, 200);
        var raw = ml.Data.LoadFromEnumerable(GaussianClasses.Generate(200, 4, problemSeed: 11, rowSeed: 12, spread: 3));
        var none = keys.Transform(ml.Data.FilterRowsByColumn(raw, "Label", lowerBound: 100, upperBound: 200));
        Assert.Contains("no rows", Assert.Throws<ArgumentException>(() => ml.Compression().NeuralNetwork(Options()).Fit(none)).Message);
    }

    [Fact]
    public void TheThreadSettingHoldsWhileAnyTrainingRunsAndIsRestoredAfterTheLast()
    {
        MLNet.Compression.Native.TorchNative.EnsureLoaded();
        int original = get_num_threads();
        try
        {
            set_num_threads(3);
            var first = TorchThreads.Use(1);
            Assert.Equal(1, get_num_threads());
            var second = TorchThreads.Use(2); // overlapping trainings share one process-wide value: the latest
            Assert.Equal(2, get_num_threads());
            first.Dispose();
            Assert.Equal(2, get_num_threads()); // the first to finish does not pull the value from under the second
            first.Dispose();                    // disposing twice counts once
            second.Dispose();
            Assert.Equal(3, get_num_threads());

            var ml = new MLContext(seed: 1);
            var (train, _, _) = Gaussian(ml, 300);
            int during = 0;
            var options = Options(epochs: 1);
            options.Threads = 2;
            options.ProgressInterval = 1;
            options.Progress = new SyncProgress<TrainingProgress>(_ => during = get_num_threads());
            using (ml.Compression().NeuralNetwork(options).Fit(train))
                Assert.Equal(2, during);
            Assert.Equal(3, get_num_threads());
            Assert.Equal("Threads", Assert.Throws<ArgumentOutOfRangeException>(() => ml.Compression().NeuralNetwork(new NeuralNetworkOptions { Threads = 0 })).ParamName);
        }
        finally
        {
            set_num_threads(original);
        }
    }

    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
