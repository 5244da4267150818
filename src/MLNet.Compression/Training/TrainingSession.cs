using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Memory;
using MLNet.Compression.Networks;
using MLNet.Compression.Networks.Heads;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using MLNet.Compression.Native;

namespace MLNet.Compression.Training;

/// <summary>Hooks that compression stages plug into the shared training loop.</summary>
internal sealed class TrainingHooks
{
    /// <summary>
    /// A known-size float vector column read with every batch into <see cref="BatchStream.Batch.Targets"/> (e.g. a
    /// teacher's scores added by the teacher's transform); null for none.
    /// </summary>
    public string? TargetColumnName { get; init; }

    /// <summary>
    /// Whether NaN values in <see cref="TargetColumnName"/> are deliberate (a value without a target, as logit replay's new rows)
    /// instead of marking a row to skip. Default false: a row with a NaN target is skipped and counted like a NaN feature.
    /// </summary>
    public bool TargetsMayHoldNaN { get; init; }

    /// <summary>Extra loss added to the head's training loss (EWC); gets the float32 outputs and the batch.</summary>
    public Func<Tensor, BatchStream.Batch, Tensor>? ExtraLoss { get; init; }

    /// <summary>Replaces the head's training loss entirely when set (e.g. distillation's weighted loss, built on the head's distillation loss).</summary>
    public Func<Tensor, Tensor, BatchStream.Batch, Tensor>? Loss { get; init; }

    /// <summary>Called after every optimizer step with the global step count (e.g. to update or re-apply pruning masks).</summary>
    public Action<long, TorchNetwork>? AfterStep { get; init; }

    /// <summary>
    /// Called after the gradients are in the float32 master parameters and before the optimizer step (e.g. weight
    /// clustering's tied gradients). Not called for a step skipped because a float16 gradient overflowed.
    /// </summary>
    public Action<TorchNetwork>? BeforeStep { get; init; }

    /// <summary>Called once before the first step (e.g. to apply initial masks).</summary>
    public Action<TorchNetwork>? BeforeTraining { get; init; }

    /// <summary>
    /// Replaces <c>net.forward(x)</c> for training steps when set (e.g. quantization-aware training's forward with
    /// fake-quantized weights and activations); gets the network being trained and the input batch, returns the logits.
    /// </summary>
    public Func<TorchNetwork, Tensor, Tensor>? Forward { get; init; }

    /// <summary>
    /// The target scaling to train with instead of the one the head fits on the data (regression; e.g. continued training,
    /// whose teacher and EWC anchor must be in the same units); null: the head's own.
    /// </summary>
    public Networks.Heads.TargetScaling? Scaling { get; init; }
}

/// <summary>What a finished run produced.</summary>
internal sealed record TrainingResult(
    NetworkModel Model,
    IReadOnlyList<EpochMetrics> History,
    byte[]? OptimizerState,
    long Steps,
    double Seconds,
    long PeakProcessBytes,
    long? PeakGpuBytes,
    string Device,
    TrainingPrecision Precision);

/// <summary>
/// The training loop every stage shares: streams batches from an <see cref="IDataView"/>, trains a
/// <see cref="TorchNetwork"/> on the resolved device (optionally in mixed precision with float32 master weights),
/// evaluates a held-out split, stops early, and writes the weights back into a <see cref="NetworkModel"/>.
/// Every per-batch tensor lives in a dispose scope.
/// </summary>
internal sealed class TrainingSession
{
    private readonly MLContext ml;
    private readonly NeuralNetworkOptions options;
    private readonly string stage;
    private readonly CancellationToken cancellation;

    public TrainingSession(MLContext ml, NeuralNetworkOptions options, string stage = "train", CancellationToken cancellation = default)
    {
        this.ml = ml;
        this.options = options;
        this.stage = stage;
        this.cancellation = cancellation;
    }

    /// <summary>Trains <paramref name="model"/> in place (its arrays are replaced) and returns the result.</summary>
    public TrainingResult Run(IDataView data, NetworkModel model, int seed, byte[]? optimizerState = null, TrainingHooks? hooks = null,
        ICudaInfo? cuda = null)
    {
        TorchNative.EnsureLoaded();
        cancellation.ThrowIfCancellationRequested();
        var dist = Distributed.DataParallel.Join(options, ml, stage); // null unless options.Distributed names a job of 2+ ranks
        return dist is null ? RunCore(data, model, seed, optimizerState, hooks, cuda, null)
            : dist.Guard(() => RunCore(data, model, seed, optimizerState, hooks, cuda, dist));
    }

    private TrainingResult RunCore(IDataView data, NetworkModel model, int seed, byte[]? optimizerState, TrainingHooks? hooks,
        ICudaInfo? cuda, Distributed.DataParallel? dist)
    {
        TorchNative.EnsureLoaded();
        var log = new ContextLog(ml, stage == "train" ? nameof(NeuralNetworkTrainer) : stage);
        if (model.Layers.FirstOrDefault(l => l is IStatefulLayer) is { } statefulLayer && (options.Precision != TrainingPrecision.Float32 || dist is not null))
            throw new NotSupportedException($"Layer '{statefulLayer.Name}' (batch normalization) keeps running statistics that {(dist is null ? options.Precision + " training" : "distributed training")} " +
                "does not carry yet; train this architecture in Float32 in one process, or without BatchNormLayer.");
        var requestedDevice = dist?.Device(options.Device, cuda ?? TorchCudaInfo.Instance, ml.GpuDeviceId) ?? options.Device; // one GPU per rank
        var resolved = DeviceSelector.Resolve(requestedDevice, cuda ?? TorchCudaInfo.Instance, ml.GpuDeviceId, ml.FallbackToCpu);
        if (resolved.Warning is not null)
            log.Warning(resolved.Warning);
        var device = resolved.ToTorch();
        var head = model.Head;
        var stream = new BatchStream(data, options.LabelColumnName, options.FeatureColumnName, model.InputLength, hooks?.TargetColumnName, head)
        {
            TargetsMayHoldNaN = hooks?.TargetsMayHoldNaN ?? false,
            ShuffleCacheLimitBytes = options.ShuffleCacheLimitBytes,
            ShuffleBufferRows = options.ShuffleBufferRows,
            Cancellation = cancellation,
            Prefetch = BenchmarkHooks.PrefetchBatches && Environment.ProcessorCount > 1, // a core for the reader beside the training thread
        };
        if (stream.ClassCount != model.NumClasses)
            throw new ArgumentOutOfRangeException(nameof(data),
                $"The label column '{options.LabelColumnName}' has {stream.ClassCount} classes but the network has {model.NumClasses} outputs.");
        dist?.Start(data, stream, model, options, seed, ref optimizerState); // ranks agree on data and options; rank 0's weights everywhere

        int threads = options.Threads ?? NeuralNetworkOptions.DefaultThreads;
        using var threadScope = resolved.IsCuda ? null : TorchThreads.Use(threads);
        // Regression: standardized targets for this run; the output layer is rewritten to match and back at the end (see TargetScaling).
        var scaling = hooks?.Scaling ?? head.CreateTargetScaling(data, data.Schema[options.LabelColumnName]);
        scaling?.ToStandardized(model);

        var peak = PeakMemory.Start();
        using var gpuPeak = resolved.IsCuda ? GpuMemory.TrackPeak(resolved.Index) : null;
        var sw = Stopwatch.StartNew();
        using var master = new TorchNetwork(model);
        master.LoadWeights(model);
        master.to(device);
        var lowPrecision = options.Precision switch
        {
            TrainingPrecision.Float16 => ScalarType.Float16,
            TrainingPrecision.BFloat16 => ScalarType.BFloat16,
            _ => (ScalarType?)null,
        };
        using var compute = lowPrecision is null ? null : new TorchNetwork(model);
        if (compute is not null)
        {
            compute.to(device);
            compute.to(lowPrecision!.Value);
            CopyWeights(master, compute);
        }
        var net = compute ?? master;
        var masterParams = master.parameters().ToArray();
        var computeParams = net.parameters().ToArray();
        using var optimizer = CreateOptimizer(masterParams);
        if (optimizerState is not null)
            optimizer.LoadState(optimizerState);
        var scaler = options.Precision == TrainingPrecision.Float16 ? new LossScaler() : null;

        hooks?.BeforeTraining?.Invoke(master);
        if (compute is not null)
            CopyWeights(master, compute);

        var history = new List<EpochMetrics>();
        double bestValAccuracy = double.NegativeInfinity;
        NetworkModel? best = null;
        int sinceBest = 0;
        long step = 0;
        double valFraction = options.ValidationFraction;
        Func<DataViewRowId, bool>? trainRows = valFraction > 0 ? id => !BatchStream.IsHeldOut(id, seed, valFraction) : null;
        Func<DataViewRowId, bool>? valRows = valFraction > 0 ? id => BatchStream.IsHeldOut(id, seed, valFraction) : null;
        log.Info($"Training {model.Architecture.Name} ({model.ParameterCount:N0} parameters) on {resolved} in {options.Precision}, " +
                 $"{options.Epochs} epoch(s), batch {options.BatchSize}, {options.Optimizer} lr={options.LearningRate}" +
                 (resolved.IsCuda ? "." : $", {threads} CPU thread(s)."));
        RowOrder? loggedOrder = null;
        bool warnedSkipped = false;

        var augmenter = options.Augmentation is { IsNone: true } ? null : Augmentation.ImageAugmenter.Create(options.Augmentation, model.Architecture, seed); // training batches only
        for (int epoch = 1; epoch <= options.Epochs; epoch++)
        {
            net.train();
            optimizer.LearningRate = options.LearningRateSchedule == LearningRateSchedule.Cosine
                ? options.LearningRate * 0.5 * (1 + Math.Cos(Math.PI * (epoch - 1) / options.Epochs))
                : options.LearningRate;
            var epochWatch = Stopwatch.StartNew();
            double lossSum = 0;
            long correct = 0, rows = 0;
            var rand = options.Shuffle ? new Random(unchecked(seed * 31 + epoch)) : null;
            int stepInEpoch = 0;
            var profile = BenchmarkHooks.Profile;
            profile?.EpochStarted();
            foreach (var batch in dist is null ? stream.Read(options.BatchSize, rand, trainRows)
                         : dist.Shard(stream.Read(dist.GlobalBatchSize(options.BatchSize), rand, trainRows), options.BatchSize, model.InputLength, stream.TargetLength))
            {
                stepInEpoch++;
                profile?.BatchArrived();
                if (loggedOrder != stream.LastOrder)
                {
                    loggedOrder = stream.LastOrder;
                    log.Info(DescribeOrder(stream));
                }
                cancellation.ThrowIfCancellationRequested(); // within one batch of the request; the caller's model is untouched
                using (var scope = NewDisposeScope())
                {
                    var x = batch.FeaturesTensor().to(device); // shares the batch's array: no per-batch clone
                    var y = batch.LabelsTensor().to(device);
                    x = augmenter?.Apply(x, epoch, step) ?? x;
                    if (scaling is not null)
                    {
                        y = scaling.Labels(y);
                        if (hooks?.TargetColumnName is not null)
                            scaling.StandardizeTargets(batch.Targets, batch.Count * stream.TargetLength);
                    }
                    if (lowPrecision is not null)
                        x = x.to(lowPrecision.Value);
                    var logits = (hooks?.Forward is { } forward ? forward(net, x) : net.forward(x)).to(ScalarType.Float32);
                    var loss = hooks?.Loss is { } customLoss ? customLoss(logits, y, batch) : head.Loss(logits, y);
                    if (hooks?.ExtraLoss is { } extra)
                        loss = loss.add(extra(logits, batch), Scalars.One);
                    float lossValue = loss.item<float>();
                    if (!float.IsFinite(lossValue))
                        throw new InvalidOperationException(
                            $"Training ({stage}) stopped: the loss became {(float.IsNaN(lossValue) ? "NaN" : "infinite")} at epoch {epoch}, step {stepInEpoch} of the epoch (step {step + 1} " +
                            $"overall), with learning rate {optimizer.LearningRate}. The weights diverged or the input holds extreme values: " +
                            "try a lower learning rate (NeuralNetworkOptions.LearningRate, e.g. 10 times lower), normalize the features " +
                            "(ml.Transforms.NormalizeMinMax or NormalizeMeanVariance), or Precision = Float32. No model was returned.");
                    optimizer.ZeroGrad();
                    if (compute is not null)
                        foreach (var p in computeParams)
                            p.grad?.zero_();
                    if (scaler is null)
                        loss.backward();
                    else
                    {
                        using var scale = scaler.Scale.ToScalar();
                        loss.mul(scale).backward();
                    }
                    dist?.AverageGradients(computeParams); // mean gradient over all ranks' shares of the global batch
                    bool stepOk = true;
                    if (compute is not null)
                        stepOk = CopyGradients(computeParams, masterParams, scaler);
                    if (stepOk)
                    {
                        hooks?.BeforeStep?.Invoke(master);
                        optimizer.Step();
                        if (compute is not null)
                            CopyWeights(master, compute);
                    }
                    step++;
                    hooks?.AfterStep?.Invoke(step, master);
                    if (compute is not null && hooks?.AfterStep is not null)
                        CopyWeights(master, compute);
                    lossSum += lossValue * batch.Count;
                    correct += head.CorrectCount(logits, y).item<long>();
                    rows += batch.Count;
                }
                profile?.StepDone();
                if ((options.Progress is not null || dist is not null) && step % options.ProgressInterval == 0)
                {
                    var (progressLoss, progressCorrect, progressRows) = dist?.Totals(lossSum, correct, rows) ?? (lossSum, correct, rows);
                    options.Progress?.Report(new TrainingProgress(stage, epoch, options.Epochs, step, progressRows, progressLoss / progressRows,
                        (double)progressCorrect / progressRows, progressRows / Math.Max(epochWatch.Elapsed.TotalSeconds, 1e-9), false));
                }
            }
            if (dist is not null)
            {
                dist.EndOfEpoch();
                (lossSum, correct, rows) = dist.Totals(lossSum, correct, rows);
            }
            cancellation.ThrowIfCancellationRequested();
            long trainRead = stream.LastRowsRead, skippedNonFinite = stream.LastSkippedNonFinite, skippedNoLabel = stream.LastSkippedMissingLabel;
            if (rows == 0)
                throw new ArgumentException(
                    (trainRead == 0
                        ? $"The training data has no rows" + (valFraction > 0 ? " outside the validation split" : string.Empty) + "."
                        : $"None of the {trainRead:N0} training rows" + (valFraction > 0 ? " outside the validation split" : string.Empty) +
                          $" can be used: {skippedNonFinite:N0} have a NaN or infinite value in '{options.FeatureColumnName}'" +
                          (hooks?.TargetColumnName is { } tcn ? $" or '{tcn}'" : string.Empty) +
                          $", {skippedNoLabel:N0} have a missing label in '{options.LabelColumnName}'.") +
                    " Check the data view: replace missing values (ml.Transforms.ReplaceMissingValues) or filter them out " +
                    "(ml.Data.FilterRowsByMissingValues), and give every row a label.", nameof(data));
            double? valLoss = null, valAcc = null;
            if (valRows is not null)
            {
                (valLoss, valAcc) = Evaluate(net, head, stream, valRows, device, lowPrecision, model.InputLength, scaling, dist);
                skippedNonFinite += stream.LastSkippedNonFinite;
                skippedNoLabel += stream.LastSkippedMissingLabel;
            }
            long skipped = skippedNonFinite + skippedNoLabel;
            if (skipped > 0 && !warnedSkipped)
            {
                warnedSkipped = true;
                log.Warning($"Skipped {skipped:N0} row(s) of each pass: {skippedNonFinite:N0} with a NaN or infinite value in '{options.FeatureColumnName}'" +
                            (hooks?.TargetColumnName is { } tc ? $" or '{tc}'" : string.Empty) +
                            $", {skippedNoLabel:N0} with a missing label in '{options.LabelColumnName}'. They are counted in EpochMetrics.SkippedRows " +
                            "(the model's TrainingHistory); replace or filter missing values to train on them.");
            }
            var seconds = epochWatch.Elapsed.TotalSeconds;
            var metrics = new EpochMetrics(epoch, lossSum / rows, (double)correct / rows, valLoss, valAcc, seconds, rows, skipped, loggedOrder ?? stream.LastOrder);
            history.Add(metrics);
            gpuPeak?.Sample();
            options.Progress?.Report(new TrainingProgress(stage, epoch, options.Epochs, step, rows, metrics.Loss, metrics.Accuracy, rows / seconds, true, valAcc));
            log.Info($"Epoch {epoch}/{options.Epochs}: loss {metrics.Loss:F4}, accuracy {metrics.Accuracy:P2}" +
                     (valAcc is null ? string.Empty : $", validation accuracy {valAcc:P2}") + $", {rows / seconds:N0} rows/s.");
            if (valAcc is not null && options.EarlyStoppingPatience > 0)
            {
                double valScore = head.ValidationScore(valLoss ?? double.NaN, valAcc.Value);
                if (valScore > bestValAccuracy)
                {
                    bestValAccuracy = valScore;
                    best = model.Clone();
                    master.StoreWeights(best);
                    sinceBest = 0;
                }
                else if (++sinceBest >= options.EarlyStoppingPatience)
                {
                    log.Info($"Early stopping after epoch {epoch}: validation accuracy has not improved for {sinceBest} epoch(s); keeping epoch {epoch - sinceBest}.");
                    break;
                }
            }
        }

        master.StoreWeights(model);
        if (best is not null)
            for (int i = 0; i < model.Layers.Count; i++)
                if (model.Layers[i] is ParameterizedLayer target && best.Layers[i] is ParameterizedLayer source)
                {
                    target.Weight = source.Weight;
                    target.Bias = source.Bias;
                }
                else if (model.Layers[i] is IStatefulLayer stateful && best.Layers[i] is IStatefulLayer bestState)
                    stateful.State = bestState.State;
        scaling?.ToLabelUnits(model);
        EnsureFinite(model, stage);
        dist?.Finish(model); // every rank returns the same weights
        var state = optimizer.SaveState();
        gpuPeak?.Sample();
        return new TrainingResult(model, history, state, step, sw.Elapsed.TotalSeconds, peak.PeakBytes(), gpuPeak?.PeakBytes,
            resolved.ToString(), options.Precision);
    }

    /// <summary>Throws when a weight or bias of <paramref name="model"/> is NaN or infinite: such a model is never returned.</summary>
    internal static void EnsureFinite(NetworkModel model, string stage)
    {
        foreach (var layer in model.ParameterizedLayers)
        {
            int bad = CountNonFinite(layer.Weight) + CountNonFinite(layer.Bias);
            if (bad > 0)
                throw new InvalidOperationException(
                    $"Training ({stage}) produced {bad:N0} NaN or infinite weight(s) in layer '{layer.Name}'; no model was returned. " +
                    "The training diverged: try a lower learning rate (NeuralNetworkOptions.LearningRate) and normalized features.");
        }
    }

    private static int CountNonFinite(float[] values)
    {
        int n = 0;
        foreach (var v in values)
            if (!float.IsFinite(v))
                n++;
        return n;
    }

    private static string DescribeOrder(BatchStream stream) => stream.LastOrder switch
    {
        RowOrder.DataOrder => "Rows are read in the data's order (Shuffle is off).",
        RowOrder.ShuffledByDataView => "Rows are shuffled by the data view each epoch.",
        RowOrder.ShuffledInMemory =>
            "The data view cannot shuffle (as LoadFromTextFile and LoadFromEnumerable views cannot); its rows are cached in memory " +
            $"({stream.CachedRowBytes:N0} bytes per row, limit ShuffleCacheLimitBytes = {stream.ShuffleCacheLimitBytes:N0}) and shuffled fully each epoch.",
        _ =>
            $"The data view cannot shuffle and its rows exceed ShuffleCacheLimitBytes = {stream.ShuffleCacheLimitBytes:N0} " +
            $"({stream.CachedRowBytes:N0} bytes per row); rows pass through a shuffle buffer of {stream.ShuffleBufferRows:N0} rows " +
            "(raise ShuffleCacheLimitBytes or ShuffleBufferRows for a better mix, e.g. on a file sorted by label).",
    };

    private static (double Loss, double Accuracy) Evaluate(TorchNetwork net, OutputHead head, BatchStream stream, Func<DataViewRowId, bool> rowsToUse,
        Device device, ScalarType? lowPrecision, int inputLength, TargetScaling? scaling = null, Distributed.DataParallel? dist = null)
    {
        net.eval();
        using var noGrad = no_grad();
        double lossSum = 0;
        long correct = 0, rows = 0;
        int batchIndex = 0;
        foreach (var batch in stream.Read(1024, null, rowsToUse))
        {
            if (dist is not null && !dist.Owns(batchIndex++))
                continue; // each rank evaluates its share; the sums are reduced below
            using var scope = NewDisposeScope();
            var x = batch.FeaturesTensor().to(device);
            var y = batch.LabelsTensor().to(device);
            if (scaling is not null)
                y = scaling.Labels(y);
            if (lowPrecision is not null)
                x = x.to(lowPrecision.Value);
            var logits = net.forward(x).to(ScalarType.Float32);
            lossSum += head.Loss(logits, y).item<float>() * batch.Count;
            correct += head.CorrectCount(logits, y).item<long>();
            rows += batch.Count;
        }
        net.train();
        if (dist is not null)
            (lossSum, correct, rows) = dist.Totals(lossSum, correct, rows);
        return rows == 0 ? (double.NaN, double.NaN) : (lossSum / rows, (double)correct / rows);
    }

    private ParameterOptimizer CreateOptimizer(Parameter[] parameters) => options.Optimizer switch
    {
        OptimizerKind.Sgd => new SgdOptimizer(parameters, options.LearningRate, options.Momentum, options.WeightDecay),
        _ => new AdamOptimizer(parameters, options.LearningRate, options.WeightDecay),
    };

    /// <summary>Copies master (float32) weights into the low-precision compute copy.</summary>
    private static void CopyWeights(TorchNetwork from, TorchNetwork to)
    {
        using var noGrad = no_grad();
        var src = from.parameters().ToArray();
        var dst = to.parameters().ToArray();
        for (int i = 0; i < src.Length; i++)
            dst[i].copy_(src[i]);
    }

    /// <summary>
    /// Moves low-precision gradients to the float32 master parameters, un-scaling them. Returns false (skip the step)
    /// when a gradient overflowed, after lowering the loss scale.
    /// </summary>
    private static bool CopyGradients(Parameter[] compute, Parameter[] master, LossScaler? scaler)
    {
        using var noGrad = no_grad();
        bool finite = true;
        for (int i = 0; i < compute.Length; i++)
        {
            var g = compute[i].grad;
            if (g is null)
                continue;
            using var g32 = g.to(ScalarType.Float32);
            if (scaler is not null)
            {
                using var scale = scaler.Scale.ToScalar();
                g32.div_(scale);
                if (!g32.isfinite().all().item<bool>())
                    finite = false;
            }
            if (master[i].grad is null)
                master[i].grad = g32.clone();
            else
                master[i].grad!.copy_(g32);
        }
        if (scaler is null)
            return true;
        scaler.Update(finite);
        return finite;
    }
}

/// <summary>Dynamic loss scaling for float16 training: halve on overflow, double after a run of good steps.</summary>
internal sealed class LossScaler
{
    public LossScaler(double initialScale = 65536, int growthInterval = 2000)
    {
        Scale = initialScale;
        GrowthInterval = growthInterval;
    }

    public double Scale { get; private set; }

    public int GrowthInterval { get; }

    public int GoodSteps { get; private set; }

    public long SkippedSteps { get; private set; }

    public void Update(bool finite)
    {
        if (!finite)
        {
            Scale = Math.Max(Scale / 2, 1.0);
            GoodSteps = 0;
            SkippedSteps++;
            return;
        }
        if (++GoodSteps >= GrowthInterval)
        {
            Scale = Math.Min(Scale * 2, 1 << 24);
            GoodSteps = 0;
        }
    }
}
