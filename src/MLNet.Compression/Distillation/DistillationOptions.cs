namespace MLNet.Compression.Distillation;

/// <summary>Options for <see cref="DistillationEstimator"/>: how the teacher's scores are blended with the labels.</summary>
public sealed class DistillationOptions
{
    /// <summary>Softmax temperature T applied to teacher and student logits (T &gt; 0). Default 4.</summary>
    public double Temperature { get; set; } = 4;

    /// <summary>Weight of the soft (teacher) term, in [0, 1]; the labels' cross-entropy gets 1 − alpha. Default 0.9.</summary>
    public double Alpha { get; set; } = 0.9;

    /// <summary>Name of the teacher's output column with one score per class. Default <c>Score</c>.</summary>
    public string TeacherScoreColumnName { get; set; } = "Score";

    /// <summary>What the teacher's scores are (probabilities are turned into logits by their logarithm). Default <see cref="TeacherScoreKind.Auto"/>.</summary>
    public TeacherScoreKind TeacherScoreKind { get; set; } = TeacherScoreKind.Auto;

    /// <summary>
    /// Compute the teacher's outputs once and keep them on disk (an ML.NET binary data file in <see cref="CacheDirectory"/>,
    /// deleted after training) instead of running the teacher on every batch of every epoch. Worth it for a slow teacher and
    /// many epochs; the data is still streamed. Default false.
    /// </summary>
    public bool CacheTeacherOutputs { get; set; }

    /// <summary>
    /// Folder for the teacher cache. Default (null): the library's own folder <c>&lt;system temp&gt;/mlnet-compression</c>
    /// (or <c>MLNET_COMPRESSION_TEMP</c>). Cache files carry the process id in their name; one left by a process that
    /// died is removed by the next run that caches a teacher there.
    /// </summary>
    public string? CacheDirectory { get; set; }

    /// <summary>Returns a copy.</summary>
    public DistillationOptions Clone() => (DistillationOptions)MemberwiseClone();

    /// <summary>Checks every setting; throws naming the bad one.</summary>
    internal void Validate()
    {
        if (!(Temperature > 0) || double.IsInfinity(Temperature))
            throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature,
                "The distillation temperature must be a positive finite number (Hinton et al. used 1 to 20; 2 to 8 is typical).");
        if (!(Alpha >= 0 && Alpha <= 1))
            throw new ArgumentOutOfRangeException(nameof(Alpha), Alpha,
                "The distillation alpha weights the teacher's term against the labels and must be between 0 and 1.");
        if (string.IsNullOrWhiteSpace(TeacherScoreColumnName))
            throw new ArgumentException("DistillationOptions.TeacherScoreColumnName must name the teacher's score column (usually \"Score\").", nameof(TeacherScoreColumnName));
        if (!Enum.IsDefined(TeacherScoreKind))
            throw new ArgumentOutOfRangeException(nameof(TeacherScoreKind), TeacherScoreKind, "Unknown teacher score kind.");
    }
}
