using Xunit;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Memory;
using MLNet.Compression.Networks;
using TorchSharp;
using Xunit.Abstractions;
using MLNet.Compression.Training;

namespace MLNet.Compression.Tests.Training;

public sealed class TrainerBehaviourTests
{
    private readonly ITestOutputHelper output;

    public TrainerBehaviourTests(ITestOutputHelper output) => this.output = output;

    private static IDataView Subset(MLContext ml, int rows) => ml.Data.TakeRows(TestMnist.LoadTrain(ml), rows);

    private static NeuralNetworkOptions Small(int epochs = 1) => new()
    {
        Architecture = NetworkArchitecture.Mlp(64),
        Epochs = epochs,
        BatchSize = 64,
        Device = TrainingDevice.Cpu,
    };

    [Fact]
    public void SameSeedGivesIdenticalPredictionsAndAnotherSeedDoesNot()
    {
        (float[][], uint[]) Run(int seed)
        {
            var ml = new MLContext(seed: seed);
            using var model = ml.Compression().NeuralNetwork(Small()).Fit(Subset(ml, 3000));
            return Scoring.Read(model.Transform(ml.Data.TakeRows(TestMnist.LoadTest(ml), 300)));
        }

        var a = Run(7);
        var b = Run(7);
        Scoring.AssertIdentical(a, b);
        var c = Run(8);
        Assert.False(a.Item1.Zip(c.Item1).All(p => p.First.AsSpan().SequenceEqual(p.Second)), "A different seed gave identical scores.");
    }

    [Fact]
    public void ComposesWithBuiltInTransformsInAnEstimatorChain()
    {
        var ml = new MLContext(seed: 1);
        var train = Subset(ml, 5000);
        // The label reaches the trainer through ML.NET's own transforms: key -> digit text -> a new key column.
        var pipeline = ml.Transforms.Conversion.MapKeyToValue("Digit", "Label")
            .Append(ml.Transforms.Conversion.MapValueToKey("Target", "Digit"))
            .Append(ml.Transforms.NormalizeMinMax("Pixels", "Features"))
            .Append(ml.Compression().NeuralNetwork(new NeuralNetworkOptions
            {
                Architecture = NetworkArchitecture.Mlp(64), Epochs = 2, BatchSize = 64, Device = TrainingDevice.Cpu,
                LabelColumnName = "Target", FeatureColumnName = "Pixels",
            }));
        // SchemaShape.Create is internal to ML.NET; tests reach it by reflection to check GetOutputSchema.
        var create = typeof(SchemaShape).GetMethod("Create", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static, [typeof(DataViewSchema)])!;
        var shape = pipeline.GetOutputSchema((SchemaShape)create.Invoke(null, [train.Schema])!);
        Assert.Contains(shape, c => c.Name == "Score" && c.Kind == SchemaShape.Column.VectorKind.Vector);
        Assert.Contains(shape, c => c.Name == "PredictedLabel" && c.IsKey);
        var model = pipeline.Fit(train);
        var scored = model.Transform(ml.Data.TakeRows(TestMnist.LoadTest(ml), 2000));
        var metrics = ml.MulticlassClassification.Evaluate(scored, labelColumnName: "Target");
        output.WriteLine($"accuracy {metrics.MicroAccuracy:F4}");
        Assert.True(metrics.MicroAccuracy > 0.85, $"accuracy {metrics.MicroAccuracy}");
        // PredictedLabel carries the key values of the label the trainer saw (digit text in order of appearance).
        VBuffer<ReadOnlyMemory<char>> predictedKeys = default, targetKeys = default;
        scored.Schema["PredictedLabel"].GetKeyValues(ref predictedKeys);
        scored.Schema["Target"].GetKeyValues(ref targetKeys);
        Assert.Equal(targetKeys.DenseValues().Select(k => k.ToString()), predictedKeys.DenseValues().Select(k => k.ToString()));
        var mapped = ml.Transforms.Conversion.MapKeyToValue("PredictedDigit", "PredictedLabel").Fit(scored).Transform(scored);
        var pairs = ml.Data.CreateEnumerable<DigitPair>(mapped, false).ToArray();
        Assert.True(pairs.Count(p => p.PredictedDigit == p.Digit) > 0.85 * pairs.Length);
    }

    [Fact]
    public void RejectsBadInputWithMessagesThatSayWhatToDo()
    {
        var ml = new MLContext(seed: 1);
        var data = Subset(ml, 200);
        var floatLabel = ml.Transforms.Conversion.MapKeyToValue("Digit", "Label")
            .Append(ml.Transforms.Conversion.ConvertType("Label", "Digit", DataKind.Single)).Fit(data).Transform(data);
        var e1 = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Compression().NeuralNetwork(Small()).Fit(floatLabel));
        Assert.Contains("MapValueToKey", e1.Message);
        Assert.Contains("'Label'", e1.Message);

        var wrongSize = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp([16], 100), Device = TrainingDevice.Cpu, Epochs = 1,
        }).Fit(data));
        Assert.Contains("784", wrongSize.Message);
        Assert.Contains("100", wrongSize.Message);

        var missing = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            FeatureColumnName = "Pixels", Device = TrainingDevice.Cpu, Epochs = 1,
        }).Fit(data));
        Assert.Contains("'Pixels'", missing.Message);

        var badBatch = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Compression().NeuralNetwork(new NeuralNetworkOptions { BatchSize = 0 }));
        Assert.Equal("BatchSize", badBatch.ParamName);
        var badLr = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Compression().NeuralNetwork(new NeuralNetworkOptions { LearningRate = -1 }));
        Assert.Equal("LearningRate", badLr.ParamName);
        var patience = Assert.Throws<ArgumentException>(() => ml.Compression().NeuralNetwork(new NeuralNetworkOptions { EarlyStoppingPatience = 2 }));
        Assert.Contains("ValidationFraction", patience.Message);
        Assert.Throws<ArgumentException>(() => NetworkArchitecture.LeNet5(1, 4, 4).Layers.Count.ToString()
            + NetworkModel.Create(NetworkArchitecture.LeNet5(1, 4, 4), 10));
    }

    [Fact]
    public void CudaDemandedWithoutCudaIsAnErrorUnlessFallbackIsAllowed()
    {
        Assert.False(torch.cuda.is_available());
        var ml = new MLContext(seed: 1);
        var data = Subset(ml, 500);
        var options = Small();
        options.Device = TrainingDevice.Cuda(0);
        var e = Assert.Throws<InvalidOperationException>(() => ml.Compression().NeuralNetwork(options).Fit(data));
        Assert.Contains("FallbackToCpu", e.Message);
        Assert.Contains("TorchSharp-cuda", e.Message);

        var fallback = new MLContext(seed: 1) { FallbackToCpu = true };
        using var model = fallback.Compression().NeuralNetwork(options).Fit(Subset(fallback, 500));
        Assert.Equal("cpu", model.Memory.Device);
    }

    [Fact]
    public void NoTensorsOrNativeMemoryLeakAcrossBatchesAndEpochs()
    {
        var ml = new MLContext(seed: 1);
        var live = new List<long>();
        var rss = new List<long>();
        var options = Small(epochs: 8);
        options.BatchSize = 32; // 188 steps per epoch, 1,500 in all
        options.Progress = new SyncProgress<TrainingProgress>(p =>
        {
            if (!p.EndOfEpoch)
                return;
            live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount);
            GC.Collect();
            GC.WaitForPendingFinalizers();
            rss.Add(PeakMemory.CurrentBytes());
        });
        using var model = ml.Compression().NeuralNetwork(options).Fit(Subset(ml, 6000));
        output.WriteLine("live tensors per epoch: " + string.Join(", ", live));
        output.WriteLine("RSS MB per epoch: " + string.Join(", ", rss.Select(r => (r >> 20).ToString())));
        Assert.Equal(8, live.Count);
        Assert.All(live.Skip(1), n => Assert.Equal(live[1], n));
        Assert.True(rss[^1] - rss[1] < 24L << 20, $"RSS grew by {(rss[^1] - rss[1]) >> 20} MB between epoch 2 and 8.");
    }

    [Fact]
    public void BFloat16MixedPrecisionTrainsAsWellAsFloat32AndHalvesActivationMemory()
    {
        (double Accuracy, NeuralNetworkTransformer Model) Train(TrainingPrecision precision)
        {
            var ml = new MLContext(seed: 1);
            var options = Small(epochs: 2);
            options.Precision = precision;
            var model = ml.Compression().NeuralNetwork(options).Fit(Subset(ml, 4000));
            var metrics = ml.MulticlassClassification.Evaluate(model.Transform(ml.Data.TakeRows(TestMnist.LoadTest(ml), 2000)));
            return (metrics.MicroAccuracy, model);
        }

        var (bf16Accuracy, model) = Train(TrainingPrecision.BFloat16);
        var (fp32Accuracy, reference) = Train(TrainingPrecision.Float32);
        using var disposeModel = model;
        using var disposeReference = reference;
        output.WriteLine($"accuracy bf16 {bf16Accuracy:F4}, float32 {fp32Accuracy:F4}");
        Assert.True(Math.Abs(bf16Accuracy - fp32Accuracy) < 0.03, $"bfloat16 training reached {bf16Accuracy:F4}, float32 {fp32Accuracy:F4}.");
        Assert.True(bf16Accuracy > 0.8);
        Assert.Equal(reference.Memory.ActivationBytesPerBatch / 2, model.Memory.ActivationBytesPerBatch);
        Assert.Equal(model.Memory.Parameters * 2, model.Memory.LowPrecisionWeightBytes);
        Assert.Equal(TrainingPrecision.BFloat16, model.Memory.Precision);
    }

    [Fact]
    public void ValidationSplitIsStableAndEarlyStoppingKeepsTheBestEpoch()
    {
        var ml = new MLContext(seed: 1);
        var options = Small(epochs: 30);
        options.ValidationFraction = 0.2;
        options.EarlyStoppingPatience = 2;
        options.LearningRate = 0.01; // large enough to overfit 1,000 rows quickly
        using var model = ml.Compression().NeuralNetwork(options).Fit(Subset(ml, 1000));
        var history = model.TrainingHistory;
        output.WriteLine(string.Join("\n", history));
        Assert.All(history, e => Assert.NotNull(e.ValidationAccuracy));
        Assert.All(history, e => Assert.Equal(history[0].Rows, e.Rows));
        Assert.InRange(history[0].Rows, 740, 860);
        Assert.True(history.Count < 30, "Early stopping never triggered.");
        var best = history.Max(e => e.ValidationAccuracy!.Value);
        Assert.Equal(best, history[^3].ValidationAccuracy!.Value);
    }

    [Fact]
    public void ReportsProgressAndLogsThroughTheContext()
    {
        var ml = new MLContext(seed: 1);
        var messages = new List<string>();
        ml.Log += (_, e) =>
        {
            lock (messages)
                messages.Add(e.Message);
        };
        var reports = new List<TrainingProgress>();
        var options = Small(epochs: 2);
        options.ProgressInterval = 10;
        options.Progress = new SyncProgress<TrainingProgress>(reports.Add);
        using var model = ml.Compression().NeuralNetwork(options).Fit(Subset(ml, 1280));
        Assert.Equal(2, reports.Count(r => r.EndOfEpoch));
        Assert.Equal(4, reports.Count(r => !r.EndOfEpoch)); // 20 steps per epoch, a report every 10
        Assert.All(reports, r => Assert.True(r.RowsPerSecond > 0 && r.Loss > 0));
        Assert.Contains(messages, m => m.Contains("Epoch 2/2", StringComparison.Ordinal));
    }

    [Fact]
    public void DeviceSelectionFollowsRequestContextAndAvailability()
    {
        var none = new FakeCuda(false, 0);
        var two = new FakeCuda(true, 2);
        Assert.Equal("cpu", DeviceSelector.Resolve(TrainingDevice.Auto, none, null, false).ToString());
        Assert.Equal("cuda:0", DeviceSelector.Resolve(TrainingDevice.Auto, two, null, false).ToString());
        Assert.Equal("cuda:1", DeviceSelector.Resolve(TrainingDevice.Auto, two, 1, false).ToString());
        var outOfRange = DeviceSelector.Resolve(TrainingDevice.Auto, two, 5, false);
        Assert.Equal("cuda:0", outOfRange.ToString());
        Assert.NotNull(outOfRange.Warning);
        Assert.Equal("cpu", DeviceSelector.Resolve(TrainingDevice.Cpu, two, 1, false).ToString());
        Assert.Equal("cuda:1", DeviceSelector.Resolve(TrainingDevice.Cuda(1), two, null, false).ToString());
        var missing = Assert.Throws<InvalidOperationException>(() => DeviceSelector.Resolve(TrainingDevice.Cuda(2), two, null, false));
        Assert.Contains("device 2", missing.Message);
        var fallback = DeviceSelector.Resolve(TrainingDevice.Cuda(0), none, null, true);
        Assert.Equal("cpu", fallback.ToString());
        Assert.Contains("FallbackToCpu", fallback.Warning);
        Assert.Equal(TrainingDevice.Cuda(3), TrainingDevice.Parse("cuda:3"));
        Assert.Equal(TrainingDevice.Cpu, TrainingDevice.Parse("CPU"));
        Assert.Throws<FormatException>(() => TrainingDevice.Parse("tpu"));
    }

    [Fact]
    public void LossScalerBacksOffOnOverflowAndGrowsAfterGoodSteps()
    {
        var s = new LossScaler(initialScale: 1024, growthInterval: 3);
        s.Update(finite: false);
        Assert.Equal(512, s.Scale);
        Assert.Equal(1, s.SkippedSteps);
        s.Update(true);
        s.Update(true);
        Assert.Equal(512, s.Scale);
        s.Update(true);
        Assert.Equal(1024, s.Scale);
    }

    private sealed record FakeCuda(bool IsAvailable, int DeviceCount) : ICudaInfo;

    private sealed class DigitPair
    {
        public string Digit { get; set; } = string.Empty;

        public string PredictedDigit { get; set; } = string.Empty;
    }

    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
