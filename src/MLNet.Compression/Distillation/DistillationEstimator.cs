using System.Diagnostics;
using Microsoft.ML;
using MLNet.Compression.Networks;
using MLNet.Compression.Training;

namespace MLNet.Compression.Distillation;

/// <summary>
/// Knowledge distillation (Hinton, Vinyals and Dean, 2015): trains a student network, configured like any
/// <see cref="NeuralNetworkTrainer"/>, on alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha) ·
/// cross-entropy with the labels. The teacher is any fitted <see cref="ITransformer"/> whose output has a score column with
/// one value per class: this library's networks, ML.NET's multiclass trainers (SDCA, LightGBM, ...) or an ONNX model applied
/// with <c>ApplyOnnxModel</c>. Probabilities are turned into logits by their logarithm. The teacher runs batch by batch on
/// the rows the student is reading (the data is never held in memory), or once into a disk cache with
/// <see cref="DistillationOptions.CacheTeacherOutputs"/>. Create it with <c>mlContext.Compression().Distill(...)</c>.
/// </summary>
public sealed class DistillationEstimator : CompressionStageEstimator<DistillationOptions, DistillationReport>
{
    private const string Stage = "distill";
    private readonly MLContext ml;
    private readonly ITransformer teacher;
    private readonly NeuralNetworkOptions student;

    internal DistillationEstimator(MLContext ml, ITransformer teacher, NeuralNetworkOptions studentOptions, DistillationOptions options)
        : base(ml ?? throw new ArgumentNullException(nameof(ml)), null, null, options, o => o.Validate(), o => o.Clone())
    {
        ArgumentNullException.ThrowIfNull(ml);
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentNullException.ThrowIfNull(studentOptions);
        ArgumentNullException.ThrowIfNull(options);
        studentOptions.Validate();
        this.ml = ml;
        this.teacher = teacher;
        student = studentOptions.Clone();
    }


    /// <summary>A copy of the student's training options.</summary>
    public NeuralNetworkOptions StudentOptions => student.Clone();


    /// <inheritdoc />
    private protected override NeuralNetworkOptions OutputOptions => student;

    /// <summary>Trains the student on <paramref name="input"/> against the teacher's scores and the labels.</summary>
    private protected override (NeuralNetworkTransformer, CompressionStageReport) Apply(MLContext context, NeuralNetworkTransformer? source, IDataView input)
    {
        var log = new ContextLog(ml, "Distill");
        var architecture = student.Architecture.ForFeatures(input.Schema, student.FeatureColumnName);
        // The student's task follows its label: Boolean = binary, Single = regression, key = multiclass.
        var head = Networks.Heads.OutputHead.ForLabel(input.Schema, student.LabelColumnName);
        var label = head.ValidateLabel(input.Schema, student.LabelColumnName, out int classCount);
        var classNames = head.ClassNames(label, classCount);

        var sw = Stopwatch.StartNew();
        using var guidance = TeacherGuidance.Create(ml, teacher, Settings, input, student.FeatureColumnName, student.LabelColumnName, classCount, "teacher", log, head);
        int seed = student.Seed ?? NeuralNetworkTrainer.DrawSeed(ml);
        var network = NetworkModel.Create(architecture, classCount, head.Kind);
        NeuralNetworkTrainer.InitializeWeights(network, seed);
        var tuning = student.Clone();
        tuning.FeatureColumnName = guidance.FeatureColumnName;
        tuning.LabelColumnName = guidance.LabelColumnName;
        var hooks = new TrainingHooks { TargetColumnName = guidance.TargetColumnName, Loss = guidance.Loss };
        log.Info($"Distilling into {student.Architecture.Name} ({network.ParameterCount:N0} parameters): T={Settings.Temperature}, alpha={Settings.Alpha}, " +
                 $"{student.Epochs} epoch(s).");
        var result = new TrainingSession(ml, tuning, Stage, student.CancellationToken).Run(guidance.Data, network, seed, null, hooks);
        var trained = student.Clone();
        trained.Architecture = architecture;
        var model = NeuralNetworkTransformer.Create(ml, result.Model, classNames, trained, input.Schema, result, seed);
        var report = new DistillationReport(Settings.Temperature, Settings.Alpha, guidance.ScoreKind, Settings.TeacherScoreColumnName, guidance.CacheBytes,
            network.ParameterCount, result.History.Count, sw.Elapsed.TotalSeconds);
        log.Info(report.ToString());
        return (model, report);
    }
}

/// <summary>What a distillation run did.</summary>
/// <param name="Temperature">Softmax temperature used.</param>
/// <param name="Alpha">Weight of the teacher's term.</param>
/// <param name="TeacherScores">How the teacher's scores were read (probabilities or logits).</param>
/// <param name="TeacherScoreColumn">The teacher's score column.</param>
/// <param name="CacheBytes">Bytes of the on-disk teacher cache (0 when the teacher ran on every batch).</param>
/// <param name="StudentParameters">The student's parameters.</param>
/// <param name="Epochs">Epochs run.</param>
/// <param name="Seconds">Wall time of the run, including the teacher.</param>
public sealed record DistillationReport(double Temperature, double Alpha, TeacherScoreKind TeacherScores, string TeacherScoreColumn, long CacheBytes,
    long StudentParameters, int Epochs, double Seconds) : CompressionStageReport
{
    /// <summary>One line summary.</summary>
    public override string ToString()
    {
        var c = System.Globalization.CultureInfo.InvariantCulture;
        string cache = CacheBytes > 0 ? string.Create(c, $", teacher cache {CacheBytes:N0} bytes") : string.Empty;
        return string.Create(c, $"Distillation: T={Temperature}, alpha={Alpha}, teacher '{TeacherScoreColumn}' read as {TeacherScores}, student {StudentParameters:N0} parameters, {Epochs} epoch(s) in {Seconds:F1} s{cache}.");
    }
}
