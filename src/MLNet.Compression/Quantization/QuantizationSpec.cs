namespace MLNet.Compression.Quantization;

/// <summary>The float range of one activation tensor, from calibration.</summary>
internal readonly record struct ActivationRange(float Min, float Max);

/// <summary>
/// Everything the ONNX exporter needs to write a quantized model: the mode, weight granularity, block size and, for
/// <see cref="QuantizationMode.Int8Static"/>, the calibrated range of the INPUT of every parameterized layer (by layer name), and for
/// <see cref="QuantizationMode.Int8Dynamic"/> whether activation scales are per row or per batch.
/// </summary>
internal sealed record QuantizationSpec(
    QuantizationMode Mode,
    bool PerChannel = true,
    int BlockSize = 32,
    IReadOnlyDictionary<string, ActivationRange>? InputRanges = null,
    IReadOnlyCollection<string>? KeepFloat = null,
    ActivationScaleScope ActivationScales = ActivationScaleScope.PerRow);
