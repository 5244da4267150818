using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Compression.Clustering;
using MLNet.Compression.Incremental;
using MLNet.Compression.Memory;
using MLNet.Compression.Networks;
using MLNet.Compression.Onnx;
using MLNet.Compression.Onnx.Proto;
using MLNet.Compression.Pruning;
using MLNet.Compression.Quantization;
using MLNet.Compression.Tests.Onnx;
using MLNet.Compression.Tests.Quantization;
using MLNet.Compression.Tests.Training;
using MLNet.Compression.Training;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MLNet.Compression.Tests.Networks;

public class BatchNormLayerTests(ITestOutputHelper output)
{
    private static NetworkArchitecture Mlp() =>
        new("MLP-64-32-bn", [784], [new DenseLayer(64, Activation.None), new BatchNormLayer(Activation.Relu), new DenseLayer(32, Activation.None), new BatchNormLayer(Activation.Relu, momentum: 0.2)]);

    private static NetworkArchitecture LeNetLike() =>
        new("LeNet-bn", [1, 28, 28],
        [
            new Conv2dLayer(6, 5, Activation: Activation.None), new BatchNormLayer(Activation.Relu), new MaxPool2dLayer(2),
            new Conv2dLayer(16, 5, Activation: Activation.None), new BatchNormLayer(Activation.Relu), new MaxPool2dLayer(2),
            new FlattenLayer(), new DenseLayer(64, Activation.None), new BatchNormLayer(Activation.Relu),
        ]);

    private static float[] RunOrt(byte[] onnx, float[][] features)
    {
        using var session = new InferenceSession(onnx);
        var input = new DenseTensor<float>(features.SelectMany(f => f).ToArray(), [features.Length, features[0].Length]);
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("Features", input)]);
        return results.Single(r => r.Name == "Score").AsTensor<float>().ToArray();
    }

    private static int ArgMax(float[] p, int row) => Enumerable.Range(0, 10).MaxBy(c => p[row * 10 + c]);

    /// <summary>A model with random weights and random (non-identity) batch-norm statistics, so folding has something to fold.</summary>
    private static NetworkModel RandomModel(NetworkArchitecture architecture, int seed)
    {
        var model = NetworkModel.Create(architecture, 10);
        NeuralNetworkTrainer.InitializeWeights(model, seed);
        var rand = new Random(seed);
        foreach (var bn in model.Layers.OfType<BatchNormModelLayer>())
        {
            float[] Values(float from, float to) => Enumerable.Range(0, bn.Channels).Select(_ => from + (to - from) * rand.NextSingle()).ToArray();
            bn.State = [Values(0.5f, 2f), Values(-0.5f, 0.5f), Values(-0.3f, 0.3f), Values(0.05f, 1.5f)];
        }
        return model;
    }

    [Fact]
    public void SpecRoundTripsThroughJson_AndBadOptionsAndPlacementsAreRejected()
    {
        foreach (var architecture in new[] { Mlp(), LeNetLike() })
        {
            var json = ArchitectureJson.ToJson(architecture).ToJsonString();
            Assert.Contains("{\"type\":\"batchnorm\",\"activation\":\"Relu\",\"momentum\":0.", json);
            var back = ArchitectureJson.FromJson(JsonNode.Parse(json)!);
            Assert.Equal(architecture.Layers, back.Layers);
        }
        var model = NetworkModel.Create(Mlp(), 10);
        Assert.Equal(["fc1", "bn1", "fc2", "bn2", "output"], model.Layers.Select(l => l.Name));
        Assert.Equal([64], model.Layers[1].OutputShape);
        var conv = NetworkModel.Create(LeNetLike(), 10);
        Assert.Equal([6, 24, 24], conv.Layers[1].OutputShape);

        foreach (var momentum in new[] { 0.0, 1.0, -0.1, double.NaN })
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => new BatchNormLayer(momentum: momentum));
            Assert.Equal("Momentum", e.ParamName);
            Assert.Contains("(0, 1)", e.Message);
            Assert.Throws<ArgumentOutOfRangeException>(() => new BatchNormLayer() with { Momentum = momentum });
        }
        foreach (var epsilon in new[] { 0.0, -1e-5, double.NaN, double.PositiveInfinity })
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => new BatchNormLayer(epsilon: epsilon));
            Assert.Equal("Epsilon", e.ParamName);
            Assert.Contains("positive", e.Message);
        }

        // Where it could not be folded, the architecture is refused when it is resolved.
        var first = Assert.Throws<ArgumentException>(() => NetworkModel.Create(new NetworkArchitecture("bad", [784], [new BatchNormLayer(), new DenseLayer(8)]), 10));
        Assert.Contains("layer 0 (BatchNormLayer", first.Message);
        Assert.Contains("must directly follow a dense or convolution layer", first.Message);
        Assert.Equal("architecture", first.ParamName);
        var afterPool = Assert.Throws<ArgumentException>(() => NetworkModel.Create(new NetworkArchitecture("bad", [1, 8, 8],
            [new Conv2dLayer(4, 3, Activation: Activation.None), new MaxPool2dLayer(2), new BatchNormLayer()]), 10));
        Assert.Contains("layer 2 (BatchNormLayer", afterPool.Message);
        var afterRelu = Assert.Throws<ArgumentException>(() => NetworkModel.Create(new NetworkArchitecture("bad", [784], [new DenseLayer(8), new BatchNormLayer()]), 10));
        Assert.Contains("has activation Relu", afterRelu.Message);
        Assert.Contains("Activation.None", afterRelu.Message);
        Assert.Equal("architecture", afterRelu.ParamName);
    }

    [Fact]
    public void FoldedOnnxHasNoBatchNormalizationNode_AndEqualsTheTorchEvalOutput()
    {
        foreach (var architecture in new[] { Mlp(), LeNetLike() })
        {
            var model = RandomModel(architecture, 3);
            var onnx = OnnxExporter.Export(model);
            var graph = ModelProto.Parser.ParseFrom(onnx).Graph;
            Assert.DoesNotContain(graph.Node, n => n.OpType == "BatchNormalization");
            // One weighted operator per dense/conv layer and nothing per normalization but its activation.
            Assert.Equal(model.ParameterizedLayers.Count(), graph.Node.Count(n => n.OpType is "Gemm" or "Conv"));
            Assert.Equal(model.ParameterizedLayers.Select(l => l.ParameterCount).Sum(), graph.Initializer.Where(i => i.DataType == (int)TensorProto.Types.DataType.Float)
                .Sum(i => i.Dims.Aggregate(1L, (a, d) => a * d)));
            var rows = OnnxTestModels.RandomFeatures(20, model.InputLength, seed: 5);
            var ort = RunOrt(onnx, rows);

            using var net = new TorchNetwork(model);
            net.LoadWeights(model);
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            var x = tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, model.InputLength]);
            net.eval();
            var eval = nn.functional.softmax(net.forward(x), 1).data<float>().ToArray();
            double diff = ort.Zip(eval).Max(p => Math.Abs(p.First - p.Second));
            output.WriteLine($"{architecture.Name}: max |folded ONNX - TorchSharp eval| = {diff:E2}");
            Assert.True(diff <= 1e-5, $"{architecture.Name}: max |Δp| = {diff:E2}");

            // Training mode normalizes with the batch's statistics (and updates the running ones): a different function.
            net.train();
            var trained = nn.functional.softmax(net.forward(x), 1).data<float>().ToArray();
            Assert.True(trained.Zip(eval).Max(p => Math.Abs(p.First - p.Second)) > 1e-3, $"{architecture.Name}: training mode used the running statistics");
            var moved = model.Clone();
            net.StoreWeights(moved);
            Assert.NotEqual(model.Layers.OfType<BatchNormModelLayer>().First().State[2], moved.Layers.OfType<BatchNormModelLayer>().First().State[2]);
        }
    }

    [Fact]
    public void GrowingTheOutputForNewClassesKeepsTheStatistics_AndShrinkKeepsTheSurvivingChannels()
    {
        var model = RandomModel(Mlp(), 8);
        var grown = ClassGrowth.GrowOutput(model, 12, seed: 1);
        Assert.Equal(12, grown.NumClasses);
        var before = model.Layers.OfType<BatchNormModelLayer>().ToArray();
        var after = grown.Layers.OfType<BatchNormModelLayer>().ToArray();
        Assert.Equal(2, after.Length);
        for (int i = 0; i < before.Length; i++)
            Assert.Equal(before[i].State, after[i].State);

        var bn = before[0];
        var shrunk = (BatchNormModelLayer)bn.Shrink([1, 5, 63], null, out var keptOut);
        Assert.Equal([1, 5, 63], keptOut!);
        Assert.Equal([3], shrunk.OutputShape);
        for (int a = 0; a < 4; a++)
            Assert.Equal(new[] { bn.State[a][1], bn.State[a][5], bn.State[a][63] }, shrunk.State[a]);
        Assert.Contains("Remove units of that layer instead", bn.UnitsNotRemovable);
    }

    [Fact]
    public void EveryEncodingWritesTheFoldedWeights_AndClusteringIsRefused()
    {
        var model = RandomModel(LeNetLike(), 4);
        var rows = OnnxTestModels.RandomFeatures(200, model.InputLength, seed: 6);
        var reference = RunOrt(OnnxExporter.Export(model), rows);
        int Agreement(float[] p) => Enumerable.Range(0, rows.Length).Count(r => ArgMax(p, r) == ArgMax(reference, r));

        foreach (var mode in Enum.GetValues<QuantizationMode>())
        {
            // The test's reference calibration computes dense/conv/pool layers only, so it runs on the folded model: each weighted
            // layer sees the same input there (the library's calibration runs the TorchSharp modules in evaluation mode).
            var spec = new QuantizationSpec(mode, InputRanges: mode == QuantizationMode.Int8Static
                ? QuantizedExportTests.CalibrateMinMax(BatchNormFolding.Fold(model), OnnxTestModels.RandomFeatures(100, model.InputLength, seed: 7)) : null);
            var onnx = OnnxExporter.Export(model, QuantizedExport.Options(model, spec));
            Assert.DoesNotContain(ModelProto.Parser.ParseFrom(onnx).Graph.Node, n => n.OpType == "BatchNormalization");
            int agree = Agreement(RunOrt(onnx, rows));
            output.WriteLine($"{mode}: {agree} of {rows.Length} rows agree with float32");
            Assert.True(agree >= 180, $"{mode}: only {agree} of {rows.Length} rows agree with float32");
        }

        // Pruned zeros stay zeros after folding (each output unit is scaled by one factor), so the sparse storage still applies
        // and gives exactly the dense scores.
        var pruned = model.Clone();
        foreach (var layer in pruned.ParameterizedLayers)
            SparseWeightsTests.MagnitudePrune(layer, 0.8);
        var folded = BatchNormFolding.Fold(pruned);
        Assert.DoesNotContain(folded.Layers, l => l is BatchNormModelLayer);
        foreach (var (before, after) in pruned.ParameterizedLayers.Zip(folded.ParameterizedLayers))
            Assert.Equal(before.Weight.Select(w => w == 0f), after.Weight.Select(w => w == 0f));
        var sparse = OnnxExporter.Export(pruned);
        Assert.Contains(ModelProto.Parser.ParseFrom(sparse).Graph.Node, n => n.OpType == "ScatterElements");
        Assert.Equal(RunOrt(OnnxExporter.Export(pruned, new OnnxExportOptions { SparseWeights = SparseWeightsMode.Never }), rows), RunOrt(sparse, rows));

        var clusters = model.ParameterizedLayers.ToDictionary(l => l.Name, l => KMeans1D.Fit(l.Weight, 16, CentroidInitialization.Linear, 20, new Random(1)));
        var refused = Assert.Throws<NotSupportedException>(() => OnnxExporter.Export(model, new OnnxExportOptions { LayerEmitter = new ClusteredEmitter(clusters) }));
        Assert.Contains("Layer 'bn1'", refused.Message);
        Assert.Contains("Clustered", refused.Message);
    }

    [Fact]
    public void MlpWithBatchNormTrainsOnMnist_AndScoresSurviveSaveLoadAndCheckpointInFloat32AndInt8Static()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.TakeRows(TestMnist.LoadTrain(ml), 2000);
        var test = ml.Data.TakeRows(TestMnist.LoadTest(ml), 1000);
        using var model = ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = Mlp(), Epochs = 3, BatchSize = 64, Device = TrainingDevice.Cpu, ValidationFraction = 0.1,
        }).Fit(train);
        foreach (var e in model.TrainingHistory)
            output.WriteLine(e.ToString());
        var bn1 = model.Network.Layers.OfType<BatchNormModelLayer>().First();
        Assert.NotEqual(new float[bn1.Channels], bn1.State[2]); // the running mean moved from its start
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
        output.WriteLine($"float32 test accuracy {metrics.MicroAccuracy:F4}");
        Assert.True(metrics.MicroAccuracy > 0.85, $"accuracy {metrics.MicroAccuracy:F4} (chance is 0.1)");
        AssertRoundTrips(ml, model, train, test, "float32");

        using var int8 = ml.Compression().Quantize(model, new QuantizationOptions { Mode = QuantizationMode.Int8Static, CalibrationRows = 200 }).Fit(train);
        var int8Metrics = ml.MulticlassClassification.Evaluate(int8.Transform(test));
        output.WriteLine($"int8 static test accuracy {int8Metrics.MicroAccuracy:F4}");
        Assert.True(int8Metrics.MicroAccuracy > metrics.MicroAccuracy - 0.02, $"int8 static {int8Metrics.MicroAccuracy:F4} vs float32 {metrics.MicroAccuracy:F4}");
        AssertRoundTrips(ml, int8, train, test, "int8 static");

        // Quantization-aware training fake-quantizes the unfolded weights per channel; folding scales each output channel by one
        // factor, so the exported (folded, then quantized) int8 weights are those QAT saw, scaled.
        using var qat = ml.Compression().Quantize(model, new QuantizationOptions { Mode = QuantizationMode.Int8Static, QuantizationAwareTraining = true, QatEpochs = 1 }).Fit(train);
        var qatMetrics = ml.MulticlassClassification.Evaluate(qat.Transform(test));
        output.WriteLine($"int8 static QAT test accuracy {qatMetrics.MicroAccuracy:F4}");
        Assert.True(qatMetrics.MicroAccuracy > metrics.MicroAccuracy - 0.02, $"int8 static QAT {qatMetrics.MicroAccuracy:F4} vs float32 {metrics.MicroAccuracy:F4}");

        // Clustering is refused before any work, naming the layer.
        var refused = Assert.Throws<NotSupportedException>(() => ml.Compression().ClusterWeights(model, new WeightClusteringOptions { ClusterCount = 8, Epochs = 1 }).Fit(train).Dispose());
        Assert.Contains("Layer 'bn1'", refused.Message);

        // Structured pruning removes units of a dense layer and the same channels of its normalization.
        using var slim = ml.Compression().Prune(model, new PruningOptions { Granularity = PruningGranularity.StructuredNeurons, Epochs = 1 }).Fit(train);
        var dense = slim.Network.ParameterizedLayers.First();
        var bn = slim.Network.Layers.OfType<BatchNormModelLayer>().First();
        output.WriteLine($"structured: {dense.Name} {dense.OutputUnits} units, {bn.Name} {bn.Channels} channels");
        Assert.True(dense.OutputUnits < 64, $"{dense.OutputUnits} units");
        Assert.Equal(dense.OutputUnits, bn.Channels);
        var slimMetrics = ml.MulticlassClassification.Evaluate(slim.Transform(test));
        Assert.True(slimMetrics.MicroAccuracy > 0.8, $"structured-pruned accuracy {slimMetrics.MicroAccuracy:F4}");
        AssertRoundTrips(ml, slim, train, test, "structured");
    }

    [Fact]
    public void EarlyStoppingKeepsTheBestEpochsStatistics()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.TakeRows(TestMnist.LoadTrain(ml), 1000);
        var test = ml.Data.TakeRows(TestMnist.LoadTest(ml), 300);
        NeuralNetworkOptions Options(int epochs) => new()
        {
            Architecture = Mlp(), Epochs = epochs, BatchSize = 64, LearningRate = 0.01, ValidationFraction = 0.2, EarlyStoppingPatience = 2,
            Device = TrainingDevice.Cpu, Seed = 3,
        };
        using var stopped = ml.Compression().NeuralNetwork(Options(30)).Fit(train);
        var history = stopped.TrainingHistory;
        output.WriteLine(string.Join("\n", history));
        Assert.True(history.Count < 30, "Early stopping never triggered.");
        int bestEpoch = history[^3].Epoch;
        Assert.Equal(history.Max(e => e.ValidationAccuracy!.Value), history[^3].ValidationAccuracy!.Value);
        // The same run stopped by its epoch count at the best epoch: the same weights and the same running statistics, so the
        // same scores (the later epochs' statistics would not be).
        using var reference = ml.Compression().NeuralNetwork(Options(bestEpoch)).Fit(train);
        var stoppedBn = stopped.Network.Layers.OfType<BatchNormModelLayer>().ToArray();
        var referenceBn = reference.Network.Layers.OfType<BatchNormModelLayer>().ToArray();
        for (int i = 0; i < stoppedBn.Length; i++)
            Assert.Equal(referenceBn[i].State, stoppedBn[i].State);
        Scoring.AssertIdentical(Scoring.Read(reference.Transform(test)), Scoring.Read(stopped.Transform(test)));
    }

    [Fact]
    public void ACheckpointWithMissingOrTruncatedStatisticsIsRefused()
    {
        var ml = new MLContext(seed: 4);
        using var model = ml.Compression().NeuralNetwork(new NeuralNetworkOptions { Architecture = Mlp(), Epochs = 1, Device = TrainingDevice.Cpu })
            .Fit(ml.Data.TakeRows(TestMnist.LoadTrain(ml), 300));
        using var dir = TestMnist.NewTempDirectory();
        string path = Path.Combine(dir.Path, "bn.ckpt");
        model.SaveCheckpoint(path);
        foreach (var truncate in new[] { false, true })
        {
            string damaged = Path.Combine(dir.Path, $"damaged-{truncate}.ckpt");
            File.Copy(path, damaged);
            using (var zip = System.IO.Compression.ZipFile.Open(damaged, System.IO.Compression.ZipArchiveMode.Update))
            {
                var entry = zip.GetEntry(BatchNormFolding.StateEntry)!;
                byte[] bytes;
                using (var s = entry.Open())
                using (var copy = new MemoryStream())
                {
                    s.CopyTo(copy);
                    bytes = copy.ToArray();
                }
                entry.Delete();
                if (truncate)
                    using (var s = zip.CreateEntry(BatchNormFolding.StateEntry).Open())
                        s.Write(bytes, 0, bytes.Length - 4);
            }
            var e = Assert.Throws<CheckpointException>(() => NeuralNetworkTransformer.LoadCheckpoint(new MLContext(), damaged).Dispose());
            output.WriteLine(e.Message);
            Assert.Equal(BatchNormFolding.StateEntry, e.EntryName);
            Assert.Contains(truncate ? "need exactly" : "is missing", e.Message);
        }
    }

    [Fact]
    public void LeNetLikeConvNetWithBatchNormTrainsOnMnist()
    {
        var ml = new MLContext(seed: 2);
        var train = ml.Data.TakeRows(TestMnist.LoadTrain(ml), 2000);
        var test = ml.Data.TakeRows(TestMnist.LoadTest(ml), 500);
        using var model = ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = LeNetLike(), Epochs = 2, BatchSize = 64, Device = TrainingDevice.Cpu,
        }).Fit(train);
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
        output.WriteLine($"LeNet-like + BN test accuracy {metrics.MicroAccuracy:F4}");
        Assert.True(metrics.MicroAccuracy > 0.85, $"accuracy {metrics.MicroAccuracy:F4}");
        Assert.Equal(3, model.Network.Layers.OfType<BatchNormModelLayer>().Count());
    }

    [Fact]
    public void LowerPrecisionTrainingRefusesBatchNorm_AndAMemoryBudgetKeepsFloat32()
    {
        var ml = new MLContext(seed: 3);
        var train = ml.Data.TakeRows(TestMnist.LoadTrain(ml), 200);
        var e = Assert.Throws<NotSupportedException>(() => ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = Mlp(), Epochs = 1, Device = TrainingDevice.Cpu, Precision = TrainingPrecision.BFloat16,
        }).Fit(train).Dispose());
        Assert.Contains("Layer 'bn1'", e.Message);
        Assert.Contains("Float32", e.Message);

        // A memory budget that would pick bfloat16 for the same network without normalization keeps float32 with it.
        var plain = new NetworkArchitecture("LeNet", [1, 28, 28], [new Conv2dLayer(6, 5), new MaxPool2dLayer(2), new Conv2dLayer(16, 5), new MaxPool2dLayer(2), new FlattenLayer(), new DenseLayer(64)]);
        long budget = MemoryReport.Estimate(plain, 10, 32, OptimizerKind.Adam, TrainingPrecision.Float32, 0.9).TotalBytes;
        var options = new NeuralNetworkOptions
        {
            Architecture = plain, Epochs = 1, BatchSize = 256, Device = TrainingDevice.Cpu, MemoryBudgetBytes = budget, AllowLowerPrecisionForBudget = true,
        };
        Assert.Equal(TrainingPrecision.BFloat16, MemoryBudget.Choose(options, 10)!.Options.Precision);
        options.Architecture = LeNetLike();
        var choice = MemoryBudget.Choose(options, 10)!;
        Assert.Equal(TrainingPrecision.Float32, choice.Options.Precision);
        Assert.InRange(choice.Options.BatchSize, 1, 255);
        using var model = ml.Compression().NeuralNetwork(options).Fit(train); // no budget-chosen bfloat16 to refuse: it trains
    }

    /// <summary>
    /// ml.Model.Save/Load scores bit-identically; a checkpoint restores γ, β and the running statistics exactly (the restored
    /// network exports the same ONNX bytes) and scores bit-identically.
    /// </summary>
    private void AssertRoundTrips(MLContext ml, NeuralNetworkTransformer model, IDataView train, IDataView test, string what)
    {
        var expected = Scoring.Read(model.Transform(test));
        using (var zip = new MemoryStream())
        {
            ml.Model.Save(model, train.Schema, zip);
            zip.Position = 0;
            Scoring.AssertIdentical(expected, Scoring.Read(new MLContext(seed: 99).Model.Load(zip, out _).Transform(test)));
        }
        using var dir = TestMnist.NewTempDirectory();
        string path = Path.Combine(dir.Path, "bn.ckpt");
        model.SaveCheckpoint(path);
        using var restored = NeuralNetworkTransformer.LoadCheckpoint(new MLContext(seed: 99), path);
        var before = model.Network.Layers.OfType<BatchNormModelLayer>().ToArray();
        var after = restored.Network.Layers.OfType<BatchNormModelLayer>().ToArray();
        Assert.Equal(before.Length, after.Length);
        for (int i = 0; i < before.Length; i++)
            Assert.Equal(before[i].State, after[i].State);
        Assert.Equal(OnnxExporter.Export(model.Network), OnnxExporter.Export(restored.Network));
        Scoring.AssertIdentical(expected, Scoring.Read(restored.Transform(test)));
        // Training goes on from the restored statistics and optimizer state.
        using var continued = ml.Compression().ContinueTraining(restored, new ContinueTrainingOptions { Epochs = 1 }).Fit(train);
        var accuracy = ml.MulticlassClassification.Evaluate(continued.Transform(test)).MicroAccuracy;
        Assert.True(accuracy > 0.8, $"{what}: accuracy {accuracy:F4} after continued training");
        output.WriteLine($"{what}: save/load and checkpoint scores identical on {expected.Labels.Length} rows");
    }
}
