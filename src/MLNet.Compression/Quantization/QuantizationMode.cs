namespace MLNet.Compression.Quantization;

/// <summary>How a network's weights (and activations) are stored and computed when it ships.</summary>
public enum QuantizationMode
{
    /// <summary>Weights stored as float16 (cast to float32 where ONNX Runtime's CPU kernels need it): half the artifact.</summary>
    Float16,

    /// <summary>
    /// Weights int8 (per-channel symmetric by default), activations quantized at run time
    /// (each row's own uint8 scale, one QuantizeLinear along the rows, then ONNX Runtime's MatMulIntegerToFloat for dense layers;
    /// convolutions dequantize their int8 weights and compute in float), so a row scores the same alone or in any batch. About a quarter of the float32 artifact. Opt-in, faster and batch-dependent:
    /// one scale per batch (<see cref="QuantizationOptions.ActivationScales"/> = <see cref="ActivationScaleScope.PerBatch"/>).
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
    /// on the batch it is scored in (the saved zip scores one row per run, which gives per-row scales: scores within 5e-2 of
    /// the batched in-process model, measured up to 1.8e-2, labels differing only on near-ties). A row with a NaN or infinite feature is replaced by zeros before the
    /// batch scale is taken (it still scores NaN through the non-finite guard), features are clipped to ±1.7e38, and hidden
    /// activations that overflowed are replaced by 0, so no row can turn the other rows' scores into NaN or infinity.
    /// <b>A FINITE outlier row is not caught</b> (e.g. one feature of 1e30 where the others are about 1): it stretches the
    /// shared scale and silently wrecks the scores of every other row in its batch; they stay finite but may be wrong (in the
    /// tests one such row changed the label of 429 of 498 other MNIST rows). PyTorch's dynamic quantization has the same
    /// hazard. Use it only where inputs are known to be in range, or keep <see cref="PerRow"/>.
    /// </summary>
    PerBatch,
}
