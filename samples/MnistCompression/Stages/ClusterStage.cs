using System.Diagnostics;
using MLNet.Compression;
using MLNet.Compression.Clustering;

namespace MnistCompression;

/// <summary>Weight sharing of the LeNet-300-100 baseline: every layer clustered into 32 shared values (5-bit indices) and fine-tuned with tied weights.</summary>
internal sealed class ClusterStage : IMainJobStage
{
    public string Name => "cluster";

    public string Description => "weight sharing of LeNet-300-100: k-means into 32 shared values per layer, tied fine-tuning (clustered)";

    public IEnumerable<StageResult> Run(MainJobContext context)
    {
        var baseline = context.Baseline;
        var options = new WeightClusteringOptions
        {
            ClusterCount = 32,
            Epochs = context.FineTuneEpochs(3),
            LearningRate = context.BaselineOptions.LearningRate / 10,
        };
        var sw = Stopwatch.StartNew();
        WeightClusteringEstimator? estimator = null;
        var clustered = context.Ui.Train("clustered: k-means weight sharing (k = 32) and tied fine-tuning", options.Epochs, context.TrainRows, progress =>
        {
            options.Progress = progress;
            estimator = context.Ml.Compression().ClusterWeights(baseline.Model, options);
            return estimator.Fit(context.Train);
        });
        using (clustered)
        {
            var row = StageEvaluator.Evaluate(context, Name, "clustered", clustered, sw.Elapsed.TotalSeconds, baseline);
            context.Ui.Detail(estimator!.Report?.ToString());
            yield return row;
        }
    }
}
