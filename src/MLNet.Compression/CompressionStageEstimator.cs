using Microsoft.ML;

namespace MLNet.Compression;

/// <summary>
/// Base of every stage that makes a network from another one (pruning, quantization, weight clustering, distillation,
/// continued training). A stage comes in up to two forms: chained after an estimator that trains the network
/// (<c>Fit(data)</c> fits it, then compresses the result, which it disposes) and post-training on a fitted model
/// (<c>Fit(data)</c> works on a copy; the model is not changed). The returned model saves and loads like any other and lists
/// what every stage did in <see cref="NeuralNetworkTransformer.CompressionHistory"/>: the source model's history plus this
/// stage's report.
/// </summary>
public abstract class CompressionStageEstimator : IEstimator<NeuralNetworkTransformer>, IHasMLContext
{
    private readonly MLContext? ml;
    private readonly IEstimator<NeuralNetworkTransformer>? inner;
    private readonly NeuralNetworkTransformer? fitted;
    private CompressionStageReport? lastReport;

    private protected CompressionStageEstimator(MLContext? ml, IEstimator<NeuralNetworkTransformer>? inner, NeuralNetworkTransformer? fitted)
    {
        this.ml = ml;
        this.inner = inner;
        this.fitted = fitted;
    }

    MLContext? IHasMLContext.Context => ml;

    /// <summary>
    /// Fits the inner estimator on <paramref name="input"/> (chained form) or takes the fitted model (post-training form),
    /// and makes the new model from it, fine-tuning or calibrating on <paramref name="input"/> where the stage does.
    /// </summary>
    /// <param name="input">Training data with the label and feature columns the model was trained on.</param>
    /// <returns>A new model.</returns>
    public NeuralNetworkTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (inner is null)
            return Run(ml ?? fitted!.Context, fitted, input);
        using var source = inner.Fit(input);
        return Run(ml ?? source.Context, source, input);
    }

    /// <summary>The output shape: the input plus the network's columns (<c>Score</c> and <c>PredictedLabel</c> for multiclass).</summary>
    /// <param name="inputSchema">The shape of the training data.</param>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        if (inner is not null)
            return inner.GetOutputSchema(inputSchema);
        // The fitted model's head gives the columns (binary: Score, Probability, PredictedLabel; regression: Score).
        return new NeuralNetworkTrainer(ml ?? fitted!.Context, OutputOptions, fitted?.HeadKind ?? Networks.Heads.OutputHeadKind.Multiclass)
            .GetOutputSchema(inputSchema);
    }

    /// <summary>The report of the last <see cref="Fit"/> (the last entry of its model's history); null before the first fit.</summary>
    private protected CompressionStageReport? LastReport => lastReport;

    /// <summary>The report of the last <see cref="Fit"/>, for the pipeline form of the stage.</summary>
    internal CompressionStageReport? ReportOfLastFit => lastReport;

    /// <summary>The options of the network this stage produces in the post-training form (columns for the output schema).</summary>
    private protected virtual NeuralNetworkOptions OutputOptions => fitted!.TrainingOptions;

    /// <summary>
    /// Makes the new model from <paramref name="source"/> (not changed; null for a stage that trains a new network) using
    /// <paramref name="input"/>, and says what it did.
    /// </summary>
    private protected abstract (NeuralNetworkTransformer Model, CompressionStageReport Report) Apply(MLContext context, NeuralNetworkTransformer? source, IDataView input);

    private NeuralNetworkTransformer Run(MLContext context, NeuralNetworkTransformer? source, IDataView input)
    {
        var (model, report) = Apply(context, source, input);
        model.RecordStage(source?.CompressionHistory ?? [], report);
        lastReport = report;
        return model;
    }
}

/// <summary>
/// A stage with its own options class and report type: keeps a validated copy of the options, hands out copies, and exposes
/// the report of the last <see cref="CompressionStageEstimator.Fit"/>.
/// </summary>
/// <typeparam name="TOptions">The stage's options class.</typeparam>
/// <typeparam name="TReport">The stage's report, also the last entry of its model's <see cref="NeuralNetworkTransformer.CompressionHistory"/>.</typeparam>
public abstract class CompressionStageEstimator<TOptions, TReport> : CompressionStageEstimator
    where TOptions : class
    where TReport : CompressionStageReport
{
    private readonly TOptions settings;
    private readonly Func<TOptions, TOptions> clone;

    private protected CompressionStageEstimator(MLContext? ml, IEstimator<NeuralNetworkTransformer>? inner, NeuralNetworkTransformer? fitted,
        TOptions options, Action<TOptions> validate, Func<TOptions, TOptions> clone)
        : base(ml, inner, fitted)
    {
        ArgumentNullException.ThrowIfNull(options);
        validate(options);
        settings = clone(options);
        this.clone = clone;
    }

    /// <summary>A copy of the options this estimator uses.</summary>
    public TOptions Options => clone(settings);

    /// <summary>
    /// What the last <see cref="CompressionStageEstimator.Fit"/> did (the same report is the last entry of that model's
    /// <see cref="NeuralNetworkTransformer.CompressionHistory"/>). Null before the first fit.
    /// </summary>
    public TReport? Report => (TReport?)LastReport;

    /// <summary>The options this estimator uses (validated, not to be changed).</summary>
    private protected TOptions Settings => settings;
}
