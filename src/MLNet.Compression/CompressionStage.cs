using System.Text.Json.Serialization;
using Microsoft.ML;
using MLNet.Compression.Clustering;
using MLNet.Compression.Quantization;

namespace MLNet.Compression;

/// <summary>An estimator of this library that knows the <see cref="MLContext"/> it was created from.</summary>
internal interface IHasMLContext
{
    /// <summary>The context, or null when the estimator was created without one.</summary>
    MLContext? Context { get; }
}

/// <summary>Helpers shared by the compression stages.</summary>
internal static class CompressionStage
{
    /// <summary>The context of one of this library's estimators, when it exposes one.</summary>
    public static MLContext? ContextOf(IEstimator<NeuralNetworkTransformer> estimator) => (estimator as IHasMLContext)?.Context;
}

/// <summary>
/// What one compression stage did to a model: the base of <see cref="Pruning.PruningReport"/>,
/// <see cref="QuantizationReport"/>, <see cref="WeightClusteringReport"/>, <see cref="Distillation.DistillationReport"/> and
/// <see cref="Incremental.ContinueTrainingReport"/>. A model lists the reports of every stage that made it, in order, in
/// <see cref="NeuralNetworkTransformer.CompressionHistory"/>. Plain data: System.Text.Json writes and reads the list, each
/// report tagged by its stage in a <c>"$stage"</c> property.
/// </summary>
[JsonPolymorphic(TypeDiscriminatorPropertyName = "$stage")]
[JsonDerivedType(typeof(Pruning.PruningReport), "prune")]
[JsonDerivedType(typeof(QuantizationReport), "quantize")]
[JsonDerivedType(typeof(WeightClusteringReport), "cluster")]
[JsonDerivedType(typeof(Distillation.DistillationReport), "distill")]
[JsonDerivedType(typeof(Incremental.ContinueTrainingReport), "continue")]
public abstract record CompressionStageReport
{
    private protected CompressionStageReport()
    {
    }
}

/// <summary>
/// One thing a stage did to the exported encoding of a model (quantization, weight sharing) that a later stage which
/// changes the weights (continued training) must do again. Each step re-applies itself, so that stage never names it.
/// </summary>
/// <remarks>
/// A step's System.Text.Json form is the one the checkpoint's <c>recipe</c> stores: <c>{"kind": K, K: options}</c>, where
/// K names the step and the options are written property by property. A new kind of step is one class with its
/// <see cref="JsonDerivedTypeAttribute"/> here and its options under a property named like its kind.
/// </remarks>
[JsonPolymorphic(TypeDiscriminatorPropertyName = "kind")]
[JsonDerivedType(typeof(QuantizeStep), "quantization")]
[JsonDerivedType(typeof(ClusterStep), "clustering")]
internal interface IReapplicableStep
{
    /// <summary>Whether this step makes <paramref name="earlier"/> obsolete, so the recipe drops it when this one is added.</summary>
    bool Supersedes(IReapplicableStep earlier);

    /// <summary>
    /// Does the step again on <paramref name="model"/> (which is not changed) with <paramref name="data"/> (calibration,
    /// quantization-aware fine-tuning) and returns the new model; <paramref name="cancellation"/> is the calling stage's.
    /// </summary>
    NeuralNetworkTransformer Reapply(MLContext context, NeuralNetworkTransformer model, IDataView data, CancellationToken cancellation, ContextLog log);
}

/// <summary>The model was quantized with <paramref name="Options"/>; re-applied by quantizing again (calibrating on the new data).</summary>
internal sealed record QuantizeStep([property: JsonPropertyName("quantization")] QuantizationOptions Options) : IReapplicableStep
{
    /// <inheritdoc />
    public bool Supersedes(IReapplicableStep earlier) => earlier is QuantizeStep;

    /// <inheritdoc />
    public NeuralNetworkTransformer Reapply(MLContext context, NeuralNetworkTransformer model, IDataView data, CancellationToken cancellation, ContextLog log)
    {
        var again = Options.Clone();
        again.CancellationToken = cancellation;
        // Calibration (and quantization-aware fine-tuning, if the recipe asks for it) reads the data the calling stage trained on.
        var quantized = new QuantizationEstimator(context, null, model, again).Fit(data);
        log.Info($"Re-quantized the model ({Options.Mode}), as the previous model was.");
        return quantized;
    }
}

/// <summary>The model's weights were shared with <paramref name="Options"/>; re-applied by clustering again (k-means from the current weights, no fine-tuning).</summary>
internal sealed record ClusterStep([property: JsonPropertyName("clustering")] WeightClusteringOptions Options) : IReapplicableStep
{
    /// <inheritdoc />
    public bool Supersedes(IReapplicableStep earlier) => earlier is ClusterStep or QuantizeStep; // clustering replaces the weights a quantization encoded

    /// <inheritdoc />
    public NeuralNetworkTransformer Reapply(MLContext context, NeuralNetworkTransformer model, IDataView data, CancellationToken cancellation, ContextLog log)
    {
        // Shared weights drift apart while training: cluster again from the trained weights, without another fine-tuning.
        var again = Options.Clone();
        again.Epochs = 0;
        again.Teacher = null;
        again.CancellationToken = cancellation;
        var clustered = new WeightClusteringEstimator(context, null, model, again).Fit(data);
        log.Info($"Re-clustered the model ({Options.ClusterCount} shared values per layer), as the previous model was.");
        return clustered;
    }
}

/// <summary>
/// The export encodings a model carries, as the steps that made them, in order (at most one clustering, then at most one
/// quantization). A stage that changes the weights of such a model (continued training) re-applies every step.
/// </summary>
/// <param name="Steps">The steps, in the order they are re-applied.</param>
internal sealed record CompressionRecipe(IReadOnlyList<IReapplicableStep> Steps)
{
    /// <summary>Plain float32 export.</summary>
    public static CompressionRecipe None { get; } = new([]);

    /// <summary>This recipe with <paramref name="step"/> added last and the steps it supersedes dropped.</summary>
    public CompressionRecipe Then(IReapplicableStep step) => new(Steps.Where(s => !step.Supersedes(s)).Append(step).ToArray());

    /// <summary>The quantization settings the model was exported with, or null.</summary>
    [JsonIgnore]
    public QuantizationOptions? Quantization => Steps.OfType<QuantizeStep>().LastOrDefault()?.Options;

    /// <summary>The weight-sharing settings the model was exported with, or null.</summary>
    [JsonIgnore]
    public WeightClusteringOptions? Clustering => Steps.OfType<ClusterStep>().LastOrDefault()?.Options;

    /// <summary>Does every step again on <paramref name="model"/>, in order; disposes the intermediate models, not <paramref name="model"/>.</summary>
    public NeuralNetworkTransformer Reapply(MLContext context, NeuralNetworkTransformer model, IDataView data, CancellationToken cancellation, ContextLog log)
    {
        var current = model;
        foreach (var step in Steps)
        {
            var next = step.Reapply(context, current, data, cancellation, log);
            if (!ReferenceEquals(current, model))
                current.Dispose();
            current = next;
        }
        return current;
    }
}
