using Microsoft.ML;
using MLNet.Compression.Networks;
using MLNet.Compression.Distillation;
using MLNet.Compression.Training;

namespace MLNet.Compression.Pruning;

/// <summary>
/// Prunes a trained network and fine-tunes it on the data given to <see cref="CompressionStageEstimator.Fit"/>, through the same training loop as
/// <see cref="NeuralNetworkTrainer"/> (device, precision and optimizer of the original training; epochs and learning rate
/// from <see cref="FineTuningOptions"/>' data-size rule unless set). Magnitude pruning (<see cref="PruningGranularity.PerLayer"/>, <see cref="PruningGranularity.Global"/>)
/// recomputes masks when the <see cref="PruningOptions.Schedule"/> says so and holds pruned weights at exactly zero
/// after every optimizer step, so the result's weights contain exact zeros. <see cref="PruningGranularity.StructuredNeurons"/>
/// removes whole neurons or filters in one shot and fine-tunes the smaller network. Two ways in:
/// <c>trainer.Prune(options)</c> (fits the trainer on the data, then prunes) and
/// <c>mlContext.Compression().Prune(fittedModel, options)</c> (prunes a model that is already trained; it is not changed).
/// After <see cref="CompressionStageEstimator.Fit"/>, <c>Report</c> says how sparse each layer became and whether the schedule finished.
/// </summary>
public sealed class PruningEstimator : CompressionStageEstimator<PruningOptions, PruningReport>
{
    private const string Stage = "prune";

    internal PruningEstimator(MLContext? ml, IEstimator<NeuralNetworkTransformer>? inner, NeuralNetworkTransformer? fitted, PruningOptions options)
        : base(ml, inner, fitted, options, o => o.Validate(), o => o.Clone())
    {
        if (fitted is not null)
            Plan(fitted.Network, Settings); // layer names and "nothing to prune" are known now: fail before any data is read
    }



    /// <inheritdoc />
    private protected override (NeuralNetworkTransformer, CompressionStageReport) Apply(MLContext context, NeuralNetworkTransformer? fittedSource, IDataView input)
    {
        var source = fittedSource!;
        var log = new ContextLog(context, "Prune");
        var original = source.Network;
        var plan = Plan(original, Settings);
        bool endsWithRun = Settings.Schedule.EndsWithRun && Settings.Schedule.Kind == PruningScheduleKind.PolynomialDecay;
        long? rows = endsWithRun ? FineTuningOptions.CountRows(input) : Settings.RowsFor(input); // counted only when needed
        var tuning = Settings.Derive(source.TrainingOptions, rows);
        var schedule = endsWithRun ? Settings.Schedule.ForRun(FineTuningOptions.StepsPerEpoch(rows!.Value, tuning.BatchSize) * tuning.Epochs) : Settings.Schedule;
        log.Info($"Pruning {original.Architecture.Name} ({Settings.Granularity}, {schedule}) of layers " +
                 $"{string.Join(", ", plan.Where(p => p.Pruned).Select(p => p.Layer.Name))}; fine-tuning {tuning.Epochs} epoch(s){(rows is { } n ? $" of {n:N0} rows" : "")} at lr={tuning.LearningRate}.");

        using var guidance = TeacherGuidance.ForFineTuning(context, Settings.Teacher, Settings.Distillation, input, source, tuning, "PruningOptions.Teacher", log);
        var data = guidance?.Data ?? input;

        TrainingResult result;
        NetworkModel network;
        bool completed = true;
        if (Settings.Granularity == PruningGranularity.StructuredNeurons)
        {
            var keep = new Dictionary<string, int[]>(StringComparer.Ordinal);
            foreach (var p in plan.Where(p => p.Pruned && p.Target > 0))
                keep[p.Layer.Name] = StructuredPruning.KeepTop(p.Layer, 1 - p.Target!.Value);
            network = StructuredPruning.RemoveUnits(original, keep);
            tuning.Architecture = network.Architecture;
            var guided = new TrainingHooks { TargetColumnName = guidance?.TargetColumnName, Loss = guidance is null ? null : guidance.Loss };
            result = new TrainingSession(context, tuning, Stage, Settings.CancellationToken).Run(data, network, source.Seed, null, guided);
        }
        else
        {
            network = original.Clone();
            var targets = plan.Where(p => p.Pruned)
                .Select(p => new MagnitudeMasks.Target(p.ModuleIndex, p.Layer.Name, Settings.Granularity == PruningGranularity.Global ? p.Override : p.Target))
                .ToArray();
            using var masks = new MagnitudeMasks(schedule, targets, plan.Length);
            var hooks = new TrainingHooks
            {
                BeforeTraining = net => masks.OnStep(0, net),
                AfterStep = (step, net) => masks.OnStep(step, net),
                TargetColumnName = guidance?.TargetColumnName,
                Loss = guidance is null ? null : guidance.Loss,
            };
            result = new TrainingSession(context, tuning, Stage, Settings.CancellationToken).Run(data, network, source.Seed, null, hooks);
            completed = schedule.CompletesWithin(result.Steps);
        }

        var resultOptions = source.TrainingOptions.Clone();
        resultOptions.Architecture = result.Model.Architecture;
        var model = NeuralNetworkTransformer.Create(context, result.Model, source.ClassNames, resultOptions, input.Schema, result, source.Seed);
        var warnings = new List<string>();
        var reached = BuildReport(plan, result.Model, result.Steps, completed, schedule, warnings, tuning);
        if (!completed)
        {
            long perEpoch = tuning.Epochs > 0 ? result.Steps / tuning.Epochs : 0;
            long planned = schedule.EndStep == -1 ? schedule.BeginStep : schedule.EndStep;
            string needed = perEpoch > 0 ? $"at least {(planned + perEpoch - 1) / perEpoch} epochs" : "more epochs";
            warnings.Add($"The pruning schedule {schedule} plans its last mask update at step {planned}, but fine-tuning ran only {result.Steps} steps " +
                         $"({tuning.Epochs} epoch(s) of {perEpoch} steps at batch size {tuning.BatchSize}). The sparsity reached is {reached.Sparsity:P1}, " +
                         $"not the planned {schedule.FinalSparsity:P1}. Set PruningOptions.Epochs to {needed}, or end the schedule by step {result.Steps} " +
                         "(or leave its end step at −1: the end of the fine-tuning run).");
        }
        else if (reached.TargetSparsity is { } aimed && reached.Sparsity < aimed - 0.005)
            warnings.Add($"The pruned model's sparsity is {reached.Sparsity:P1}, below the target {aimed:P1} (schedule {schedule}).");
        if (FineTuningCheck.CollapseWarning(context, source, model, input, $"Pruning to {reached.Sparsity:P1} sparsity", tuning, result.Steps, "PruningOptions",
                "a lower target sparsity (PruningOptions.Schedule)", log) is { } collapse)
            warnings.Add(collapse);
        var report = warnings.Count == 0 ? reached : BuildReport(plan, result.Model, result.Steps, completed, schedule, warnings, tuning);
        foreach (var warning in warnings)
            log.Warning(warning);
        log.Info($"Pruned: {report.ZeroWeights:N0} of {report.Weights:N0} weights are zero; sparsity {report.Sparsity:P1}.{Environment.NewLine}{report}");
        return (model, report);
    }

    /// <summary>One weighted layer: whether it is pruned, its target (own or the schedule's), and whether the target is an override.</summary>
    private sealed record LayerPlan(int ModuleIndex, ParameterizedLayer Layer, bool Pruned, double? Target, double? Override);

    private static LayerPlan[] Plan(NetworkModel network, PruningOptions o)
    {
        var layers = network.ParameterizedLayers.ToArray();
        var names = layers.Select(l => l.Name).ToHashSet(StringComparer.Ordinal);
        string known = string.Join(", ", layers.Select(l => l.Name));
        foreach (var name in o.KeepDense)
            if (!names.Contains(name))
                throw new ArgumentException($"PruningOptions.KeepDense names layer '{name}', which the model does not have; its weighted layers are: {known}.", "options");
        foreach (var name in o.LayerSparsity.Keys)
            if (!names.Contains(name))
                throw new ArgumentException($"PruningOptions.LayerSparsity names layer '{name}', which the model does not have; its weighted layers are: {known}.", "options");
        bool structured = o.Granularity == PruningGranularity.StructuredNeurons;
        var plan = new LayerPlan[layers.Length];
        for (int i = 0; i < layers.Length; i++)
        {
            var layer = layers[i];
            double? own = o.LayerSparsity.TryGetValue(layer.Name, out var s) ? s : null;
            bool pruned = !o.KeepDense.Contains(layer.Name) && own is not 0;
            if (structured && pruned)
            {
                string? why = i == layers.Length - 1 ? "it is the output layer, whose units are the classes"
                    : layer.UnitsNotRemovable is { } rule ? "it " + rule.TrimEnd('.') : null;
                if (why is not null)
                {
                    if (own is not null)
                        throw new ArgumentException($"PruningOptions.LayerSparsity gives layer '{layer.Name}' a sparsity, but structured pruning cannot remove its units: {why}.", "options");
                    pruned = false;
                }
            }
            double? target = pruned ? own ?? o.Schedule.FinalSparsity : null;
            plan[i] = new LayerPlan(i, layer, pruned, target, pruned ? own : null);
        }
        if (!plan.Any(p => p.Pruned))
            throw new ArgumentException(
                $"Nothing to prune: every weighted layer ({known}) is in PruningOptions.KeepDense or has sparsity 0 in LayerSparsity" +
                (structured ? ", or cannot lose units (the output layer, depthwise convolutions)" : string.Empty) +
                ". Leave at least one layer prunable.", "options");
        return plan;
    }

    private PruningReport BuildReport(LayerPlan[] plan, NetworkModel pruned, long steps, bool completed, PruningSchedule schedule, IReadOnlyList<string> warnings,
        NeuralNetworkOptions tuning)
    {
        var now = pruned.ParameterizedLayers.ToArray();
        bool global = Settings.Granularity == PruningGranularity.Global;
        var stats = plan.Select((p, i) => PruningReport.Stats(now[i], p.Layer, global ? p.Override : p.Target)).ToArray();
        double? target = Settings.Granularity switch
        {
            PruningGranularity.Global => Settings.Schedule.FinalSparsity,
            PruningGranularity.PerLayer => plan.Sum(p => (p.Target ?? 0) * p.Layer.Weight.LongLength) / plan.Sum(p => (double)p.Layer.Weight.LongLength),
            _ => null,
        };
        long? end = Settings.Granularity == PruningGranularity.StructuredNeurons || schedule.EndStep == -1 ? null : schedule.EndStep;
        return new PruningReport(stats, target, steps, end, completed, Settings.Granularity, warnings.ToArray(), tuning.Epochs, tuning.LearningRate);
    }
}
