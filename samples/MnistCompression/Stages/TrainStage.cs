namespace MnistCompression;

/// <summary>The float32 baselines: LeNet-300-100 (row "baseline") and LeNet-5 (row "lenet5-baseline").</summary>
internal sealed class TrainStage : IMainJobStage
{
    public string Name => "train";

    public string Description => "float32 baselines: LeNet-300-100 (baseline) and LeNet-5 (lenet5-baseline), Adam with a cosine schedule";

    public IEnumerable<StageResult> Run(MainJobContext context)
    {
        var baseline = context.Baseline;
        yield return StageEvaluator.Evaluate(context, Name, baseline.Name, baseline.Model, baseline.TrainSeconds, reference: null);
        context.Ui.Detail(baseline.Model.Memory.ToString());

        var lenet5 = context.LeNet5Baseline;
        yield return StageEvaluator.Evaluate(context, Name, lenet5.Name, lenet5.Model, lenet5.TrainSeconds, reference: null);
    }
}
