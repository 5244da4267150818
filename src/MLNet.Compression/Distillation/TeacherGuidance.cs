using Microsoft.ML;
using Microsoft.ML.Data;
using static TorchSharp.torch;
using MLNet.Compression.Training;

namespace MLNet.Compression.Distillation;

/// <summary>
/// A teacher wired into a training run: the data the student reads (copies of its feature and label columns taken before
/// the teacher's transform, plus the teacher's scores, streamed or from a disk cache), and the distillation loss over each
/// batch. Shared by distillation and by the fine-tuning of pruning and weight clustering when they are given a teacher.
/// Disposing it deletes the cache.
/// </summary>
internal sealed class TeacherGuidance : IDisposable
{
    private string? cachePath;
    private TeacherScoreKind? seen;

    private TeacherGuidance(IDataView data, string features, string labels, string target, long cacheBytes, string? cachePath,
        DistillationOptions options, int classCount)
    {
        Data = data;
        FeatureColumnName = features;
        LabelColumnName = labels;
        TargetColumnName = target;
        CacheBytes = cacheBytes;
        this.cachePath = cachePath;
        Options = options;
        ClassCount = classCount;
        seen = options.TeacherScoreKind == TeacherScoreKind.Auto ? null : options.TeacherScoreKind;
    }

    /// <summary>The rows to train on: the student's columns under <see cref="FeatureColumnName"/> and <see cref="LabelColumnName"/>, and the teacher's scores.</summary>
    public IDataView Data { get; }

    /// <summary>The student's copy of the feature column.</summary>
    public string FeatureColumnName { get; }

    /// <summary>The student's copy of the label column.</summary>
    public string LabelColumnName { get; }

    /// <summary>The teacher's score column, read into every batch's targets.</summary>
    public string TargetColumnName { get; }

    /// <summary>Bytes of the disk cache; 0 when the teacher runs on every batch.</summary>
    public long CacheBytes { get; }

    /// <summary>The temperature and weights used.</summary>
    public DistillationOptions Options { get; }

    /// <summary>The teacher's score column as the user named it (how Auto decides what it holds for a binary student).</summary>
    public string ScoreColumn { get; init; } = "Score";

    /// <summary>The width of the teacher's scores: the number of classes (one for a binary or regression student).</summary>
    public int ClassCount { get; }

    /// <summary>The student's output head, whose distillation loss <see cref="Loss"/> uses (default: multiclass).</summary>
    public Networks.Heads.OutputHead Head { get; set; } = Networks.Heads.OutputHead.Multiclass;

    /// <summary>How the teacher's scores were read, decided on the first batch; <see cref="TeacherScoreKind.Auto"/> before it.</summary>
    public TeacherScoreKind ScoreKind => seen ?? TeacherScoreKind.Auto;

    /// <summary>
    /// Applies <paramref name="teacher"/> to <paramref name="input"/> and checks its scores against the student's classes.
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
        int width = head.OutputUnits(classCount);
        // The teacher's pipeline may rewrite the feature or label column (a normalizer, MapValueToKey): the student reads
        // copies taken before the teacher runs, so it learns from exactly the columns it will be scored on.
        string features = Unused(input.Schema, "DistillStudentFeatures"), labels = Unused(input.Schema, "DistillStudentLabel");
        var copies = ml.Transforms.CopyColumns(features, featureColumn)
            .Append(ml.Transforms.CopyColumns(labels, labelColumn))
            .Fit(input).Transform(input);
        IDataView taught;
        try
        {
            taught = teacher.Transform(copies);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new ArgumentException($"The {teacherName} could not be applied to the training data: {e.Message} Give Fit the columns the teacher was trained on.", "input", e);
        }
        var score = taught.Schema.GetColumnOrNull(options.TeacherScoreColumnName)
            ?? throw new ArgumentException(
                $"The {teacherName}'s output has no column '{options.TeacherScoreColumnName}'. Columns: {string.Join(", ", taught.Schema.Where(c => !c.IsHidden).Select(c => c.Name))}. " +
                "Use a multiclass model (its scores are in 'Score') or set DistillationOptions.TeacherScoreColumnName.", teacherName);
        string scoreName = score.Name;
        if (width == 1 && score.Type == NumberDataViewType.Single)
        {
            // A binary or regression teacher's Score (or Probability) is a scalar: read it as a vector of one value.
            scoreName = Unused(taught.Schema, "DistillTeacherScore");
            taught = ml.Transforms.Concatenate(scoreName, score.Name).Fit(taught).Transform(taught);
            score = taught.Schema[scoreName];
        }
        if (score.Type is not VectorDataViewType { ItemType: NumberDataViewType } st || st.ItemType.RawType != typeof(float) || !st.IsKnownSize)
            throw new ArgumentException($"The {teacherName}'s column '{score.Name}' has type {score.Type}; a known-size vector of Single (one score per class) is needed" +
                (width == 1 ? ", or a Single for a binary or regression student." : "."), teacherName);
        if (width == 1 && st.Size != 1)
            throw new ArgumentException(
                $"The {teacherName} gives {st.Size} scores per row in '{score.Name}' but the {head.Name} student needs one (its Score or Probability). " +
                "Teacher and student must solve the same task.", teacherName);
        if (width != 1 && st.Size != classCount)
            throw new ArgumentException(
                $"The {teacherName} gives {st.Size} scores per row in '{score.Name}' but the label column '{labelColumn}' has {classCount} classes. " +
                "Teacher and student must be trained on the same classes, in the same key order.", teacherName);

        if (!options.CacheTeacherOutputs)
            return new TeacherGuidance(taught, features, labels, score.Name, 0, null, options, width) { Head = head, ScoreColumn = options.TeacherScoreColumnName };
        // <temp>/mlnet-compression (or the user's folder); the name carries this process's id, so a later run removes the
        // cache of a process that died before deleting it.
        string path = MLNet.Compression.Data.CachePaths.NewOwnedTempFile(MLNet.Compression.Data.CachePaths.TempFolder(options.CacheDirectory), "teacher", ".idv");
        var selected = ml.Transforms.SelectColumns(features, labels, score.Name).Fit(taught).Transform(taught);
        AtomicFile.Write(path, s => ml.Data.SaveAsBinary(selected, s, keepHidden: false));
        long bytes = new FileInfo(path).Length;
        log.Info($"Cached the teacher's outputs: {bytes:N0} bytes in {path}.");
        return new TeacherGuidance(ml.Data.LoadFromBinary(path), features, labels, score.Name, bytes, path, options, width) { Head = head, ScoreColumn = options.TeacherScoreColumnName };
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

    /// <summary>Deletes the disk cache, if any.</summary>
    public void Dispose()
    {
        if (cachePath is not null && File.Exists(cachePath))
            File.Delete(cachePath);
        cachePath = null;
    }

    private static string Unused(DataViewSchema schema, string name)
    {
        string candidate = name;
        for (int i = 1; schema.GetColumnOrNull(candidate) is not null; i++)
            candidate = name + i.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return candidate;
    }
}
