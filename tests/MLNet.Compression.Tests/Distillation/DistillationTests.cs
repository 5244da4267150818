using Microsoft.ML;
using MLNet.Compression.Distillation;
using MLNet.Compression.Networks;
using MLNet.Compression.Tests.Quantization;
using MLNet.Compression.Tests.Training;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MLNet.Compression.Tests.Distillation;

public sealed class DistillationLossTests
{
    [Fact]
    public void MatchesTheFormulaAndTreatsProbabilitiesAsTheirLogarithms()
    {
        using var scope = NewDisposeScope();
        var student = tensor(new float[] { 1f, 2f, 0.5f, -1f, 0f, 3f }, [2, 3]);
        var teacherLogits = tensor(new float[] { 2f, 1f, 0f, 0f, 0f, 4f }, [2, 3]);
        var labels = tensor(new long[] { 1, 2 });
        double t = 3, alpha = 0.7;

        // Reference in plain C#.
        double expected = 0;
        var s = student.data<float>().ToArray();
        var te = teacherLogits.data<float>().ToArray();
        for (int r = 0; r < 2; r++)
        {
            var ps = Softmax(s.Skip(r * 3).Take(3).Select(v => v / t).ToArray());
            var pt = Softmax(te.Skip(r * 3).Take(3).Select(v => v / t).ToArray());
            double kl = Enumerable.Range(0, 3).Sum(i => pt[i] * Math.Log(pt[i] / ps[i]));
            var p1 = Softmax(s.Skip(r * 3).Take(3).ToArray());
            double ce = -Math.Log(p1[r == 0 ? 1 : 2]);
            expected += (alpha * t * t * kl + (1 - alpha) * ce) / 2;
        }
        double fromLogits = DistillationLoss.Compute(student, teacherLogits, labels, t, alpha, TeacherScoreKind.Logits).item<float>();
        Assert.Equal(expected, fromLogits, 4);

        var probabilities = teacherLogits.softmax(1);
        Assert.True(DistillationLoss.LooksLikeProbabilities(probabilities));
        Assert.False(DistillationLoss.LooksLikeProbabilities(teacherLogits));
        Assert.Equal(expected, DistillationLoss.Compute(student, probabilities, labels, t, alpha, TeacherScoreKind.Probabilities).item<float>(), 4);
        Assert.Equal(expected, DistillationLoss.Compute(student, probabilities, labels, t, alpha, TeacherScoreKind.Auto).item<float>(), 4);

        // A student that agrees with its teacher pays only the label term; alpha = 0 is plain cross-entropy.
        double ceOnly = nn.functional.cross_entropy(student, labels).item<float>();
        Assert.Equal(ceOnly, DistillationLoss.Compute(student, student, labels, t, 0.0, TeacherScoreKind.Logits).item<float>(), 5);
        Assert.Equal(0.0, DistillationLoss.Compute(student, student, labels, t, 1.0, TeacherScoreKind.Logits).item<float>(), 5);
    }

    [Fact]
    public void AConfidentTeachersTinyProbabilitiesKeepTheirRanking()
    {
        // Wrong classes at 1e-11 and 3e-20 against a sure class: read as probabilities they must give the same loss as
        // the logits they came from, i.e. the logarithm may clamp only an underflowed zero, not small values.
        using var scope = NewDisposeScope();
        var teacherLogits = tensor(new float[] { 30f, 5f, -15f, 4f, 29f, -10f }, [2, 3]);
        var student = tensor(new float[] { 3f, 1f, -2f, 0f, 2f, -1f }, [2, 3]);
        var labels = tensor(new long[] { 0, 1 });
        var probabilities = teacherLogits.softmax(1);
        Assert.True(probabilities.min().item<float>() is > 0 and < 1e-19f);
        double fromLogits = DistillationLoss.Compute(student, teacherLogits, labels, 4, 1.0, TeacherScoreKind.Logits).item<float>();
        double fromProbabilities = DistillationLoss.Compute(student, probabilities, labels, 4, 1.0, TeacherScoreKind.Probabilities).item<float>();
        Assert.Equal(fromLogits, fromProbabilities, 4);
        // An exact zero (underflow) is still finite.
        var zero = tensor(new float[] { 1f, 0f, 0f }, [1, 3]);
        Assert.True(double.IsFinite(DistillationLoss.Compute(student.narrow(0, 0, 1), zero, labels.narrow(0, 0, 1), 4, 0.9, TeacherScoreKind.Probabilities).item<float>()));
    }

    private static double[] Softmax(float[] z) => Softmax(z.Select(v => (double)v).ToArray());

    private static double[] Softmax(double[] z)
    {
        double m = z.Max();
        var e = z.Select(v => Math.Exp(v - m)).ToArray();
        return e.Select(v => v / e.Sum()).ToArray();
    }
}

public sealed class DistillationEstimatorTests : IClassFixture<QuantizableMlpFixture>
{
    private readonly QuantizableMlpFixture fixture;
    private readonly ITestOutputHelper output;

    public DistillationEstimatorTests(QuantizableMlpFixture fixture, ITestOutputHelper output)
    {
        this.fixture = fixture;
        this.output = output;
    }

    private MLContext Ml => fixture.Context;

    private double Accuracy(ITransformer model) => Ml.MulticlassClassification.Evaluate(model.Transform(fixture.Test)).MicroAccuracy;

    private static NeuralNetworkOptions Student(int epochs = 8) => new()
    {
        Architecture = NetworkArchitecture.Mlp(32),
        Epochs = epochs,
        BatchSize = 32,
        LearningRate = 2e-3,
        Seed = 5,
        Device = TrainingDevice.Cpu,
    };

    [Fact]
    public void ADistilledStudentBeatsTheSameStudentTrainedOnLabelsAlone()
    {
        // The teacher (784-128-10) learned from 6,000 rows; both students see only the first 1,000 of them.
        var few = Ml.Data.TakeRows(fixture.Train, 1000);
        using var alone = Ml.Compression().NeuralNetwork(Student()).Fit(few);
        var estimator = Ml.Compression().Distill(fixture.Model, Student(), temperature: 4, alpha: 0.9);
        using var distilled = estimator.Fit(few);
        double teacher = fixture.BaseAccuracy, a = Accuracy(alone), d = Accuracy(distilled);
        output.WriteLine($"teacher {teacher:F4}, student alone {a:F4}, distilled {d:F4}; {estimator.Report}");
        Assert.Equal(TeacherScoreKind.Probabilities, estimator.Report!.TeacherScores);
        Assert.Equal(Student().Epochs, estimator.Report.Epochs);
        Assert.True(d > a + 0.005, $"distilled {d:F4} vs alone {a:F4}");
        Assert.Equal(25_450, distilled.ParameterCount);
        // The student is an ordinary network: it saves and reloads like any other.
        using var temp = TestMnist.NewTempDirectory();
        Ml.Model.Save(distilled, few.Schema, temp["student.zip"]);
        Scoring.AssertIdentical(Scoring.Read(distilled.Transform(fixture.Test)), Scoring.Read(new MLContext().Model.Load(temp["student.zip"], out _).Transform(fixture.Test)));
    }

    [Fact]
    public void ANonNeuralMLNetPipelineCanTeachAndItsNormalizerDoesNotLeakIntoTheStudent()
    {
        var rows = Ml.Data.TakeRows(fixture.Train, 2000);
        // The teacher's pipeline rewrites the Features column in place; the student must still learn from the raw features.
        var sdca = Ml.Transforms.NormalizeMeanVariance("Features")
            .Append(Ml.MulticlassClassification.Trainers.SdcaMaximumEntropy("Label", "Features", maximumNumberOfIterations: 10))
            .Fit(rows);
        double teacher = Accuracy(sdca);
        // A folder of this test's own: it asserts only on the files it created, never on what other processes left in the temp folder.
        string cacheFolder = Path.Combine(Path.GetTempPath(), $"mlnc-distill-test-{Guid.NewGuid():N}");
        var estimator = Ml.Compression().Distill(sdca, Student(epochs: 5),
            new DistillationOptions { Temperature = 2, Alpha = 0.7, CacheTeacherOutputs = true, CacheDirectory = cacheFolder });
        using var student = estimator.Fit(rows);
        double accuracy = Accuracy(student);
        output.WriteLine($"SDCA teacher {teacher:F4}, distilled student {accuracy:F4}; {estimator.Report}");
        Assert.Equal(TeacherScoreKind.Probabilities, estimator.Report!.TeacherScores);
        Assert.True(estimator.Report.CacheBytes > 2000 * 10 * sizeof(float), "the teacher's outputs were cached to disk");
        Assert.True(Directory.Exists(cacheFolder), "the teacher cache was written to DistillationOptions.CacheDirectory");
        Assert.Empty(Directory.GetFiles(cacheFolder));
        Directory.Delete(cacheFolder);
        Assert.True(teacher > 0.8 && accuracy > 0.8, $"teacher {teacher:F4}, student {accuracy:F4}");
        Assert.True(accuracy > teacher - 0.05, $"student {accuracy:F4} vs teacher {teacher:F4}");
    }

    [Fact]
    public void WithAlphaZeroTheStudentLearnsBitForBitWhatItLearnsAloneOnAShufflingSource()
    {
        // A cached view shuffles, so the row order is the trainer's own: a teacher must not change it (an ONNX teacher's
        // batched scoring view and an ML.NET pipeline alike). With alpha = 0 only the labels count, so the weights must be
        // exactly those of the student trained alone.
        var rows = Ml.Data.Cache(Ml.Data.TakeRows(fixture.Train, 600));
        Assert.True(rows.CanShuffle);
        var sdca = Ml.Transforms.NormalizeMeanVariance("Features")
            .Append(Ml.MulticlassClassification.Trainers.SdcaMaximumEntropy("Label", "Features", maximumNumberOfIterations: 3))
            .Fit(rows);
        using var alone = Ml.Compression().NeuralNetwork(Student(epochs: 2)).Fit(rows);
        foreach (var teacher in new ITransformer[] { fixture.Model, sdca })
        {
            using var distilled = Ml.Compression().Distill(teacher, Student(epochs: 2), new DistillationOptions { Alpha = 0 }).Fit(rows);
            AssertSameWeights(alone, distilled);
        }
        // The comparison can fail: another seed gives other weights.
        var other = Student(epochs: 2);
        other.Seed = 6;
        using var reseeded = Ml.Compression().Distill(fixture.Model, other, new DistillationOptions { Alpha = 0 }).Fit(rows);
        Assert.NotEqual(alone.Network.ParameterizedLayers.First().Weight, reseeded.Network.ParameterizedLayers.First().Weight);
    }

    internal static void AssertSameWeights(NeuralNetworkTransformer expected, NeuralNetworkTransformer actual)
    {
        var a = expected.Network.ParameterizedLayers.ToArray();
        var b = actual.Network.ParameterizedLayers.ToArray();
        Assert.Equal(a.Length, b.Length);
        for (int i = 0; i < a.Length; i++)
        {
            Assert.True(a[i].Weight.AsSpan().SequenceEqual(b[i].Weight), $"layer {a[i].Name}: weights differ");
            Assert.True(a[i].Bias.AsSpan().SequenceEqual(b[i].Bias), $"layer {a[i].Name}: biases differ");
        }
    }

    [Fact]
    public void BadTeachersAndSettingsThrowSayingWhatIsWrong()
    {
        var rows = Ml.Data.TakeRows(fixture.Train, 200);
        var noScore = Ml.Transforms.CopyColumns("Copy", "Features").Fit(rows);
        var e1 = Assert.Throws<ArgumentException>(() => Ml.Compression().Distill(noScore, Student()).Fit(rows));
        Assert.Equal("teacher", e1.ParamName);
        Assert.Contains("no column 'Score'", e1.Message);

        var wrongSize = Ml.Transforms.Concatenate("Score", "Features").Fit(rows);
        var e2 = Assert.Throws<ArgumentException>(() => Ml.Compression().Distill(wrongSize, Student()).Fit(rows));
        Assert.Contains("784 scores per row", e2.Message);
        Assert.Contains("10 classes", e2.Message);

        Assert.Equal("Temperature", Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().Distill(fixture.Model, Student(), temperature: 0)).ParamName);
        Assert.Equal("Temperature", Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().Distill(fixture.Model, Student(), temperature: -1)).ParamName);
        Assert.Equal("Alpha", Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().Distill(fixture.Model, Student(), alpha: 1.5)).ParamName);
        Assert.Equal("Alpha", Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().Distill(fixture.Model, Student(), alpha: -0.1)).ParamName);
        Assert.Equal("Alpha", Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().Distill(fixture.Model, Student(), alpha: double.NaN)).ParamName);
        Assert.Equal("teacher", Assert.Throws<ArgumentNullException>(() => Ml.Compression().Distill(null!, Student())).ParamName);
        var e3 = Assert.Throws<ArgumentException>(() => Ml.Compression().Distill(fixture.Model, Student(), new DistillationOptions { TeacherScoreColumnName = " " }));
        Assert.Equal("TeacherScoreColumnName", e3.ParamName);
    }
}
