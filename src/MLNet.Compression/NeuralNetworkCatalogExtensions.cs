using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using MLNet.Compression.Networks.Heads;

namespace MLNet.Compression;

/// <summary>
/// The neural network trainers in ML.NET's own trainer catalogs, next to SDCA and LightGBM:
/// <c>ml.MulticlassClassification.Trainers.NeuralNetwork(...)</c> (key label), <c>ml.BinaryClassification.Trainers.NeuralNetwork(...)</c>
/// (Boolean label) and <c>ml.Regression.Trainers.NeuralNetwork(...)</c> (Single label). Each has a flat overload and one that
/// takes <see cref="NeuralNetworkOptions"/>; all return a <see cref="NeuralNetworkTrainer"/> whose output head (the task:
/// loss and scoring columns) is chosen by the catalog. <c>ml.Compression().NeuralNetwork(...)</c> stays the multiclass trainer.
/// </summary>
/// <remarks>
/// The flat overloads build an MLP with <c>hiddenLayers</c> (default <see cref="DefaultHiddenLayers"/>: 64 and 32 ReLU units)
/// over as many inputs as the feature column has, decided when <c>Fit</c> sees the data; Adam, and the given epochs, batch
/// size and learning rate. ML.NET's catalogs do not expose their <see cref="MLContext"/>, so these trainers run in a context
/// of their own that takes its seed from the catalog's (<c>new MLContext(seed: 1)</c> keeps training repeatable), copies its
/// GPU settings and forwards its log messages to the catalog's context (<c>ml.Log</c>).
/// </remarks>
public static class NeuralNetworkCatalogExtensions
{
    /// <summary>Hidden layers of the flat overloads' MLP when none are given: 64 then 32 ReLU units.</summary>
    public static IReadOnlyList<int> DefaultHiddenLayers { get; } = [64, 32];

    /// <summary>Epochs of the flat overloads when none are given.</summary>
    public const int DefaultEpochs = 20;

    /// <summary>Batch size of the flat overloads when none is given.</summary>
    public const int DefaultBatchSize = 32;

    /// <summary>Adam's learning rate in the flat overloads when none is given.</summary>
    public const double DefaultLearningRate = 1e-3;

    private static readonly ConditionalWeakTable<IHostEnvironment, MLContext> Contexts = new();

    /// <summary>
    /// A multiclass neural network classifier: key label; <c>Score</c> (vector of class probabilities) and
    /// <c>PredictedLabel</c> (key with the label's key values, so <c>MapKeyToValue</c> gives back the label's type).
    /// </summary>
    /// <param name="catalog">ml.MulticlassClassification.Trainers.</param>
    /// <param name="labelColumnName">The key label column.</param>
    /// <param name="featureColumnName">The known-size vector of Single feature column.</param>
    /// <param name="hiddenLayers">Units of each hidden ReLU layer; null for <see cref="DefaultHiddenLayers"/>; empty for a linear model.</param>
    /// <param name="epochs">Passes over the data.</param>
    /// <param name="batchSize">Rows per optimizer step.</param>
    /// <param name="learningRate">Adam's learning rate.</param>
    public static NeuralNetworkTrainer NeuralNetwork(this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        string labelColumnName = "Label", string featureColumnName = "Features", int[]? hiddenLayers = null, int epochs = DefaultEpochs,
        int batchSize = DefaultBatchSize, double learningRate = DefaultLearningRate) =>
        Flat(catalog, OutputHeadKind.Multiclass, labelColumnName, featureColumnName, hiddenLayers, epochs, batchSize, learningRate);

    /// <summary>A multiclass neural network classifier with every option (<see cref="NeuralNetworkOptions.Architecture"/> states the network and its input size).</summary>
    /// <param name="catalog">ml.MulticlassClassification.Trainers.</param>
    /// <param name="options">The training options (copied).</param>
    public static NeuralNetworkTrainer NeuralNetwork(this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog, NeuralNetworkOptions options) =>
        WithOptions(catalog, OutputHeadKind.Multiclass, options);

    /// <summary>
    /// A binary neural network classifier: Boolean label; <c>Score</c> (Single, the raw logit), <c>Probability</c> (Single,
    /// its sigmoid) and <c>PredictedLabel</c> (Boolean), so <c>ml.BinaryClassification.Evaluate</c> gives AUC, F1 and the rest.
    /// </summary>
    /// <param name="catalog">ml.BinaryClassification.Trainers.</param>
    /// <param name="labelColumnName">The Boolean label column.</param>
    /// <param name="featureColumnName">The known-size vector of Single feature column.</param>
    /// <param name="hiddenLayers">Units of each hidden ReLU layer; null for <see cref="DefaultHiddenLayers"/>; empty for logistic regression.</param>
    /// <param name="epochs">Passes over the data.</param>
    /// <param name="batchSize">Rows per optimizer step.</param>
    /// <param name="learningRate">Adam's learning rate.</param>
    public static NeuralNetworkTrainer NeuralNetwork(this BinaryClassificationCatalog.BinaryClassificationTrainers catalog,
        string labelColumnName = "Label", string featureColumnName = "Features", int[]? hiddenLayers = null, int epochs = DefaultEpochs,
        int batchSize = DefaultBatchSize, double learningRate = DefaultLearningRate) =>
        Flat(catalog, OutputHeadKind.Binary, labelColumnName, featureColumnName, hiddenLayers, epochs, batchSize, learningRate);

    /// <summary>A binary neural network classifier with every option (<see cref="NeuralNetworkOptions.Architecture"/> states the network and its input size).</summary>
    /// <param name="catalog">ml.BinaryClassification.Trainers.</param>
    /// <param name="options">The training options (copied).</param>
    public static NeuralNetworkTrainer NeuralNetwork(this BinaryClassificationCatalog.BinaryClassificationTrainers catalog, NeuralNetworkOptions options) =>
        WithOptions(catalog, OutputHeadKind.Binary, options);

    /// <summary>
    /// A neural network regression: Single label; <c>Score</c> (Single), so <c>ml.Regression.Evaluate</c> works. Targets are
    /// standardized while training and the scaling is undone inside the network, so the exported model predicts in the label's units.
    /// </summary>
    /// <param name="catalog">ml.Regression.Trainers.</param>
    /// <param name="labelColumnName">The Single label column.</param>
    /// <param name="featureColumnName">The known-size vector of Single feature column.</param>
    /// <param name="hiddenLayers">Units of each hidden ReLU layer; null for <see cref="DefaultHiddenLayers"/>; empty for linear regression.</param>
    /// <param name="epochs">Passes over the data.</param>
    /// <param name="batchSize">Rows per optimizer step.</param>
    /// <param name="learningRate">Adam's learning rate.</param>
    public static NeuralNetworkTrainer NeuralNetwork(this RegressionCatalog.RegressionTrainers catalog,
        string labelColumnName = "Label", string featureColumnName = "Features", int[]? hiddenLayers = null, int epochs = DefaultEpochs,
        int batchSize = DefaultBatchSize, double learningRate = DefaultLearningRate) =>
        Flat(catalog, OutputHeadKind.Regression, labelColumnName, featureColumnName, hiddenLayers, epochs, batchSize, learningRate);

    /// <summary>A neural network regression with every option (<see cref="NeuralNetworkOptions.Architecture"/> states the network and its input size).</summary>
    /// <param name="catalog">ml.Regression.Trainers.</param>
    /// <param name="options">The training options (copied).</param>
    public static NeuralNetworkTrainer NeuralNetwork(this RegressionCatalog.RegressionTrainers catalog, NeuralNetworkOptions options) =>
        WithOptions(catalog, OutputHeadKind.Regression, options);

    private static NeuralNetworkTrainer Flat(object catalog, OutputHeadKind head, string labelColumnName, string featureColumnName, int[]? hiddenLayers,
        int epochs, int batchSize, double learningRate)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentException.ThrowIfNullOrWhiteSpace(labelColumnName);
        ArgumentException.ThrowIfNullOrWhiteSpace(featureColumnName);
        var hidden = hiddenLayers ?? DefaultHiddenLayers.ToArray();
        foreach (var units in hidden)
            if (units <= 0)
                throw new ArgumentOutOfRangeException(nameof(hiddenLayers), units, "Every hidden layer needs a positive number of units.");
        var options = new NeuralNetworkOptions
        {
            LabelColumnName = labelColumnName,
            FeatureColumnName = featureColumnName,
            Architecture = Networks.NetworkArchitecture.Mlp(hidden), // its input size is the feature column's, taken at Fit
            Epochs = epochs,
            BatchSize = batchSize,
            LearningRate = learningRate,
        };
        return new NeuralNetworkTrainer(ContextOf(catalog), options, head);
    }

    private static NeuralNetworkTrainer WithOptions(object catalog, OutputHeadKind head, NeuralNetworkOptions options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(options);
        return new NeuralNetworkTrainer(ContextOf(catalog), options, head);
    }

    /// <summary>
    /// The context the trainers of <paramref name="catalog"/> run in: one per catalog environment, seeded from it, with its
    /// GPU settings, logging to it.
    /// </summary>
    private static MLContext ContextOf(object catalog)
    {
        var env = CatalogEnvironment(catalog);
        return Contexts.GetValue(env, e =>
        {
            var host = e.Register(nameof(NeuralNetworkCatalogExtensions));
            var context = new MLContext(seed: host.Rand.Next())
            {
                GpuDeviceId = e.GetType().GetProperty(nameof(MLContext.GpuDeviceId))?.GetValue(e) as int?,
                FallbackToCpu = e.GetType().GetProperty(nameof(MLContext.FallbackToCpu))?.GetValue(e) is true,
            };
            var channels = new ConcurrentDictionary<string, IChannel>();
            context.Log += (_, args) =>
            {
                if (args.Kind < ChannelMessageKind.Info)
                    return;
                var channel = channels.GetOrAdd(args.Source ?? nameof(NeuralNetworkTrainer), s => host.Start(s));
                switch (args.Kind)
                {
                    case ChannelMessageKind.Error: channel.Error(MessageSensitivity.Unknown, args.RawMessage); break;
                    case ChannelMessageKind.Warning: channel.Warning(MessageSensitivity.Unknown, args.RawMessage); break;
                    default: channel.Info(MessageSensitivity.Unknown, args.RawMessage); break;
                }
            };
            return context;
        });
    }

    /// <summary>
    /// The environment of an ML.NET trainer catalog: its internal <c>IInternalCatalog.Environment</c>, the only link from a
    /// catalog to its context (ML.NET's own trainer packages reach it as friends of Microsoft.ML).
    /// </summary>
    private static IHostEnvironment CatalogEnvironment(object catalog)
    {
        var property = catalog.GetType().GetInterfaces().FirstOrDefault(i => i.Name == "IInternalCatalog")?.GetProperty("Environment");
        return property?.GetValue(catalog) as IHostEnvironment
            ?? throw new InvalidOperationException(
                $"Could not reach the MLContext of {catalog.GetType().Name} (this Microsoft.ML version has no IInternalCatalog.Environment). " +
                "Use ml.Compression().NeuralNetwork(options) instead.");
    }
}
