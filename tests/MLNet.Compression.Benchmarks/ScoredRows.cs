using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.Compression.Benchmarks;

/// <summary>Reads a scored view to the end the way an application would: the Score and PredictedLabel getters of every row.</summary>
internal static class ScoredRows
{
    /// <summary>
    /// Touches Score (its first value) and PredictedLabel of every row of <paramref name="scored"/> and returns their sum (so
    /// the work cannot be skipped); throws when the view does not hold exactly <paramref name="expectedRows"/> rows.
    /// </summary>
    public static float Read(IDataView scored, long expectedRows)
    {
        var score = scored.Schema["Score"];
        var predicted = scored.Schema["PredictedLabel"];
        using var cursor = scored.GetRowCursor([score, predicted]);
        var getScore = cursor.GetGetter<VBuffer<float>>(score);
        var getPredicted = cursor.GetGetter<uint>(predicted);
        VBuffer<float> s = default;
        uint p = 0;
        float sum = 0;
        long rows = 0;
        while (cursor.MoveNext())
        {
            getScore(ref s);
            getPredicted(ref p);
            sum += s.GetValues()[0] + p;
            rows++;
        }
        return rows == expectedRows ? sum : throw new InvalidOperationException($"Scored {rows} rows.");
    }
}
