using Xunit;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Networks;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Training;

public sealed class NeuralNetworkTrainerTests : IClassFixture<TrainedMnistFixture>
{
    private readonly TrainedMnistFixture fixture;
    private readonly ITestOutputHelper output;

    public NeuralNetworkTrainerTests(TrainedMnistFixture fixture, ITestOutputHelper output)
    {
        this.fixture = fixture;
        this.output = output;
    }

    [Fact]
    public void LeNet300100OnFullMnistReachesTargetAccuracy()
    {
        var metrics = fixture.Context.MulticlassClassification.Evaluate(fixture.Model.Transform(fixture.Test));
        output.WriteLine($"test accuracy {metrics.MicroAccuracy:F4}, log-loss {metrics.LogLoss:F4}");
        foreach (var e in fixture.Model.TrainingHistory)
            output.WriteLine(e.ToString());
        Assert.True(metrics.MicroAccuracy >= 0.980, $"Test accuracy {metrics.MicroAccuracy:F4} is below 0.980.");
        Assert.Equal(10, fixture.Model.TrainingHistory.Count);
        Assert.All(fixture.Model.TrainingHistory, e => Assert.Equal(60000, e.Rows));
        Assert.True(fixture.Model.TrainingHistory[^1].Loss < fixture.Model.TrainingHistory[0].Loss / 4);
    }

    [Fact]
    public void SavedZipReloadsWithIdenticalPredictions()
    {
        var path = Path.Combine(Path.GetTempPath(), $"mlnc-{Guid.NewGuid():N}.zip");
        try
        {
            var ml = fixture.Context;
            ml.Model.Save(fixture.Model, fixture.Train.Schema, path);
            var loaded = new MLContext(seed: 3).Model.Load(path, out var inputSchema);
            Assert.NotNull(inputSchema.GetColumnOrNull("Features"));
            var before = Scoring.Read(fixture.Model.Transform(fixture.Test));
            var after = Scoring.Read(loaded.Transform(fixture.Test));
            Scoring.AssertIdentical(before, after);
            Assert.Equal(10000, before.Labels.Length);
            var m1 = ml.MulticlassClassification.Evaluate(fixture.Model.Transform(fixture.Test));
            var m2 = ml.MulticlassClassification.Evaluate(loaded.Transform(fixture.Test));
            Assert.Equal(m1.MicroAccuracy, m2.MicroAccuracy);
            Assert.Equal(new FileInfo(path).Length, fixture.Model.Memory.ZipBytes);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void OutputSchemaFollowsMlNetConventions()
    {
        var schema = fixture.Model.Transform(fixture.Test).Schema;
        var score = schema["Score"];
        Assert.Equal(new VectorDataViewType(NumberDataViewType.Single, 10), score.Type);
        var predicted = schema["PredictedLabel"];
        Assert.Equal(new KeyDataViewType(typeof(uint), 10), predicted.Type);
        VBuffer<ReadOnlyMemory<char>> keys = default;
        predicted.GetKeyValues(ref keys);
        Assert.Equal(Enumerable.Range(0, 10).Select(i => i.ToString()), keys.DenseValues().Select(k => k.ToString()));
        Assert.Equal(
            schema.Where(c => !c.IsHidden).Select(c => (c.Name, c.Type)),
            fixture.Model.GetOutputSchema(fixture.Test.Schema).Where(c => !c.IsHidden).Select(c => (c.Name, c.Type)));
        // Scores are probabilities.
        var (scores, labels) = Scoring.Read(fixture.Model.Transform(fixture.Test), 50);
        for (int i = 0; i < scores.Length; i++)
        {
            Assert.InRange(scores[i].Sum(), 0.9999f, 1.0001f);
            Assert.Equal((uint)(Array.IndexOf(scores[i], scores[i].Max()) + 1), labels[i]);
        }
    }

    [Fact]
    public void PredictionEngineScoresSingleRows()
    {
        var engine = fixture.Context.Model.CreatePredictionEngine<Digit, DigitPrediction>(fixture.Model);
        var batch = Scoring.Read(fixture.Model.Transform(fixture.Test), 20);
        var rows = fixture.Context.Data.CreateEnumerable<Digit>(fixture.Test, reuseRowObject: false).Take(20).ToArray();
        for (int i = 0; i < rows.Length; i++)
        {
            var p = engine.Predict(rows[i]);
            Assert.Equal(batch.Labels[i], p.PredictedLabel);
            Assert.True(batch.Scores[i].AsSpan().SequenceEqual(p.Score!), $"Row {i}: single-row and batched scores differ.");
        }
    }

    [Fact]
    public void CheckpointRoundTripKeepsWeightsOptimizerStateAndPredictions()
    {
        var path = Path.Combine(Path.GetTempPath(), $"mlnc-{Guid.NewGuid():N}.ckpt");
        try
        {
            fixture.Model.SaveCheckpoint(path);
            Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}*.tmp"));
            using var restored = NeuralNetworkTransformer.LoadCheckpoint(new MLContext(seed: 5), path);
            Assert.Equal(fixture.Model.ClassNames, restored.ClassNames);
            Assert.Equal(fixture.Model.Architecture.Name, restored.Architecture.Name);
            Assert.Equal(fixture.Model.ParameterCount, restored.ParameterCount);
            Assert.NotNull(restored.OptimizerState);
            Assert.Equal(fixture.Model.OptimizerState, restored.OptimizerState);
            Assert.Equal(fixture.Model.OnnxBytes, restored.OnnxBytes);
            Scoring.AssertIdentical(Scoring.Read(fixture.Model.Transform(fixture.Test), 500), Scoring.Read(restored.Transform(fixture.Test), 500));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void CorruptOrMissingCheckpointFailsClearly()
    {
        var ml = new MLContext();
        var missing = Path.Combine(Path.GetTempPath(), $"mlnc-missing-{Guid.NewGuid():N}.ckpt");
        var e1 = Assert.Throws<FileNotFoundException>(() => NeuralNetworkTransformer.LoadCheckpoint(ml, missing));
        Assert.Contains(missing, e1.Message);
        var bad = Path.Combine(Path.GetTempPath(), $"mlnc-bad-{Guid.NewGuid():N}.ckpt");
        try
        {
            File.WriteAllText(bad, "this is not a zip");
            var e2 = Assert.Throws<CheckpointException>(() => NeuralNetworkTransformer.LoadCheckpoint(ml, bad));
            Assert.Contains(bad, e2.Message);
        }
        finally
        {
            File.Delete(bad);
        }
    }

    [Fact]
    public void MemoryReportAccountsForEveryKindOfMemory()
    {
        var m = fixture.Model.Memory;
        output.WriteLine(m.ToString());
        const long parameters = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10;
        Assert.Equal(266_610, parameters);
        Assert.Equal(parameters, m.Parameters);
        Assert.Equal(parameters * 4, m.ParameterBytes);
        Assert.Equal(parameters * 4, m.GradientBytes);
        Assert.Equal(parameters * 8, m.OptimizerStateBytes); // Adam: two moments
        Assert.Equal(0, m.LowPrecisionWeightBytes);
        Assert.Equal((784 + 2 * 300 + 2 * 100 + 10) * 128L * 4, m.ActivationBytesPerBatch);
        Assert.InRange(m.ArtifactBytes, parameters * 4, parameters * 4 + 16 * 1024);
        Assert.Equal(fixture.Model.GetOnnxModel().LongLength, m.ArtifactBytes);
        Assert.Equal(parameters * 4, m.ResidentWeightBytes);
        Assert.NotNull(m.PeakTrainingBytes);
        Assert.InRange(m.PeakTrainingBytes!.Value, 50L << 20, 8L << 30);
        Assert.Equal("cpu", m.Device);
        Assert.True(m.NonZeroParameters > parameters * 99 / 100);
    }

    public sealed class Digit
    {
        [VectorType(784)]
        public float[] Features { get; set; } = [];
    }

    public sealed class DigitPrediction
    {
        public uint PredictedLabel { get; set; }

        public float[]? Score { get; set; }
    }
}
