using System.Text.Json.Serialization;
using Microsoft.ML;
using MLNet.Compression.Distillation;

namespace MLNet.Compression;

/// <summary>
/// The fine-tuning settings every compression stage shares (pruning, quantization-aware training, weight clustering, continued
/// training): epochs, learning rate, batch size, progress and cancellation. Whatever is left unset comes from the options the
/// model was trained with, in one place, so every stage fine-tunes on the model's own device, precision, optimizer and seed.
/// </summary>
public abstract class FineTuningOptions
{
    /// <summary>Creates the settings with the stage's default number of epochs.</summary>
    /// <param name="defaultEpochs">The stage's default epochs.</param>
    private protected FineTuningOptions(int defaultEpochs) => this.defaultEpochs = defaultEpochs;

    /// <summary>
    /// The fewest optimizer steps a default fine-tuning run of pruning, weight clustering or quantization-aware training makes
    /// (about what two epochs of MNIST's 60,000 rows at batch 128 make: 938): on less data <see cref="Epochs"/>, when not set,
    /// grows to reach it, up to <see cref="MaxDefaultEpochs"/>.
    /// </summary>
    public const int DefaultMinimumSteps = 900;

    /// <summary>The most epochs a default fine-tuning run grows to (1,000 rows at batch 128: 50 epochs, 400 steps).</summary>
    public const int MaxDefaultEpochs = 50;

    private readonly int defaultEpochs;
    private int? epochs;

    /// <summary>
    /// Fine-tuning passes over the data given to <c>Fit</c>. A value set here is used as it is. Left unset, it reads as the
    /// stage's default (2 for pruning, weight clustering and quantization-aware training; 5 for continued training), and
    /// pruning, weight clustering and quantization-aware training run at least that many epochs and at least enough to make
    /// <see cref="DefaultMinimumSteps"/> optimizer steps, capped at <see cref="MaxDefaultEpochs"/>: 2 epochs on 60,000
    /// rows at batch 128, 20 on 6,000, 50 on 1,000. The stage's report states the epochs, steps and rate actually used.
    /// </summary>
    [JsonIgnore]
    public int Epochs
    {
        get => epochs ?? defaultEpochs;
        set => epochs = value;
    }

    /// <summary>
    /// <see cref="Epochs"/> as a checkpoint's recipe stores it: absent when unset, so a re-applied step still fits its
    /// epochs to the data it is given.
    /// </summary>
    [JsonInclude]
    [JsonPropertyName("epochs")]
    private int? EpochsSetting
    {
        get => epochs;
        set => epochs = value;
    }

    /// <summary>
    /// Fine-tuning learning rate; a value set here is used as it is. Default (null): the rate the model was trained with for
    /// pruning, weight clustering and continued training; a tenth of it for quantization-aware training. (Measured with
    /// 90 % pruning of models trained with Adam at 1e-3: the model's own rate recovers best at every data size, from
    /// 1,000 to 60,000 MNIST rows; a tenth of it, the default before, lost 2.6 points at 60,000 rows and 41 at 1,000.)
    /// </summary>
    public double? LearningRate { get; set; }

    /// <summary>Rows per fine-tuning step. Default (null): the model's training batch size.</summary>
    public int? BatchSize { get; set; }

    /// <summary>Receives fine-tuning progress, tagged with the stage's name (<c>"prune"</c>, <c>"quantize"</c>, <c>"cluster"</c>, <c>"continue"</c>).</summary>
    [JsonIgnore]
    public IProgress<TrainingProgress>? Progress { get; set; }

    /// <summary>Steps between progress reports within an epoch. Default (null): the model's <see cref="NeuralNetworkOptions.ProgressInterval"/>.</summary>
    public int? ProgressInterval { get; set; }

    /// <summary>
    /// Stops fine-tuning: the token is checked before every batch, and once it is cancelled <c>Fit</c> throws
    /// <see cref="OperationCanceledException"/> within one batch, leaving the source model unchanged and no temporary files behind.
    /// Default: none.
    /// </summary>
    [JsonIgnore]
    public CancellationToken CancellationToken { get; set; }

    /// <summary>
    /// Fine-tunes data-parallel across the ranks of an MPI job (see <see cref="DistributedOptions"/>). Default (null): the
    /// model's own <see cref="NeuralNetworkOptions.Distributed"/>, which a model loaded from a checkpoint does not have (it
    /// is not saved), so set it here to fine-tune such a model across ranks. Not saved in checkpoints.
    /// </summary>
    [JsonIgnore]
    public DistributedOptions? Distributed { get; set; }

    /// <summary>
    /// Random image distortions applied to each fine-tuning batch (see <see cref="ImageAugmentation"/>), never to scoring.
    /// Default (null): the model's own <see cref="NeuralNetworkOptions.Augmentation"/>, so a stage distorts its batches as the
    /// model's training did. <see cref="ImageAugmentation.None"/>: no distortion in this stage even when the model was trained
    /// with some. Saved in checkpoints with the stage's other settings.
    /// </summary>
    public ImageAugmentation? Augmentation { get; set; }

    /// <summary>The options class's name, for error messages ("PruningOptions").</summary>
    private protected abstract string OptionsName { get; }

    /// <summary>The learning rate used when <see cref="LearningRate"/> is null, as a fraction of the model's training rate.</summary>
    private protected virtual double DefaultLearningRateFactor => 1;

    /// <summary>Whether unset <see cref="Epochs"/> grow on small data to make <see cref="DefaultMinimumSteps"/> steps (false: the stage's default as it is).</summary>
    private protected virtual bool EpochsFitTheData => true;

    /// <summary>The smallest accepted <see cref="Epochs"/> (0: the stage may skip fine-tuning).</summary>
    private protected virtual int MinEpochs => 0;

    /// <summary>
    /// The one place that derives a fine-tuning run's settings from the model's own: its options with this stage's epochs,
    /// learning rate, batch size and progress; no validation split and no early stopping (either would bring back the weights
    /// of an epoch the stage did not finish with).
    /// </summary>
    /// <param name="model">The options the model was trained with (not changed).</param>
    /// <param name="rows">Rows of the fine-tuning data, when known: unset <see cref="Epochs"/> then fit the data size (see there).</param>
    internal NeuralNetworkOptions Derive(NeuralNetworkOptions model, long? rows = null)
    {
        var tuning = model.Clone();
        tuning.BatchSize = BatchSize ?? model.BatchSize;
        tuning.Epochs = epochs ?? (EpochsFitTheData && rows is > 0 ? EpochsFor(rows.Value, tuning.BatchSize, defaultEpochs) : defaultEpochs);
        tuning.LearningRate = LearningRate ?? model.LearningRate * DefaultLearningRateFactor;
        tuning.ValidationFraction = 0;
        tuning.EarlyStoppingPatience = 0;
        tuning.Progress = Progress;
        tuning.ProgressInterval = ProgressInterval ?? model.ProgressInterval;
        tuning.Distributed = Distributed ?? model.Distributed;
        tuning.Augmentation = Augmentation is null ? model.Augmentation : Augmentation.IsNone ? null : Augmentation;
        return tuning;
    }

    /// <summary>
    /// The default epochs for <paramref name="rows"/> rows at <paramref name="batchSize"/>: at least <paramref name="stageDefault"/>,
    /// at least enough for <see cref="DefaultMinimumSteps"/> steps, at most <see cref="MaxDefaultEpochs"/> (or the stage default if larger).
    /// </summary>
    internal static int EpochsFor(long rows, int batchSize, int stageDefault)
    {
        long perEpoch = Math.Max(1, StepsPerEpoch(rows, batchSize));
        long needed = (DefaultMinimumSteps + perEpoch - 1) / perEpoch;
        return (int)Math.Max(stageDefault, Math.Min(needed, MaxDefaultEpochs));
    }

    /// <summary>Optimizer steps of one epoch over <paramref name="rows"/> rows (the last batch may be short).</summary>
    internal static long StepsPerEpoch(long rows, int batchSize) => (rows + batchSize - 1) / batchSize;

    /// <summary>Rows of <paramref name="data"/> when the default epochs depend on them (counted with a cursor when the view does not know them); null when <see cref="Epochs"/> is set.</summary>
    internal long? RowsFor(IDataView data) => epochs is null && EpochsFitTheData ? CountRows(data) : null;

    /// <summary>Rows of <paramref name="data"/> (counted with a cursor when the view does not know them).</summary>
    internal static long CountRows(IDataView data)
    {
        long rows = data.GetRowCount() ?? -1;
        if (rows >= 0)
            return rows;
        rows = 0;
        using var cursor = data.GetRowCursor([]);
        while (cursor.MoveNext())
            rows++;
        return rows;
    }

    /// <summary>Copies the shared settings onto <paramref name="copy"/> (for the derived classes' <c>Clone</c>).</summary>
    private protected T CopyTo<T>(T copy) where T : FineTuningOptions
    {
        copy.epochs = epochs;
        copy.LearningRate = LearningRate;
        copy.BatchSize = BatchSize;
        copy.Progress = Progress;
        copy.ProgressInterval = ProgressInterval;
        copy.CancellationToken = CancellationToken;
        copy.Distributed = Distributed;
        copy.Augmentation = Augmentation;
        return copy;
    }

    /// <summary>Checks the shared settings; throws naming the bad one.</summary>
    private protected virtual void ValidateFineTuning()
    {
        if (Epochs < MinEpochs)
            throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs,
                MinEpochs == 0 ? $"{OptionsName}.Epochs must be 0 (no fine-tuning) or more." : $"{OptionsName}.Epochs must be at least {MinEpochs}.");
        if (LearningRate is { } lr && !(lr > 0 && double.IsFinite(lr)))
            throw new ArgumentOutOfRangeException(nameof(LearningRate), lr,
                $"{OptionsName}.LearningRate must be a positive finite number (or null for {(DefaultLearningRateFactor == 1 ? "the model's rate" : "a tenth of the model's rate")}).");
        if (BatchSize is < 1)
            throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, $"{OptionsName}.BatchSize must be at least 1 (or null for the model's batch size).");
        if (ProgressInterval is < 1)
            throw new ArgumentOutOfRangeException(nameof(ProgressInterval), ProgressInterval, $"{OptionsName}.ProgressInterval must be at least 1 (or null for the model's).");
        Distributed?.Validate();
        Augmentation?.Validate();
    }
}

/// <summary>
/// Fine-tuning settings of a stage that can learn from a teacher while it fine-tunes (pruning, weight clustering): the
/// shared <see cref="FineTuningOptions"/> plus the teacher and how its scores are blended with the labels.
/// </summary>
public abstract class TeacherGuidedFineTuningOptions : FineTuningOptions
{
    /// <summary>Creates the settings with the stage's default number of epochs.</summary>
    /// <param name="defaultEpochs">The stage's default epochs.</param>
    private protected TeacherGuidedFineTuningOptions(int defaultEpochs)
        : base(defaultEpochs)
    {
    }

    /// <summary>
    /// A teacher for the fine-tuning (knowledge distillation while the stage fine-tunes): any fitted <see cref="ITransformer"/>
    /// whose output has one score per class, e.g. the uncompressed model or a larger one. The loss becomes
    /// <see cref="Distillation"/>'s blend of the teacher's softened scores and the labels instead of the labels alone, which
    /// recovers more of the accuracy lost to compression. Default (null): the labels alone.
    /// </summary>
    [JsonIgnore]
    public ITransformer? Teacher { get; set; }

    /// <summary>
    /// How <see cref="Teacher"/>'s scores are blended with the labels (temperature, alpha, score column, disk cache). Used only
    /// when <see cref="Teacher"/> is set. Default: T = 4, alpha = 0.9, teacher run on every batch.
    /// </summary>
    public DistillationOptions Distillation { get; set; } = new();

    /// <summary>Copies the shared and teacher settings onto <paramref name="copy"/>.</summary>
    private protected T CopyGuidedTo<T>(T copy) where T : TeacherGuidedFineTuningOptions
    {
        CopyTo(copy);
        copy.Teacher = Teacher;
        copy.Distillation = Distillation?.Clone()!;
        return copy;
    }

    /// <inheritdoc />
    private protected override void ValidateFineTuning()
    {
        base.ValidateFineTuning();
        TeacherGuidance.ValidateSettings(Teacher, Distillation, Epochs, OptionsName);
    }
}
