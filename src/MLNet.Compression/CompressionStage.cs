using Microsoft.ML;

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
