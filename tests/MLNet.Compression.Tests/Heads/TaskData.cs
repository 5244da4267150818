using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.Compression.Tests.Heads;

/// <summary>Small generated data sets for the binary and regression heads (seconds to train).</summary>
internal static class TaskData
{
    public const int BinaryFeatures = 12;
    public const int RegressionFeatures = 8;

    public sealed class BinaryRow
    {
        [VectorType(BinaryFeatures)]
        public float[] Features { get; set; } = [];

        public bool Label { get; set; }
    }

    public sealed class RegressionRow
    {
        [VectorType(RegressionFeatures)]
        public float[] Features { get; set; } = [];

        public float Label { get; set; }
    }

    /// <summary>A nonlinear rule with 5 % label noise: x0 + x1·x2 − 0.5·x3 &gt; 0, over Gaussian features (the others are noise).</summary>
    public static BinaryRow[] Binary(int rows, int seed)
    {
        var rand = new Random(seed);
        var result = new BinaryRow[rows];
        for (int i = 0; i < rows; i++)
        {
            var x = new float[BinaryFeatures];
            for (int j = 0; j < x.Length; j++)
                x[j] = (float)Gaussian(rand);
            bool label = x[0] + x[1] * x[2] - 0.5 * x[3] > 0;
            if (rand.NextDouble() < 0.05)
                label = !label;
            result[i] = new BinaryRow { Features = x, Label = label };
        }
        return result;
    }

    /// <summary>
    /// y = 1000 · (3 sin(2 x0) + 2 x1² + x2 x3 + noise(σ = 0.1)) + 5000 over uniform features in [−1, 1]: large label units,
    /// so the target scaling matters.
    /// </summary>
    public static RegressionRow[] Regression(int rows, int seed)
    {
        var rand = new Random(seed);
        var result = new RegressionRow[rows];
        for (int i = 0; i < rows; i++)
        {
            var x = new float[RegressionFeatures];
            for (int j = 0; j < x.Length; j++)
                x[j] = (float)(rand.NextDouble() * 2 - 1);
            double y = 3 * Math.Sin(2 * x[0]) + 2 * x[1] * x[1] + x[2] * x[3] + 0.1 * Gaussian(rand);
            result[i] = new RegressionRow { Features = x, Label = (float)(1000 * y + 5000) };
        }
        return result;
    }

    public static IDataView Load<T>(MLContext ml, IEnumerable<T> rows) where T : class => ml.Data.LoadFromEnumerable(rows);

    private static double Gaussian(Random rand) => Math.Sqrt(-2 * Math.Log(1 - rand.NextDouble())) * Math.Cos(2 * Math.PI * rand.NextDouble());
}
