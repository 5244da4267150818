using Microsoft.ML;
using Microsoft.ML.Data;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Heads;

/// <summary>The binary and regression trainers from ML.NET's catalogs: train, evaluate with ML.NET, save, load, score identically.</summary>
public class TaskHeadsTests(ITestOutputHelper output)
{
    [Fact]
    public void BinaryTrainer_ReachesAuc_AndSavedZipScoresIdentically()
    {
        var ml = new MLContext(seed: 1);
        var train = TaskData.Load(ml, TaskData.Binary(1500, 1));
        var test = TaskData.Load(ml, TaskData.Binary(500, 2));
        var model = ml.BinaryClassification.Trainers.NeuralNetwork(epochs: 15, batchSize: 64).Fit(train);

        var scored = model.Transform(test);
        Assert.Equal(NumberDataViewType.Single, scored.Schema["Score"].Type);
        Assert.Equal(NumberDataViewType.Single, scored.Schema["Probability"].Type);
        Assert.Equal(BooleanDataViewType.Instance, scored.Schema["PredictedLabel"].Type);
        var metrics = ml.BinaryClassification.Evaluate(scored);
        output.WriteLine($"binary: AUC {metrics.AreaUnderRocCurve:F4}, accuracy {metrics.Accuracy:F4}, F1 {metrics.F1Score:F4}");
        Assert.True(metrics.AreaUnderRocCurve > 0.9, $"AUC {metrics.AreaUnderRocCurve}");
        Assert.True(metrics.Accuracy > 0.85, $"accuracy {metrics.Accuracy}");

        var loaded = SaveAndLoad(model, train.Schema);
        var reloaded = loaded.Transform(test);
        Assert.Equal(scored.GetColumn<float>("Score").ToArray(), reloaded.GetColumn<float>("Score").ToArray());
        Assert.Equal(scored.GetColumn<float>("Probability").ToArray(), reloaded.GetColumn<float>("Probability").ToArray());
        Assert.Equal(scored.GetColumn<bool>("PredictedLabel").ToArray(), reloaded.GetColumn<bool>("PredictedLabel").ToArray());
        var again = new MLContext().BinaryClassification.Evaluate(reloaded);
        Assert.Equal(metrics.AreaUnderRocCurve, again.AreaUnderRocCurve, 10);
    }

    [Fact]
    public void RegressionTrainer_ReachesRSquared_InLabelUnits_AndSavedZipScoresIdentically()
    {
        var ml = new MLContext(seed: 1);
        var train = TaskData.Load(ml, TaskData.Regression(1500, 3));
        var test = TaskData.Load(ml, TaskData.Regression(500, 4));
        var model = ml.Regression.Trainers.NeuralNetwork(epochs: 30, batchSize: 64).Fit(train);

        var scored = model.Transform(test);
        Assert.Equal(NumberDataViewType.Single, scored.Schema["Score"].Type);
        var metrics = ml.Regression.Evaluate(scored);
        output.WriteLine($"regression: R² {metrics.RSquared:F4}, RMSE {metrics.RootMeanSquaredError:F1}");
        Assert.True(metrics.RSquared > 0.9, $"R² {metrics.RSquared}");

        var loaded = SaveAndLoad(model, train.Schema);
        var reloaded = loaded.Transform(test);
        Assert.Equal(scored.GetColumn<float>("Score").ToArray(), reloaded.GetColumn<float>("Score").ToArray());
        Assert.Equal(metrics.RSquared, new MLContext().Regression.Evaluate(reloaded).RSquared, 10);
    }

    internal static ITransformer SaveAndLoad(ITransformer model, DataViewSchema schema)
    {
        using var stream = new MemoryStream();
        new MLContext().Model.Save(model, schema, stream);
        stream.Position = 0;
        return new MLContext().Model.Load(stream, out _);
    }
}
