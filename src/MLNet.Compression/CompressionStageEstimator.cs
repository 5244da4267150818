using Microsoft.ML;

namespace MLNet.Compression;

/// <summary>
/// Base of the stages that compress a trained network (pruning, quantization, weight clustering). Each comes in two forms:
/// chained after an estimator that trains the network (<c>Fit(data)</c> fits it, then compresses the result, which it
/// disposes) and post-training on a fitted model (<c>Fit(data)</c> compresses a copy; the model is not changed). The stage's
/// work itself is the derived class's; the returned model saves and loads like any other.
/// </summary>
public abstract class CompressionStageEstimator : IEstimator<NeuralNetworkTransformer>, IHasMLContext
{
    private readonly MLContext? ml;
    private readonly IEstimator<NeuralNetworkTransformer>? inner;
    private readonly NeuralNetworkTransformer? fitted;

    private protected CompressionStageEstimator(MLContext? ml, IEstimator<NeuralNetworkTransformer>? inner, NeuralNetworkTransformer? fitted)
    {
        this.ml = ml;
        this.inner = inner;
        this.fitted = fitted;
    }

    MLContext? IHasMLContext.Context => ml;

    /// <summary>
    /// Fits the inner estimator on <paramref name="input"/> (chained form) or takes the fitted model (post-training form),
    /// and compresses it, fine-tuning or calibrating on <paramref name="input"/> where the stage does.
    /// </summary>
    /// <param name="input">Training data with the label and feature columns the model was trained on.</param>
    /// <returns>A new, compressed model.</returns>
    public NeuralNetworkTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (inner is null)
            return Apply(ml ?? fitted!.Context, fitted!, input);
        using var source = inner.Fit(input);
        return Apply(ml ?? source.Context, source, input);
    }

    /// <summary>The output shape: the input plus <c>Score</c> and <c>PredictedLabel</c>.</summary>
    /// <param name="inputSchema">The shape of the training data.</param>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        if (inner is not null)
            return inner.GetOutputSchema(inputSchema);
        return new NeuralNetworkTrainer(ml ?? fitted!.Context, fitted!.TrainingOptions).GetOutputSchema(inputSchema);
    }

    /// <summary>Compresses <paramref name="source"/> (not changed) using <paramref name="input"/>; returns the new model.</summary>
    private protected abstract NeuralNetworkTransformer Apply(MLContext context, NeuralNetworkTransformer source, IDataView input);
}
