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

    /// <summary>
    /// Appends pruning to a pipeline that trains a network followed by ordinary transforms (an <c>EstimatorChain</c> such as
    /// <c>MapValueToKey → NormalizeMinMax → NeuralNetwork → MapKeyToValue</c>): <c>Fit(data)</c> fits the chain, then prunes and
    /// fine-tunes the network inside it on the same rows (through the chain's own transforms) and returns the fitted chain
    /// with only the network replaced, so the output columns stay the same.
    /// </summary>
    /// <param name="pipeline">An estimator whose fitted result holds exactly one network of this library.</param>
    /// <param name="options">Schedule, granularity, layers to keep dense, per-layer targets, fine-tuning settings and teacher.</param>
    /// <returns>An estimator whose <c>Fit</c> returns the pruned pipeline; its <c>Report</c> says what was reached.</returns>
    public static PipelineStageEstimator<PruningReport> Prune(this IEstimator<ITransformer> pipeline, PruningOptions options)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        ArgumentNullException.ThrowIfNull(options);
        var copy = options.Clone();
        copy.Validate();
        return new PipelineStageEstimator<PruningReport>(null, null, pipeline, (ml, network) => new PruningEstimator(ml, null, network, copy), copy,
            nameof(PruningOptions));
    }

    /// <summary>Per-layer sparsity of the network inside a fitted pipeline (see <see cref="PipelineExtensions.GetNeuralNetwork"/>).</summary>
    /// <param name="fittedPipeline">A fitted pipeline that holds exactly one network of this library.</param>
    public static PruningReport GetSparsity(this ITransformer fittedPipeline) => fittedPipeline.GetNeuralNetwork().GetSparsity();

    /// <summary>Per-layer sparsity of a model's weights: how many are exactly zero (biases are not counted).</summary>
    /// <param name="model">Any fitted network.</param>
    public static PruningReport GetSparsity(this NeuralNetworkTransformer model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return PruningReport.FromWeights(model.Network);
    }
}
