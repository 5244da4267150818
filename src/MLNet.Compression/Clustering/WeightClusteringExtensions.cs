using Microsoft.ML;

namespace MLNet.Compression.Clustering;

/// <summary>Weight clustering entry points on estimators and fitted models.</summary>
public static class WeightClusteringExtensions
{
    /// <summary>
    /// Appends weight clustering to an estimator that produces a network (for example <c>mlContext.Compression().NeuralNetwork(...)</c>
    /// or <c>.Prune(...)</c>, which gives Deep Compression's prune → share chain): <c>Fit(data)</c> trains it, then clusters
    /// each layer's weights and fine-tunes the shared values on the same data.
    /// </summary>
    /// <param name="estimator">The estimator that trains the network.</param>
    /// <param name="options">Clusters per layer, initialization, layers kept in float32 and fine-tuning settings.</param>
    public static WeightClusteringEstimator ClusterWeights(this IEstimator<NeuralNetworkTransformer> estimator, WeightClusteringOptions options)
    {
        ArgumentNullException.ThrowIfNull(estimator);
        ArgumentNullException.ThrowIfNull(options);
        return new WeightClusteringEstimator(CompressionStage.ContextOf(estimator), estimator, null, options);
    }

    /// <summary>Distinct non-zero weight values per weighted layer, by layer name (what weight sharing bounds by k).</summary>
    /// <param name="model">Any fitted network.</param>
    public static IReadOnlyDictionary<string, int> CountDistinctWeights(this NeuralNetworkTransformer model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model.Network.ParameterizedLayers.ToDictionary(l => l.Name, l => WeightClusteringEstimator.CountDistinctNonZero(l.Weight), StringComparer.Ordinal);
    }
}
