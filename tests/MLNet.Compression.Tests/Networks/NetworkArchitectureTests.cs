using Microsoft.ML;
using MLNet.Compression.Networks;
using MLNet.Compression.Tests.Training;
using Xunit;

namespace MLNet.Compression.Tests.Networks;

/// <summary><c>Mlp(hidden...)</c> takes its input size from the data; stated inputs and image shapes are checked with errors that say what to write.</summary>
public sealed class NetworkArchitectureTests
{
    private static (MLContext, IDataView) Tabular(int rows = 600)
    {
        var ml = new MLContext(seed: 1);
        var raw = ml.Data.LoadFromEnumerable(GaussianClasses.Generate(rows, 3, 1, 2, spread: 3));
        return (ml, ml.Transforms.Conversion.MapValueToKey("Label").Fit(raw).Transform(raw));
    }

    [Fact]
    public void MlpTakesItsInputSizeFromTheFeatureColumnAndSurvivesACheckpoint()
    {
        var (ml, data) = Tabular();
        var architecture = NetworkArchitecture.Mlp(128, 64);
        Assert.True(architecture.InputFromData);
        using var model = ml.Compression().NeuralNetwork(new NeuralNetworkOptions { Architecture = architecture, Epochs = 2, Device = TrainingDevice.Cpu }).Fit(data);
        Assert.Equal([GaussianClasses.Dimensions], model.Architecture.InputShape);
        Assert.False(model.Architecture.InputFromData);
        Assert.Equal(GaussianClasses.Dimensions * 128 + 128 + 128 * 64 + 64 + 64 * 3 + 3, model.ParameterCount);
        Assert.True(ml.MulticlassClassification.Evaluate(model.Transform(data)).MicroAccuracy > 0.9);

        var path = Path.Combine(Path.GetTempPath(), $"mlp-input-{Guid.NewGuid():N}.checkpoint");
        try
        {
            model.SaveCheckpoint(path);
            using var restored = NeuralNetworkTransformer.LoadCheckpoint(ml, path);
            Assert.Equal(model.Architecture.InputShape, restored.Architecture.InputShape);
            Scoring.AssertIdentical(Scoring.Read(model.Transform(data)), Scoring.Read(restored.Transform(data)));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void OnMnistMlp300100IsTheSameNetworkAsBefore()
    {
        var resolved = NetworkModel.Create(NetworkArchitecture.Mlp(300, 100).WithInput(784), 10);
        var stated = NetworkModel.Create(NetworkArchitecture.Mlp([300, 100], 784), 10);
        var unresolved = NetworkModel.Create(NetworkArchitecture.Mlp(300, 100), 10);
        Assert.Equal(266_610, resolved.ParameterCount);
        foreach (var other in new[] { stated, unresolved })
        {
            Assert.Equal(resolved.InputShape, other.InputShape);
            Assert.Equal(resolved.Layers.Select(l => (l.Name, string.Join("x", l.OutputShape))), other.Layers.Select(l => (l.Name, string.Join("x", l.OutputShape))));
        }
        // The same seed gives the same initial weights, so MNIST figures stay what they were.
        NeuralNetworkTrainer.InitializeWeights(resolved, 3);
        NeuralNetworkTrainer.InitializeWeights(stated, 3);
        Assert.Equal(resolved.ParameterizedLayers.SelectMany(l => l.Weight), stated.ParameterizedLayers.SelectMany(l => l.Weight));
        Assert.Equal("MLP-300-100 [input from data]", NetworkArchitecture.Mlp(300, 100).ToString());
    }

    [Fact]
    public void StatedInputsAndImageShapesAreCheckedWithErrorsThatSayWhatToWrite()
    {
        var (ml, data) = Tabular(100);
        NeuralNetworkTransformer Fit(NetworkArchitecture a) =>
            ml.Compression().NeuralNetwork(new NeuralNetworkOptions { Architecture = a, Epochs = 1, Device = TrainingDevice.Cpu }).Fit(data);

        using (var stated = Fit(NetworkArchitecture.Mlp(16).WithInput(GaussianClasses.Dimensions)))
            Assert.Equal(GaussianClasses.Dimensions, stated.Network.InputLength);
        var mlp = Assert.Throws<ArgumentOutOfRangeException>(() => Fit(NetworkArchitecture.Mlp(16, 8).WithInput(12)));
        Assert.Equal("Features", mlp.ParamName);
        Assert.Contains("has 10 values per row", mlp.Message);
        Assert.Contains("NetworkArchitecture.Mlp(16, 8) to take the input size from the data", mlp.Message);
        Assert.Contains(".WithInput(10)", mlp.Message);

        // 10 values are no image: the message says what the shape must satisfy.
        var lenet = Assert.Throws<ArgumentOutOfRangeException>(() => Fit(NetworkArchitecture.LeNet5()));
        Assert.Contains("1 channel(s) × 28 × 28 pixels = 784 values", lenet.Message);
        Assert.Contains("channels × height × width = 10", lenet.Message);
        // 64 values could be an 8×8 image: the message writes the call.
        var sixtyFour = ml.Transforms.CustomMapping<TenFeatures, SixtyFour>((r, o) => o.Pixels = Enumerable.Range(0, 64).Select(i => r.Features[i % 10]).ToArray(), null)
            .Fit(data).Transform(data);
        var dsc = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.DepthwiseSeparable(), Epochs = 1, Device = TrainingDevice.Cpu, FeatureColumnName = "Pixels",
        }).Fit(sixtyFour));
        Assert.Contains("NetworkArchitecture.DepthwiseSeparable(channels: 1, height: 8, width: 8)", dsc.Message);
        Assert.Throws<InvalidOperationException>(() => NetworkArchitecture.LeNet5().WithInput(64));
    }

    private sealed class TenFeatures
    {
        [Microsoft.ML.Data.VectorType(GaussianClasses.Dimensions)]
        public float[] Features { get; set; } = [];
    }

    private sealed class SixtyFour
    {
        [Microsoft.ML.Data.VectorType(64)]
        public float[] Pixels { get; set; } = [];
    }
}
