using System.Diagnostics;
using MLNet.Compression;
using MLNet.Compression.Clustering;
using MLNet.Compression.Distillation;
using MLNet.Compression.Pruning;

namespace MnistCompression;

/// <summary>
/// Deep Compression (Han, Mao and Dally, 2016) as one ML.NET chain: LeNet-300-100 taught by the LeNet-5 baseline
/// (distillation), magnitude-pruned per layer, then its surviving weights shared by k-means (16 values per layer, 4-bit
/// indices). The artifact stores one uint8 index and one uint8 gap per surviving weight; the zip's deflate plays the role
/// of the paper's Huffman coding.
/// </summary>
internal sealed class DeepCompressionStage : IMainJobStage
{
    public string Name => "deep-compression";

    public string Description => "distill (LeNet-5 teaches LeNet-300-100) -> prune (95/93/80 % per layer) -> share weights (k = 16) as one chain (deep-compression)";

    public IEnumerable<StageResult> Run(MainJobContext context)
    {
        var ml = context.Ml;
        var teacher = context.LeNet5Baseline;
        var student = context.BaselineOptions.Clone();
        int pruneEpochs = context.FineTuneEpochs(Math.Max(2, student.Epochs));
        long stepsPerEpoch = (context.TrainRows + student.BatchSize - 1) / student.BatchSize;
        var pruning = new PruningOptions
        {
            Schedule = PruningSchedule.PolynomialDecay(0.5, 0.95, beginStep: 0, endStep: stepsPerEpoch * pruneEpochs * 6 / 10,
                frequency: (int)Math.Min(100, Math.Max(1, stepsPerEpoch * pruneEpochs / 20))),
            Epochs = pruneEpochs,
            LearningRate = student.LearningRate / 2,
        };
        pruning.LayerSparsity["fc1"] = 0.95;
        pruning.LayerSparsity["fc2"] = 0.93;
        pruning.LayerSparsity["output"] = 0.80;
        var sharing = new WeightClusteringOptions { ClusterCount = 16, Epochs = context.FineTuneEpochs(3), LearningRate = student.LearningRate / 10 };

        var sw = Stopwatch.StartNew();
        WeightClusteringEstimator? chain = null;
        int totalEpochs = student.Epochs + pruning.Epochs + sharing.Epochs;
        var model = context.Ui.Train("deep-compression: distill -> prune -> share weights", totalEpochs, context.TrainRows, progress =>
        {
            student.Progress = progress;
            pruning.Progress = progress;
            sharing.Progress = progress;
            // The convolutional teacher runs once into a disk cache: run per batch, its ONNX Runtime threads and libtorch's
            // compete for the same cores every step.
            chain = ml.Compression().Distill(teacher.Model, student, new DistillationOptions { Temperature = 4, Alpha = 0.9, CacheTeacherOutputs = true })
                .Prune(pruning)
                .ClusterWeights(sharing);
            return chain.Fit(context.Train);
        });
        using (model)
        {
            var row = StageEvaluator.Evaluate(context, Name, "deep-compression", model, sw.Elapsed.TotalSeconds, context.Baseline);
            context.Ui.Detail(chain!.Report?.ToString());
            yield return row;
        }
    }
}
