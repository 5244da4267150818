using Microsoft.ML;

namespace MLNet.Compression;

/// <summary>
/// The entry point to MLNet.Compression's estimators, reached from the context: <c>mlContext.Compression()</c>.
/// It hangs off the <see cref="MLContext"/> itself so stages get the context's seed, log, <c>GpuDeviceId</c> and <c>FallbackToCpu</c>.
/// </summary>
public sealed class CompressionCatalog
{
    internal CompressionCatalog(MLContext context) => Context = context;

    internal MLContext Context { get; }

    /// <summary>A trainer for a neural network classifier (TorchSharp, CPU or CUDA).</summary>
    /// <param name="options">Architecture, epochs, batch size, optimizer, device, precision and column names.</param>
    public NeuralNetworkTrainer NeuralNetwork(NeuralNetworkOptions? options = null) => new(Context, options ?? new NeuralNetworkOptions());

    /// <summary>
    /// Prunes a network that is already trained: <c>Fit(data)</c> prunes a copy of <paramref name="fittedModel"/> (which is
    /// not changed) and fine-tunes it on the data. The estimator's <c>Report</c> says how sparse each layer became.
    /// </summary>
    /// <param name="fittedModel">The trained network.</param>
    /// <param name="options">Schedule, granularity, layers to keep dense, per-layer targets and fine-tuning settings.</param>
    public Pruning.PruningEstimator Prune(NeuralNetworkTransformer fittedModel, Pruning.PruningOptions options)
    {
        ArgumentNullException.ThrowIfNull(fittedModel);
        ArgumentNullException.ThrowIfNull(options);
        return new Pruning.PruningEstimator(Context, null, fittedModel, options);
    }

    /// <summary>
    /// Quantizes a network that is already trained: <c>Fit(data)</c> quantizes a copy of <paramref name="fittedModel"/> (which is
    /// not changed), calibrating activation ranges on the data (<see cref="Quantization.QuantizationMode.Int8Static"/>) or
    /// fine-tuning on it first (<see cref="Quantization.QuantizationOptions.QuantizationAwareTraining"/>). The returned model
    /// scores with the quantized ONNX graph; the estimator's <c>Report</c> gives each layer's encoding, size and input range.
    /// </summary>
    /// <param name="fittedModel">The trained network (pruned networks keep their zeros).</param>
    /// <param name="options">Mode, weight granularity, calibration and quantization-aware training settings.</param>
    public Quantization.QuantizationEstimator Quantize(NeuralNetworkTransformer fittedModel, Quantization.QuantizationOptions options)
    {
        ArgumentNullException.ThrowIfNull(fittedModel);
        ArgumentNullException.ThrowIfNull(options);
        return new Quantization.QuantizationEstimator(Context, null, fittedModel, options);
    }

    /// <summary>
    /// Continues training a fitted network on new data (incremental learning): <c>Fit(newData)</c> trains a copy of
    /// <paramref name="previousModel"/> (which is not changed) from its weights and optimizer state, with the forgetting
    /// mitigation chosen in <see cref="Incremental.ContinueTrainingOptions.Strategies"/> (replay, learning without forgetting,
    /// EWC), growing the output layer when the new data's label has classes the model has not seen, keeping pruned weights
    /// at zero and re-quantizing a quantized model. The result carries its replay memory and EWC state (also in its
    /// checkpoint), so it can be continued again; the estimator's <c>Report</c> gives the memory carried forward.
    /// </summary>
    /// <param name="previousModel">The model to continue (trained, compressed, loaded from a checkpoint, or from an earlier increment).</param>
    /// <param name="options">Strategies, epochs, learning rate, replay budget, LwF and EWC settings.</param>
    public Incremental.ContinueTrainingEstimator ContinueTraining(NeuralNetworkTransformer previousModel, Incremental.ContinueTrainingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(previousModel);
        return new Incremental.ContinueTrainingEstimator(Context, previousModel, options ?? new Incremental.ContinueTrainingOptions());
    }
}

/// <summary>Extension methods on <see cref="MLContext"/>.</summary>
public static class MLContextCompressionExtensions
{
    /// <summary>MLNet.Compression's estimators: training, pruning, quantization, weight sharing, distillation, incremental training.</summary>
    /// <param name="mlContext">The context.</param>
    public static CompressionCatalog Compression(this MLContext mlContext)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        return new CompressionCatalog(mlContext);
    }
}
