using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Networks;
using MLNet.Compression.Quantization;
using Xunit;

namespace MLNet.Compression.Tests.Heads;

/// <summary>
/// Scoring conventions every head keeps: NaN features give NaN scores and a missing (or, for binary, ML.NET's false)
/// predicted label on both scoring paths; the multiclass predicted label's key values have the label's type; label types
/// that belong to another task are refused with the trainer to use.
/// </summary>
public class TaskScoringTests
{
    private sealed class ClassRow
    {
        [VectorType(4)]
        public float[] Features { get; set; } = [];

        public float Code { get; set; }
    }

    private sealed class FloatPrediction
    {
        public float PredictedLabel { get; set; }
    }

    private static ClassRow[] Classes(int rows, int seed)
    {
        // Three classes coded 10, 20, 30 (Single), separable on the first two features.
        var rand = new Random(seed);
        return Enumerable.Range(0, rows).Select(i =>
        {
            int c = i % 3;
            var x = new[] { (float)(3 * (c - 1) + 0.5 * rand.NextDouble()), (float)(1.5 * c + 0.5 * rand.NextDouble()), (float)rand.NextDouble(), (float)rand.NextDouble() };
            return new ClassRow { Features = x, Code = 10 * (c + 1) };
        }).ToArray();
    }

    [Fact]
    public void MulticlassPredictedLabel_MapsBackToTheLabelsType_AndNaNRowsGetTheMissingKey()
    {
        var ml = new MLContext(seed: 3);
        var data = ml.Data.LoadFromEnumerable(Classes(300, 1));
        var pipeline = ml.Transforms.Conversion.MapValueToKey("Label", "Code")
            .Append(ml.MulticlassClassification.Trainers.NeuralNetwork(hiddenLayers: [16], epochs: 30, batchSize: 16));
        var model = pipeline.Fit(data);
        var toValue = ml.Transforms.Conversion.MapKeyToValue("PredictedLabel");

        var scored = model.Transform(data);
        var labelBack = toValue.Fit(scored).Transform(scored);
        Assert.Equal(NumberDataViewType.Single, labelBack.Schema["PredictedLabel"].Type);
        var predicted = ml.Data.CreateEnumerable<FloatPrediction>(labelBack, reuseRowObject: false).Select(p => p.PredictedLabel).ToArray();
        var truth = data.GetColumn<float>("Code").ToArray();
        Assert.True(predicted.Zip(truth).Count(p => p.First == p.Second) > 0.9 * truth.Length,
            $"predicted {string.Join(", ", predicted.Take(12))} for {string.Join(", ", truth.Take(12))}; keys {string.Join(", ", scored.GetColumn<uint>("PredictedLabel").Take(12))}");

        // The same through the saved zip in a fresh context (the typed key values survive saving).
        var loaded = TaskHeadsTests.SaveAndLoad(model, data.Schema);
        var reloaded = loaded.Transform(data);
        var reloadedBack = toValue.Fit(reloaded).Transform(reloaded);
        Assert.Equal(NumberDataViewType.Single, reloadedBack.Schema["PredictedLabel"].Type);
        Assert.Equal(predicted, reloadedBack.GetColumn<float>("PredictedLabel").ToArray());

        // A NaN feature: NaN scores and the missing key 0, on both paths; a PredictionEngine with a float POCO binds.
        var nanRows = ml.Data.LoadFromEnumerable(new[] { new ClassRow { Features = [float.NaN, 0, 0, 0], Code = 10 } });
        foreach (var scorer in new[] { (ITransformer)model, loaded })
        {
            var nan = scorer.Transform(nanRows);
            Assert.All(nan.GetColumn<float[]>("Score").Single(), s => Assert.True(float.IsNaN(s)));
            Assert.Equal(0u, nan.GetColumn<uint>("PredictedLabel").Single());
        }
    }

    [Fact]
    public void TheNonFiniteGuardIsExact_HugeFiniteFeaturesKeepFiniteScores_AnInfiniteOneScoresNaN()
    {
        // Int8 static clamps every input to its calibrated range, so a row of 1e38s scores finite; the guard must not turn
        // it into NaN although the row's plain sum (4e38) overflows float; nor a row of float.MaxValue or of −3e38. An infinite
        // or NaN feature must still give NaN scores. The float model's huge rows may score finite or not by its own arithmetic
        // (a float Gemm of 3e38s overflows to ±inf and Softmax gives NaN), so it is held to the non-finite rows only.
        var ml = new MLContext(seed: 3);
        var data = ml.Transforms.Conversion.MapValueToKey("Label", "Code").Fit(ml.Data.LoadFromEnumerable(Classes(300, 1)))
            .Transform(ml.Data.LoadFromEnumerable(Classes(300, 1)));
        using var trained = ml.Compression().NeuralNetwork(new NeuralNetworkOptions { Architecture = NetworkArchitecture.Mlp(16), Epochs = 5, BatchSize = 16, Seed = 3 }).Fit(data);
        using var int8 = ml.Compression().Quantize(trained, new QuantizationOptions { Mode = QuantizationMode.Int8Static }).Fit(data);
        var rows = ml.Data.LoadFromEnumerable(new[]
        {
            new ClassRow { Features = [1e38f, 1e38f, 1e38f, 1e38f], Code = 10 },
            new ClassRow { Features = [0, float.PositiveInfinity, 0, 0], Code = 10 },
            new ClassRow { Features = [float.MaxValue, float.MaxValue, float.MaxValue, float.MaxValue], Code = 10 },
            new ClassRow { Features = [-3e38f, -3e38f, -3e38f, -3e38f], Code = 10 },
            new ClassRow { Features = [0, 0, float.NegativeInfinity, 0], Code = 10 },
            new ClassRow { Features = [0, 0, 0, float.NaN], Code = 10 },
        });
        foreach (var model in new[] { trained, int8 })
        {
            var scores = model.Transform(rows).GetColumn<float[]>("Score").ToArray();
            foreach (int finite in model == int8 ? new[] { 0, 2, 3 } : [])
                Assert.All(scores[finite], s => Assert.True(float.IsFinite(s), $"huge finite row {finite} scored {string.Join(", ", scores[finite])}"));
            foreach (int nonFinite in new[] { 1, 4, 5 })
                Assert.All(scores[nonFinite], s => Assert.True(float.IsNaN(s), $"non-finite row {nonFinite} scored {string.Join(", ", scores[nonFinite])}"));
        }
    }

    [Fact]
    public void BinaryAndRegression_NaNFeatures_ScoreNaN_AndBinaryPredictsFalseAsMLNetDoes()
    {
        var ml = new MLContext(seed: 5);
        var binaryData = TaskData.Load(ml, TaskData.Binary(200, 21));
        var regressionData = TaskData.Load(ml, TaskData.Regression(200, 22));
        using var binary = ml.BinaryClassification.Trainers.NeuralNetwork(hiddenLayers: [8], epochs: 2, batchSize: 64).Fit(binaryData);
        using var regression = ml.Regression.Trainers.NeuralNetwork(hiddenLayers: [8], epochs: 2, batchSize: 64).Fit(regressionData);
        // ML.NET's own binary trainer on a NaN row: NaN score, NaN probability, PredictedLabel false (score > 0 is false).
        var sdca = ml.BinaryClassification.Trainers.SdcaLogisticRegression(maximumNumberOfIterations: 5).Fit(binaryData);
        var nanBinary = new float[TaskData.BinaryFeatures];
        nanBinary[3] = float.NaN;
        var binaryRow = ml.Data.LoadFromEnumerable(new[] { new TaskData.BinaryRow { Features = nanBinary, Label = true } });
        var nanRegression = new float[TaskData.RegressionFeatures];
        nanRegression[0] = float.NaN;
        var regressionRow = ml.Data.LoadFromEnumerable(new[] { new TaskData.RegressionRow { Features = nanRegression, Label = 1 } });

        foreach (var scorer in new[] { (ITransformer)binary, TaskHeadsTests.SaveAndLoad(binary, binaryData.Schema), sdca })
        {
            var row = scorer.Transform(binaryRow);
            Assert.True(float.IsNaN(row.GetColumn<float>("Score").Single()));
            Assert.True(float.IsNaN(row.GetColumn<float>("Probability").Single()));
            Assert.False(row.GetColumn<bool>("PredictedLabel").Single());
        }
        foreach (var scorer in new[] { (ITransformer)regression, TaskHeadsTests.SaveAndLoad(regression, regressionData.Schema) })
            Assert.True(float.IsNaN(scorer.Transform(regressionRow).GetColumn<float>("Score").Single()));
    }

    [Fact]
    public void LabelsOfAnotherTask_AreRefused_NamingTheTrainerToUse()
    {
        var ml = new MLContext(seed: 1);
        var regressionData = TaskData.Load(ml, TaskData.Regression(20, 1));
        var binaryData = TaskData.Load(ml, TaskData.Binary(20, 1));
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(regressionData).Transform(regressionData);

        var floatForMulticlass = Assert.Throws<ArgumentOutOfRangeException>(() =>
            ml.MulticlassClassification.Trainers.NeuralNetwork(epochs: 1).Fit(regressionData));
        Assert.Contains("ml.Regression.Trainers.NeuralNetwork", floatForMulticlass.Message);
        var boolForMulticlass = Assert.Throws<ArgumentOutOfRangeException>(() =>
            ml.MulticlassClassification.Trainers.NeuralNetwork(epochs: 1).Fit(binaryData));
        Assert.Contains("ml.BinaryClassification.Trainers.NeuralNetwork", boolForMulticlass.Message);
        var keyForRegression = Assert.Throws<ArgumentOutOfRangeException>(() =>
            ml.Regression.Trainers.NeuralNetwork(epochs: 1).Fit(keyed));
        Assert.Contains("ml.MulticlassClassification.Trainers.NeuralNetwork", keyForRegression.Message);
        Assert.Contains("MapKeyToValue", keyForRegression.Message);
        var floatForBinary = Assert.Throws<ArgumentOutOfRangeException>(() =>
            ml.BinaryClassification.Trainers.NeuralNetwork(epochs: 1).Fit(regressionData));
        Assert.Contains("ml.Regression.Trainers.NeuralNetwork", floatForBinary.Message);

        // The schema shapes the estimators promise.
        var binaryShape = ml.BinaryClassification.Trainers.NeuralNetwork().GetOutputSchema(ShapeOf(binaryData.Schema));
        Assert.Equal(SchemaShape.Column.VectorKind.Scalar, binaryShape.Single(c => c.Name == "Score").Kind);
        Assert.Equal(BooleanDataViewType.Instance, binaryShape.Single(c => c.Name == "PredictedLabel").ItemType);
        var regressionShape = ml.Regression.Trainers.NeuralNetwork().GetOutputSchema(ShapeOf(regressionData.Schema));
        Assert.Equal(NumberDataViewType.Single, regressionShape.Single(c => c.Name == "Score").ItemType);
    }

    /// <summary>ML.NET's <c>SchemaShape.Create</c>, internal to it, reached by reflection (as the conformance tests do).</summary>
    private static SchemaShape ShapeOf(DataViewSchema schema) =>
        (SchemaShape)typeof(SchemaShape).GetMethod("Create", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static, [typeof(DataViewSchema)])!
            .Invoke(null, [schema])!;
}
