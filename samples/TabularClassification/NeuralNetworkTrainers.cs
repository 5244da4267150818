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
/// <remarks>
/// INTEGRATION: the catalog trainers (<c>ml.BinaryClassification.Trainers.NeuralNetwork</c>,
/// <c>ml.MulticlassClassification.Trainers.NeuralNetwork</c>, <c>ml.Regression.Trainers.NeuralNetwork</c>) are not in this
/// branch yet. The calls below are written against their API and compiled only when the symbol <c>CATALOG_TRAINERS</c> is
/// defined, which TabularClassification.csproj does when src/MLNet.Compression/NeuralNetworkCatalogExtensions.cs exists;
/// once they are merged, define it unconditionally (or delete the <c>#else</c> branches and this remark). Without them
/// the binary and regression rows of "ours" are reported as pending (results.json: <c>catalogTrainers: false</c>), and
/// the multiclass row uses <c>ml.Compression().NeuralNetwork(...)</c>.
/// </remarks>
public static class NeuralNetworkTrainers
{
    /// <summary>Whether this build calls the catalog trainers (binary and regression rows can only run then).</summary>
#if CATALOG_TRAINERS
    public static bool CatalogTrainers => true;
#else
    public static bool CatalogTrainers => false;
#endif

    /// <summary>The binary network trainer on a Boolean label, or <see langword="null"/> when this build lacks it.</summary>
    /// <param name="ml">The context (its seed seeds the network).</param>
    /// <param name="labelColumnName">The Boolean label column.</param>
    /// <param name="settings">Layers and schedule.</param>
    public static IEstimator<ITransformer>? Binary(MLContext ml, string labelColumnName, NetworkSettings settings)
    {
#if CATALOG_TRAINERS
        // INTEGRATION: on when CATALOG_TRAINERS is defined.
        return ml.BinaryClassification.Trainers.NeuralNetwork(labelColumnName: labelColumnName, featureColumnName: "Features",
            hiddenLayers: settings.HiddenLayers, epochs: settings.Epochs, batchSize: settings.BatchSize, learningRate: settings.LearningRate);
#else
        _ = (ml, labelColumnName, settings);
        return null;
#endif
    }

    /// <summary>The regression network trainer on a Single label, or <see langword="null"/> when this build lacks it.</summary>
    /// <param name="ml">The context (its seed seeds the network).</param>
    /// <param name="labelColumnName">The Single label column.</param>
    /// <param name="settings">Layers and schedule.</param>
    public static IEstimator<ITransformer>? Regression(MLContext ml, string labelColumnName, NetworkSettings settings)
    {
#if CATALOG_TRAINERS
        // INTEGRATION: on when CATALOG_TRAINERS is defined.
        return ml.Regression.Trainers.NeuralNetwork(labelColumnName: labelColumnName, featureColumnName: "Features",
            hiddenLayers: settings.HiddenLayers, epochs: settings.Epochs, batchSize: settings.BatchSize, learningRate: settings.LearningRate);
#else
        _ = (ml, labelColumnName, settings);
        return null;
#endif
    }

    /// <summary>The multiclass network trainer on a key label.</summary>
    /// <param name="ml">The context.</param>
    /// <param name="labelColumnName">The key label column.</param>
    /// <param name="featureLength">The size of the Features vector (today's <c>Mlp</c> needs it; the catalog trainer reads it at Fit).</param>
    /// <param name="seed">The network's seed.</param>
    /// <param name="settings">Layers and schedule.</param>
    public static IEstimator<ITransformer> Multiclass(MLContext ml, string labelColumnName, int featureLength, int seed, NetworkSettings settings)
    {
#if CATALOG_TRAINERS
        // INTEGRATION: on when CATALOG_TRAINERS is defined.
        _ = (featureLength, seed);
        return ml.MulticlassClassification.Trainers.NeuralNetwork(labelColumnName: labelColumnName, featureColumnName: "Features",
            hiddenLayers: settings.HiddenLayers, epochs: settings.Epochs, batchSize: settings.BatchSize, learningRate: settings.LearningRate);
#else
        return ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            LabelColumnName = labelColumnName,
            FeatureColumnName = "Features",
            Architecture = NetworkArchitecture.Mlp(settings.HiddenLayers, featureLength),
            Epochs = settings.Epochs,
            BatchSize = settings.BatchSize,
            LearningRate = settings.LearningRate,
            Seed = seed,
        });
#endif
    }
}
