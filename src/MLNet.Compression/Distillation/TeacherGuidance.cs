using Microsoft.ML;
using Microsoft.ML.Data;
using static TorchSharp.torch;
using MLNet.Compression.Training;

namespace MLNet.Compression.Distillation;

/// <summary>
/// A teacher wired into a training run: the data the student reads (its own rows, untouched, plus the teacher's scores,
/// streamed or from a disk cache), and the distillation loss over each
/// batch. Shared by distillation and by the fine-tuning of pruning and weight clustering when they are given a teacher.
/// Disposing it deletes the cache.
/// </summary>
internal sealed class TeacherGuidance(IDataView data, string features, string labels, string target, long cacheBytes, TeacherJoin? owned,
    DistillationOptions options, int classCount) : IDisposable
{
    private TeacherJoin? owned = owned;
    private TeacherScoreKind? seen = options.TeacherScoreKind == TeacherScoreKind.Auto ? null : options.TeacherScoreKind;

    /// <summary>The rows to train on: the student's columns under <see cref="FeatureColumnName"/> and <see cref="LabelColumnName"/>, and the teacher's scores.</summary>
    public IDataView Data { get; } = data;

    /// <summary>The student's feature column.</summary>
    public string FeatureColumnName { get; } = features;

    /// <summary>The student's label column.</summary>
    public string LabelColumnName { get; } = labels;

    /// <summary>The teacher's score column, read into every batch's targets.</summary>
    public string TargetColumnName { get; } = target;

    /// <summary>Bytes of the disk cache; 0 when the teacher runs on every batch.</summary>
    public long CacheBytes { get; } = cacheBytes;

    /// <summary>The temperature and weights used.</summary>
    public DistillationOptions Options { get; } = options;

    /// <summary>The teacher's score column as the user named it (how Auto decides what it holds for a binary student).</summary>
    public string ScoreColumn { get; init; } = "Score";

    /// <summary>The width of the teacher's scores: the number of classes (one for a binary or regression student).</summary>
    public int ClassCount { get; } = classCount;

    /// <summary>The student's output head, whose distillation loss <see cref="Loss"/> uses (default: multiclass).</summary>
    public Networks.Heads.OutputHead Head { get; set; } = Networks.Heads.OutputHead.Multiclass;

    /// <summary>How the teacher's scores were read, decided on the first batch; <see cref="TeacherScoreKind.Auto"/> before it.</summary>
    public TeacherScoreKind ScoreKind => seen ?? TeacherScoreKind.Auto;

    /// <summary>
    /// Applies <paramref name="teacher"/> to <paramref name="input"/> and checks its scores against the student's classes. The
    /// student reads <paramref name="input"/>'s own columns (never the teacher's rewritten ones) plus the teacher's scores,
    /// with no per-row copies, in the row order of the training loop (<see cref="TeacherScoresDataView"/>). When the data
    /// already carries this teacher's scores (a pipeline stage ran the teacher on the raw rows, <see cref="TeacherJoin.Ambient"/>),
    /// they are used as they are.
    /// </summary>
    /// <param name="ml">The context.</param>
    /// <param name="teacher">Any fitted transformer with a score column.</param>
    /// <param name="options">Temperature, weight, score column and cache settings (already validated).</param>
    /// <param name="input">The training data.</param>
    /// <param name="featureColumn">The student's feature column in <paramref name="input"/>.</param>
    /// <param name="labelColumn">The student's label column in <paramref name="input"/>.</param>
    /// <param name="classCount">The student's number of classes.</param>
    /// <param name="teacherName">How error messages name the teacher, e.g. <c>teacher</c> or <c>PruningOptions.Teacher</c>.</param>
    /// <param name="log">Where the cache is reported.</param>
    /// <param name="head">The student's output head (default multiclass): the width of the teacher's scores and its distillation loss.</param>
    public static TeacherGuidance Create(MLContext ml, ITransformer teacher, DistillationOptions options, IDataView input, string featureColumn,
        string labelColumn, int classCount, string teacherName, ContextLog log, Networks.Heads.OutputHead? head = null)
    {
        head ??= Networks.Heads.OutputHead.Multiclass;
        int expected = head.OutputUnits(classCount);
        TeacherJoin? owned = null;
        var join = TeacherJoin.Ambient is { } ambient && ReferenceEquals(ambient.Teacher, teacher) && input.Schema.GetColumnOrNull(ambient.ScoreColumnName) is not null
            ? ambient
            : owned = TeacherJoin.Create(ml, teacher, options, input, teacherName, log, [featureColumn, labelColumn]);
        try
        {
            var data = ReferenceEquals(join, owned) ? join.Data : input;
            var score = data.Schema[join.ScoreColumnName];
            int width = ((VectorDataViewType)score.Type).Size;
            CheckWidth(width, expected, head, join.TeacherScoreColumnName, labelColumn, classCount, teacherName);
            join.Used = true;
            return new TeacherGuidance(data, featureColumn, labelColumn, join.ScoreColumnName, join.CacheBytes, owned, options, expected)
            {
                Head = head,
                ScoreColumn = join.TeacherScoreColumnName,
            };
        }
        catch
        {
            owned?.Dispose();
            throw;
        }
    }

    /// <summary>Checks the width of the teacher's scores against the student's head (one score for binary and regression, one per class otherwise).</summary>
    private static void CheckWidth(int width, int expected, Networks.Heads.OutputHead head, string scoreColumn, string labelColumn, int classCount, string teacherName)
    {
        if (expected == 1 && width != 1)
            throw new ArgumentException(
                $"The {teacherName} gives {width} scores per row in '{scoreColumn}' but the {head.Name} student needs one (its Score or Probability). " +
                "Teacher and student must solve the same task.", teacherName);
        if (expected != 1 && width != classCount)
            throw new ArgumentException(
                $"The {teacherName} gives {width} scores per row in '{scoreColumn}' but the label column '{labelColumn}' has {classCount} classes. " +
                "Teacher and student must be trained on the same classes, in the same key order.", teacherName);
    }

    /// <summary>
    /// The training hooks of a network trainer inside a student pipeline being distilled: null unless a
    /// <see cref="TeacherJoin.Ambient"/> join teaches trainers and its scores are in <paramref name="input"/> (they came through
    /// the student's own transforms); otherwise the distillation loss over those scores, the trainer's head's.
    /// </summary>
    /// <param name="input">The trainer's input (the student pipeline's prepared rows).</param>
    /// <param name="head">The trainer's output head.</param>
    /// <param name="featureColumn">The trainer's feature column in <paramref name="input"/>.</param>
    /// <param name="labelColumn">The trainer's label column in <paramref name="input"/>.</param>
    /// <param name="classCount">The trainer's number of classes.</param>
    internal static TrainingHooks? ForStudentTrainer(IDataView input, Networks.Heads.OutputHead head, string featureColumn, string labelColumn, int classCount)
    {
        if (TeacherJoin.Ambient is not { TeachesTrainers: true } join || input.Schema.GetColumnOrNull(join.ScoreColumnName) is not { } score)
            return null;
        int width = ((VectorDataViewType)score.Type).Size;
        int expected = head.OutputUnits(classCount);
        CheckWidth(width, expected, head, join.TeacherScoreColumnName, labelColumn, classCount, "teacher");
        var guidance = new TeacherGuidance(input, featureColumn, labelColumn, join.ScoreColumnName, join.CacheBytes, null, join.Options, expected)
        {
            Head = head,
            ScoreColumn = join.TeacherScoreColumnName,
        };
        join.Used = true;
        join.Guidance = guidance;
        return new TrainingHooks { TargetColumnName = guidance.TargetColumnName, Loss = guidance.Loss };
    }

    /// <summary>
    /// The guidance for a compression stage's fine-tuning: null without a teacher; otherwise the teacher applied to
    /// <paramref name="input"/> with <paramref name="tuning"/> pointed at the student's column copies.
    /// </summary>
    /// <param name="ml">The context.</param>
    /// <param name="teacher">The stage's <c>Options.Teacher</c>, or null.</param>
    /// <param name="options">The stage's <c>Options.Distillation</c> (validated with the options).</param>
    /// <param name="input">The fine-tuning data.</param>
    /// <param name="source">The model being compressed: its feature and label columns and class count.</param>
    /// <param name="tuning">The fine-tuning options; its feature and label column names are redirected.</param>
    /// <param name="teacherName">How error messages name the option, e.g. <c>PruningOptions.Teacher</c>.</param>
    /// <param name="log">Where the teacher and its cache are reported.</param>
    public static TeacherGuidance? ForFineTuning(MLContext ml, ITransformer? teacher, DistillationOptions options, IDataView input,
        NeuralNetworkTransformer source, NeuralNetworkOptions tuning, string teacherName, ContextLog log)
    {
        if (teacher is null)
            return null;
        var guidance = Create(ml, teacher, options, input, source.FeatureColumnName, source.TrainingOptions.LabelColumnName,
            source.Network.NumClasses, teacherName, log, source.Network.Head);
        tuning.FeatureColumnName = guidance.FeatureColumnName;
        tuning.LabelColumnName = guidance.LabelColumnName;
        log.Info($"The teacher guides the fine-tuning: T={options.Temperature}, alpha={options.Alpha}.");
        return guidance;
    }

    /// <summary>
    /// Checks a stage's teacher settings (<c>Teacher</c>, <c>Distillation</c>, <c>Epochs</c>) when a teacher is set; throws
    /// naming the bad one.
    /// </summary>
    /// <param name="teacher">The stage's teacher, or null (nothing to check).</param>
    /// <param name="distillation">The stage's distillation settings.</param>
    /// <param name="epochs">The stage's fine-tuning epochs.</param>
    /// <param name="optionsName">The options class, for messages, e.g. <c>PruningOptions</c>.</param>
    public static void ValidateSettings(ITransformer? teacher, DistillationOptions? distillation, int epochs, string optionsName)
    {
        if (teacher is null)
            return;
        if (distillation is null)
            throw new ArgumentNullException("Distillation", $"{optionsName}.Distillation must be set when a Teacher is given (or leave the default).");
        if (epochs == 0)
            throw new ArgumentException($"{optionsName}.Teacher is set but Epochs is 0: the teacher guides the fine-tuning, so give at least one epoch or drop the teacher.", "Teacher");
        distillation.Validate();
    }

    /// <summary>
    /// The distillation loss of one batch, the student head's (multiclass: alpha · T² · KL + (1 − alpha) · cross-entropy); the
    /// teacher's scores come from the batch's targets. Every tensor belongs to the caller's dispose scope.
    /// </summary>
    public Tensor Loss(Tensor logits, Tensor labels, BatchStream.Batch batch)
    {
        var t = tensor(batch.Targets, [batch.Capacity, ClassCount]).narrow(0, 0, batch.Count).to(logits.device);
        // Decided on the first batch and kept, so every batch is read the same way.
        seen ??= Head.ResolveTeacherScoreKind(t, ScoreColumn);
        return Head.DistillationLoss(logits, t, labels, Options.Temperature, Options.Alpha, seen.Value);
    }

    /// <summary>Deletes the disk cache, if this guidance made one.</summary>
    public void Dispose()
    {
        owned?.Dispose();
        owned = null;
    }
}
