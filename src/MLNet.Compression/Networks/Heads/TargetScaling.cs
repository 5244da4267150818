using Microsoft.ML;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.Compression.Networks.Heads;

/// <summary>
/// Standardized regression targets for one training run. The network trains on (y − mean) / std, which keeps the loss and
/// the gradients of the same size whatever the label's units (house prices in dollars train as well as values near 1), and
/// the scaling is undone inside the network: before the run the output layer is rewritten to standardized units
/// (<see cref="ToStandardized"/>), after it back to label units (<see cref="ToLabelUnits"/>: W·std, b·std + mean). So the
/// stored weights, the checkpoint and the exported ONNX graph always predict in the label's units, nothing extra is
/// persisted, and every compression stage (which runs its own training run over its own data) standardizes again with the
/// statistics of the data it is given. Rewriting the last layer by one positive factor keeps its zeros (pruning masks) and
/// the equality of its shared weights (clustering).
/// </summary>
/// <param name="Mean">Mean of the finite labels.</param>
/// <param name="Std">Standard deviation of the finite labels (1 when they are all equal).</param>
/// <param name="Rows">Rows whose label was counted.</param>
internal sealed record TargetScaling(double Mean, double Std, long Rows)
{
    /// <summary>
    /// Reads the Single column <paramref name="label"/> of <paramref name="data"/> once (only that column) and returns its
    /// mean and standard deviation over the finite values; throws when there is none.
    /// </summary>
    public static TargetScaling FromData(IDataView data, DataViewSchema.Column label)
    {
        double mean = 0, m2 = 0;
        long n = 0;
        using (var cursor = data.GetRowCursor([label]))
        {
            var getter = cursor.GetGetter<float>(label);
            float y = 0;
            while (cursor.MoveNext())
            {
                getter(ref y);
                if (!float.IsFinite(y))
                    continue;
                n++;
                double d = y - mean;
                mean += d / n;
                m2 += d * (y - mean);
            }
        }
        if (n == 0)
            throw new ArgumentException(
                $"The label column '{label.Name}' has no finite value to train a regression on. Check the data view and the label column.", nameof(data));
        double std = n > 1 ? Math.Sqrt(m2 / n) : 0;
        if (!(std > 1e-12 * Math.Max(1, Math.Abs(mean))) || !double.IsFinite(std))
            std = 1;
        return new TargetScaling(mean, std, n);
    }

    /// <summary>Rewrites the output layer of <paramref name="model"/> (label units) to standardized units, with new arrays.</summary>
    public void ToStandardized(NetworkModel model)
    {
        var last = OutputLayer(model);
        last.Weight = last.Weight.Select(StandardizedWeight).ToArray();
        last.Bias = last.Bias.Select(StandardizedBias).ToArray();
    }

    /// <summary>An output-layer weight in label units, rewritten to standardized units (w / std).</summary>
    public float StandardizedWeight(float weight) => (float)(weight / Std);

    /// <summary>An output-layer bias in label units, rewritten to standardized units ((b − mean) / std).</summary>
    public float StandardizedBias(float bias) => (float)((bias - Mean) / Std);

    /// <summary>Rewrites the output layer of <paramref name="model"/> (standardized units) back to label units, with new arrays.</summary>
    public void ToLabelUnits(NetworkModel model)
    {
        var last = OutputLayer(model);
        last.Weight = last.Weight.Select(w => (float)(w * Std)).ToArray();
        last.Bias = last.Bias.Select(b => (float)(b * Std + Mean)).ToArray();
    }

    /// <summary>Standardized float32 targets [N] from a batch's labels (the regression head's encoded int64 [N]).</summary>
    public Tensor Labels(Tensor labels)
    {
        using var mean = Mean.ToScalar();
        using var invStd = (1 / Std).ToScalar();
        return RegressionHead.DecodeLabels(labels).sub(mean).mul(invStd);
    }

    /// <summary>Standardizes the first <paramref name="count"/> values of a batch's target column (a teacher's scores, in label units) in place.</summary>
    public void StandardizeTargets(float[] targets, int count)
    {
        for (int i = 0; i < count && i < targets.Length; i++)
            targets[i] = (float)((targets[i] - Mean) / Std);
    }

    private static ParameterizedLayer OutputLayer(NetworkModel model) =>
        model.Layers.Count > 0 && model.Layers[^1] is DenseModelLayer { OutFeatures: 1 } last
            ? last
            : throw new InvalidOperationException("A regression network must end with its one-unit dense output layer.");
}
