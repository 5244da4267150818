using Microsoft.ML;

namespace MLNet.Compression.Pruning;

/// <summary>Pruning entry points on estimators and fitted models.</summary>
public static class PruningExtensions
{
    /// <summary>
    /// Appends pruning to an estimator that produces a network (for example <c>mlContext.Compression().NeuralNetwork(...)</c>):
    /// <c>Fit(data)</c> trains it on the data, then prunes and fine-tunes it on the same data.
    /// </summary>
    /// <param name="estimator">The estimator that trains the network.</param>
    /// <param name="options">Schedule, granularity, layers to keep dense, per-layer targets and fine-tuning settings.</param>
    /// <returns>An estimator whose <c>Fit</c> returns the pruned model; its <c>Report</c> says what was reached.</returns>
    public static PruningEstimator Prune(this IEstimator<NeuralNetworkTransformer> estimator, PruningOptions options)
    {
        ArgumentNullException.ThrowIfNull(estimator);
        ArgumentNullException.ThrowIfNull(options);
        return new PruningEstimator(CompressionStage.ContextOf(estimator), estimator, null, options);
    }

    /// <summary>Per-layer sparsity of a model's weights: how many are exactly zero (biases are not counted).</summary>
    /// <param name="model">Any fitted network.</param>
    public static PruningReport GetSparsity(this NeuralNetworkTransformer model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return PruningReport.FromWeights(model.Network);
    }
}
