using Microsoft.ML;
using MLNet.Compression.Networks;
using static TorchSharp.torch;
using MLNet.Compression.Training;
using MLNet.Compression.Native;

namespace MLNet.Compression.Quantization;

/// <summary>What calibration measured: the chosen range and the observed min/max of every parameterized layer's input.</summary>
internal sealed record CalibrationResult(
    IReadOnlyDictionary<string, ActivationRange> Ranges,
    IReadOnlyDictionary<string, ActivationRange> Observed,
    long Rows,
    CalibrationMethod Method);

/// <summary>
/// Runs the float network (TorchSharp, CPU, eval mode, no gradients) over the first rows of a data view and records the
/// input of every parameterized layer: its min and max (one pass) and, for <see cref="CalibrationMethod.Percentile"/> and
/// <see cref="CalibrationMethod.Entropy"/>, a 2,048-bin histogram of |x| over [0, max |x|] (a second pass over the same rows).
/// Every range returned holds 0 (so that 0 is exactly representable) and lies within the observed min/max widened to 0.
/// </summary>
internal static class Calibration
{
    /// <summary>Histogram bins of |x| for the percentile and entropy methods.</summary>
    public const int Bins = 2048;

    private const int BatchSize = 256;

    public static CalibrationResult Run(NetworkModel model, IDataView data, string labelColumnName, string featureColumnName,
        CalibrationMethod method, int rows, double percentile = 99.99)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        if (rows <= 0)
            throw new ArgumentOutOfRangeException(nameof(rows), rows, "Calibration needs at least one row.");
        var stream = new BatchStream(data, labelColumnName, featureColumnName, model.InputLength, head: model.Head);
        var layers = model.ParameterizedLayers.ToArray();
        var min = Enumerable.Repeat(float.PositiveInfinity, layers.Length).ToArray();
        var max = Enumerable.Repeat(float.NegativeInfinity, layers.Length).ToArray();

        TorchNative.EnsureLoaded();
        using var net = new TorchNetwork(model);
        net.LoadWeights(model);
        net.eval();
        using var noGrad = no_grad();

        long used = Pass(model, net, stream, rows, (i, _, x) =>
        {
            using var mn = x.min();
            using var mx = x.max();
            min[i] = MathF.Min(min[i], mn.item<float>());
            max[i] = MathF.Max(max[i], mx.item<float>());
            return x;
        });
        if (used == 0)
            throw new ArgumentException(
                $"The calibration data has no rows with a label in column '{labelColumnName}'. Quantization calibrates activation ranges on the rows " +
                "given to Fit: pass a data view with rows (e.g. some of the training data).", nameof(data));

        var observed = new Dictionary<string, ActivationRange>(StringComparer.Ordinal);
        for (int i = 0; i < layers.Length; i++)
            observed[layers[i].Name] = new ActivationRange(min[i], max[i]);

        var ranges = new Dictionary<string, ActivationRange>(StringComparer.Ordinal);
        if (method == CalibrationMethod.MinMax)
        {
            for (int i = 0; i < layers.Length; i++)
                ranges[layers[i].Name] = HoldZero(min[i], max[i]);
        }
        else
        {
            var amax = layers.Select((_, i) => MathF.Max(MathF.Abs(min[i]), MathF.Abs(max[i]))).ToArray();
            var hist = layers.Select(_ => new long[Bins]).ToArray();
            Pass(model, net, stream, rows, (i, _, x) =>
            {
                if (amax[i] > 0)
                {
                    using var a = x.abs().to(ScalarType.Float32).cpu().contiguous();
                    Accumulate(hist[i], a.data<float>().ToArray(), amax[i]);
                }
                return x;
            });
            for (int i = 0; i < layers.Length; i++)
            {
                bool nonNegative = min[i] >= 0;
                double width = amax[i] / Bins;
                float t = amax[i] == 0 ? 0f : method == CalibrationMethod.Percentile
                    ? (float)PercentileThreshold(hist[i], width, percentile)
                    : (float)EntropyThreshold(hist[i], width, nonNegative ? 256 : 128);
                t = MathF.Min(t, amax[i]);
                ranges[layers[i].Name] = nonNegative ? HoldZero(0, MathF.Min(t, max[i])) : HoldZero(MathF.Max(min[i], -t), MathF.Min(max[i], t));
            }
        }
        return new CalibrationResult(ranges, observed, used, method);
    }

    /// <summary>Runs up to <paramref name="rows"/> rows through the network, showing each layer input to <paramref name="observe"/>.</summary>
    private static long Pass(NetworkModel model, TorchNetwork net, BatchStream stream, int rows, Func<int, ParameterizedLayer, Tensor, Tensor> observe)
    {
        long used = 0;
        foreach (var batch in stream.Read(Math.Min(BatchSize, rows), null, null))
        {
            int take = (int)Math.Min(batch.Count, rows - used);
            using (var scope = NewDisposeScope())
            {
                var x = tensor(batch.Features, [batch.Capacity, model.InputLength]).narrow(0, 0, take);
                net.Forward(x, new LayerInterceptor(observe, null));
            }
            used += take;
            if (used >= rows)
                break;
        }
        return used;
    }

    /// <summary>A range widened to hold 0, and never empty.</summary>
    internal static ActivationRange HoldZero(float min, float max)
    {
        min = MathF.Min(min, 0);
        max = MathF.Max(max, 0);
        if (max - min <= 0)
            max = min + 1e-6f;
        return new ActivationRange(min, max);
    }

    /// <summary>Adds |x| values (all in [0, <paramref name="amax"/>]) to a histogram over [0, <paramref name="amax"/>].</summary>
    internal static void Accumulate(long[] hist, ReadOnlySpan<float> values, float amax)
    {
        double perBin = hist.Length / (double)amax;
        int last = hist.Length - 1;
        foreach (var v in values)
        {
            int b = (int)(v * perBin);
            hist[b < 0 ? 0 : b > last ? last : b]++;
        }
    }

    /// <summary>The value below which <paramref name="percentile"/>% of the histogram's mass lies (linear within the bin).</summary>
    internal static double PercentileThreshold(long[] hist, double width, double percentile)
    {
        long total = hist.Sum();
        if (total == 0)
            return 0;
        double target = total * (percentile / 100.0);
        double cumulative = 0;
        for (int b = 0; b < hist.Length; b++)
        {
            if (hist[b] > 0 && cumulative + hist[b] >= target)
                return (b + Math.Clamp((target - cumulative) / hist[b], 0, 1)) * width;
            cumulative += hist[b];
        }
        return hist.Length * width;
    }

    /// <summary>
    /// KL-divergence calibration (as in TensorRT's entropy calibrator): for every candidate number of bins i from
    /// <paramref name="levels"/> to the histogram's length, the reference distribution P is the first i bins with the mass
    /// beyond them folded into bin i-1; Q merges those i bins (without the folded mass) into <paramref name="levels"/>
    /// quantization levels and spreads each level's mass evenly over the bins where P is non-empty (a bin where P has mass
    /// and Q has none rules the candidate out). Returns the upper edge of the i with the smallest KL(P‖Q); the whole range
    /// when nothing beats it.
    /// </summary>
    internal static double EntropyThreshold(long[] hist, double width, int levels)
    {
        int n = hist.Length;
        if (hist.Sum() == 0)
            return 0;
        if (levels >= n)
            return n * width;
        var suffix = new double[n + 1];
        for (int b = n - 1; b >= 0; b--)
            suffix[b] = suffix[b + 1] + hist[b];
        var p = new double[n];
        var q = new double[n];
        int best = n;
        double bestKl = double.PositiveInfinity;
        for (int i = levels; i <= n; i++)
        {
            for (int b = 0; b < i; b++)
                p[b] = hist[b];
            p[i - 1] += suffix[i];
            // Merge the first i bins (without the folded outliers: clipping is what Q cannot represent) into `levels` groups,
            // then expand each group's mass evenly over the bins where P is non-empty.
            for (int j = 0; j < levels; j++)
            {
                int start = (int)((long)j * i / levels);
                int end = (int)((long)(j + 1) * i / levels);
                double sum = 0;
                int nonEmpty = 0;
                for (int b = start; b < end; b++)
                {
                    sum += hist[b];
                    if (p[b] > 0)
                        nonEmpty++;
                }
                double each = nonEmpty == 0 ? 0 : sum / nonEmpty;
                for (int b = start; b < end; b++)
                    q[b] = p[b] > 0 ? each : 0;
            }
            double pTotal = 0, qTotal = 0;
            for (int b = 0; b < i; b++)
            {
                pTotal += p[b];
                qTotal += q[b];
            }
            if (qTotal == 0)
                continue;
            double kl = 0;
            for (int b = 0; b < i && kl < double.PositiveInfinity; b++)
                if (p[b] > 0)
                    kl += q[b] > 0 ? p[b] / pTotal * Math.Log(p[b] / pTotal / (q[b] / qTotal)) : double.PositiveInfinity;
            if (kl < bestKl - 1e-12)
            {
                bestKl = kl;
                best = i;
            }
        }
        return best * width;
    }
}
