using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Distillation;
using MLNet.Compression.Pipelines;

namespace MLNet.Compression;

/// <summary>
/// A compression stage (pruning, quantization, weight clustering, continued training) applied to the network inside a whole
/// ML.NET pipeline, e.g. <c>MapValueToKey → NormalizeMinMax → network → MapKeyToValue</c>. Two forms:
/// <c>mlContext.Compression().Prune(fittedPipeline, options)</c> takes a fitted pipeline (it is not changed), and
/// <c>pipeline.Prune(options)</c> on an estimator chain fits the chain first. <see cref="Fit"/> takes the RAW rows the pipeline
/// reads: it runs the pipeline's own fitted transforms before the network (so the network sees exactly the features it was
/// trained on), makes the new network with the stage, and returns the same pipeline with only the network replaced: the same
/// input and output columns, every other transformer the same object, nested chains rebuilt as
/// <see cref="TransformerChain{ITransformer}"/>. <c>mlContext.Model.Save</c> of the result writes ML.NET's transforms and the
/// network's ONNX scoring chain, which load and score without TorchSharp. A teacher set in the stage's options
/// (<see cref="TeacherGuidedFineTuningOptions.Teacher"/>) is a whole pipeline too: it scores the same raw rows.
/// Reach the new network with <see cref="PipelineExtensions.GetNeuralNetwork"/>.
/// </summary>
/// <typeparam name="TReport">The stage's report type (<see cref="Pruning.PruningReport"/>, ...).</typeparam>
public sealed class PipelineStageEstimator<TReport> : IEstimator<TransformerChain<ITransformer>>
    where TReport : CompressionStageReport
{
    private readonly MLContext? ml;
    private readonly ITransformer? fitted;
    private readonly IEstimator<ITransformer>? inner;
    private readonly Func<MLContext?, NeuralNetworkTransformer, CompressionStageEstimator> makeStage;
    private readonly ITransformer? teacher;
    private readonly DistillationOptions? distillation;
    private readonly string teacherName;
    private CompressionStageEstimator? stage;
    private TReport? report;

    internal PipelineStageEstimator(MLContext? ml, ITransformer? fitted, IEstimator<ITransformer>? inner,
        Func<MLContext?, NeuralNetworkTransformer, CompressionStageEstimator> makeStage, TeacherGuidedFineTuningOptions? guided, string optionsName)
    {
        this.ml = ml;
        this.fitted = fitted;
        this.inner = inner;
        this.makeStage = makeStage;
        teacher = guided?.Teacher;
        distillation = guided?.Distillation?.Clone();
        teacherName = optionsName + ".Teacher";
        if (fitted is not null)
            stage = makeStage(ml, FittedPipeline.FindNetwork(fitted, "fittedPipeline")); // options checked against the network now, before any data
    }

    /// <summary>What the last <see cref="Fit"/> did (also the last entry of the new network's <see cref="NeuralNetworkTransformer.CompressionHistory"/>); null before it.</summary>
    public TReport? Report => report;

    /// <summary>
    /// Runs the pipeline's transforms before its network on <paramref name="input"/> (the raw rows), applies the stage to the
    /// network (fine-tuning or calibrating on those rows), and returns the pipeline with the new network in its place.
    /// The chained form first fits the estimator chain on <paramref name="input"/>.
    /// </summary>
    /// <param name="input">The raw rows the pipeline reads (the columns its first transform needs).</param>
    /// <returns>The same pipeline with the network replaced.</returns>
    public TransformerChain<ITransformer> Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var pipeline = fitted ?? inner!.Fit(input);
        var network = FittedPipeline.FindNetwork(pipeline, fitted is null ? "pipeline" : "fittedPipeline");
        try
        {
            var context = ml ?? network.Context;
            var current = fitted is null ? makeStage(context, network) : stage!;
            TeacherJoin? join = null;
            try
            {
                if (teacher is not null)
                    join = TeacherJoin.Create(context, teacher, distillation!, input, teacherName, new ContextLog(context, "Pipeline"), null);
                using var scope = join is null ? null : TeacherJoin.Use(join);
                var prepared = FittedPipeline.Before(pipeline, network, join?.Data ?? input);
                var replacement = current.Fit(prepared);
                report = (TReport?)current.ReportOfLastFit;
                stage = current;
                return FittedPipeline.Replace(pipeline, network, replacement);
            }
            finally
            {
                join?.Dispose();
            }
        }
        finally
        {
            if (fitted is null)
                network.Dispose(); // the chained form's intermediate network, replaced in the returned pipeline
        }
    }

    /// <summary>
    /// The output shape: the stage keeps the pipeline's columns, so in the chained form it is the chain's own shape. A fitted
    /// pipeline's shape depends on vector sizes that a <see cref="SchemaShape"/> does not carry: ask the pipeline itself with
    /// <c>fittedPipeline.GetOutputSchema(data.Schema)</c>.
    /// </summary>
    /// <param name="inputSchema">The shape of the raw rows.</param>
    /// <exception cref="NotSupportedException">In the post-training form.</exception>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        if (inner is not null)
            return inner.GetOutputSchema(inputSchema);
        throw new NotSupportedException(
            "The output shape of a stage over a fitted pipeline is the pipeline's own, which depends on vector sizes a SchemaShape does not hold: " +
            "use fittedPipeline.GetOutputSchema(data.Schema) (the stage keeps the pipeline's columns).");
    }
}
