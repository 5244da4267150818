using Microsoft.ML;
using MLNet.Compression.Distillation;
using MLNet.Compression.Tests.Distillation;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Pipelines;

public sealed class PipelineDistillationTests
{
    private readonly ITestOutputHelper output;

    public PipelineDistillationTests(ITestOutputHelper output) => this.output = output;

    /// <summary>A LightGBM pipeline with its own feature and label preparation (no normalizer: its Features differ from the student's).</summary>
    private static ITransformer LightGbmTeacher(MLContext ml, IDataView raw) =>
        ml.Transforms.Concatenate("Features", nameof(TabularRow.Length), nameof(TabularRow.Depth), nameof(TabularRow.Flipper), nameof(TabularRow.Mass), nameof(TabularRow.Ratio))
            .Append(ml.Transforms.Conversion.MapValueToKey("Label", nameof(TabularRow.Species)))
            .Append(ml.MulticlassClassification.Trainers.LightGbm(numberOfLeaves: 8, numberOfIterations: 30, minimumExampleCountPerLeaf: 10))
            .Fit(raw);

    [Fact]
    public void AStudentPipelineLearnsFromALightGbmPipelineOnRawRows()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.Cache(ml.Data.LoadFromEnumerable(TabularData.Rows(800, seed: 11)));
        var test = ml.Data.LoadFromEnumerable(TabularData.Rows(600, seed: 12));
        var teacher = LightGbmTeacher(ml, train);
        double teacherAccuracy = ml.MulticlassClassification.Evaluate(teacher.Transform(test)).MicroAccuracy;

        var alone = TabularData.Pipeline(ml).Fit(train);
        var estimator = ml.Compression().Distill(teacher, TabularData.Pipeline(ml), new DistillationOptions { Temperature = 2, Alpha = 0.5 });
        var distilled = estimator.Fit(train);
        var network = distilled.GetNeuralNetwork();
        try
        {
            double a = TabularData.Accuracy(alone.Transform(test)), d = TabularData.Accuracy(distilled.Transform(test));
            output.WriteLine($"LightGBM teacher {teacherAccuracy:F4}, student alone {a:F4}, distilled {d:F4}; {estimator.Report}");
            Assert.NotNull(estimator.Report);
            Assert.Equal(TeacherScoreKind.Probabilities, estimator.Report!.TeacherScores);
            Assert.Same(estimator.Report, network.CompressionHistory[^1]);
            Assert.True(teacherAccuracy > 0.8, $"teacher {teacherAccuracy:F4}");
            Assert.True(d > teacherAccuracy - 0.04, $"distilled {d:F4} vs teacher {teacherAccuracy:F4}");
            // The student pipeline is ordinary: saved and loaded in a fresh context, it predicts the same.
            using var zip = new MemoryStream();
            ml.Model.Save(distilled, train.Schema, zip);
            zip.Position = 0;
            var loaded = new MLContext(seed: 5).Model.Load(zip, out _);
            var (expectedScores, expectedLabels) = TabularData.Read(distilled.Transform(test));
            var (loadedScores, loadedLabels) = TabularData.Read(loaded.Transform(test));
            Assert.Equal(expectedLabels, loadedLabels);
            Assert.Equal(expectedScores, loadedScores);
        }
        finally
        {
            network.Dispose();
            alone.GetNeuralNetwork().Dispose();
        }
    }

    [Fact]
    public void WithAlphaZeroTheStudentPipelineLearnsBitForBitWhatItLearnsAlone()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.Cache(ml.Data.LoadFromEnumerable(TabularData.Rows(400, seed: 21)));
        Assert.True(train.CanShuffle);
        var teacher = LightGbmTeacher(ml, train);
        var options = TabularData.Network(epochs: 3);
        var alone = TabularData.Pipeline(ml, options).Fit(train);
        var distilled = ml.Compression().Distill(teacher, TabularData.Pipeline(ml, options), new DistillationOptions { Alpha = 0 }).Fit(train);
        try
        {
            DistillationEstimatorTests.AssertSameWeights(alone.GetNeuralNetwork(), distilled.GetNeuralNetwork());
        }
        finally
        {
            alone.GetNeuralNetwork().Dispose();
            distilled.GetNeuralNetwork().Dispose();
        }
    }

    [Fact]
    public void ATeacherThatCannotReadTheRowsOrAStudentWithoutANetworkIsAClearError()
    {
        var ml = new MLContext(seed: 1);
        var raw = ml.Data.LoadFromEnumerable(TabularData.Rows(300, seed: 31));
        var teacher = LightGbmTeacher(ml, raw);
        var noMass = ml.Transforms.DropColumns(nameof(TabularRow.Mass)).Fit(raw).Transform(raw);
        var student = ml.Transforms.Concatenate("Features", nameof(TabularRow.Length), nameof(TabularRow.Depth))
            .Append(ml.Transforms.Conversion.MapValueToKey("Label", nameof(TabularRow.Species)))
            .Append(ml.Compression().NeuralNetwork(new NeuralNetworkOptions { Architecture = MLNet.Compression.Networks.NetworkArchitecture.Mlp([8], 2), Epochs = 1 }));
        var e1 = Assert.Throws<ArgumentException>(() => ml.Compression().Distill(teacher, student, new DistillationOptions()).Fit(noMass));
        output.WriteLine(e1.Message);
        Assert.Contains("teacher could not be applied", e1.Message);
        Assert.Contains(nameof(TabularRow.Mass), e1.Message);

        var e2 = Assert.Throws<InvalidOperationException>(() => ml.Compression().Distill(teacher, TabularData.Prepare(ml), new DistillationOptions()).Fit(raw));
        Assert.Contains("trained no network", e2.Message);
    }
}
