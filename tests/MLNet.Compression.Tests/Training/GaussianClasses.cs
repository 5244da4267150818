using System.Globalization;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.Compression.Tests.Training;

/// <summary>
/// A generated tabular classification problem: <c>classes</c> Gaussian clusters in <see cref="Dimensions"/> dimensions (unit
/// noise, centres drawn at a given spread), so tests can train on data of any size they make themselves.
/// </summary>
internal static class GaussianClasses
{
    public const int Dimensions = 10;

    /// <summary>One row as ML.NET reads it from a CSV file or a collection (the label as a float, to be mapped to a key).</summary>
    public sealed class Row
    {
        [LoadColumn(0)]
        public float Label { get; set; }

        [LoadColumn(1, Dimensions)]
        [VectorType(Dimensions)]
        public float[] Features { get; set; } = [];
    }

    /// <summary>
    /// <paramref name="rows"/> rows of <paramref name="classes"/> classes; the centres come from <paramref name="problemSeed"/>
    /// (so a training and a test set of one problem share them), the rows from <paramref name="rowSeed"/>.
    /// </summary>
    public static List<Row> Generate(int rows, int classes, int problemSeed, int rowSeed, double spread = 1.2)
    {
        var centres = new Random(problemSeed);
        var means = Enumerable.Range(0, classes).Select(_ => Enumerable.Range(0, Dimensions).Select(_ => centres.NextDouble() * 2 * spread - spread).ToArray()).ToArray();
        var rand = new Random(rowSeed);
        var result = new List<Row>(rows);
        for (int i = 0; i < rows; i++)
        {
            int c = rand.Next(classes);
            var f = new float[Dimensions];
            for (int d = 0; d < Dimensions; d++)
                f[d] = (float)(means[c][d] + Normal(rand));
            result.Add(new Row { Label = c, Features = f });
        }
        return result;
    }

    /// <summary>Writes <paramref name="rows"/> as a CSV file with a header: Label, F0..F9 (invariant culture).</summary>
    public static void WriteCsv(string path, IEnumerable<Row> rows)
    {
        var sb = new StringBuilder("Label," + string.Join(",", Enumerable.Range(0, Dimensions).Select(d => "F" + d)) + "\n");
        foreach (var r in rows)
            sb.Append(r.Label.ToString("R", CultureInfo.InvariantCulture)).Append(',')
              .Append(string.Join(",", r.Features.Select(v => v.ToString("R", CultureInfo.InvariantCulture)))).Append('\n');
        File.WriteAllText(path, sb.ToString());
    }

    /// <summary>Reads a CSV written by <see cref="WriteCsv"/> with <c>LoadFromTextFile</c> (a view that cannot shuffle).</summary>
    public static IDataView LoadCsv(MLContext ml, string path) =>
        ml.Data.LoadFromTextFile<Row>(path, hasHeader: true, separatorChar: ',');

    private static double Normal(Random rand) =>
        Math.Sqrt(-2 * Math.Log(1 - rand.NextDouble())) * Math.Cos(2 * Math.PI * rand.NextDouble());
}
