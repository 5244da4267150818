using Xunit;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.Compression.Tests.Training;

/// <summary>Reads Score and PredictedLabel out of a scored data view.</summary>
internal static class Scoring
{
    public static (float[][] Scores, uint[] Labels) Read(IDataView scored, int maxRows = int.MaxValue)
    {
        var scoreCol = scored.Schema["Score"];
        var labelCol = scored.Schema["PredictedLabel"];
        var scores = new List<float[]>();
        var labels = new List<uint>();
        using var cursor = scored.GetRowCursor([scoreCol, labelCol]);
        var getScore = cursor.GetGetter<VBuffer<float>>(scoreCol);
        var getLabel = cursor.GetGetter<uint>(labelCol);
        VBuffer<float> s = default;
        uint l = 0;
        while (scores.Count < maxRows && cursor.MoveNext())
        {
            getScore(ref s);
            getLabel(ref l);
            scores.Add(s.DenseValues().ToArray());
            labels.Add(l);
        }
        return (scores.ToArray(), labels.ToArray());
    }

    public static void AssertIdentical((float[][] Scores, uint[] Labels) expected, (float[][] Scores, uint[] Labels) actual)
    {
        Assert.Equal(expected.Labels, actual.Labels);
        Assert.Equal(expected.Scores.Length, actual.Scores.Length);
        for (int i = 0; i < expected.Scores.Length; i++)
            Assert.True(expected.Scores[i].AsSpan().SequenceEqual(actual.Scores[i]), $"Scores of row {i} differ.");
    }
}
