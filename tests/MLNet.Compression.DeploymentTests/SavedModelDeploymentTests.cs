using System.Globalization;
using System.Reflection;
using Microsoft.ML;
using Microsoft.ML.Data;
using Xunit;

namespace MLNet.Compression.DeploymentTests;

/// <summary>
/// A model saved by MLNet.Compression, loaded and scored by a process that references only Microsoft.ML,
/// Microsoft.ML.OnnxTransformer and ONNX Runtime, gives exactly what the trained transformer gave in-process.
/// </summary>
public sealed class SavedModelDeploymentTests(ModelFactoryFixture factory) : IClassFixture<ModelFactoryFixture>
{
    private const int ClassCount = 10;

    [Fact]
    public void LoadedModel_HasConventionalOutputColumns()
    {
        var ml = new MLContext(seed: 1);
        ITransformer model = ml.Model.Load(factory.ModelPath, out DataViewSchema inputSchema);
        using var modelLifetime = model as IDisposable;
        Assert.True(inputSchema.GetColumnOrNull("Features").HasValue, "The saved input schema should have Features.");

        DataViewSchema output = model.GetOutputSchema(Features(ml, 1).Schema);
        DataViewSchema.Column score = output["Score"];
        var scoreType = Assert.IsType<VectorDataViewType>(score.Type);
        Assert.Equal(NumberDataViewType.Single, scoreType.ItemType);
        Assert.Equal(ClassCount, scoreType.Size);
        Assert.Single(scoreType.Dimensions);

        DataViewSchema.Column predicted = output["PredictedLabel"];
        var keyType = Assert.IsType<KeyDataViewType>(predicted.Type);
        Assert.Equal(typeof(uint), keyType.RawType);
        Assert.Equal((ulong)ClassCount, keyType.Count);
        Assert.Equal(Enumerable.Range(0, ClassCount).Select(d => d.ToString(CultureInfo.InvariantCulture)), KeyValues(predicted));
        Assert.Equal(factory.ClassNames, KeyValues(predicted));
    }

    [Fact]
    public void LoadedModel_Transform_MatchesInProcessScoresBitForBit()
    {
        var ml = new MLContext(seed: 1);
        ITransformer model = ml.Model.Load(factory.ModelPath, out _);
        using var modelLifetime = model as IDisposable; // the loaded chain owns the ONNX Runtime session
        IDataView scored = model.Transform(Features(ml, factory.ExpectedRows.Count));

        var actual = ReadScores(scored);
        Assert.Equal(factory.ExpectedRows.Count, actual.Count);
        var mismatches = new List<string>();
        for (int i = 0; i < actual.Count; i++)
        {
            ExpectedRow expected = factory.ExpectedRows[i];
            Assert.Equal(i, expected.Index);
            if (!SameBits(expected.Score, actual[i].Score) || expected.PredictedLabel != actual[i].PredictedLabel)
                mismatches.Add(Describe(expected, actual[i].Score, actual[i].PredictedLabel));
        }
        Assert.True(mismatches.Count == 0,
            $"{mismatches.Count} of {actual.Count} rows differ from the in-process scores:{Environment.NewLine}{string.Join(Environment.NewLine, mismatches.Take(10))}");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(42)]
    [InlineData(117)]
    [InlineData(199)]
    public void PredictionEngine_MatchesInProcessScores_AndKeyValuesGiveTheDigit(int row)
    {
        var ml = new MLContext(seed: 1);
        ITransformer model = ml.Model.Load(factory.ModelPath, out _);
        using var modelLifetime = model as IDisposable; // the loaded chain owns the ONNX Runtime session
        ExpectedRow expected = factory.ExpectedRows[row];
        Assert.Equal(row, expected.Index);
        var input = new ModelInput { Features = factory.TestSet.Features[row] };

        // By default a PredictionEngine owns its transformer and disposes it (and with it the ONNX Runtime session)
        // when the engine is disposed; the model is used again below, so the engine must not own it.
        var engineOptions = new PredictionEngineOptions { OwnsTransformer = false };
        using (var engine = ml.Model.CreatePredictionEngine<ModelInput, ModelOutput>(model, engineOptions))
        {
            ModelOutput output = engine.Predict(input);
            Assert.True(SameBits(expected.Score, output.Score), Describe(expected, output.Score, output.PredictedLabel));
            Assert.Equal(expected.PredictedLabel, output.PredictedLabel);

            // The key's KeyValues annotation names the digit; it agrees with the arg-max of the probabilities.
            string[] keyValues = KeyValues(engine.OutputSchema["PredictedLabel"]);
            Assert.InRange(output.PredictedLabel, 1u, (uint)keyValues.Length);
            Assert.Equal(ArgMaxDigit(output.Score), keyValues[output.PredictedLabel - 1]);
        }

        // The same through a MapKeyToValue appended to the loaded model.
        IDataView sample = ml.Data.LoadFromEnumerable([input]);
        ITransformer toDigit = ml.Transforms.Conversion.MapKeyToValue("PredictedDigit", "PredictedLabel").Fit(model.Transform(sample));
        var withDigit = new TransformerChain<ITransformer>(model, toDigit);
        using (var engine = ml.Model.CreatePredictionEngine<ModelInput, DigitOutput>(withDigit, engineOptions))
        {
            DigitOutput output = engine.Predict(input);
            Assert.Equal(expected.PredictedLabel, output.PredictedLabel);
            Assert.True(SameBits(expected.Score, output.Score), Describe(expected, output.Score, output.PredictedLabel));
            Assert.Equal(ArgMaxDigit(expected.Score), output.PredictedDigit);
            Assert.Equal(factory.ClassNames[expected.PredictedLabel - 1], output.PredictedDigit);
        }
    }

    [Fact]
    public void Evaluate_OnTheFullTestSplit_GivesTheInProcessAccuracy()
    {
        var ml = new MLContext(seed: 1);
        ITransformer model = ml.Model.Load(factory.ModelPath, out _);
        using var modelLifetime = model as IDisposable; // the loaded chain owns the ONNX Runtime session
        MnistTestSet set = factory.TestSet;
        Assert.Equal(factory.ExpectedTestRowCount, set.Count);

        IDataView data = ml.Data.LoadFromEnumerable(Enumerable.Range(0, set.Count).Select(i => new LabeledInput
        {
            Features = set.Features[i],
            LabelText = set.Labels[i].ToString(CultureInfo.InvariantCulture),
        }));
        // Key values "0".."9" in this order, so label key k means digit k-1, as in the model's PredictedLabel.
        IDataView digits = ml.Data.LoadFromEnumerable(Enumerable.Range(0, ClassCount).Select(d => new DigitName { Name = d.ToString(CultureInfo.InvariantCulture) }));
        IDataView labeled = ml.Transforms.Conversion.MapValueToKey("Label", nameof(LabeledInput.LabelText), keyData: digits).Fit(data).Transform(data);
        Assert.Equal(factory.ClassNames, KeyValues(labeled.Schema["Label"]));

        MulticlassClassificationMetrics metrics = ml.MulticlassClassification.Evaluate(model.Transform(labeled), labelColumnName: "Label");
        Assert.True(Math.Abs(metrics.MicroAccuracy - factory.ExpectedAccuracy) <= 1e-9,
            $"accuracy {metrics.MicroAccuracy:R} after Save/Load, {factory.ExpectedAccuracy:R} in-process");
    }

    [Fact]
    public void DeploymentProcess_HasNoTorchSharpNorLibrary()
    {
        // Load and score first, so everything scoring needs is loaded when the process is inspected.
        var ml = new MLContext(seed: 1);
        ITransformer model = ml.Model.Load(factory.ModelPath, out _);
        using var modelLifetime = model as IDisposable; // the loaded chain owns the ONNX Runtime session
        var scores = ReadScores(model.Transform(Features(ml, 3)));
        Assert.Equal(3, scores.Count);

        Assembly testAssembly = typeof(SavedModelDeploymentTests).Assembly;
        string[] loaded = AppDomain.CurrentDomain.GetAssemblies()
            .Where(a => a != testAssembly)
            .Select(a => a.GetName().Name ?? "")
            .Where(n => n.StartsWith("TorchSharp", StringComparison.OrdinalIgnoreCase) || n.StartsWith("MLNet.Compression", StringComparison.OrdinalIgnoreCase))
            .ToArray();
        Assert.True(loaded.Length == 0, "Loaded in the deployment process: " + string.Join(", ", loaded));
        Assert.Contains(AppDomain.CurrentDomain.GetAssemblies(), a => a.GetName().Name == "Microsoft.ML.OnnxTransformer");

        if (File.Exists("/proc/self/maps"))
        {
            string[] nativeTorch = File.ReadLines("/proc/self/maps")
                .Where(l => l.Contains("libtorch", StringComparison.OrdinalIgnoreCase) || l.Contains("LibTorchSharp", StringComparison.OrdinalIgnoreCase))
                .Distinct().ToArray();
            Assert.True(nativeTorch.Length == 0, "Native torch libraries mapped: " + string.Join(Environment.NewLine, nativeTorch));
        }

        string outputDirectory = AppContext.BaseDirectory;
        string[] forbidden = Directory.EnumerateFiles(outputDirectory, "*", SearchOption.AllDirectories)
            .Where(f =>
            {
                string name = Path.GetFileName(f);
                return name.Equals("TorchSharp.dll", StringComparison.OrdinalIgnoreCase)
                    || name.Equals("libLibTorchSharp.so", StringComparison.OrdinalIgnoreCase)
                    || (name.StartsWith("libtorch", StringComparison.OrdinalIgnoreCase) && name.Contains(".so", StringComparison.OrdinalIgnoreCase))
                    || name.Equals("MLNet.Compression.dll", StringComparison.OrdinalIgnoreCase)
                    || name.StartsWith("MLNet.Compression.ModelFactory", StringComparison.OrdinalIgnoreCase);
            })
            .Select(f => Path.GetRelativePath(outputDirectory, f))
            .ToArray();
        Assert.True(forbidden.Length == 0, $"In the deployment test output '{outputDirectory}': " + string.Join(", ", forbidden));
    }

    private IDataView Features(MLContext ml, int rows)
        => ml.Data.LoadFromEnumerable(factory.TestSet.Features.Take(rows).Select(f => new ModelInput { Features = f }));

    private static List<(float[] Score, uint PredictedLabel)> ReadScores(IDataView scored)
    {
        DataViewSchema.Column scoreColumn = scored.Schema["Score"];
        DataViewSchema.Column predictedColumn = scored.Schema["PredictedLabel"];
        var rows = new List<(float[], uint)>();
        using DataViewRowCursor cursor = scored.GetRowCursor([scoreColumn, predictedColumn]);
        var scoreGetter = cursor.GetGetter<VBuffer<float>>(scoreColumn);
        var predictedGetter = cursor.GetGetter<uint>(predictedColumn);
        var score = default(VBuffer<float>);
        uint predicted = 0;
        while (cursor.MoveNext())
        {
            scoreGetter(ref score);
            predictedGetter(ref predicted);
            rows.Add((score.DenseValues().ToArray(), predicted));
        }
        return rows;
    }

    private static string[] KeyValues(DataViewSchema.Column column)
    {
        var values = default(VBuffer<ReadOnlyMemory<char>>);
        column.GetKeyValues(ref values);
        return values.DenseValues().Select(v => v.ToString()).ToArray();
    }

    private static bool SameBits(float[] expected, float[] actual)
        => expected.Length == actual.Length
           && expected.Select(BitConverter.SingleToUInt32Bits).SequenceEqual(actual.Select(BitConverter.SingleToUInt32Bits));

    private static string ArgMaxDigit(float[] score)
    {
        int best = 0;
        for (int i = 1; i < score.Length; i++)
        {
            if (score[i] > score[best])
                best = i;
        }
        return best.ToString(CultureInfo.InvariantCulture);
    }

    private static string Describe(ExpectedRow expected, float[] actual, uint actualLabel)
    {
        double maxDiff = expected.Score.Zip(actual, (e, a) => Math.Abs((double)e - a)).DefaultIfEmpty(double.NaN).Max();
        return $"row {expected.Index}: PredictedLabel {actualLabel} (expected {expected.PredictedLabel}), max |score diff| {maxDiff:G3}; " +
               $"expected [{string.Join(", ", expected.Score.Select(s => s.ToString("R", CultureInfo.InvariantCulture)))}], " +
               $"actual [{string.Join(", ", actual.Select(s => s.ToString("R", CultureInfo.InvariantCulture)))}]";
    }
}

public sealed class ModelInput
{
    [VectorType(MnistTestSet.ImageSize)]
    public float[] Features { get; set; } = [];
}

public class ModelOutput
{
    public uint PredictedLabel { get; set; }

    public float[] Score { get; set; } = [];
}

public sealed class DigitOutput : ModelOutput
{
    public string PredictedDigit { get; set; } = "";
}

public sealed class LabeledInput
{
    [VectorType(MnistTestSet.ImageSize)]
    public float[] Features { get; set; } = [];

    public string LabelText { get; set; } = "";
}

public sealed class DigitName
{
    public string Name { get; set; } = "";
}
