using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.Compression.Tests.Pipelines;

/// <summary>One raw row of a generated tabular set: five measurements on very different scales and a class name.</summary>
public sealed class TabularRow
{
    public float Length { get; set; }
    public float Depth { get; set; }
    public float Flipper { get; set; }
    public float Mass { get; set; }
    public float Ratio { get; set; }
    public string Species { get; set; } = "";
}

/// <summary>
/// A generated tabular set (three overlapping Gaussian classes, features on scales from 0.01 to 1,000, so a network needs the
/// pipeline's normalizer) read as raw rows, and the pipeline a user would write for it.
/// </summary>
public static class TabularData
{
    public static readonly string[] Species = ["Adelie", "Chinstrap", "Gentoo"];
    private static readonly float[] Scales = [1f, 10f, 100f, 1000f, 0.01f];

    public static List<TabularRow> Rows(int count, int seed, double noise = 1.0)
    {
        var centers = new Random(12345);
        var mu = Species.Select(_ => Scales.Select(_ => centers.NextDouble() * 3 - 1.5).ToArray()).ToArray();
        var rng = new Random(seed);
        var rows = new List<TabularRow>(count);
        for (int i = 0; i < count; i++)
        {
            int c = rng.Next(Species.Length);
            float F(int j) => (float)(Scales[j] * (mu[c][j] + noise * Gaussian(rng) + 3));
            rows.Add(new TabularRow { Length = F(0), Depth = F(1), Flipper = F(2), Mass = F(3), Ratio = F(4), Species = Species[c] });
        }
        return rows;
    }

    private static double Gaussian(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

    /// <summary>Concatenate → NormalizeMinMax → MapValueToKey (features and label prepared by the pipeline itself).</summary>
    public static IEstimator<ITransformer> Prepare(MLContext ml) =>
        ml.Transforms.Concatenate("Features", nameof(TabularRow.Length), nameof(TabularRow.Depth), nameof(TabularRow.Flipper), nameof(TabularRow.Mass), nameof(TabularRow.Ratio))
            .Append(ml.Transforms.NormalizeMinMax("Features"))
            .Append(ml.Transforms.Conversion.MapValueToKey("Label", nameof(TabularRow.Species)));

    public static NeuralNetworkOptions Network(int epochs = 12, int seed = 3) => new()
    {
        Architecture = MLNet.Compression.Networks.NetworkArchitecture.Mlp([32], 5),
        Epochs = epochs,
        BatchSize = 32,
        LearningRate = 1e-2,
        Seed = seed,
        Device = TrainingDevice.Cpu,
    };

    /// <summary>The user's whole pipeline: prepare → network → MapKeyToValue("PredictedLabel").</summary>
    public static IEstimator<ITransformer> Pipeline(MLContext ml, NeuralNetworkOptions? options = null) =>
        Prepare(ml).Append(ml.Compression().NeuralNetwork(options ?? Network()))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));

    /// <summary>Fraction of rows whose PredictedLabel (a class name, after MapKeyToValue) is the row's Species.</summary>
    public static double Accuracy(IDataView scored)
    {
        var predicted = scored.GetColumn<ReadOnlyMemory<char>>("PredictedLabel").Select(p => p.ToString()).ToArray();
        var truth = scored.GetColumn<ReadOnlyMemory<char>>(nameof(TabularRow.Species)).Select(s => s.ToString()).ToArray();
        return predicted.Zip(truth).Count(p => p.First == p.Second) / (double)truth.Length;
    }

    /// <summary>Every Score vector and PredictedLabel of <paramref name="scored"/>.</summary>
    public static (float[][] Scores, string[] Labels) Read(IDataView scored) =>
        (scored.GetColumn<float[]>("Score").ToArray(), scored.GetColumn<ReadOnlyMemory<char>>("PredictedLabel").Select(p => p.ToString()).ToArray());
}
