using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Compression.Clustering;
using MLNet.Compression.Networks;
using MLNet.Compression.Onnx;
using MLNet.Compression.Onnx.Proto;
using MLNet.Compression.Quantization;
using MLNet.Compression.Tests.Onnx;
using MLNet.Compression.Tests.Quantization;
using MLNet.Compression.Tests.Training;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;
using MLNet.Compression.Training;

namespace MLNet.Compression.Tests.Networks;

public class DropoutLayerTests(ITestOutputHelper output)
{
    private static NetworkArchitecture Mlp() =>
        new("MLP-64-32-dropout", [784], [new DenseLayer(64), new DropoutLayer(0.3), new DenseLayer(32), new DropoutLayer(0.5)]);

    private static NetworkArchitecture Cnn() =>
        new("CNN-dropout", [1, 28, 28], [new Conv2dLayer(8, 5), new DropoutLayer(0.2), new MaxPool2dLayer(2), new FlattenLayer(), new DropoutLayer(0.25), new DenseLayer(32)]);

    private static float[] RunOrt(byte[] onnx, float[][] features)
    {
        using var session = new InferenceSession(onnx);
        var input = new DenseTensor<float>(features.SelectMany(f => f).ToArray(), [features.Length, features[0].Length]);
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("Features", input)]);
        return results.Single(r => r.Name == "Score").AsTensor<float>().ToArray();
    }

    private static int ArgMax(float[] p, int row) => Enumerable.Range(0, 10).MaxBy(c => p[row * 10 + c]);

    [Fact]
    public void SpecRoundTripsThroughArchitectureJson_AndBadRatesAreRejected()
    {
        foreach (var architecture in new[] { Mlp(), Cnn() })
        {
            var json = ArchitectureJson.ToJson(architecture).ToJsonString();
            Assert.Contains("{\"type\":\"dropout\",\"rate\":0.", json);
            var back = ArchitectureJson.FromJson(JsonNode.Parse(json)!);
            Assert.Equal(architecture.Name, back.Name);
            Assert.Equal(architecture.InputShape, back.InputShape);
            Assert.Equal(architecture.Layers, back.Layers);
        }
        var model = NetworkModel.Create(Mlp(), 10);
        Assert.Equal(["fc1", "dropout1", "fc2", "dropout2", "output"], model.Layers.Select(l => l.Name));
        Assert.Equal(model.Layers[0].OutputShape, model.Layers[1].OutputShape);

        foreach (var rate in new[] { -0.1, 1.0, double.NaN })
        {
            var e = Assert.Throws<ArgumentException>(() => NetworkModel.Create(new NetworkArchitecture("bad", [784], [new DenseLayer(8), new DropoutLayer(rate)]), 10));
            Assert.Contains("layer 1 (DropoutLayer", e.Message);
            Assert.Contains("dropout rate must be in [0, 1)", e.Message);
            Assert.Equal("architecture", e.ParamName);
        }
    }

    [Fact]
    public void TrainsOnAnMnistSubset_AndValidatesAndScoresWithDropoutOff()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.TakeRows(TestMnist.LoadTrain(ml), 3000);
        using var model = ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = Mlp(), Epochs = 3, BatchSize = 64, Device = TrainingDevice.Cpu, ValidationFraction = 0.1,
        }).Fit(train);
        foreach (var e in model.TrainingHistory)
            output.WriteLine(e.ToString());
        Assert.True(model.TrainingHistory[^1].Loss < model.TrainingHistory[0].Loss, "the training loss did not go down");
        // Validation runs in evaluation mode (dropout off): with this much dropout it scores better than the training batches did.
        Assert.True(model.TrainingHistory[^1].ValidationLoss < model.TrainingHistory[^1].Loss, model.TrainingHistory[^1].ToString());
        Assert.Contains(model.Network.Layers, l => l is DropoutModelLayer);
        var test = ml.Data.TakeRows(TestMnist.LoadTest(ml), 1000);
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
        output.WriteLine($"test accuracy {metrics.MicroAccuracy:F4}");
        Assert.True(metrics.MicroAccuracy > 0.7, $"accuracy {metrics.MicroAccuracy:F4} (chance is 0.1)");
        // Scoring is deterministic: dropout is off outside training.
        Assert.Equal(Scoring.Read(model.Transform(test)).Item1, Scoring.Read(model.Transform(test)).Item1);
    }

    [Fact]
    public void ExportedOnnxEqualsTheTorchEvalOutput_AndDropoutIsActiveOnlyInTraining()
    {
        foreach (var architecture in new[] { Mlp(), Cnn() })
        {
            var model = NetworkModel.Create(architecture, 10);
            NeuralNetworkTrainer.InitializeWeights(model, 3);
            var onnx = OnnxExporter.Export(model);
            Assert.DoesNotContain(ModelProto.Parser.ParseFrom(onnx).Graph.Node, n => n.OpType == "Dropout");
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
            output.WriteLine($"{architecture.Name}: max |ONNX - TorchSharp eval| = {diff:E2}");
            Assert.True(diff <= 1e-5, $"{architecture.Name}: max |Δp| = {diff:E2}");
            Assert.Equal(eval, nn.functional.softmax(net.forward(x), 1).data<float>().ToArray());

            net.train();
            var trained = nn.functional.softmax(net.forward(x), 1).data<float>().ToArray();
            Assert.True(trained.Zip(eval).Max(p => Math.Abs(p.First - p.Second)) > 1e-3, $"{architecture.Name}: dropout changed nothing in training mode");
        }
    }

    [Fact]
    public void EveryEncodingExportsThroughDropout()
    {
        var model = NetworkModel.Create(Cnn(), 10);
        NeuralNetworkTrainer.InitializeWeights(model, 4);
        var rows = OnnxTestModels.RandomFeatures(200, model.InputLength, seed: 6);
        var reference = RunOrt(OnnxExporter.Export(model), rows);
        int Agreement(float[] p) => Enumerable.Range(0, rows.Length).Count(r => ArgMax(p, r) == ArgMax(reference, r));

        foreach (var mode in Enum.GetValues<QuantizationMode>())
        {
            var spec = new QuantizationSpec(mode, InputRanges: mode == QuantizationMode.Int8Static
                ? QuantizedExportTests.CalibrateMinMax(model, OnnxTestModels.RandomFeatures(100, model.InputLength, seed: 7)) : null);
            int agree = Agreement(RunOrt(OnnxExporter.Export(model, QuantizedExport.Options(model, spec)), rows));
            output.WriteLine($"{mode}: {agree} of {rows.Length} rows agree with float32");
            Assert.True(agree >= 180, $"{mode}: only {agree} of {rows.Length} rows agree with float32");
        }

        // Sparse: exact float values, so the same scores.
        var pruned = model.Clone();
        foreach (var layer in pruned.ParameterizedLayers)
            SparseWeightsTests.MagnitudePrune(layer, 0.8);
        var sparse = OnnxExporter.Export(pruned);
        Assert.Contains(ModelProto.Parser.ParseFrom(sparse).Graph.Node, n => n.OpType == "ScatterElements");
        Assert.Equal(RunOrt(OnnxExporter.Export(pruned, new OnnxExportOptions { SparseWeights = SparseWeightsMode.Never }), rows), RunOrt(sparse, rows));

        // Clustered: a codebook per layer; the scores are those of the reconstructed weights.
        var clusters = model.ParameterizedLayers.ToDictionary(l => l.Name,
            l => KMeans1D.Fit(l.Weight, 16, CentroidInitialization.Linear, 20, new Random(1)));
        var clustered = OnnxExporter.Export(model, new OnnxExportOptions { LayerEmitter = new ClusteredEmitter(clusters) });
        var reconstructed = model.Clone();
        foreach (var layer in reconstructed.ParameterizedLayers)
            layer.Weight = clusters[layer.Name].Reconstruct();
        double diff = RunOrt(clustered, rows).Zip(RunOrt(OnnxExporter.Export(reconstructed), rows)).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(diff <= 1e-6, $"clustered: max |Δp| = {diff:E2}");
    }
}
