using Microsoft.ML;
using MLNet.Compression.Networks;

namespace MLNet.Compression.Tests.Training;

/// <summary>
/// LeNet-300-100 trained once on all 60,000 MNIST training rows with the main job's default settings; shared by the
/// tests that check accuracy, persistence and the memory report.
/// </summary>
public sealed class TrainedMnistFixture : IDisposable
{
    public TrainedMnistFixture()
    {
        Context = new MLContext(seed: 1);
        Train = TestMnist.LoadTrain(Context);
        Test = TestMnist.LoadTest(Context);
        Options = DefaultOptions();
        Model = Context.Compression().NeuralNetwork(Options).Fit(Train);
    }

    public static NeuralNetworkOptions DefaultOptions() => new()
    {
        Architecture = NetworkArchitecture.Mlp(300, 100),
        Epochs = 10,
        BatchSize = 128,
        LearningRate = 1e-3,
        LearningRateSchedule = LearningRateSchedule.Cosine,
        Device = TrainingDevice.Cpu,
    };

    public MLContext Context { get; }

    public IDataView Train { get; }

    public IDataView Test { get; }

    public NeuralNetworkOptions Options { get; }

    public NeuralNetworkTransformer Model { get; }

    public void Dispose() => Model.Dispose();
}
