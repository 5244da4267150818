using Microsoft.ML;

namespace MLNet.Compression.Quantization;

/// <summary>Quantization of the network inside an estimator pipeline.</summary>
public static class PipelineQuantizationExtensions
{
    /// <summary>
    /// Appends quantization to a pipeline that trains a network followed by ordinary transforms (an <c>EstimatorChain</c> ending
    /// in <c>MapKeyToValue</c>, or a pipeline stage): <c>Fit(data)</c> fits the pipeline, then quantizes the network inside it
    /// (calibrating on the same rows, through the pipeline's own transforms) and returns the fitted pipeline with only the
    /// network replaced.
    /// </summary>
    /// <param name="pipeline">An estimator whose fitted result holds exactly one network of this library.</param>
    /// <param name="options">Mode, weight granularity, calibration and quantization-aware training settings.</param>
    public static PipelineStageEstimator<QuantizationReport> Quantize(this IEstimator<ITransformer> pipeline, QuantizationOptions options)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        ArgumentNullException.ThrowIfNull(options);
        var copy = options.Clone();
        copy.Validate();
        return new PipelineStageEstimator<QuantizationReport>(null, null, pipeline, (ml, network) => new QuantizationEstimator(ml, null, network, copy), null,
            nameof(QuantizationOptions));
    }

    /// <summary>Appends quantization in <paramref name="mode"/> with default options to a pipeline that trains a network.</summary>
    /// <param name="pipeline">An estimator whose fitted result holds exactly one network of this library.</param>
    /// <param name="mode">How weights (and activations) are stored.</param>
    public static PipelineStageEstimator<QuantizationReport> Quantize(this IEstimator<ITransformer> pipeline, QuantizationMode mode)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        return pipeline.Quantize(new QuantizationOptions { Mode = mode });
    }
}
