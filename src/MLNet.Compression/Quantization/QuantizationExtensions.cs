using Microsoft.ML;

namespace MLNet.Compression.Quantization;

/// <summary>Quantization entry points on estimators.</summary>
public static class QuantizationExtensions
{
    /// <summary>
    /// Appends quantization to an estimator that produces a network (for example <c>mlContext.Compression().NeuralNetwork(...)</c>
    /// or <c>.Prune(...)</c>): <c>Fit(data)</c> trains it on the data, then quantizes it (calibrating or fine-tuning on the same data).
    /// </summary>
    /// <param name="estimator">The estimator that trains the network.</param>
    /// <param name="options">Mode, weight granularity, calibration and quantization-aware training settings.</param>
    /// <returns>An estimator whose <c>Fit</c> returns the quantized model; its <c>Report</c> says what was stored.</returns>
    public static QuantizationEstimator Quantize(this IEstimator<NeuralNetworkTransformer> estimator, QuantizationOptions options)
    {
        ArgumentNullException.ThrowIfNull(estimator);
        ArgumentNullException.ThrowIfNull(options);
        return new QuantizationEstimator(CompressionStage.ContextOf(estimator), estimator, null, options);
    }

    /// <summary>Appends quantization in <paramref name="mode"/> with default options (per-channel weights, MinMax calibration on 1,000 rows).</summary>
    /// <param name="estimator">The estimator that trains the network.</param>
    /// <param name="mode">How weights (and activations) are stored.</param>
    public static QuantizationEstimator Quantize(this IEstimator<NeuralNetworkTransformer> estimator, QuantizationMode mode)
    {
        ArgumentNullException.ThrowIfNull(estimator);
        return estimator.Quantize(new QuantizationOptions { Mode = mode });
    }
}
