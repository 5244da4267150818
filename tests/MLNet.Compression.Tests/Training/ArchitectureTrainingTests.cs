using Xunit;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Networks;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;
using MLNet.Compression.Training;

namespace MLNet.Compression.Tests.Training;

public sealed class ArchitectureTrainingTests
{
    private readonly ITestOutputHelper output;

    public ArchitectureTrainingTests(ITestOutputHelper output) => this.output = output;

    public static TheoryData<string, string> Configurations => new()
    {
        { "LeNet5", "Adam" },
        { "DepthwiseSeparable", "Adam" },
        { "Mlp", "Sgd" },
    };

    [Theory]
    [MemberData(nameof(Configurations))]
    public void TrainsAndOnnxScoresMatchTheTorchSharpNetwork(string architecture, string optimizer)
    {
        var ml = new MLContext(seed: 1);
        var options = new NeuralNetworkOptions
        {
            Architecture = architecture switch
            {
                "LeNet5" => NetworkArchitecture.LeNet5(),
                "DepthwiseSeparable" => NetworkArchitecture.DepthwiseSeparable(),
                _ => NetworkArchitecture.Mlp(128),
            },
            // The depthwise-separable net has about 9,000 parameters and needs more steps than the others.
            Epochs = architecture == "DepthwiseSeparable" ? 3 : 2,
            BatchSize = 64,
            Optimizer = Enum.Parse<OptimizerKind>(optimizer),
            LearningRate = optimizer == "Sgd" ? 0.05 : architecture == "DepthwiseSeparable" ? 5e-3 : 2e-3,
            WeightDecay = 1e-5,
            Device = TrainingDevice.Cpu,
        };
        using var model = ml.Compression().NeuralNetwork(options).Fit(ml.Data.TakeRows(TestMnist.LoadTrain(ml), architecture == "DepthwiseSeparable" ? 12000 : 4000));
        var test = ml.Data.TakeRows(TestMnist.LoadTest(ml), 1000);
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
        output.WriteLine($"{architecture}/{optimizer}: accuracy {metrics.MicroAccuracy:F4}, {model.ParameterCount:N0} parameters");
        Assert.True(metrics.MicroAccuracy > 0.85, $"{architecture} with {optimizer} reached only {metrics.MicroAccuracy:F4}.");

        // The exported ONNX graph computes what the TorchSharp network computes (weight layouts, reshapes, pooling).
        var (scores, _) = Scoring.Read(model.Transform(test), 64);
        var features = ml.Data.CreateEnumerable<Row>(test, reuseRowObject: false).Take(64).SelectMany(r => r.Features).ToArray();
        using var net = new TorchNetwork(model.Network);
        net.LoadWeights(model.Network);
        net.eval();
        using var noGrad = no_grad();
        using var x = tensor(features, [64, model.Network.InputLength]);
        using var probabilities = nn.functional.softmax(net.forward(x), 1);
        var torchScores = probabilities.data<float>().ToArray();
        for (int i = 0; i < 64; i++)
            for (int k = 0; k < 10; k++)
                Assert.True(Math.Abs(torchScores[i * 10 + k] - scores[i][k]) < 1e-4,
                    $"Row {i} class {k}: TorchSharp {torchScores[i * 10 + k]} vs ONNX {scores[i][k]}.");
    }

    private sealed class Row
    {
        [VectorType(784)]
        public float[] Features { get; set; } = [];
    }
}
