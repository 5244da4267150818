namespace MLNet.Compression.Quantization;

/// <summary>How a network's weights (and activations) are stored and computed when it ships.</summary>
public enum QuantizationMode
{
    /// <summary>Weights stored as float16 (cast to float32 where ONNX Runtime's CPU kernels need it): half the artifact.</summary>
    Float16,

    /// <summary>
    /// Weights int8 (per-channel symmetric by default), activations quantized at run time
    /// (each row's own uint8 scale and zero point, one QuantizeLinear along the rows, then MatMulInteger / ConvInteger), so a
    /// row scores the same alone or in any batch. About a quarter of the float32 artifact.
    /// </summary>
    Int8Dynamic,

    /// <summary>
    /// QDQ format: QuantizeLinear/DequantizeLinear around weights (int8, per channel) and activations (uint8), with
    /// activation ranges calibrated on rows of the training data.
    /// </summary>
    Int8Static,

    /// <summary>Blockwise 4-bit weights with one scale per block (weight-only; activations stay float): the smallest artifact.</summary>
    Int4WeightOnly,
}

/// <summary>How activation ranges are chosen from calibration data for <see cref="QuantizationMode.Int8Static"/>.</summary>
public enum CalibrationMethod
{
    /// <summary>The observed minimum and maximum.</summary>
    MinMax,

    /// <summary>A percentile of the absolute values (default 99.99), ignoring rare outliers.</summary>
    Percentile,

    /// <summary>The range that minimises the KL divergence between the float and the quantized histograms (TensorRT's method).</summary>
    Entropy,
}
