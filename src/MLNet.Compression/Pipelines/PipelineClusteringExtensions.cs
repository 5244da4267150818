using Microsoft.ML;

namespace MLNet.Compression.Clustering;

/// <summary>Weight clustering of the network inside an estimator pipeline.</summary>
public static class PipelineClusteringExtensions
{
    /// <summary>
    /// Appends weight clustering to a pipeline that trains a network followed by ordinary transforms (an <c>EstimatorChain</c>
    /// ending in <c>MapKeyToValue</c>, or a pipeline stage such as <c>.Prune(...)</c>): <c>Fit(data)</c> fits the pipeline, then
    /// clusters and fine-tunes the network inside it on the same rows and returns the fitted pipeline with only the network replaced.
    /// </summary>
    /// <param name="pipeline">An estimator whose fitted result holds exactly one network of this library.</param>
    /// <param name="options">Clusters per layer, initialization, layers kept in float32, fine-tuning settings and teacher.</param>
    public static PipelineStageEstimator<WeightClusteringReport> ClusterWeights(this IEstimator<ITransformer> pipeline, WeightClusteringOptions options)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        ArgumentNullException.ThrowIfNull(options);
        var copy = options.Clone();
        copy.Validate();
        return new PipelineStageEstimator<WeightClusteringReport>(null, null, pipeline, (ml, network) => new WeightClusteringEstimator(ml, null, network, copy),
            copy, nameof(WeightClusteringOptions));
    }
}
