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

/// <summary>
/// How <see cref="QuantizationMode.Int8Dynamic"/> chooses the uint8 scale of a dense layer's activations at run time
/// (<see cref="QuantizationOptions.ActivationScales"/>).
/// </summary>
public enum ActivationScaleScope
{
    /// <summary>
    /// Each row gets its own scale and zero point (the default): a row's scores never depend on the other rows it is scored
    /// with, so batched in-process scoring and the saved zip (one row per run) agree bit for bit.
    /// </summary>
    PerRow,

    /// <summary>
    /// One scale and zero point for the whole batch (ONNX Runtime's DynamicQuantizeLinear, fused with the integer MatMul; the
    /// form PyTorch's <c>quantize_dynamic</c> and ONNX Runtime's own quantization tool use): faster, but a row's scores depend
    /// on the batch it is scored in. Non-finite features (NaN, ±infinity) and features beyond ±1.7e38 are replaced by 0
    /// before the batch scale is taken, so such a row cannot turn the other rows' scores into NaN (the row itself still scores
    /// NaN through the non-finite guard). A FINITE outlier row (e.g. a feature of 1e30) is not caught: it stretches the
    /// shared scale and silently wrecks the scores of every other row in its batch (they stay finite, but may be wrong).
    /// Use it only where inputs are known to be in range.
    /// </summary>
    PerBatch,
}
