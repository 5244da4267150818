using System.Diagnostics;
using MLNet.Compression;
using MLNet.Compression.Quantization;

namespace MnistCompression;

/// <summary>
/// Quantization of both baselines: float16, int8 dynamic, int8 static and int4 (weight only) after training, and
/// quantization-aware training exported as int8 static for LeNet-300-100.
/// </summary>
internal sealed class QuantizeStage : IMainJobStage
{
    private static readonly (QuantizationMode Mode, string Name)[] Modes =
    [
        (QuantizationMode.Float16, "quantized-float16"),
        (QuantizationMode.Int8Dynamic, "quantized-int8-dynamic"),
        (QuantizationMode.Int8Static, "quantized-int8-static"),
        (QuantizationMode.Int4WeightOnly, "quantized-int4"),
    ];

    public string Name => "quantize";

    public string Description => "float16, int8 dynamic/static, int4 and int8 quantization-aware training (quantized-*), and the same post-training modes for LeNet-5 (lenet5-quantized-*)";

    public IEnumerable<StageResult> Run(MainJobContext context)
    {
        var ml = context.Ml;
        var baseline = context.Baseline;
        foreach (var row in QuantizeAll(context, "", baseline, int4BlockSize: 128))
            yield return row;

        var qatOptions = new QuantizationOptions
        {
            Mode = QuantizationMode.Int8Static,
            QuantizationAwareTraining = true,
            QatEpochs = context.FineTuneEpochs(new QuantizationOptions().QatEpochs),
        };
        var sw = Stopwatch.StartNew();
        var qat = context.Ui.Train("quantized-int8-qat: quantization-aware training with fake quantization", qatOptions.QatEpochs, context.TrainRows, progress =>
        {
            qatOptions.Progress = progress;
            return ml.Compression().Quantize(baseline.Model, qatOptions).Fit(context.Train);
        });
        using (qat)
            yield return StageEvaluator.Evaluate(context, Name, "quantized-int8-qat", qat, sw.Elapsed.TotalSeconds, baseline);

        // LeNet-5 with larger 4-bit blocks (one scale per 256 weights) for the smallest artifact.
        foreach (var row in QuantizeAll(context, "lenet5-", context.LeNet5Baseline, int4BlockSize: 256))
            yield return row;
    }

    private IEnumerable<StageResult> QuantizeAll(MainJobContext context, string prefix, TrainedModel source, int int4BlockSize)
    {
        foreach (var (mode, name) in Modes)
        {
            var sw = Stopwatch.StartNew();
            var quantized = context.Ui.Calibrate($"{prefix}{name}: quantizing {source.Name}",
                () => context.Ml.Compression().Quantize(source.Model, new QuantizationOptions { Mode = mode, BlockSize = int4BlockSize }).Fit(context.Train));
            using (quantized)
                yield return StageEvaluator.Evaluate(context, Name, prefix + name, quantized, sw.Elapsed.TotalSeconds, source);
        }
    }
}
