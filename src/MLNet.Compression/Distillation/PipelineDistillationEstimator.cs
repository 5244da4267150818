using System.Diagnostics;
using Microsoft.ML;
using MLNet.Compression.Pipelines;

namespace MLNet.Compression.Distillation;

/// <summary>
/// Knowledge distillation between whole pipelines: the teacher is any fitted <see cref="ITransformer"/> with a score column
/// (for example a LightGBM pipeline with its own normalizer and <c>MapValueToKey</c>), the student is an estimator pipeline
/// that contains one network trainer of this library (its transforms prepare the student's features and label; transforms
/// after the trainer, such as <c>MapKeyToValue</c>, are allowed). <see cref="Fit"/> takes the RAW rows: the teacher scores them
/// as they are, the student's pipeline is fitted on the same rows, and its network learns from the teacher's scores
/// (alpha · T² · KL + (1 − alpha) · the labels' loss) through its own transforms; the rows are never copied and are read in the
/// trainer's own order. Returns the fitted student pipeline. Create it with <c>mlContext.Compression().Distill(teacherPipeline,
/// studentPipeline, options)</c>.
/// </summary>
/// <typeparam name="TTransformer">What the student pipeline fits to.</typeparam>
public sealed class PipelineDistillationEstimator<TTransformer> : IEstimator<TTransformer>
    where TTransformer : class, ITransformer
{
    private readonly MLContext ml;
    private readonly ITransformer teacher;
    private readonly IEstimator<TTransformer> student;
    private readonly DistillationOptions settings;

    internal PipelineDistillationEstimator(MLContext ml, ITransformer teacher, IEstimator<TTransformer> student, DistillationOptions options)
    {
        ArgumentNullException.ThrowIfNull(ml);
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentNullException.ThrowIfNull(student);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        this.ml = ml;
        this.teacher = teacher;
        this.student = student;
        settings = options.Clone();
    }

    /// <summary>A copy of the distillation settings.</summary>
    public DistillationOptions Options => settings.Clone();

    /// <summary>What the last <see cref="Fit"/> did (also the last entry of the student network's <see cref="NeuralNetworkTransformer.CompressionHistory"/>); null before it.</summary>
    public DistillationReport? Report { get; private set; }

    /// <summary>
    /// Fits the student pipeline on <paramref name="input"/> (raw rows), its network learning from the teacher's scores of the
    /// same rows.
    /// </summary>
    /// <param name="input">The raw rows both pipelines read.</param>
    /// <returns>The fitted student pipeline.</returns>
    /// <exception cref="ArgumentException">The teacher cannot read the rows (the message names the column), has no score column, or its scores do not match the student's classes.</exception>
    /// <exception cref="InvalidOperationException">The student pipeline trained no network of this library on the teacher's rows.</exception>
    public TTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var log = new ContextLog(ml, "Distill");
        var sw = Stopwatch.StartNew();
        using var join = TeacherJoin.Create(ml, teacher, settings, input, "teacher", log, null);
        join.TeachesTrainers = true;
        TTransformer fitted;
        using (TeacherJoin.Use(join))
            fitted = student.Fit(join.Data);
        var network = join.Used ? FittedPipeline.FindNetwork(fitted, "studentPipeline") : null;
        if (network is null || join.Guidance is null)
        {
            (fitted as IDisposable)?.Dispose();
            throw new InvalidOperationException(
                "The student pipeline trained no network of MLNet.Compression on the teacher's rows, so nothing was distilled. It must contain a network " +
                "trainer (ml.Compression().NeuralNetwork(...)) whose input still carries the rows it was given (transforms that pass other columns through).");
        }
        Report = new DistillationReport(settings.Temperature, settings.Alpha, join.Guidance.ScoreKind, join.TeacherScoreColumnName, join.CacheBytes,
            network.ParameterCount, network.TrainingHistory.Count, sw.Elapsed.TotalSeconds);
        network.RecordStage(network.CompressionHistory, Report);
        log.Info(Report.ToString());
        return fitted;
    }

    /// <summary>The student pipeline's output shape.</summary>
    /// <param name="inputSchema">The shape of the raw rows.</param>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return student.GetOutputSchema(inputSchema);
    }
}
