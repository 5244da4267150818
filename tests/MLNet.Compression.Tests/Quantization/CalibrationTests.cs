using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Networks;
using MLNet.Compression.Quantization;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using MLNet.Compression.Training;

namespace MLNet.Compression.Tests.Quantization;

public sealed class CalibrationTests : IClassFixture<QuantizableMlpFixture>
{
    private readonly QuantizableMlpFixture fixture;

    public CalibrationTests(QuantizableMlpFixture fixture) => this.fixture = fixture;

    /// <summary>The input of every weighted layer for the first <paramref name="rows"/> training rows, computed in plain C# from the weights.</summary>
    private Dictionary<string, List<float>> LayerInputs(int rows)
    {
        var inputs = new Dictionary<string, List<float>>();
        var layers = fixture.Model.Network.ParameterizedLayers.Cast<DenseModelLayer>().ToArray();
        foreach (var l in layers)
            inputs[l.Name] = new List<float>();
        var features = fixture.Train.GetColumn<VBuffer<float>>("Features").Take(rows);
        foreach (var row in features)
        {
            var x = row.DenseValues().ToArray();
            foreach (var l in layers)
            {
                inputs[l.Name].AddRange(x);
                var y = new float[l.OutFeatures];
                for (int o = 0; o < l.OutFeatures; o++)
                {
                    double s = l.Bias[o];
                    for (int i = 0; i < l.InFeatures; i++)
                        s += (double)l.Weight[o * l.InFeatures + i] * x[i];
                    y[o] = l.Activation == Activation.Relu ? (float)Math.Max(s, 0) : (float)s;
                }
                x = y;
            }
        }
        return inputs;
    }

    [Fact]
    public void MinMaxHoldsEveryObservedValueAndPercentileAndEntropyLieWithinIt()
    {
        const int rows = 500;
        var net = fixture.Model.Network;
        var minMax = Calibration.Run(net, fixture.Train, "Label", "Features", CalibrationMethod.MinMax, rows);
        Assert.Equal(rows, minMax.Rows);
        var inputs = LayerInputs(rows);
        Assert.Equal(new[] { "fc1", "output" }, minMax.Ranges.Keys.OrderBy(k => k == "output").ToArray());
        foreach (var (name, values) in inputs)
        {
            var range = minMax.Ranges[name];
            float lo = values.Min(), hi = values.Max();
            // The values computed here in double precision may differ from TorchSharp's float32 forward in the last bits.
            float slack = 1e-5f * Math.Max(1f, Math.Max(Math.Abs(lo), Math.Abs(hi)));
            Assert.True(range.Min <= lo + slack && range.Max >= hi - slack, $"{name}: [{range.Min}, {range.Max}] does not hold [{lo}, {hi}].");
            // Tight: the observed extremes (widened to 0), up to float rounding of the forward pass.
            Assert.Equal(Math.Min(lo, 0), range.Min, 1e-4);
            Assert.Equal(hi, range.Max, Math.Max(1e-4, hi * 1e-5));
            Assert.Equal(lo, minMax.Observed[name].Min, 1e-4);
        }
        // Post-ReLU and pixel inputs are non-negative: their ranges start at 0.
        Assert.Equal(0f, minMax.Ranges["fc1"].Min);
        Assert.Equal(0f, minMax.Ranges["output"].Min);

        foreach (var method in new[] { CalibrationMethod.Percentile, CalibrationMethod.Entropy })
        {
            var calibrated = Calibration.Run(net, fixture.Train, "Label", "Features", method, rows, percentile: 99.9);
            foreach (var (name, values) in inputs)
            {
                var range = calibrated.Ranges[name];
                var mm = minMax.Ranges[name];
                Assert.True(range.Min >= mm.Min && range.Max <= mm.Max && range.Max > 0,
                    $"{method} {name}: [{range.Min}, {range.Max}] is not inside the MinMax range [{mm.Min}, {mm.Max}].");
                if (method == CalibrationMethod.Percentile)
                {
                    double inside = values.Count(v => v >= range.Min && v <= range.Max * 1.0005f) / (double)values.Count;
                    Assert.True(inside >= 0.999 - 1e-6, $"{name}: only {inside:P4} of the values lie inside the 99.9th-percentile range.");
                }
            }
        }
    }

    [Fact]
    public void PercentileOfAUniformHistogramIsItsQuantile()
    {
        var hist = Enumerable.Repeat(10L, Calibration.Bins).ToArray(); // uniform over [0, 2048 * 0.001]
        double width = 0.001;
        Assert.Equal(0.99 * Calibration.Bins * width, Calibration.PercentileThreshold(hist, width, 99), 6);
        Assert.Equal(Calibration.Bins * width, Calibration.PercentileThreshold(hist, width, 100), 6);
        Assert.Equal(0, Calibration.PercentileThreshold(new long[Calibration.Bins], width, 99));
    }

    [Fact]
    public void EntropyClipsRareOutliersButKeepsAFullyUsedRange()
    {
        // |x| of a half-normal with a handful of values 20 standard deviations out.
        var rand = new Random(5);
        var values = Enumerable.Range(0, 200_000).Select(_ => (float)Math.Abs(Normal(rand))).Concat(Enumerable.Repeat(20f, 5)).ToArray();
        float amax = values.Max();
        var hist = new long[Calibration.Bins];
        Calibration.Accumulate(hist, values, amax);
        Assert.Equal(values.Length, hist.Sum());
        double t = Calibration.EntropyThreshold(hist, amax / Calibration.Bins, 128);
        Assert.InRange(t, 2.0, 8.0); // far below the outliers, but keeps the bulk of the distribution
        double p = Calibration.PercentileThreshold(hist, amax / Calibration.Bins, 99.99);
        Assert.InRange(p, 3.0, 5.0);

        // A uniform distribution has nothing to clip: the whole range is kept.
        var uniform = Enumerable.Repeat(100L, Calibration.Bins).ToArray();
        Assert.Equal(Calibration.Bins * 0.01, Calibration.EntropyThreshold(uniform, 0.01, 128), 6);
    }

    private static double Normal(Random r) => Math.Sqrt(-2 * Math.Log(1 - r.NextDouble())) * Math.Cos(2 * Math.PI * r.NextDouble());

    [Fact]
    public void CalibrationNeedsRowsAndTheRightFeatureColumn()
    {
        var net = fixture.Model.Network;
        var ml = fixture.Context;
        var empty = Assert.Throws<ArgumentException>(() =>
            Calibration.Run(net, ml.Data.SkipRows(fixture.Train, 6000), "Label", "Features", CalibrationMethod.MinMax, 100));
        Assert.Equal("data", empty.ParamName);
        Assert.Contains("no rows", empty.Message);

        var wide = ml.Transforms.Concatenate("Features", "Features", "Features").Fit(fixture.Train).Transform(fixture.Train);
        var wrongSize = Assert.Throws<ArgumentOutOfRangeException>(() => Calibration.Run(net, wide, "Label", "Features", CalibrationMethod.MinMax, 100));
        Assert.Contains("'Features'", wrongSize.Message);
        Assert.Contains("1568", wrongSize.Message);

        var renamed = ml.Transforms.CopyColumns("Pixels", "Features").Append(ml.Transforms.DropColumns("Features")).Fit(fixture.Train).Transform(fixture.Train);
        var missing = Assert.Throws<ArgumentOutOfRangeException>(() => Calibration.Run(net, renamed, "Label", "Features", CalibrationMethod.MinMax, 100));
        Assert.Contains("no feature column 'Features'", missing.Message);
    }

    [Fact]
    public void TheInterceptedForwardComputesWhatTheTorchModuleComputes()
    {
        foreach (var architecture in new[] { NetworkArchitecture.Mlp(32, 16), NetworkArchitecture.LeNet5(), NetworkArchitecture.DepthwiseSeparable() })
        {
            var model = NetworkModel.Create(architecture, 10);
            NeuralNetworkTrainer.InitializeWeights(model, 3);
            using var net = new TorchNetwork(model);
            net.LoadWeights(model);
            net.eval();
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            var x = rand(5, model.InputLength);
            var expected = net.forward(x);
            var seen = new List<string>();
            var actual = net.Forward(x, new LayerInterceptor((i, layer, input) =>
            {
                seen.Add(layer.Name);
                Assert.Equal(layer.InputShape.Aggregate(1, (a, b) => a * b), (int)(input.numel() / 5));
                return input;
            }, null));
            Assert.True(expected.allclose(actual, rtol: 1e-5, atol: 1e-6), $"{architecture.Name}: the intercepted forward differs.");
            Assert.Equal(model.ParameterizedLayers.Select(l => l.Name), seen);
        }
    }

    [Fact]
    public void FakeQuantizedWeightsRoundLikeTheExportAndPassTheGradientStraightThrough()
    {
        var rand = new Random(2);
        var w = Enumerable.Range(0, 6 * 20).Select(_ => (float)(rand.NextDouble() * 2 - 1) * (1 + rand.Next(3))).ToArray();
        w[7] = 0f;
        foreach (bool perChannel in new[] { true, false })
        {
            using var scope = NewDisposeScope();
            var p = tensor(w, [6, 20]).requires_grad_(true);
            var q = FakeQuant.Weight(p, perChannel);
            var expected = FakeQuant.RoundTrip(w, 6, perChannel);
            var actual = q.detach().data<float>().ToArray();
            for (int i = 0; i < w.Length; i++)
                Assert.Equal(expected[i], actual[i], 1e-6);
            Assert.Equal(0f, actual[7]);
            Assert.True(expected.Select((v, i) => Math.Abs(v - w[i])).Max() > 0, "nothing was rounded");
            // 255 levels at most per channel (symmetric int8).
            for (int o = 0; o < 6; o++)
                Assert.True(expected.Skip(o * 20).Take(20).Distinct().Count() <= 255);
            var upstream = tensor(Enumerable.Range(0, 120).Select(i => (float)i).ToArray(), [6, 20]);
            q.mul(upstream).sum().backward();
            Assert.True(p.grad!.allclose(upstream, rtol: 0, atol: 0), "the straight-through gradient should be the upstream gradient");
        }
    }
}
