using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Networks;
using static TorchSharp.torch;
using MLNet.Compression.Training;

namespace MLNet.Compression.Incremental;

/// <summary>
/// Continues training a fitted network on new data (incremental learning): <c>Fit(newData)</c> starts from the previous
/// model's weights and, when it has one, its optimizer state, and trains on the new rows through the same training loop
/// as <see cref="NeuralNetworkTrainer"/> (the previous model's device, precision and optimizer). The previous model is not
/// changed. Create it with <c>mlContext.Compression().ContinueTraining(previousModel, options)</c>; the result can be
/// continued again (<c>ContinueTraining(result, ...)</c>), or saved with <c>SaveCheckpoint</c> and continued after
/// <c>NeuralNetworkTransformer.LoadCheckpoint</c>.
/// </summary>
/// <remarks>
/// <para>Forgetting is fought with <see cref="ContinueTrainingOptions.Strategies"/>, in any combination:
/// <see cref="ContinualStrategies.Replay"/> (a bounded, class-balanced exemplar memory mixed into every batch),
/// <see cref="ContinualStrategies.LearningWithoutForgetting"/> (the previous model's outputs distilled on every row) and
/// <see cref="ContinualStrategies.ElasticWeightConsolidation"/> (a Fisher-weighted pull towards the previous weights).
/// The replay memory and the EWC state travel with the returned model (and its checkpoint) to the next increment.</para>
/// <para>Classes: the new data's label is a key (for example from <c>MapValueToKey</c> fitted on the new data alone); its key
/// values are matched by name to the previous model's classes. Known names keep their class index; unknown ones are
/// appended, and the output layer grows by one row per new class, keeping every old weight.</para>
/// <para>Binary and regression networks: the new data has the label type the model was trained on (Boolean, Single) and no
/// class can be added. Replay keeps a class-balanced sample (binary, classes false and true) or one uniform reservoir of rows
/// with their float targets (regression, in the same bytes per exemplar); LwF uses the head's distillation loss (binary:
/// T² · BCE to the previous model's sigmoid(logit / T); regression: squared error to its prediction); EWC uses the head's
/// Fisher information. A regression increment standardizes its targets with the new data's mean and standard deviation and
/// uses that one scaling for the replayed targets, the LwF teacher and EWC's anchor (the stored weights stay in label units).
/// DER++ (ReplayLogitWeight) and, for regression, herding are refused.</para>
/// <para>Compression survives: weights that are exactly zero in the previous model (pruning) stay zero, and a quantized
/// previous model is quantized again with its options at the end.</para>
/// </remarks>
public sealed class ContinueTrainingEstimator : CompressionStageEstimator<ContinueTrainingOptions, ContinueTrainingReport>
{
    private const string Stage = "continue";
    private readonly NeuralNetworkTransformer previous;

    internal ContinueTrainingEstimator(MLContext? ml, NeuralNetworkTransformer previous, ContinueTrainingOptions options)
        : base(ml, null, previous ?? throw new ArgumentNullException(nameof(previous)), options, o => o.Validate(), o => o.Clone())
    {
        this.previous = previous;
        var kind = previous.Network.HeadKind;
        if (kind != Networks.Heads.OutputHeadKind.Multiclass && options.Strategies.HasFlag(ContinualStrategies.Replay))
        {
            if (options.ReplayLogitWeight > 0 || options.ReplayLabelWeight != 1)
                throw new ArgumentException(
                    $"ContinueTrainingOptions.ReplayLogitWeight / ReplayLabelWeight (DER++: replaying the stored outputs with the softmax's cross-entropy) take " +
                    $"multiclass networks only; the previous model is a {previous.Network.Head.Name} network. Leave ReplayLogitWeight at 0 and ReplayLabelWeight " +
                    "at 1 (plain replay), or add ContinualStrategies.LearningWithoutForgetting, which distills the previous model's outputs on every row.", "options");
            if (kind == Networks.Heads.OutputHeadKind.Regression && options.ReplaySelection == ExemplarSelection.Herding)
                throw new ArgumentException(
                    "ContinueTrainingOptions.ReplaySelection = Herding chooses exemplars per class; a regression network has no classes. " +
                    "Use ExemplarSelection.Reservoir (a uniform sample of the rows seen, with their targets).", "options");
        }
        if (options.Strategies.HasFlag(ContinualStrategies.Replay))
            _ = options.ReplayBudget.CapacityFor(previous.Network.InputLength, options.ReplayEncoding,
                options.ReplayLogitWeight > 0 ? previous.Network.NumClasses : 0, 0); // a budget too small for one exemplar fails now
        if (options.PreviousData is { } prior)
            CheckFeatures(prior, previous, "ContinueTrainingOptions.PreviousData");
    }



    /// <summary>
    /// Continues training a copy of the previous model on <paramref name="input"/> (the new data: the previous model's feature
    /// column, same size, and a key-typed label column of the same name); the result carries the replay memory and EWC state
    /// for the next increment.
    /// </summary>
    private protected override (NeuralNetworkTransformer, CompressionStageReport) Apply(MLContext context, NeuralNetworkTransformer? source, IDataView input)
    {
        var sw = Stopwatch.StartNew();
        var log = new ContextLog(context, "ContinueTraining");
        var strategies = Settings.Strategies;
        bool replayOn = strategies.HasFlag(ContinualStrategies.Replay);
        bool lwfOn = strategies.HasFlag(ContinualStrategies.LearningWithoutForgetting);
        bool ewcOn = strategies.HasFlag(ContinualStrategies.ElasticWeightConsolidation);
        var prevNetwork = previous.Network;
        int featureLength = prevNetwork.InputLength;
        string labelName = previous.LabelColumnName, featureName = previous.FeatureColumnName;

        // Columns and classes of the new data (binary and regression: the head's own label type; no class can be added).
        CheckFeatures(input, previous, "input");
        var head = prevNetwork.Head;
        bool multiclass = head.Kind == Networks.Heads.OutputHeadKind.Multiclass;
        DataViewSchema.Column label;
        string[] merged;
        int[] map;
        if (multiclass)
        {
            label = SchemaValidation.LabelColumn(input.Schema, labelName, out int incomingCount);
            (merged, map) = ClassGrowth.Merge(previous.ClassNames, SchemaValidation.ClassNames(label, incomingCount));
        }
        else
        {
            label = TaskLabel(input.Schema, "input");
            (merged, map) = (previous.ClassNames.ToArray(), Enumerable.Range(0, prevNetwork.NumClasses).ToArray());
        }
        bool targets = label.Type == NumberDataViewType.Single; // regression: the memory stores targets, not classes
        // Regression: the targets are standardized for this increment with the new data's mean and standard deviation, and the
        // same scaling is used for everything the run compares (the replayed targets, the LwF teacher's outputs, EWC's anchor).
        var scaling = head.CreateTargetScaling(input, label);
        if (scaling is not null)
            log.Info($"Regression: this increment trains on targets standardized with the new data's mean {scaling.Mean:G6} and standard deviation {scaling.Std:G6} " +
                     "(the stored weights stay in label units).");
        int oldClasses = prevNetwork.NumClasses;
        var carried = previous.IncrementalState;
        int increment = (carried?.Increments ?? 0) + 1;
        int seed = unchecked(previous.Seed + 7919 * increment);

        // Network (grown when new classes appear) and optimizer state.
        var network = ClassGrowth.GrowOutput(prevNetwork, merged.Length, seed);
        bool grown = merged.Length > oldClasses;
        byte[]? optimizerState = Settings.ReuseOptimizerState ? previous.OptimizerState : null;
        if (optimizerState is not null && grown)
        {
            optimizerState = ClassGrowth.GrowOptimizerState(optimizerState, network.ParameterizedLayers.Last().FanIn, oldClasses, merged.Length);
            if (optimizerState is null)
                log.Warning("The previous optimizer state does not have the expected layout for a grown output layer; continuing with a fresh optimizer state.");
        }
        if (grown)
            log.Info($"The new data adds class(es) {string.Join(", ", merged.Skip(oldClasses))}: the output layer grows from {oldClasses} to {merged.Length} rows.");

        // The replay memory (a copy: the previous model keeps its own).
        var encoding = Settings.ReplayEncoding;
        bool herding = Settings.ReplaySelection == ExemplarSelection.Herding;
        bool logitReplay = replayOn && Settings.ReplayLogitWeight > 0;
        ReplayMemory? memory = null;
        if (replayOn)
        {
            if (carried?.Replay is { } kept && kept.FeatureLength == featureLength)
            {
                if (kept.Bits != encoding.BitsPerFeature || kept.Ordered != herding)
                {
                    if (kept.Bits != encoding.BitsPerFeature)
                        log.Info($"Replay: the carried memory stores {kept.Bits}-bit exemplars; they are re-encoded at {encoding}.");
                    memory = kept.Reencoded(encoding.BitsPerFeature, herding);
                }
                else
                    memory = kept.Clone();
            }
            else
            {
                memory = new ReplayMemory(featureLength, Settings.ReplayBudget.CapacityFor(featureLength, encoding, 0, 0),
                    unchecked((ulong)(uint)seed * 0x9E3779B97F4A7C15UL + 1), encoding.BitsPerFeature, 0, herding, targets);
                if (Settings.PreviousData is { } prior)
                {
                    var priorView = PreviousView(prior, merged);
                    var (min, max) = ExemplarTools.Range(priorView);
                    memory.Widen(min, max);
                    int priorCapacity = CapacityOf(memory, memory.LogitLength);
                    memory.Resize(priorCapacity);
                    if (herding)
                    {
                        var priorPools = new Dictionary<int, ReplayMemory>();
                        Scan(priorView, null, null, "ContinueTrainingOptions.PreviousData", memory, priorPools, PoolCapacity(priorCapacity, oldClasses));
                        ExemplarTools.Herd(memory, priorPools, prevNetwork, priorCapacity);
                    }
                    else
                        Scan(priorView, memory, null, "ContinueTrainingOptions.PreviousData");
                }
                else
                    log.Warning("Replay: the previous model carries no replay memory and ContinueTrainingOptions.PreviousData is not set, so this increment " +
                                "has nothing to replay; the memory is filled from the new data for the next increment.");
            }
            if (logitReplay)
            {
                // Exemplars stored without outputs (PreviousData, or a memory from increments without logit replay) get the previous model's.
                memory.GrowLogits(oldClasses);
                ExemplarTools.FillLogits(memory, prevNetwork);
                memory.GrowLogits(merged.Length);
            }
            memory.Resize(CapacityOf(memory, memory.LogitLength));
        }

        // EWC's Fisher information of the earlier tasks.
        EwcState? ewc = null;
        if (ewcOn)
        {
            if (carried?.Ewc is { } e && e.Matches(prevNetwork))
                ewc = e;
            else if (Settings.PreviousData is { } prior)
                ewc = EwcState.Estimate(prevNetwork, prior, featureName, Settings.EwcFisherRows, seed, scaling, log.Info);
            else
                throw new ArgumentException(
                    "ContinueTrainingOptions.Strategies includes ElasticWeightConsolidation, but the previous model carries no Fisher information " +
                    "(it was not produced by ContinueTraining with EWC, or its architecture changed since) and ContinueTrainingOptions.PreviousData is not set. " +
                    "Set PreviousData to (a sample of) the data the previous model was trained on.", "options");
            if (grown)
                ewc = ewc.GrowOutput(oldClasses, merged.Length);
        }

        // One pass over the new data: which classes it holds and, with replay, the next increment's memory (a copy that
        // gets this increment's rows; training replays only the earlier ones). Features that cannot be stored fail here.
        var nextMemory = memory?.Clone();
        var newCounts = new long[merged.Length];
        var newView = new IncrementalDataView(input, labelName, featureName, featureLength, map, merged, null, 0, seed);
        Dictionary<int, ReplayMemory>? pools = null;
        int nextCapacity = 0;
        long clampedBefore = nextMemory?.ClampedValues ?? 0;
        bool widened = false;
        if (nextMemory is not null)
        {
            // Ranges first (one pass), so that the stored exemplars are re-encoded at most once per increment.
            var (min, max) = ExemplarTools.Range(newView);
            widened = nextMemory.Widen(min, max);
            nextCapacity = CapacityOf(nextMemory, nextMemory.LogitLength);
            nextMemory.Resize(nextCapacity);
            if (herding)
                pools = new Dictionary<int, ReplayMemory>();
        }
        if (widened)
            log.Info("Replay: the new data lies outside some features' stored ranges; the ranges were widened and the stored exemplars re-encoded.");
        if (herding && nextMemory is not null)
            Scan(newView, null, newCounts, "The new data", nextMemory, pools, PoolCapacity(nextCapacity, merged.Length));
        else
            Scan(newView, nextMemory, newCounts, "The new data");
        long newRows = newCounts.Sum();
        if (newRows == 0)
            throw new ArgumentException($"The new data has no rows with a label in column '{labelName}'. Pass the rows to continue training on.", nameof(input));
        double fraction = 0;
        if (memory is { Count: > 0 })
        {
            var held = memory.CountsPerClass();
            int newClasses = newCounts.Count(n => n > 0);
            int onlyInMemory = Enumerable.Range(0, held.Length).Count(c => held[c] > 0 && (c >= newCounts.Length || newCounts[c] == 0));
            fraction = Settings.ReplayFraction ?? Math.Min(0.95, Math.Max(
                (double)onlyInMemory / (onlyInMemory + newClasses),
                (double)memory.Count / (memory.Count + newRows)));
        }
        bool derTerm = logitReplay && fraction > 0;
        var view = new IncrementalDataView(input, labelName, featureName, featureLength, map, merged, fraction > 0 ? memory : null, fraction, seed, derTerm);

        // Training options: the previous model's, with this increment's epochs, rate and batch size.
        var tuning = Settings.Derive(previous.TrainingOptions);
        tuning.Architecture = network.Architecture;

        long zerosBefore = CountZeros(prevNetwork);
        using var masks = Settings.KeepSparsity && zerosBefore > 0 ? new ExactZeroMasks() : null;
        using var penalty = ewc is null || Settings.EwcLambda == 0 ? null
            : new EwcPenalty(scaling is null ? ewc : ewc.InTrainingUnits(scaling), Settings.EwcLambda);
        using var teacher = lwfOn ? new LwfTeacher(prevNetwork, Settings.LwfTemperature, Settings.LwfWeight, scaling) : null;
        using var der = derTerm ? new LogitReplayLoss(Settings.ReplayLogitWeight, Settings.ReplayLabelWeight) : null;
        var hooks = new TrainingHooks
        {
            BeforeTraining = net =>
            {
                masks?.Capture(net);
                penalty?.Capture(net);
                teacher?.Capture(net);
            },
            AfterStep = masks is null ? null : (_, net) => masks.Apply(net),
            BeforeStep = penalty is null ? null : penalty.AddGradient,
            Forward = teacher is null ? null : teacher.Forward,
            Loss = teacher is null ? null : (logits, y, _) => teacher.Loss(logits, y),
            TargetColumnName = der is null ? null : IncrementalDataView.TargetsColumnName,
            TargetsMayHoldNaN = der is not null, // NaN marks new rows and classes the stored outputs do not cover
            ExtraLoss = der is null ? null : der.Loss,
            Scaling = scaling,
        };
        log.Info($"Continuing {network.Architecture.Name} on {newRows:N0} new rows ({strategies}), {tuning.Epochs} epoch(s) at lr={tuning.LearningRate}" +
                 (fraction > 0 ? $", {fraction:P0} of each batch replayed from {memory!.Count:N0} exemplars" : string.Empty) +
                 (optimizerState is not null ? ", from the previous optimizer state." : "."));
        var result = new TrainingSession(context, tuning, Stage, Settings.CancellationToken).Run(view, network, seed, optimizerState, hooks);
        int replayed = fraction > 0 ? memory!.Count : 0;

        // The next memory: herding chooses the new classes' exemplars with the trained network; logit replay stores its outputs.
        if (nextMemory is not null)
        {
            if (pools is not null)
                ExemplarTools.Herd(nextMemory, pools, result.Model, nextCapacity);
            if (logitReplay)
                ExemplarTools.FillLogits(nextMemory, result.Model);
            long clamped = nextMemory.ClampedValues - clampedBefore;
            if (clamped > 0)
                log.Warning($"Replay: {clamped:N0} feature value(s) of the new data lay outside the stored ranges (infinite values) and were clamped into them.");
        }

        // What the next increment needs: EWC adds this task's Fisher information.
        EwcState? nextEwc = null;
        if (ewcOn)
            nextEwc = EwcState.Combine(ewc, EwcState.Estimate(result.Model, input, featureName, Settings.EwcFisherRows, seed, scaling, log.Info), Settings.EwcDecay);
        var state = new IncrementalState(nextMemory, nextEwc, increment);

        // The new model, with whatever encoding steps the previous one carries (clustering, quantization) done again.
        var resultOptions = previous.TrainingOptions.Clone();
        resultOptions.Architecture = result.Model.Architecture;
        var recipe = previous.Recipe;
        NeuralNetworkTransformer model;
        if (recipe.Steps.Count > 0)
        {
            using var trained = NeuralNetworkTransformer.Create(context, result.Model, merged, resultOptions, input.Schema, result, previous.Seed,
                recipe: CompressionRecipe.None);
            // Calibration (and quantization-aware fine-tuning, if the recipe asks for it) reads the same mixed view as training.
            var reapplied = recipe.Reapply(context, trained, view, Settings.CancellationToken, log);
            model = reapplied.WithIncrementalState(state, result.OptimizerState);
        }
        else
        {
            var created = NeuralNetworkTransformer.Create(context, result.Model, merged, resultOptions, input.Schema, result, previous.Seed, recipe: recipe);
            model = created.WithIncrementalState(state, result.OptimizerState);
        }

        var counts = nextMemory?.CountsPerClass() ?? [];
        var report = new ContinueTrainingReport
        {
            Increment = increment,
            Strategies = strategies,
            Epochs = tuning.Epochs,
            Steps = result.Steps,
            NewRows = newRows,
            ReplayFraction = fraction,
            ExemplarsReplayed = replayed,
            OptimizerStateReused = optimizerState is not null,
            ClassesBefore = previous.ClassNames.ToArray(),
            Classes = merged,
            MaskedZeroWeights = masks?.MaskedWeights ?? 0,
            ZeroWeights = (zerosBefore, CountZeros(model.Network)),
            Requantized = recipe.Quantization?.Mode,
            EwcPenalty = ewc is null ? null : EwcPenalty.Value(ewc, result.Model, Settings.EwcLambda),
            Parameters = model.ParameterCount,
            ModelBytes = model.Memory.ArtifactBytes,
            ReplayBytes = nextMemory?.Bytes ?? 0,
            ReplayBitsPerFeature = nextMemory?.Bits,
            ReplaySelection = Settings.ReplaySelection,
            ExemplarsHeld = nextMemory?.Count ?? 0,
            ClampedValues = nextMemory?.ClampedValues ?? 0,
            ReplayBudgetBytes = nextMemory?.CapacityBytes ?? 0,
            ExemplarsPerClass = Enumerable.Range(0, counts.Length).Where(c => counts[c] > 0).ToDictionary(c => merged[c], c => counts[c]),
            EwcBytes = nextEwc?.Bytes ?? 0,
            Seconds = sw.Elapsed.TotalSeconds,
        };
        log.Info(report.ToString());
        return (model, report);
    }

    /// <summary>Feature column present with the previous model's size; a clear message otherwise.</summary>
    private static void CheckFeatures(IDataView data, NeuralNetworkTransformer model, string what)
    {
        var column = data.Schema.GetColumnOrNull(model.FeatureColumnName);
        if (column?.Type is VectorDataViewType { IsKnownSize: true } vt && vt.ItemType.RawType == typeof(float) && vt.Size != model.Network.InputLength)
            throw new ArgumentException(
                $"{what}: the feature column '{model.FeatureColumnName}' has {vt.Size} values per row, but the previous model reads {model.Network.InputLength}. " +
                "Continued training needs the same features the model was trained on (same preprocessing, same size).",
                what == "input" ? "input" : "options");
        SchemaValidation.FeatureColumn(data.Schema, model.FeatureColumnName, model.Network.InputLength);
    }

    /// <summary>
    /// The label column of a binary or regression network's data, checked by its head; a key label (classes to add) gets an
    /// error that says continued training cannot add classes to such a network.
    /// </summary>
    private DataViewSchema.Column TaskLabel(DataViewSchema schema, string what)
    {
        var head = previous.Network.Head;
        if (schema.GetColumnOrNull(previous.LabelColumnName)?.Type is KeyDataViewType key)
            throw new ArgumentException(
                $"{what}: the label column '{previous.LabelColumnName}' is a key ({key.Count} classes), but the previous model is a {head.Name} network, " +
                $"whose output cannot grow: adding classes is for multiclass networks only. Give the new data the label type the model was trained on " +
                $"({(head.Kind == Networks.Heads.OutputHeadKind.Binary ? "Boolean" : "Single")}).", what == "input" ? "input" : "options");
        try
        {
            return head.ValidateLabel(schema, previous.LabelColumnName, out _);
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentException($"{what}: {e.Message}", what == "input" ? "input" : "options", e);
        }
    }

    /// <summary>PreviousData with its labels moved onto the merged classes (its names must be among them).</summary>
    private IncrementalDataView PreviousView(IDataView prior, string[] merged)
    {
        if (previous.Network.HeadKind != Networks.Heads.OutputHeadKind.Multiclass)
        {
            TaskLabel(prior.Schema, "ContinueTrainingOptions.PreviousData");
            return new IncrementalDataView(prior, previous.LabelColumnName, previous.FeatureColumnName, previous.Network.InputLength,
                Enumerable.Range(0, previous.Network.NumClasses).ToArray(), merged, null, 0, 0);
        }
        var label = SchemaValidation.LabelColumn(prior.Schema, previous.LabelColumnName, out int count);
        var names = SchemaValidation.ClassNames(label, count);
        var index = merged.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);
        var map = new int[names.Length];
        for (int i = 0; i < names.Length; i++)
            map[i] = index.TryGetValue(names[i], out int at) ? at
                : throw new ArgumentException(
                    $"ContinueTrainingOptions.PreviousData has class '{names[i]}' in its label key values, which neither the previous model " +
                    $"({string.Join(", ", previous.ClassNames)}) nor the new data has. PreviousData must be data the previous model was trained on.", "options");
        return new IncrementalDataView(prior, previous.LabelColumnName, previous.FeatureColumnName, previous.Network.InputLength, map, merged, null, 0, 0);
    }

    /// <summary>
    /// One sequential pass over <paramref name="view"/>: counts the labelled rows per class into <paramref name="counts"/>
    /// (when given) and offers every labelled row to <paramref name="memory"/> (when given).
    /// </summary>
    /// <remarks>
    /// For herding, rows go instead to a per-class candidate pool (a uniform sample of at most <paramref name="poolCapacity"/> rows,
    /// stored like <paramref name="herdingMemory"/>'s exemplars) and are counted as seen by <paramref name="herdingMemory"/>.
    /// </remarks>
    private static void Scan(IncrementalDataView view, ReplayMemory? memory, long[]? counts, string what,
        ReplayMemory? herdingMemory = null, Dictionary<int, ReplayMemory>? pools = null, int poolCapacity = 0)
    {
        var label = view.Schema[0];
        var features = view.Schema[1];
        bool read = memory is not null || pools is not null;
        using var cursor = view.GetRowCursor(read ? [label, features] : [label]);
        var getLabel = view.LabelCodes(cursor);
        var getFeatures = read ? cursor.GetGetter<VBuffer<float>>(features) : null;
        VBuffer<float> values = default;
        var dense = read ? new float[view.FeatureLength] : [];
        while (cursor.MoveNext())
        {
            long code = getLabel();
            if (code < 0)
                continue;
            if (counts is not null)
                counts[view.HasTargets ? 0 : code]++;
            if (!read)
                continue;
            getFeatures!(ref values);
            values.CopyTo(dense);
            if (memory is { HoldsTargets: true })
                memory.OfferTarget(dense, BitConverter.Int32BitsToSingle(unchecked((int)code)), () => $"Row {cursor.Position} of {what}");
            else if (memory is not null)
                memory.Offer(dense, (int)code, () => $"Row {cursor.Position} of {what}");
            if (pools is not null)
            {
                int c = (int)code;
                if (!pools.TryGetValue(c, out var pool))
                    pools[c] = pool = herdingMemory!.EmptyLike(poolCapacity, false);
                herdingMemory!.CountSeen(c);
                pool.Offer(dense, c, () => $"Row {cursor.Position} of {what}");
            }
        }
    }

    /// <summary>Exemplars the budget allows for <paramref name="memory"/>'s layout and ranges with <paramref name="logitLength"/> outputs each.</summary>
    private int CapacityOf(ReplayMemory memory, int logitLength) =>
        Settings.ReplayBudget.CapacityFor(memory.FeatureLength, Settings.ReplayEncoding, logitLength, memory.RangeBytes);

    /// <summary>Candidates herding considers per class: at least 2,000 rows and 4 times the class's share of the memory.</summary>
    private static int PoolCapacity(int capacity, int classes) => Math.Max(2000, 4 * (capacity / Math.Max(1, classes)));

    private static long CountZeros(NetworkModel network) => network.ParameterizedLayers.Sum(l => (long)l.Weight.Count(w => w == 0f));
}
