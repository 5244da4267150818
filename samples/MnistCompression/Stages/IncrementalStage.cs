using MLNet.Compression;

namespace MnistCompression;

/// <summary>
/// Incremental learning (see <see cref="IncrementalScenarios"/>): the original recipe (rows 0-999, then 1,000-1,999 with
/// warm start and replay, against joint training) and class-incremental Split-MNIST with plain fine-tuning, LwF, EWC and
/// replay within 788,000 bytes (1,000 exemplars at 8 bits; 4/2/1-bit encodings, herding, DER++ and the best combination;
/// today's and the best row over three seeds with <c>--seeds 3</c>, see <see cref="IncrementalScenarios.SplitMnistConfigs"/>). Every row's final model is evaluated and saved like any other row; the scenario's own
/// figures (accuracy after each step, forgetting, memory carried after each step) go into the row's <c>details</c>.
/// </summary>
internal sealed class IncrementalStage : IMainJobStage
{
    public string Name => "incremental";

    public string Description => "incremental learning: incremental-initial/-increment/-joint (the original recipe) and split-mnist-finetune/-lwf/-ewc/-replay[-4bit/-2bit/-1bit/-herding/-der/-best] (class-incremental Split-MNIST, replay within 788,000 B)";

    public IEnumerable<StageResult> Run(MainJobContext context)
    {
        var results = new List<StageResult>();
        IncrementalScenarios.Run(context.Ml, context.Train, context.Test, context.Settings.Device, context.Quick, context.Ui.Detail, null, maxSeeds: context.Settings.Seeds, threads: context.Threads, onFinal: (row, model) =>
        {
            var evaluated = StageEvaluator.Evaluate(context, Name, row.Name, model, row.Seconds, null);
            results.Add(evaluated with
            {
                Details = new Dictionary<string, object?>
                {
                    ["strategy"] = row.Strategy,
                    ["scenarioAccuracy"] = row.Accuracy,
                    ["accuracyAfterStep"] = row.AccuracyAfterStep,
                    ["bytesAfterStep"] = row.BytesAfterStep,
                    ["modelBytes"] = row.ModelBytes,
                    ["replayBytes"] = row.ReplayBytes,
                    ["ewcBytes"] = row.EwcBytes,
                    ["oldIncrementAccuracyAfterStep"] = row.OldIncrementAccuracyAfterStep,
                    ["taskAccuracy"] = row.TaskAccuracy,
                    ["forgetting"] = row.Forgetting,
                    ["averageForgetting"] = row.AverageForgetting,
                    ["memoryBytes"] = row.ReplayBytes + row.EwcBytes,
                    ["memoryBudgetBytes"] = row.MemoryBudgetBytes,
                    ["memoryBytesAfterStep"] = row.MemoryBytesAfterStep,
                    ["exemplarsAfterStep"] = row.ExemplarsAfterStep,
                    ["exemplars"] = row.ExemplarsAfterStep?[^1],
                    ["seenClassAccuracyAfterStep"] = row.SeenClassAccuracyAfterStep,
                    ["memory"] = row.Memory,
                    ["seed"] = row.Seed,
                    ["seedAccuracies"] = row.SeedAccuracies,
                    ["seedMean"] = row.SeedAccuracies?.Average(),
                    ["seedStandardDeviation"] = row.SeedAccuracies is { Count: > 1 } a
                        ? Math.Sqrt(a.Sum(x => (x - a.Average()) * (x - a.Average())) / (a.Count - 1)) : null,
                },
            });
        });
        return results;
    }
}
