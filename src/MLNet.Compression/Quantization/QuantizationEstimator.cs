using System.Globalization;
using System.Text;
using System.Text.Json.Serialization;
using Microsoft.ML;
using MLNet.Compression.Memory;
using MLNet.Compression.Networks;
using MLNet.Compression.Training;

namespace MLNet.Compression.Quantization;

/// <summary>
/// Quantizes a trained network: the returned model's in-process <c>Transform</c> and its saved zip both run a quantized
/// ONNX graph on ONNX Runtime (float16 weights, int8 weights with dynamic or calibrated static activation quantization, or
/// blockwise 4-bit weights; see <see cref="QuantizationMode"/>). For <see cref="QuantizationMode.Int8Static"/> the input
/// range of every weighted layer is calibrated on the first <see cref="QuantizationOptions.CalibrationRows"/> rows of the
/// data given to <see cref="CompressionStageEstimator.Fit"/>. With <see cref="QuantizationOptions.QuantizationAwareTraining"/> the network is first
/// fine-tuned on that data with simulated int8 rounding (straight-through estimator) through the same training loop as
/// <see cref="NeuralNetworkTrainer"/>. Weights that are exactly zero (pruned) stay exactly zero. Two ways in:
/// <c>trainer.Quantize(options)</c> (fits the trainer on the data, then quantizes) and
/// <c>mlContext.Compression().Quantize(fittedModel, options)</c> (quantizes a model that is already trained; it is not changed).
/// After <see cref="CompressionStageEstimator.Fit"/>, <c>Report</c> gives the encoding, size and activation range of every layer.
/// </summary>
public sealed class QuantizationEstimator : CompressionStageEstimator<QuantizationOptions, QuantizationReport>
{
    private const string Stage = "quantize";

    internal QuantizationEstimator(MLContext? ml, IEstimator<NeuralNetworkTransformer>? inner, NeuralNetworkTransformer? fitted, QuantizationOptions options)
        : base(ml, inner, fitted, options, o => o.Validate(), o => o.Clone())
    {
        if (fitted is not null)
            CheckLayerNames(fitted.Network, Settings); // fail before any data is read
    }



    /// <inheritdoc />
    private protected override (NeuralNetworkTransformer, CompressionStageReport) Apply(MLContext context, NeuralNetworkTransformer? fittedSource, IDataView input)
    {
        var source = fittedSource!;
        var log = new ContextLog(context, "Quantize");
        var network = source.Network.Clone();
        CheckLayerNames(network, Settings);
        SchemaValidation.FeatureColumn(input.Schema, source.FeatureColumnName, network.InputLength);
        var keepFloat = new HashSet<string>(Settings.KeepFloat, StringComparer.Ordinal);
        bool calibrate = Settings.Mode == QuantizationMode.Int8Static;

        TrainingResult? result = null;
        NeuralNetworkOptions? tuning = null;
        if (Settings.QuantizationAwareTraining && Settings.QatEpochs > 0)
        {
            tuning = Settings.Derive(source.TrainingOptions, Settings.RowsFor(input));
            // Activation ranges start from the float model's observed ranges and follow a moving average during training.
            var initial = calibrate
                ? Calibration.Run(network, input, source.LabelColumnName, source.FeatureColumnName, CalibrationMethod.MinMax, Settings.CalibrationRows).Ranges
                : null;
            log.Info($"Quantization-aware fine-tuning of {network.Architecture.Name}: {tuning.Epochs} epoch(s) at lr={tuning.LearningRate}, " +
                     $"int8 weights ({(Settings.PerChannel ? "per channel" : "per tensor")})" + (calibrate ? " and activations." : "."));
            using var fakeQuant = new FakeQuantTraining(network, Settings.PerChannel, keepFloat, initial);
            result = new TrainingSession(context, tuning, Stage, Settings.CancellationToken).Run(input, network, source.Seed, null, fakeQuant.Hooks());
            network = result.Model;
        }

        CalibrationResult? calibration = null;
        if (calibrate)
        {
            calibration = Calibration.Run(network, input, source.LabelColumnName, source.FeatureColumnName, Settings.Calibration,
                Settings.CalibrationRows, Settings.Percentile);
            log.Info($"Calibrated the input ranges of {calibration.Ranges.Count} layer(s) on {calibration.Rows:N0} row(s) ({Settings.Calibration}).");
        }

        var spec = new QuantizationSpec(Settings.Mode, Settings.PerChannel, Settings.BlockSize, calibration?.Ranges, keepFloat.ToArray(),
            Settings.ActivationScales);
        var exportOptions = QuantizedExport.Options(network, spec);
        var weights = QuantizedExport.Describe(network, spec);
        var resultOptions = source.TrainingOptions.Clone();
        resultOptions.Architecture = network.Architecture;
        var model = NeuralNetworkTransformer.Create(context, network, source.ClassNames, resultOptions, input.Schema, result, source.Seed,
            exportOptions, weights.ResidentBytes, source.Recipe.Then(new QuantizeStep(Settings.Clone())));
        var report = BuildReport(network, weights, calibration, result is not null, model.OnnxBytes.LongLength) with
        {
            FineTuningEpochs = tuning?.Epochs ?? 0,
            FineTuningSteps = result?.Steps ?? 0,
            FineTuningLearningRate = tuning?.LearningRate,
            ActivationScales = Settings.ActivationScales,
        };
        log.Info(report.ToString());
        return (model, report);
    }

    private QuantizationReport BuildReport(NetworkModel network, QuantizedWeightsInfo weights, CalibrationResult? calibration, bool qat, long onnxBytes)
    {
        var byName = weights.Layers.ToDictionary(e => e.Name, StringComparer.Ordinal);
        var layers = network.ParameterizedLayers.Select(l =>
        {
            var e = byName[l.Name];
            ActivationRange? range = calibration is not null && calibration.Ranges.TryGetValue(l.Name, out var r) ? r : null;
            ActivationRange? seen = calibration is not null && calibration.Observed.TryGetValue(l.Name, out var o) ? o : null;
            return new LayerQuantizationStats(l.Name, e.Encoding, e.Compute, l.ParameterCount, l.ParameterCount * sizeof(float), e.Bytes,
                e.ResidentWeightBytes + e.BiasBytes, range?.Min, range?.Max, seen?.Min, seen?.Max);
        }).ToArray();
        return new QuantizationReport(Settings.Mode, Settings.PerChannel, Settings.Mode == QuantizationMode.Int4WeightOnly ? Settings.BlockSize : null,
            calibration?.Method, calibration?.Rows ?? 0, qat, layers, onnxBytes);
    }

    private static void CheckLayerNames(NetworkModel network, QuantizationOptions o)
    {
        var names = network.ParameterizedLayers.Select(l => l.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var name in o.KeepFloat)
            if (!names.Contains(name))
                throw new ArgumentException(
                    $"QuantizationOptions.KeepFloat names layer '{name}', which the model does not have; its weighted layers are: {string.Join(", ", names)}.",
                    "options");
    }
}

/// <summary>How one weighted layer was quantized.</summary>
/// <param name="Name">Layer name ("fc1", "conv2", "output").</param>
/// <param name="WeightEncoding">How the weights are stored in the ONNX model (e.g. "int8 per-channel", "int4 block 32", "float16", "float32").</param>
/// <param name="Compute">The operator ONNX Runtime runs for the layer (e.g. "QDQ → QGemm (int8)", "MatMulNBits (4-bit)").</param>
/// <param name="Parameters">Weights and biases.</param>
/// <param name="FloatBytes">Bytes of the parameters in float32.</param>
/// <param name="QuantizedBytes">Bytes of the parameters as stored in the ONNX model (values, scales, zero points, biases).</param>
/// <param name="ResidentBytes">Bytes the parameters occupy once ONNX Runtime has loaded the model (float16 weights are cast to float32 at load).</param>
/// <param name="InputMin">Lower end of the calibrated input range (<see cref="QuantizationMode.Int8Static"/>), else null.</param>
/// <param name="InputMax">Upper end of the calibrated input range, else null.</param>
/// <param name="ObservedInputMin">Smallest input value seen during calibration, else null.</param>
/// <param name="ObservedInputMax">Largest input value seen during calibration, else null.</param>
public sealed record LayerQuantizationStats(string Name, string WeightEncoding, string Compute, long Parameters, long FloatBytes, long QuantizedBytes,
    long ResidentBytes, float? InputMin, float? InputMax, float? ObservedInputMin, float? ObservedInputMax);

/// <summary>What a quantization produced: the mode, each layer's encoding and size, and the calibrated activation ranges.</summary>
public sealed record QuantizationReport : CompressionStageReport
{
    [JsonConstructor]
    internal QuantizationReport(QuantizationMode mode, bool perChannel, int? blockSize, CalibrationMethod? calibration, long calibrationRows,
        bool quantizationAwareTraining, IReadOnlyList<LayerQuantizationStats> layers, long onnxBytes)
    {
        Mode = mode;
        PerChannel = perChannel;
        BlockSize = blockSize;
        Calibration = calibration;
        CalibrationRows = calibrationRows;
        QuantizationAwareTraining = quantizationAwareTraining;
        Layers = layers;
        OnnxBytes = onnxBytes;
    }

    /// <summary>The quantization mode.</summary>
    public QuantizationMode Mode { get; }

    /// <summary>Whether int8 weights have one scale per output channel.</summary>
    public bool PerChannel { get; }

    /// <summary>Weights per scale for <see cref="QuantizationMode.Int4WeightOnly"/>; null otherwise.</summary>
    public int? BlockSize { get; }

    /// <summary>The calibration method used (<see cref="QuantizationMode.Int8Static"/>); null when nothing was calibrated.</summary>
    public CalibrationMethod? Calibration { get; }

    /// <summary>Rows run through the network for calibration (0 when nothing was calibrated).</summary>
    public long CalibrationRows { get; }

    /// <summary>
    /// How <see cref="QuantizationMode.Int8Dynamic"/> scaled the activations at run time: per row (a row's scores never depend
    /// on its batch) or per batch (faster; scores depend on the batch). <see cref="ActivationScaleScope.PerRow"/> for the other modes.
    /// </summary>
    [JsonInclude]
    public ActivationScaleScope ActivationScales { get; internal init; }

    /// <summary>Whether the network was fine-tuned with simulated quantization before export.</summary>
    public bool QuantizationAwareTraining { get; }

    /// <summary>Epochs of quantization-aware fine-tuning run (set, or the data-size default of <see cref="FineTuningOptions.Epochs"/>); 0 without it.</summary>
    [JsonInclude]
    public int FineTuningEpochs { get; internal init; }

    /// <summary>Optimizer steps of quantization-aware fine-tuning run; 0 without it.</summary>
    [JsonInclude]
    public long FineTuningSteps { get; internal init; }

    /// <summary>The learning rate of quantization-aware fine-tuning; null without it.</summary>
    [JsonInclude]
    public double? FineTuningLearningRate { get; internal init; }

    /// <summary>Every weighted layer, in order.</summary>
    public IReadOnlyList<LayerQuantizationStats> Layers { get; }

    /// <summary>Bytes of all weights and biases in float32.</summary>
    public long FloatBytes => Layers.Sum(l => l.FloatBytes);

    /// <summary>Bytes of all weights and biases as stored in the quantized model.</summary>
    public long QuantizedBytes => Layers.Sum(l => l.QuantizedBytes);

    /// <summary>Bytes of all weights and biases once ONNX Runtime has loaded the model (what <see cref="MemoryReport.ResidentWeightBytes"/> reports).</summary>
    public long ResidentBytes => Layers.Sum(l => l.ResidentBytes);

    /// <summary><see cref="FloatBytes"/> / <see cref="QuantizedBytes"/>.</summary>
    public double CompressionRatio => QuantizedBytes == 0 ? 0 : (double)FloatBytes / QuantizedBytes;

    /// <summary>Size of the quantized ONNX model.</summary>
    public long OnnxBytes { get; }

    /// <summary>The activation range of each calibrated layer input, by layer name (empty unless <see cref="QuantizationMode.Int8Static"/>).</summary>
    [JsonIgnore]
    public IReadOnlyDictionary<string, (float Min, float Max)> ActivationRanges =>
        Layers.Where(l => l.InputMin is not null).ToDictionary(l => l.Name, l => (l.InputMin!.Value, l.InputMax!.Value), StringComparer.Ordinal);

    /// <summary>A table of the layers with totals.</summary>
    public override string ToString()
    {
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append(c, $"Quantization {Mode}");
        if (Mode is QuantizationMode.Int8Dynamic or QuantizationMode.Int8Static)
            sb.Append(PerChannel ? ", per-channel weights" : ", per-tensor weights");
        if (Mode == QuantizationMode.Int8Dynamic)
            sb.Append(ActivationScales == ActivationScaleScope.PerBatch
                ? ", activation scales per batch (scores depend on the batch)"
                : ", activation scales per row");
        if (BlockSize is { } bs)
            sb.Append(c, $", block {bs}");
        if (Calibration is { } m)
            sb.Append(c, $", {m} calibration on {CalibrationRows:N0} rows");
        if (QuantizationAwareTraining)
            sb.Append(c, $", quantization-aware fine-tuning ({FineTuningEpochs} epoch(s), {FineTuningSteps:N0} steps at learning rate {FineTuningLearningRate:G3})");
        sb.AppendLine();
        sb.AppendLine(c, $"{"layer",-10} {"encoding",-24} {"params",10} {"float32",10} {"stored",10} {"resident",10} {"input range",-22} compute");
        foreach (var l in Layers)
        {
            string range = l.InputMin is null ? "-" : string.Create(c, $"[{l.InputMin:G4}, {l.InputMax:G4}]");
            sb.AppendLine(c, $"{l.Name,-10} {l.WeightEncoding,-24} {l.Parameters,10:N0} {MemoryReport.FormatBytes(l.FloatBytes),10} " +
                             $"{MemoryReport.FormatBytes(l.QuantizedBytes),10} {MemoryReport.FormatBytes(l.ResidentBytes),10} {range,-22} {l.Compute}");
        }
        sb.Append(c, $"total: {MemoryReport.FormatBytes(FloatBytes)} -> {MemoryReport.FormatBytes(QuantizedBytes)} ({CompressionRatio:F1}x), resident {MemoryReport.FormatBytes(ResidentBytes)}; ONNX model {MemoryReport.FormatBytes(OnnxBytes)}");
        return sb.ToString();
    }
}
