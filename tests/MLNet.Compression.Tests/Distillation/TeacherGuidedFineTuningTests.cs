using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Clustering;
using MLNet.Compression.Distillation;
using MLNet.Compression.Pruning;
using MLNet.Compression.Tests.Quantization;
using MLNet.Compression.Tests.Training;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Distillation;

/// <summary>
/// Pruning and weight clustering fine-tune with a teacher when <c>Options.Teacher</c> is set: the loss blends the teacher's
/// softened scores with the labels. The fixture's 784-128-10 network learned from 6,000 rows; it is compressed with only the
/// first 1,000 rows to fine-tune on, and teaches its own compressed copy.
/// </summary>
public sealed class TeacherGuidedFineTuningTests : IClassFixture<QuantizableMlpFixture>
{
    private readonly QuantizableMlpFixture fixture;
    private readonly ITestOutputHelper output;

    public TeacherGuidedFineTuningTests(QuantizableMlpFixture fixture, ITestOutputHelper output)
    {
        this.fixture = fixture;
        this.output = output;
    }

    private MLContext Ml => fixture.Context;

    private IDataView Few => Ml.Data.TakeRows(fixture.Train, 1000);

    private double Accuracy(ITransformer model) => Ml.MulticlassClassification.Evaluate(model.Transform(fixture.Test)).MicroAccuracy;

    private static PruningOptions Pruning(ITransformer? teacher) => new()
    {
        Schedule = PruningSchedule.ConstantSparsity(0.95),
        KeepDense = { "output" },
        Epochs = 3,
        LearningRate = 2e-3,
        Teacher = teacher,
        Distillation = new DistillationOptions { Temperature = 4, Alpha = 0.9 },
    };

    [Fact]
    public void PruningGuidedByAStrongerTeacherFollowsTheTeacher()
    {
        // A student that saw only 1,000 rows is pruned to 95 % on those rows, with and without the fixture's network (which
        // saw 6,000) as its teacher. Guided, the pruned student must agree with the teacher on more test rows.
        // (On full MNIST the same guidance also raises accuracy: see the deep-compression row of the main job. At this scale
        // two or three epochs over 1,000 rows follow the teacher but do not yet beat the labels on accuracy.)
        using var student = Ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = MLNet.Compression.Networks.NetworkArchitecture.Mlp(64), Epochs = 8, BatchSize = 32, LearningRate = 2e-3, Seed = 5, Device = TrainingDevice.Cpu,
        }).Fit(Few);
        using var labelsOnly = Ml.Compression().Prune(student, Pruning(null)).Fit(Few);
        var guidedEstimator = Ml.Compression().Prune(student, Pruning(fixture.Model));
        using var guided = guidedEstimator.Fit(Few);
        var teacher = Predicted(fixture.Model);
        double Agreement(ITransformer m) => Predicted(m).Zip(teacher).Count(p => p.First == p.Second) / (double)teacher.Length;
        double a = Agreement(labelsOnly), g = Agreement(guided);
        output.WriteLine($"teacher {fixture.BaseAccuracy:F4}, student {Accuracy(student):F4}; pruned to 95 %: labels alone {Accuracy(labelsOnly):F4} " +
                         $"(agrees with the teacher on {a:P1}), guided {Accuracy(guided):F4} (agrees on {g:P1})");
        Assert.Equal(0.95, guidedEstimator.Report!.Layers.Single(l => l.Name == "fc1").Sparsity, 3);
        Assert.True(g > a + 0.005, $"guided agreement {g:P2} vs labels alone {a:P2}");

        // The guided model is an ordinary pruned network: it saves, reloads and scores the same.
        using var temp = TestMnist.NewTempDirectory();
        Ml.Model.Save(guided, Few.Schema, temp["guided.zip"]);
        Scoring.AssertIdentical(Scoring.Read(guided.Transform(fixture.Test)), Scoring.Read(new MLContext().Model.Load(temp["guided.zip"], out _).Transform(fixture.Test)));
    }

    private uint[] Predicted(ITransformer model) => model.Transform(fixture.Test).GetColumn<uint>("PredictedLabel").ToArray();

    [Fact]
    public void WithAlphaZeroTheTeacherChangesNothing()
    {
        // alpha = 0 leaves only the labels' cross-entropy: the guided run must read the same rows in the same order and
        // reach the very same weights, which shows the teacher's columns do not disturb the data the student sees.
        var options = Pruning(fixture.Model);
        options.Epochs = 1;
        options.Distillation.Alpha = 0;
        using var guided = Ml.Compression().Prune(fixture.Model, options).Fit(Few);
        options.Teacher = null;
        using var plain = Ml.Compression().Prune(fixture.Model, options).Fit(Few);
        Scoring.AssertIdentical(Scoring.Read(plain.Transform(fixture.Test)), Scoring.Read(guided.Transform(fixture.Test)));
    }

    [Fact]
    public void ClusteringGuidedByATeacherKeepsItsBoundAndCleansUpItsCache()
    {
        using var temp = TestMnist.NewTempDirectory();
        var cache = Path.Combine(temp.Path, "cache");
        var options = new WeightClusteringOptions
        {
            ClusterCount = 4,
            Epochs = 2,
            LearningRate = 1e-3,
            Teacher = fixture.Model,
            Distillation = new DistillationOptions { Temperature = 2, Alpha = 0.8, CacheTeacherOutputs = true, CacheDirectory = cache },
        };
        using var guided = Ml.Compression().ClusterWeights(fixture.Model, options).Fit(Few);
        output.WriteLine($"dense {fixture.BaseAccuracy:F4}; k = 4 guided by the dense model on 1,000 rows: {Accuracy(guided):F4}");
        Assert.All(guided.CountDistinctWeights(), kv => Assert.True(kv.Value <= 4, $"{kv.Key} has {kv.Value} distinct values"));
        Assert.True(Directory.Exists(cache), "the teacher's outputs were cached in the folder given");
        Assert.Empty(Directory.GetFiles(cache));
        Assert.True(Accuracy(guided) > 0.8, $"accuracy {Accuracy(guided):F4}");
    }

    [Fact]
    public void BadTeachersAndSettingsThrowSayingWhatIsWrong()
    {
        var rows = Ml.Data.TakeRows(fixture.Train, 200);
        var noScore = Ml.Transforms.CopyColumns("Copy", "Features").Fit(rows);
        var e1 = Assert.Throws<ArgumentException>(() => Ml.Compression().Prune(fixture.Model, Pruning(noScore)).Fit(rows));
        Assert.Equal("PruningOptions.Teacher", e1.ParamName);
        Assert.Contains("no column 'Score'", e1.Message);

        var wrongSize = Ml.Transforms.Concatenate("Score", "Features").Fit(rows);
        var e2 = Assert.Throws<ArgumentException>(() =>
            Ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { Epochs = 1, Teacher = wrongSize }).Fit(rows));
        Assert.Equal("WeightClusteringOptions.Teacher", e2.ParamName);
        Assert.Contains("784 scores per row", e2.Message);

        var noEpochs = Pruning(fixture.Model);
        noEpochs.Epochs = 0;
        Assert.Equal("Teacher", Assert.Throws<ArgumentException>(() => Ml.Compression().Prune(fixture.Model, noEpochs)).ParamName);
        var hot = Pruning(fixture.Model);
        hot.Distillation.Temperature = 0;
        Assert.Equal("Temperature", Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Compression().Prune(fixture.Model, hot)).ParamName);
        Assert.Equal("Distillation", Assert.Throws<ArgumentNullException>(() =>
            Ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { Teacher = fixture.Model, Distillation = null! })).ParamName);
    }
}
