using Microsoft.ML;
using MLNet.Compression;
using MLNet.Compression.Networks;

namespace TabularClassification;

/// <summary>The network's settings for one task: hidden layers and training schedule.</summary>
/// <param name="HiddenLayers">Units of each hidden layer.</param>
/// <param name="Epochs">Passes over the training rows.</param>
/// <param name="BatchSize">Rows per step.</param>
/// <param name="LearningRate">Adam's learning rate.</param>
public sealed record NetworkSettings(int[] HiddenLayers, int Epochs, int BatchSize, double LearningRate);

/// <summary>
/// MLNet.Compression's trainers, one method per task, so that each task's pipeline reads like Model Builder's
/// <c>BuildPipeline</c> with another trainer in it.
/// </summary>
public static class NeuralNetworkTrainers
{
    /// <summary>The binary network trainer on a Boolean label.</summary>
    /// <param name="ml">The context (its seed seeds the network).</param>
    /// <param name="labelColumnName">The Boolean label column.</param>
    /// <param name="settings">Layers and schedule.</param>
    public static IEstimator<ITransformer> Binary(MLContext ml, string labelColumnName, NetworkSettings settings)
    {
        return ml.BinaryClassification.Trainers.NeuralNetwork(labelColumnName: labelColumnName, featureColumnName: "Features",
            hiddenLayers: settings.HiddenLayers, epochs: settings.Epochs, batchSize: settings.BatchSize, learningRate: settings.LearningRate);
    }

    /// <summary>The regression network trainer on a Single label.</summary>
    /// <param name="ml">The context (its seed seeds the network).</param>
    /// <param name="labelColumnName">The Single label column.</param>
    /// <param name="settings">Layers and schedule.</param>
    public static IEstimator<ITransformer> Regression(MLContext ml, string labelColumnName, NetworkSettings settings)
    {
        return ml.Regression.Trainers.NeuralNetwork(labelColumnName: labelColumnName, featureColumnName: "Features",
            hiddenLayers: settings.HiddenLayers, epochs: settings.Epochs, batchSize: settings.BatchSize, learningRate: settings.LearningRate);
    }

    /// <summary>The multiclass network trainer on a key label.</summary>
    /// <param name="ml">The context (its seed seeds the network).</param>
    /// <param name="labelColumnName">The key label column.</param>
    /// <param name="settings">Layers and schedule.</param>
    public static IEstimator<ITransformer> Multiclass(MLContext ml, string labelColumnName, NetworkSettings settings)
    {
        return ml.MulticlassClassification.Trainers.NeuralNetwork(labelColumnName: labelColumnName, featureColumnName: "Features",
            hiddenLayers: settings.HiddenLayers, epochs: settings.Epochs, batchSize: settings.BatchSize, learningRate: settings.LearningRate);
    }
}
