using Microsoft.ML;

namespace MLNet.Compression;

/// <summary>Reaching the network inside a fitted ML.NET pipeline.</summary>
public static class PipelineExtensions
{
    /// <summary>
    /// The network of this library inside a fitted pipeline (a <c>TransformerChain</c>, nested chains included), for example
    /// to read <c>GetSparsity()</c>, <see cref="NeuralNetworkTransformer.Memory"/> or <see cref="NeuralNetworkTransformer.CompressionHistory"/>.
    /// A <see cref="NeuralNetworkTransformer"/> itself is returned as it is.
    /// </summary>
    /// <param name="fittedPipeline">The fitted pipeline.</param>
    /// <returns>The one network in the pipeline (owned by the pipeline: do not dispose it while the pipeline is in use).</returns>
    /// <exception cref="ArgumentException">The pipeline holds no network of this library, or more than one; the message lists what it holds.</exception>
    public static NeuralNetworkTransformer GetNeuralNetwork(this ITransformer fittedPipeline) =>
        Pipelines.FittedPipeline.FindNetwork(fittedPipeline, nameof(fittedPipeline));
}
