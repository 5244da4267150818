using Microsoft.ML;
using MLNet.Compression.Networks;
using MLNet.Compression.Pruning;
using MLNet.Compression.Quantization;
using MLNet.Compression.Tests.Training;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Quantization;

/// <summary>A small MLP (784-128-10) trained once for 2 epochs on 6,000 MNIST rows, shared by the quantization tests.</summary>
public sealed class QuantizableMlpFixture : IDisposable
{
    public QuantizableMlpFixture()
    {
        Context = new MLContext(seed: 1);
        Train = Context.Data.TakeRows(TestMnist.LoadTrain(Context), 6000);
        Test = Context.Data.TakeRows(TestMnist.LoadTest(Context), 2000);
        Model = Context.Compression().NeuralNetwork(Options()).Fit(Train);
        BaseAccuracy = Context.MulticlassClassification.Evaluate(Model.Transform(Test)).MicroAccuracy;
    }

    public static NeuralNetworkOptions Options(int epochs = 2) => new()
    {
        Architecture = NetworkArchitecture.Mlp(128),
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

public sealed class QuantizationEstimatorTests : IClassFixture<QuantizableMlpFixture>
{
    private readonly QuantizableMlpFixture fixture;
    private readonly ITestOutputHelper output;

    public QuantizationEstimatorTests(QuantizableMlpFixture fixture, ITestOutputHelper output)
    {
        this.fixture = fixture;
        this.output = output;
    }

    private MLContext Ml => fixture.Context;

    private double Accuracy(ITransformer model) => Ml.MulticlassClassification.Evaluate(model.Transform(fixture.Test)).MicroAccuracy;

    [Theory]
    [InlineData(QuantizationMode.Float16, 0.005, 1.9)]
    [InlineData(QuantizationMode.Int8Dynamic, 0.01, 3.5)]
    [InlineData(QuantizationMode.Int8Static, 0.01, 3.5)]
    [InlineData(QuantizationMode.Int4WeightOnly, 0.02, 5.0)]
    public void EachModeKeepsAccuracyShrinksTheWeightsAndScoresTheSameOnceSaved(QuantizationMode mode, double maxLoss, double minRatio)
    {
        var before = fixture.Model.Network.ParameterizedLayers.Select(l => (float[])l.Weight.Clone()).ToArray();
        var estimator = Ml.Compression().Quantize(fixture.Model, new QuantizationOptions { Mode = mode });
        using var quantized = estimator.Fit(fixture.Train);
        var report = estimator.Report!;
        output.WriteLine(report.ToString());
        Assert.Equal(mode, report.Mode);
        Assert.Equal(new[] { "fc1", "output" }, report.Layers.Select(l => l.Name));

        double accuracy = Accuracy(quantized);
        output.WriteLine($"float accuracy {fixture.BaseAccuracy:F4}, {mode} {accuracy:F4}; ONNX {fixture.Model.GetOnnxModel().Length:N0} -> {quantized.GetOnnxModel().Length:N0} bytes");
        Assert.True(accuracy >= fixture.BaseAccuracy - maxLoss, $"{mode}: accuracy {accuracy:F4} vs float {fixture.BaseAccuracy:F4}");

        // Smaller weights, in the report, the memory report and the artifact.
        Assert.Equal(fixture.Model.ParameterCount * sizeof(float), report.FloatBytes);
        Assert.True(report.CompressionRatio >= minRatio, $"{mode}: weights only {report.CompressionRatio:F2}x smaller");
        Assert.Equal(report.ResidentBytes, quantized.Memory.ResidentWeightBytes);
        if (mode == QuantizationMode.Int4WeightOnly) // MatMulNBits pads the input dimension to whole blocks
            Assert.InRange(report.ResidentBytes, report.QuantizedBytes, report.QuantizedBytes * 3 / 2);
        else if (mode != QuantizationMode.Float16) // float16 weights are cast to float32 when ONNX Runtime loads the model
            Assert.Equal(report.QuantizedBytes, report.ResidentBytes);
        Assert.Equal(quantized.GetOnnxModel().LongLength, report.OnnxBytes);
        Assert.True(quantized.GetOnnxModel().Length * (minRatio * 0.8) < fixture.Model.GetOnnxModel().Length,
            $"{mode}: the ONNX model is {quantized.GetOnnxModel().Length:N0} bytes, the float one {fixture.Model.GetOnnxModel().Length:N0}");
        Assert.Equal(mode == QuantizationMode.Int8Static, report.ActivationRanges.Count == 2);
        Assert.Equal(mode == QuantizationMode.Int8Static ? 1000 : 0, report.CalibrationRows);

        // The saved zip (ML.NET's own OnnxTransformer, one row at a time) scores as the in-process model does.
        var inProcess = Scoring.Read(quantized.Transform(fixture.Test));
        using var dir = TestMnist.NewTempDirectory();
        Ml.Model.Save(quantized, fixture.Train.Schema, dir["quantized.zip"]);
        var loaded = new MLContext(seed: 5).Model.Load(dir["quantized.zip"], out _);
        var reloaded = Scoring.Read(loaded.Transform(fixture.Test));
        int agree = inProcess.Labels.Zip(reloaded.Labels).Count(p => p.First == p.Second);
        double maxDiff = inProcess.Scores.Zip(reloaded.Scores).Max(p => p.First.Zip(p.Second).Max(q => Math.Abs(q.First - q.Second)));
        output.WriteLine($"{mode}: batched in-process vs saved zip (one row per run): {agree} of {inProcess.Labels.Length} labels agree, max score difference {maxDiff:G3}");
        switch (mode)
        {
            case QuantizationMode.Int8Dynamic:
                // Activations are quantized per row, so a row scores the same whether it runs alone or in a batch of 1,024.
                Scoring.AssertIdentical(inProcess, reloaded);
                break;
            case QuantizationMode.Int4WeightOnly:
                // ONNX Runtime runs its 4-bit MatMul (MatMulNBits) through a different kernel for one row than for many: probabilities
                // differ by about 4e-4 at most here, and every label agrees.
                Assert.Equal(inProcess.Labels, reloaded.Labels);
                Assert.True(maxDiff <= 2e-3, $"max score difference {maxDiff}");
                break;
            default:
                Scoring.AssertIdentical(inProcess, reloaded);
                break;
        }

        // The input model is untouched.
        var after = fixture.Model.Network.ParameterizedLayers.Select(l => l.Weight).ToArray();
        for (int i = 0; i < before.Length; i++)
            Assert.True(before[i].AsSpan().SequenceEqual(after[i]));
    }

    [Fact]
    public void CalibrationMethodsAllGiveAccurateStaticModels()
    {
        foreach (var method in new[] { CalibrationMethod.Percentile, CalibrationMethod.Entropy })
        {
            var estimator = Ml.Compression().Quantize(fixture.Model, new QuantizationOptions
            {
                Mode = QuantizationMode.Int8Static,
                Calibration = method,
                CalibrationRows = 500,
            });
            using var quantized = estimator.Fit(fixture.Train);
            var report = estimator.Report!;
            output.WriteLine(report.ToString());
            Assert.Equal(method, report.Calibration);
            Assert.Equal(500, report.CalibrationRows);
            foreach (var layer in report.Layers)
                Assert.True(layer.InputMin >= layer.ObservedInputMin!.Value - 1e-6f && layer.InputMax <= layer.ObservedInputMax!.Value + 1e-6f);
            double accuracy = Accuracy(quantized);
            output.WriteLine($"{method}: accuracy {accuracy:F4} (float {fixture.BaseAccuracy:F4})");
            Assert.True(accuracy >= fixture.BaseAccuracy - 0.01, $"{method}: accuracy {accuracy:F4} vs float {fixture.BaseAccuracy:F4}");
        }
    }

    [Fact]
    public void QuantizationAwareTrainingIsAtLeastAsAccurateAsPostTrainingQuantization()
    {
        using var ptq = Ml.Compression().Quantize(fixture.Model, new QuantizationOptions { Mode = QuantizationMode.Int8Static }).Fit(fixture.Train);
        var estimator = Ml.Compression().Quantize(fixture.Model, new QuantizationOptions
        {
            Mode = QuantizationMode.Int8Static,
            QuantizationAwareTraining = true,
            QatEpochs = 2,
        });
        using var qat = estimator.Fit(fixture.Train);
        output.WriteLine(estimator.Report!.ToString());
        Assert.True(estimator.Report!.QuantizationAwareTraining);
        Assert.Equal(2, qat.TrainingHistory.Count);
        Assert.Equal(2, estimator.Report.FineTuningEpochs); // set epochs win over the data-size default
        Assert.Equal(fixture.Model.TrainingOptions.LearningRate / 10, estimator.Report.FineTuningLearningRate); // QAT's default: a tenth
        int batch = fixture.Model.TrainingOptions.BatchSize;
        Assert.Equal(qat.TrainingHistory.Sum(e => (e.Rows + batch - 1) / batch), estimator.Report.FineTuningSteps);
        Assert.Contains("2 epoch(s)", estimator.Report.ToString(), StringComparison.Ordinal);
        double ptqAccuracy = Accuracy(ptq), qatAccuracy = Accuracy(qat);
        output.WriteLine($"float {fixture.BaseAccuracy:F4}, post-training int8 {ptqAccuracy:F4}, QAT int8 {qatAccuracy:F4}");
        Assert.True(qatAccuracy >= ptqAccuracy - 0.002, $"QAT {qatAccuracy:F4} vs post-training {ptqAccuracy:F4}");
        // The float master weights were trained (not just rounded copies of the originals).
        var w0 = fixture.Model.Network.ParameterizedLayers.First().Weight;
        var w1 = qat.Network.ParameterizedLayers.First().Weight;
        Assert.True(Enumerable.Range(0, w0.Length).Count(i => w0[i] != w1[i]) > w0.Length / 2);

        // Same seed, same data: the same QAT model again.
        using var again = Ml.Compression().Quantize(fixture.Model, estimator.Options).Fit(fixture.Train);
        Assert.True(again.Network.ParameterizedLayers.First().Weight.AsSpan().SequenceEqual(w1));
    }

    [Fact]
    public void QuantizingAPrunedModelKeepsItsZeros()
    {
        using var pruned = Ml.Compression().Prune(fixture.Model, new PruningOptions
        {
            Schedule = PruningSchedule.ConstantSparsity(0.8, frequency: 1_000_000),
            Epochs = 1,
        }).Fit(fixture.Train);
        var zeros = pruned.Network.ParameterizedLayers.Select(l => l.Weight.Count(w => w == 0f)).ToArray();
        Assert.True(zeros.Sum() > 0.75 * pruned.Network.ParameterizedLayers.Sum(l => l.Weight.Length));
        double prunedAccuracy = Accuracy(pruned);

        foreach (var mode in new[] { QuantizationMode.Int8Dynamic, QuantizationMode.Int8Static, QuantizationMode.Int4WeightOnly })
        {
            using var quantized = Ml.Compression().Quantize(pruned, new QuantizationOptions { Mode = mode }).Fit(fixture.Train);
            Assert.Equal(pruned.NonZeroParameterCount, quantized.NonZeroParameterCount);
            double accuracy = Accuracy(quantized);
            output.WriteLine($"pruned {prunedAccuracy:F4}, pruned + {mode} {accuracy:F4}");
            Assert.True(accuracy >= prunedAccuracy - (mode == QuantizationMode.Int4WeightOnly ? 0.02 : 0.01));
            var stored = QuantizedWeights.ZeroCounts(quantized.GetOnnxModel());
            foreach (var (layer, i) in pruned.Network.ParameterizedLayers.Select((l, i) => (l, i)))
                Assert.True(stored[layer.Name] >= zeros[i], $"{mode} {layer.Name}: {stored[layer.Name]} stored zeros, {zeros[i]} pruned weights.");
        }

        // Quantization-aware fine-tuning trains the kept weights and holds the pruned ones at exactly zero.
        using var qat = Ml.Compression().Quantize(pruned, new QuantizationOptions
        {
            Mode = QuantizationMode.Int8Static,
            QuantizationAwareTraining = true,
            QatEpochs = 1,
        }).Fit(fixture.Train);
        var before = pruned.Network.ParameterizedLayers.ToArray();
        var after = qat.Network.ParameterizedLayers.ToArray();
        for (int i = 0; i < before.Length; i++)
        {
            for (int j = 0; j < before[i].Weight.Length; j++)
                if (before[i].Weight[j] == 0f)
                    Assert.Equal(0f, after[i].Weight[j]);
            Assert.True(Enumerable.Range(0, before[i].Weight.Length).Count(j => before[i].Weight[j] != after[i].Weight[j]) > 0.5 * (before[i].Weight.Length - zeros[i]));
        }
        Assert.Equal(pruned.NonZeroParameterCount, qat.NonZeroParameterCount);
    }

    [Fact]
    public void AConvolutionalNetworkQuantizesWithQuantizationAwareTraining()
    {
        var ml = new MLContext(seed: 2);
        var train = ml.Data.TakeRows(TestMnist.LoadTrain(ml), 2000);
        var test = ml.Data.TakeRows(TestMnist.LoadTest(ml), 1000);
        var options = QuantizableMlpFixture.Options(epochs: 1);
        options.Architecture = NetworkArchitecture.LeNet5();
        using var lenet = ml.Compression().NeuralNetwork(options).Fit(train);
        double floatAccuracy = ml.MulticlassClassification.Evaluate(lenet.Transform(test)).MicroAccuracy;
        var estimator = ml.Compression().Quantize(lenet, new QuantizationOptions
        {
            Mode = QuantizationMode.Int8Static,
            QuantizationAwareTraining = true,
            QatEpochs = 1,
            CalibrationRows = 300,
        });
        using var quantized = estimator.Fit(train);
        output.WriteLine(estimator.Report!.ToString());
        Assert.Equal(lenet.Network.ParameterizedLayers.Select(l => l.Name), estimator.Report!.ActivationRanges.Keys);
        double accuracy = ml.MulticlassClassification.Evaluate(quantized.Transform(test)).MicroAccuracy;
        output.WriteLine($"LeNet-5: float {floatAccuracy:F4}, QAT int8 {accuracy:F4}");
        Assert.True(accuracy >= floatAccuracy - 0.02, $"QAT int8 {accuracy:F4} vs float {floatAccuracy:F4}");

        using var dir = TestMnist.NewTempDirectory();
        ml.Model.Save(quantized, train.Schema, dir["lenet-int8.zip"]);
        var loaded = ml.Model.Load(dir["lenet-int8.zip"], out _);
        Scoring.AssertIdentical(Scoring.Read(quantized.Transform(test)), Scoring.Read(loaded.Transform(test)));
    }

    [Fact]
    public void ChainedAfterTheTrainerWithALayerKeptInFloat()
    {
        var estimator = Ml.Compression().NeuralNetwork(QuantizableMlpFixture.Options())
            .Quantize(new QuantizationOptions { Mode = QuantizationMode.Int8Static, KeepFloat = { "output" } });
        using var model = estimator.Fit(fixture.Train);
        var report = estimator.Report!;
        output.WriteLine(report.ToString());
        var fc1 = report.Layers.Single(l => l.Name == "fc1");
        var outputLayer = report.Layers.Single(l => l.Name == "output");
        Assert.True(fc1.QuantizedBytes * 3 < fc1.FloatBytes);
        Assert.Equal(outputLayer.FloatBytes, outputLayer.QuantizedBytes);
        double accuracy = Accuracy(model);
        output.WriteLine($"chained Int8Static (output layer float): accuracy {accuracy:F4}, float {fixture.BaseAccuracy:F4}");
        Assert.True(accuracy >= fixture.BaseAccuracy - 0.01); // same options and seed as the fixture's float model
        var schema = model.GetOutputSchema(fixture.Train.Schema);
        Assert.NotNull(schema.GetColumnOrNull("Score"));
        Assert.NotNull(schema.GetColumnOrNull("PredictedLabel"));
    }

    [Fact]
    public void BadInputThrowsAndNamesWhatIsWrong()
    {
        var model = fixture.Model;
        var block = Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().Quantize(model, new QuantizationOptions { Mode = QuantizationMode.Int4WeightOnly, BlockSize = 7 }));
        Assert.Equal("BlockSize", block.ParamName);
        var chainedBlock = Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().NeuralNetwork(QuantizableMlpFixture.Options()).Quantize(new QuantizationOptions { BlockSize = 7 }));
        Assert.Equal("BlockSize", chainedBlock.ParamName);
        Assert.Equal("CalibrationRows", Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().Quantize(model, new QuantizationOptions { CalibrationRows = 0 })).ParamName);
        Assert.Equal("Percentile", Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().Quantize(model, new QuantizationOptions { Percentile = 0 })).ParamName);
        Assert.Equal("QatEpochs", Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().Quantize(model, new QuantizationOptions { QatEpochs = -1 })).ParamName);
        Assert.Equal("QatLearningRate", Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().Quantize(model, new QuantizationOptions { QatLearningRate = 0 })).ParamName);
        var qatFp16 = Assert.Throws<ArgumentException>(() => Ml.Compression().Quantize(model, new QuantizationOptions { Mode = QuantizationMode.Float16, QuantizationAwareTraining = true }));
        Assert.Equal("QuantizationAwareTraining", qatFp16.ParamName);
        var unknown = Assert.Throws<ArgumentException>(() => Ml.Compression().Quantize(model, new QuantizationOptions { KeepFloat = { "fc9" } }));
        Assert.Equal("options", unknown.ParamName);
        Assert.Contains("'fc9'", unknown.Message);
        Assert.Contains("fc1, output", unknown.Message);
        Assert.Throws<ArgumentNullException>(() => Ml.Compression().Quantize(null!, new QuantizationOptions()));
        Assert.Throws<ArgumentNullException>(() => Ml.Compression().Quantize(model, null!));
        Assert.Throws<ArgumentNullException>(() => Ml.Compression().Quantize(model, new QuantizationOptions()).Fit(null!));

        // An empty calibration view.
        var empty = Assert.Throws<ArgumentException>(() => Ml.Compression().Quantize(model, new QuantizationOptions { Mode = QuantizationMode.Int8Static })
            .Fit(Ml.Data.SkipRows(fixture.Train, 6000)));
        Assert.Equal("data", empty.ParamName);
        Assert.Contains("no rows", empty.Message);

        // A feature column of the wrong size or a missing one, in every mode (even those that read no rows).
        var wide = Ml.Transforms.Concatenate("Features", "Features", "Features").Fit(fixture.Train).Transform(fixture.Train);
        var renamed = Ml.Transforms.CopyColumns("Pixels", "Features").Append(Ml.Transforms.DropColumns("Features")).Fit(fixture.Train).Transform(fixture.Train);
        foreach (var mode in Enum.GetValues<QuantizationMode>())
        {
            var estimator = Ml.Compression().Quantize(model, new QuantizationOptions { Mode = mode });
            var wrongSize = Assert.Throws<ArgumentOutOfRangeException>(() => estimator.Fit(wide));
            Assert.Contains("'Features' has 1568 values", wrongSize.Message);
            var missing = Assert.Throws<ArgumentOutOfRangeException>(() => estimator.Fit(renamed));
            Assert.Contains("no feature column 'Features'", missing.Message);
        }
    }
}
