using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.Compression.Distillation;

/// <summary>
/// A teacher's scores joined to the rows it scored: <see cref="Data"/> is the rows, untouched, plus the teacher's score
/// column under <see cref="ScoreColumnName"/> (streamed through <see cref="TeacherScoresDataView"/>, or from a disk cache that
/// <see cref="Dispose"/> deletes). A pipeline stage joins the teacher to the raw rows, runs the student's own transforms over
/// <see cref="Data"/> and makes the join <see cref="Ambient"/> while the network trains, so the training finds the scores in
/// its prepared data instead of running the teacher on rows the student's transforms have already changed.
/// </summary>
/// <remarks>Made by <see cref="Create"/>.</remarks>
internal sealed class TeacherJoin(ITransformer teacher, DistillationOptions options, IDataView data, string scoreColumn, string teacherScoreColumn,
    long cacheBytes, string? cachePath) : IDisposable
{
    private static readonly AsyncLocal<TeacherJoin?> ambient = new();
    private string? cachePath = cachePath;

    /// <summary>The join a pipeline stage is training with on this thread (or async flow), or null.</summary>
    public static TeacherJoin? Ambient => ambient.Value;

    /// <summary>The teacher.</summary>
    public ITransformer Teacher { get; } = teacher;

    /// <summary>How the teacher's scores are blended with the labels.</summary>
    public DistillationOptions Options { get; } = options;

    /// <summary>
    /// Whether a network trainer (<see cref="NeuralNetworkTrainer"/>) that finds these scores in its input learns from them
    /// (a student pipeline being distilled); otherwise only a stage given this very teacher does.
    /// </summary>
    public bool TeachesTrainers { get; set; }

    /// <summary>The guidance the student's training made from this join (its score kind is known after training).</summary>
    public TeacherGuidance? Guidance { get; set; }

    /// <summary>The rows plus the teacher's scores.</summary>
    public IDataView Data { get; } = data;

    /// <summary>The name of the scores in <see cref="Data"/> (not a name the rows had).</summary>
    public string ScoreColumnName { get; } = scoreColumn;

    /// <summary>The teacher's own name for its scores (<c>Score</c>).</summary>
    public string TeacherScoreColumnName { get; } = teacherScoreColumn;

    /// <summary>Bytes of the disk cache; 0 when the teacher runs as the rows are read.</summary>
    public long CacheBytes { get; } = cacheBytes;

    /// <summary>Set when a training run used these scores (a pipeline stage checks that its student found them).</summary>
    public bool Used { get; set; }

    /// <summary>Makes <paramref name="join"/> the ambient join until the returned scope is disposed.</summary>
    public static IDisposable Use(TeacherJoin join)
    {
        var before = ambient.Value;
        ambient.Value = join;
        return new Restore(before);
    }

    /// <summary>
    /// Applies <paramref name="teacher"/> to <paramref name="input"/> and checks that it gives a known-size vector of Single
    /// scores; a teacher that cannot read the rows is an error naming the column, before any training.
    /// </summary>
    /// <param name="ml">The context.</param>
    /// <param name="teacher">Any fitted transformer with a score column.</param>
    /// <param name="options">Score column and cache settings (validated).</param>
    /// <param name="input">The rows the teacher and the student both read.</param>
    /// <param name="teacherName">How messages name the teacher (<c>teacher</c>, <c>PruningOptions.Teacher</c>).</param>
    /// <param name="log">Where the cache is reported.</param>
    /// <param name="cachedColumns">The columns of <paramref name="input"/> a disk cache keeps (null: every visible column).</param>
    public static TeacherJoin Create(MLContext ml, ITransformer teacher, DistillationOptions options, IDataView input, string teacherName, ContextLog log,
        IReadOnlyList<string>? cachedColumns)
    {
        IDataView taught;
        try
        {
            taught = teacher.Transform(input);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new ArgumentException(
                $"The {teacherName} could not be applied to the training data: {e.Message} The teacher reads the same rows as the student " +
                $"(columns: {string.Join(", ", input.Schema.Where(c => !c.IsHidden).Select(c => $"{c.Name} {c.Type}"))}); give Fit the columns the teacher was trained on.",
                "input", e);
        }
        var score = taught.Schema.GetColumnOrNull(options.TeacherScoreColumnName)
            ?? throw new ArgumentException(
                $"The {teacherName}'s output has no column '{options.TeacherScoreColumnName}'. Columns: {string.Join(", ", taught.Schema.Where(c => !c.IsHidden).Select(c => c.Name))}. " +
                "Use a multiclass model (its scores are in 'Score') or set DistillationOptions.TeacherScoreColumnName.", teacherName);
        string teacherScoreName = score.Name;
        if (score.Type == NumberDataViewType.Single)
        {
            // A binary or regression teacher's Score (or Probability) is a scalar: read it as a vector of one value.
            string single = Unused(taught.Schema, "TeacherScoreVector");
            taught = ml.Transforms.Concatenate(single, score.Name).Fit(taught).Transform(taught);
            score = taught.Schema[single];
        }
        if (score.Type is not VectorDataViewType { ItemType: NumberDataViewType } st || st.ItemType.RawType != typeof(float) || !st.IsKnownSize)
            throw new ArgumentException($"The {teacherName}'s column '{teacherScoreName}' has type {score.Type}; a known-size vector of Single (one score per class) " +
                "is needed, or a Single for a binary or regression student.", teacherName);

        string name = Unused(input.Schema, "TeacherScore");
        var joined = new TeacherScoresDataView(input, taught, score, name);
        if (!options.CacheTeacherOutputs)
            return new TeacherJoin(teacher, options, joined, name, teacherScoreName, 0, null);
        // <temp>/mlnet-compression (or the user's folder); the name carries this process's id, so a later run removes the
        // cache of a process that died before deleting it.
        string path = Compression.Data.CachePaths.NewOwnedTempFile(Compression.Data.CachePaths.TempFolder(options.CacheDirectory), "teacher", ".idv");
        var keep = (cachedColumns ?? input.Schema.Where(c => !c.IsHidden).Select(c => c.Name).ToArray()).Append(name).Distinct().ToArray();
        var selected = ml.Transforms.SelectColumns(keep).Fit(joined).Transform(joined);
        AtomicFile.Write(path, s => ml.Data.SaveAsBinary(selected, s, keepHidden: false));
        long bytes = new FileInfo(path).Length;
        log.Info($"Cached the teacher's outputs: {bytes:N0} bytes in {path}.");
        return new TeacherJoin(teacher, options, ml.Data.LoadFromBinary(path), name, teacherScoreName, bytes, path);
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

    private sealed class Restore(TeacherJoin? before) : IDisposable
    {
        public void Dispose() => ambient.Value = before;
    }
}
