using MLNet.Compression.Networks;

namespace MLNet.Compression;

/// <summary>Options for <see cref="NeuralNetworkTrainer"/>.</summary>
public sealed class NeuralNetworkOptions
{
    /// <summary>The hidden layers and input shape. Default: LeNet-300-100 (<c>NetworkArchitecture.Mlp(300, 100)</c>).</summary>
    public NetworkArchitecture Architecture { get; set; } = NetworkArchitecture.Mlp(300, 100);

    /// <summary>Name of the label column: a key type (use <c>MapValueToKey</c> on raw labels). Default "Label".</summary>
    public string LabelColumnName { get; set; } = "Label";

    /// <summary>Name of the feature column: a known-size vector of float. Default "Features".</summary>
    public string FeatureColumnName { get; set; } = "Features";

    /// <summary>Passes over the training data. Default 10.</summary>
    public int Epochs { get; set; } = 10;

    /// <summary>Rows per optimizer step. Smaller batches need less activation memory. Default 128.</summary>
    public int BatchSize { get; set; } = 128;

    /// <summary>Learning rate. Default 0.001 (suits Adam; use about 0.05 for SGD with momentum).</summary>
    public double LearningRate { get; set; } = 1e-3;

    /// <summary>How the learning rate changes over the epochs. Default <see cref="LearningRateSchedule.Constant"/>.</summary>
    public LearningRateSchedule LearningRateSchedule { get; set; } = LearningRateSchedule.Constant;

    /// <summary>The optimizer. Default <see cref="OptimizerKind.Adam"/>.</summary>
    public OptimizerKind Optimizer { get; set; } = OptimizerKind.Adam;

    /// <summary>Momentum for <see cref="OptimizerKind.Sgd"/>. Default 0.9.</summary>
    public double Momentum { get; set; } = 0.9;

    /// <summary>L2 weight decay. Default 0.</summary>
    public double WeightDecay { get; set; }

    /// <summary>
    /// Fraction of the rows held out (chosen by a hash of the row id, so the split is stable across epochs and shuffles)
    /// to measure validation loss and accuracy each epoch. 0 (default) trains on every row.
    /// </summary>
    public double ValidationFraction { get; set; }

    /// <summary>
    /// Stop when validation accuracy has not improved for this many epochs and keep the best epoch's weights.
    /// 0 (default) disables early stopping. Needs <see cref="ValidationFraction"/> &gt; 0.
    /// </summary>
    public int EarlyStoppingPatience { get; set; }

    /// <summary>Seed for weight initialisation, shuffling and the validation split; default: drawn from the MLContext's seed.</summary>
    public int? Seed { get; set; }

    /// <summary>
    /// Whether each epoch visits the rows in a new random order, drawn from the seed. Default true. A data view that can shuffle
    /// (e.g. <c>LoadMnist</c>, binary IDataView files) is shuffled by its own cursor; one that cannot (<c>LoadFromTextFile</c>,
    /// <c>LoadFromEnumerable</c>) is shuffled by the trainer: its rows are cached in memory when they fit
    /// <see cref="ShuffleCacheLimitBytes"/> (a full shuffle each epoch), otherwise they pass through a shuffle buffer of
    /// <see cref="ShuffleBufferRows"/> rows. The log says which. False keeps the data's own order.
    /// </summary>
    public bool Shuffle { get; set; } = true;

    /// <summary>
    /// The most memory, in bytes, the trainer uses to cache the rows of a data view that cannot shuffle itself, so that every epoch
    /// visits them in a full random order. Rows are kept compactly (4 bytes per feature and target value, 8 per label), so the
    /// default, 256 MiB, holds about 85,000 rows of 784 features. Larger data falls back to the shuffle buffer
    /// (<see cref="ShuffleBufferRows"/>). 0 never caches.
    /// </summary>
    public long ShuffleCacheLimitBytes { get; set; } = DefaultShuffleCacheLimitBytes;

    /// <summary>
    /// Rows held by the shuffle buffer used when a data view cannot shuffle itself and its rows exceed
    /// <see cref="ShuffleCacheLimitBytes"/>: each row read replaces one drawn uniformly from the buffer. Larger buffers mix rows
    /// from further apart (a file sorted by label needs a buffer that spans several classes). Default 16,384.
    /// </summary>
    public int ShuffleBufferRows { get; set; } = DefaultShuffleBufferRows;

    /// <summary>
    /// TorchSharp's intra-op threads while this network trains on the CPU. Default (null): <see cref="DefaultThreads"/>.
    /// The setting is process-wide in libtorch: it is applied when training starts and the previous value comes back when the
    /// last concurrent training in the process ends; trainings that overlap share one value (the latest one set).
    /// </summary>
    public int? Threads { get; set; }

    /// <summary>
    /// Stops training: checked before every batch; once cancelled, <c>Fit</c> throws <see cref="OperationCanceledException"/>
    /// within one batch and returns no model. Not kept in checkpoints or in the fitted model's options. Default: none.
    /// </summary>
    public CancellationToken CancellationToken { get; set; }

    /// <summary>The device. Default <see cref="TrainingDevice.Auto"/>: CUDA when available, else CPU.</summary>
    public TrainingDevice Device { get; set; } = TrainingDevice.Auto;

    /// <summary>Numeric precision of the forward and backward passes. Default <see cref="TrainingPrecision.Float32"/>.</summary>
    public TrainingPrecision Precision { get; set; } = TrainingPrecision.Float32;

    /// <summary>Receives a report after every <see cref="ProgressInterval"/> steps and at the end of every epoch.</summary>
    public IProgress<TrainingProgress>? Progress { get; set; }

    /// <summary>Steps between progress reports within an epoch. Default 50.</summary>
    public int ProgressInterval { get; set; } = 50;

    /// <summary>Rows per ONNX Runtime call when the fitted model scores in-process. Default 1024.</summary>
    public int ScoringBatchSize { get; set; } = 1024;

    /// <summary>The default of <see cref="ShuffleCacheLimitBytes"/>: 256 MiB.</summary>
    public const long DefaultShuffleCacheLimitBytes = 256L << 20;

    /// <summary>The default of <see cref="ShuffleBufferRows"/>: 16,384 rows.</summary>
    public const int DefaultShuffleBufferRows = 16_384;

    /// <summary>
    /// The intra-op threads used when <see cref="Threads"/> is null: 1. Measured with the concurrent-training benchmark on a
    /// shared 2-core machine under load (LeNet-300-100, batch 128): one thread trained 10,000-13,000 rows/s and two trainings at once
    /// kept 1.0× that throughput together, while libtorch's default (one thread per core) collapsed to 400-850 rows/s for a training
    /// alone. A fixed count also keeps results repeatable across machines (float sums depend on it in the last bits). Set
    /// <see cref="Threads"/> higher for large convolutional networks on a machine of your own.
    /// </summary>
    public const int DefaultThreads = 1;

    /// <summary>
    /// Random image distortions applied to every training batch (never when scoring), for example
    /// <c>ImageAugmentation.Affine(maxShiftPixels: 2, maxRotationDegrees: 10, scale: (0.9, 1.1)).WithElastic()</c>. Null (default): none.
    /// The features must be images: a convolutional architecture's input shape, or a shape given with <see cref="ImageAugmentation.WithImageShape"/>.
    /// </summary>
    public ImageAugmentation? Augmentation { get; set; }

    /// <summary>
    /// Training memory budget in bytes (null, the default: none). Before training, the trainer estimates the memory of each candidate
    /// batch size with <see cref="MemoryReport.Estimate(NeuralNetworkOptions, int)"/> and trains with the largest one not above <see cref="BatchSize"/> whose
    /// estimate fits (in bfloat16 instead when <see cref="AllowLowerPrecisionForBudget"/> is set and that fits a larger batch); it logs the
    /// choice and throws when nothing fits.
    /// </summary>
    public long? MemoryBudgetBytes { get; set; }

    /// <summary>
    /// Whether <see cref="MemoryBudgetBytes"/> may also lower the precision to <see cref="TrainingPrecision.BFloat16"/> (mixed precision,
    /// float32 master weights, half the activation memory) when that fits a larger batch than float32 does (or the only one). Default false.
    /// </summary>
    public bool AllowLowerPrecisionForBudget { get; set; }

    /// <summary>
    /// Data-parallel training across the processes of an MPI job: <c>DistributedOptions.Mpi()</c>, with the program started by
    /// <c>mpiexec -n N</c> (see <see cref="DistributedOptions"/>). <see cref="BatchSize"/> is then the batch of each rank. Not automatic
    /// under <c>mpiexec</c>; null (default) trains in this process alone. Compression stages that fine-tune the model inherit it.
    /// Not saved in checkpoints (a deployment setting, not a property of the model).
    /// </summary>
    public DistributedOptions? Distributed { get; set; }

    /// <summary>Returns a shallow copy.</summary>
    public NeuralNetworkOptions Clone() => (NeuralNetworkOptions)MemberwiseClone();

    /// <summary>
    /// Checks every setting and throws naming the bad one. New options (at <c>Fit</c>) and options loaded from a checkpoint
    /// both go through here.
    /// </summary>
    internal void Validate() => Check(forTraining: false);

    /// <summary>
    /// <see cref="Validate"/> for options a trainer is about to train with: also demands at least one epoch (a trainer refuses to
    /// return an untrained model, while options restored from a stage that did not fine-tune may say 0).
    /// </summary>
    internal void ValidateForTraining() => Check(forTraining: true);

    private void Check(bool forTraining)
    {
        if (forTraining && Epochs < 1)
            throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs,
                "NeuralNetworkOptions.Epochs must be 1 or more: with 0 the trainer would return an untrained network.");
        if (!Enum.IsDefined(Optimizer))
            throw new ArgumentOutOfRangeException(nameof(Optimizer), Optimizer, "NeuralNetworkOptions.Optimizer is not a known optimizer.");
        if (!Enum.IsDefined(LearningRateSchedule))
            throw new ArgumentOutOfRangeException(nameof(LearningRateSchedule), LearningRateSchedule, "NeuralNetworkOptions.LearningRateSchedule is not a known schedule.");
        if (!Enum.IsDefined(Precision))
            throw new ArgumentOutOfRangeException(nameof(Precision), Precision, "NeuralNetworkOptions.Precision is not a known precision.");
        if (Architecture is null)
            throw new ArgumentNullException(nameof(Architecture), "NeuralNetworkOptions.Architecture must be set.");
        if (string.IsNullOrWhiteSpace(LabelColumnName))
            throw new ArgumentException("NeuralNetworkOptions.LabelColumnName must name a column.", nameof(LabelColumnName));
        if (string.IsNullOrWhiteSpace(FeatureColumnName))
            throw new ArgumentException("NeuralNetworkOptions.FeatureColumnName must name a column.", nameof(FeatureColumnName));
        if (Epochs < 0)
            throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "NeuralNetworkOptions.Epochs must be 0 or more.");
        if (ShuffleCacheLimitBytes < 0)
            throw new ArgumentOutOfRangeException(nameof(ShuffleCacheLimitBytes), ShuffleCacheLimitBytes,
                "NeuralNetworkOptions.ShuffleCacheLimitBytes must be 0 (never cache) or more.");
        if (ShuffleBufferRows < 1)
            throw new ArgumentOutOfRangeException(nameof(ShuffleBufferRows), ShuffleBufferRows, "NeuralNetworkOptions.ShuffleBufferRows must be 1 or more.");
        if (Threads is < 1)
            throw new ArgumentOutOfRangeException(nameof(Threads), Threads,
                "NeuralNetworkOptions.Threads must be 1 or more, or null for the default (NeuralNetworkOptions.DefaultThreads).");
        if (BatchSize <= 0)
            throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "NeuralNetworkOptions.BatchSize must be positive.");
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate))
            throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "NeuralNetworkOptions.LearningRate must be a positive number.");
        if (!(Momentum >= 0 && Momentum < 1))
            throw new ArgumentOutOfRangeException(nameof(Momentum), Momentum, "NeuralNetworkOptions.Momentum must be in [0, 1).");
        if (!(WeightDecay >= 0) || double.IsInfinity(WeightDecay))
            throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "NeuralNetworkOptions.WeightDecay must be a finite number, 0 or more.");
        if (!(ValidationFraction >= 0 && ValidationFraction < 1))
            throw new ArgumentOutOfRangeException(nameof(ValidationFraction), ValidationFraction, "NeuralNetworkOptions.ValidationFraction must be in [0, 1).");
        if (EarlyStoppingPatience < 0)
            throw new ArgumentOutOfRangeException(nameof(EarlyStoppingPatience), EarlyStoppingPatience, "NeuralNetworkOptions.EarlyStoppingPatience must be 0 or more.");
        if (EarlyStoppingPatience > 0 && ValidationFraction == 0)
            throw new ArgumentException("Early stopping needs validation data: set NeuralNetworkOptions.ValidationFraction above 0 (for example 0.1).", nameof(EarlyStoppingPatience));
        if (ProgressInterval <= 0)
            throw new ArgumentOutOfRangeException(nameof(ProgressInterval), ProgressInterval, "NeuralNetworkOptions.ProgressInterval must be positive.");
        if (ScoringBatchSize <= 0)
            throw new ArgumentOutOfRangeException(nameof(ScoringBatchSize), ScoringBatchSize, "NeuralNetworkOptions.ScoringBatchSize must be positive.");
        if (MemoryBudgetBytes is <= 0)
            throw new ArgumentOutOfRangeException(nameof(MemoryBudgetBytes), MemoryBudgetBytes, "NeuralNetworkOptions.MemoryBudgetBytes must be positive (or null for no budget).");
        if (Augmentation is { IsNone: false })
        {
            Augmentation.Validate();
            Augmentation.ResolveShape(Architecture.InputShape);
        }
        Distributed?.Validate();
    }
}

/// <summary>How the learning rate changes from epoch to epoch.</summary>
public enum LearningRateSchedule
{
    /// <summary>The same rate every epoch.</summary>
    Constant,

    /// <summary>Cosine annealing: epoch e of E uses rate · (1 + cos(π·(e−1)/E)) / 2, from the full rate down towards zero.</summary>
    Cosine,
}

/// <summary>A progress report from a training run.</summary>
/// <param name="Stage">What is training ("train", or the compression stage that fine-tunes).</param>
/// <param name="Epoch">One-based epoch.</param>
/// <param name="Epochs">Planned epochs.</param>
/// <param name="Step">Optimizer steps so far in the whole run.</param>
/// <param name="RowsInEpoch">Training rows seen so far in this epoch.</param>
/// <param name="Loss">Mean training loss over the epoch so far.</param>
/// <param name="Accuracy">Training accuracy over the epoch so far.</param>
/// <param name="RowsPerSecond">Training throughput over the epoch so far.</param>
/// <param name="EndOfEpoch">Whether this report closes an epoch.</param>
/// <param name="ValidationAccuracy">Validation accuracy at the end of the epoch, when a validation split is used.</param>
public sealed record TrainingProgress(string Stage, int Epoch, int Epochs, long Step, long RowsInEpoch, double Loss, double Accuracy,
    double RowsPerSecond, bool EndOfEpoch, double? ValidationAccuracy = null);

/// <summary>Metrics of one finished epoch.</summary>
/// <param name="Epoch">One-based epoch.</param>
/// <param name="Loss">Mean training loss.</param>
/// <param name="Accuracy">Training accuracy.</param>
/// <param name="ValidationLoss">Validation loss, when a validation split is used.</param>
/// <param name="ValidationAccuracy">Validation accuracy, when a validation split is used.</param>
/// <param name="Seconds">Wall-clock seconds of the epoch.</param>
/// <param name="Rows">Training rows seen.</param>
/// <param name="SkippedRows">
/// Rows left out of this epoch's training and validation because a feature (or a target column) was NaN or infinite, or the
/// label was missing; the log warns when it is above 0.
/// </param>
/// <param name="RowOrder">How the rows were ordered this epoch (shuffled by the data view, by the trainer's cache or buffer, or in the data's order).</param>
public sealed record EpochMetrics(int Epoch, double Loss, double Accuracy, double? ValidationLoss, double? ValidationAccuracy, double Seconds, long Rows,
    long SkippedRows = 0, RowOrder RowOrder = RowOrder.DataOrder);

/// <summary>How the training rows of an epoch were ordered.</summary>
public enum RowOrder
{
    /// <summary>The data view's own order (<see cref="NeuralNetworkOptions.Shuffle"/> is false).</summary>
    DataOrder,

    /// <summary>Shuffled by the data view's cursor (the view can shuffle).</summary>
    ShuffledByDataView,

    /// <summary>The view cannot shuffle; its rows were cached in memory and shuffled fully (within <see cref="NeuralNetworkOptions.ShuffleCacheLimitBytes"/>).</summary>
    ShuffledInMemory,

    /// <summary>The view cannot shuffle and its rows exceed the cache limit; they passed through a shuffle buffer of <see cref="NeuralNetworkOptions.ShuffleBufferRows"/> rows.</summary>
    ShuffleBuffer,
}
