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
