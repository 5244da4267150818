using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Compression.Networks;
using MLNet.Compression.Onnx;
using MLNet.Compression.Pruning;
using MLNet.Compression.Tests.Onnx;
using Xunit;

namespace MLNet.Compression.Tests.Pruning;

public class StructuredPruningTests
{
    private static ParameterizedLayer Layer(NetworkModel m, string name) => (ParameterizedLayer)m.Layers.Single(l => l.Name == name);

    private static int[] Shape(ModelLayer l) => l is ParameterizedLayer p ? p.WeightShape : l.OutputShape;

    /// <summary>
    /// The original network with the removed units silenced: their outgoing weights (the next layer's matching inputs) are zeroed,
    /// so what they compute no longer reaches the output. For a depthwise next layer, the removed groups' filters are silenced too.
    /// </summary>
    private static NetworkModel Silenced(NetworkModel model, IReadOnlyDictionary<string, int[]> keep)
    {
        var m = model.Clone();
        var layers = m.Layers;
        for (int i = 0; i < layers.Count; i++)
        {
            if (layers[i] is not ParameterizedLayer p || !keep.TryGetValue(p.Name, out var kept))
                continue;
            var removed = Enumerable.Range(0, p.OutputUnits).Except(kept).ToArray();
            int j = i + 1;
            int hw = 1;
            while (layers[j] is not ParameterizedLayer)
            {
                if (layers[j] is FlattenModelLayer f && f.InputShape.Length == 3)
                    hw = f.InputShape[1] * f.InputShape[2];
                j++;
            }
            var next = (ParameterizedLayer)layers[j];
            int fanIn = next.FanIn;
            if (next is ConvModelLayer { Groups: > 1 } dw)
            {
                int mult = dw.OutChannels / dw.Groups;
                foreach (var r in removed)
                    for (int k = 0; k < mult; k++)
                    {
                        Array.Clear(dw.Weight, (r * mult + k) * fanIn, fanIn);
                        dw.Bias[r * mult + k] = 0f;
                    }
            }
            else if (next is ConvModelLayer c)
            {
                int kk = c.Kernel * c.Kernel;
                for (int o = 0; o < c.OutChannels; o++)
                    foreach (var r in removed)
                        Array.Clear(c.Weight, o * fanIn + r * kk, kk);
            }
            else
            {
                for (int o = 0; o < next.OutputUnits; o++)
                    foreach (var r in removed)
                        Array.Clear(next.Weight, o * fanIn + r * hw, hw);
            }
        }
        return m;
    }

    private static float[] Scores(NetworkModel model, float[][] features)
    {
        using var session = new InferenceSession(OnnxExporter.Export(model));
        var input = new DenseTensor<float>(features.SelectMany(f => f).ToArray(), [features.Length, model.InputLength]);
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("Features", input)]);
        return results.Single(r => r.Name == "Score").AsTensor<float>().ToArray();
    }

    private static void AssertSameOutputs(NetworkModel expectedModel, NetworkModel shrunk, double tolerance = 1e-5)
    {
        var features = OnnxTestModels.RandomFeatures(20, expectedModel.InputLength, seed: 61);
        var a = Scores(expectedModel, features);
        var b = Scores(shrunk, features);
        double diff = a.Zip(b, (x, y) => Math.Abs(x - y)).Max();
        Assert.True(diff <= tolerance, $"max |Δscore| = {diff:E2}");
        for (int r = 0; r < 3; r++)
        {
            var reference = OnnxTestModels.Reference(shrunk, features[r]);
            for (int k = 0; k < 10; k++)
                Assert.True(Math.Abs(reference[k] - b[r * 10 + k]) <= 1e-5);
        }
    }

    private static void AssertRoundTrips(NetworkModel shrunk)
    {
        var rebuilt = NetworkModel.Create(shrunk.Architecture, shrunk.NumClasses);
        Assert.Equal(shrunk.Layers.Select(l => l.Name), rebuilt.Layers.Select(l => l.Name));
        Assert.Equal(shrunk.Layers.Select(l => l.GetType()), rebuilt.Layers.Select(l => l.GetType()));
        Assert.Equal(shrunk.Layers.Select(Shape), rebuilt.Layers.Select(Shape));
        Assert.Equal(shrunk.Layers.Select(l => l.InputShape), rebuilt.Layers.Select(l => l.InputShape));
        Assert.Equal(shrunk.ParameterCount, rebuilt.ParameterCount);
    }

    [Fact]
    public void Mlp300_100_ShrinksTo150_50_AndMatchesTheSilencedOriginal()
    {
        var model = OnnxTestModels.Mlp(3, 300, 100);
        var keep = new Dictionary<string, int[]>
        {
            ["fc1"] = StructuredPruning.KeepTop(Layer(model, "fc1"), 0.5),
            ["fc2"] = StructuredPruning.KeepTop(Layer(model, "fc2"), 0.5),
        };
        Assert.Equal(150, keep["fc1"].Length);
        Assert.Equal(50, keep["fc2"].Length);
        var shrunk = StructuredPruning.RemoveUnits(model, keep);

        Assert.Equal(new[] { new[] { 150, 784 }, new[] { 50, 150 }, new[] { 10, 50 } }, shrunk.ParameterizedLayers.Select(l => l.WeightShape).ToArray());
        Assert.Equal(["fc1", "fc2", "output"], shrunk.ParameterizedLayers.Select(l => l.Name));
        Assert.Equal(150 * 785 + 50 * 151 + 10 * 51, shrunk.ParameterCount);
        Assert.Equal("MLP-150-50", shrunk.Architecture.Name);
        Assert.Equal("MLP-300-100", model.Architecture.Name);
        Assert.Equal([300, 784], Layer(model, "fc1").WeightShape); // the input model is untouched
        // Kept rows are copied in order: row r of the new fc1 is row keep[r] of the old one.
        Assert.Equal(Layer(model, "fc1").Weight.AsSpan(keep["fc1"][3] * 784, 784).ToArray(), Layer(shrunk, "fc1").Weight.AsSpan(3 * 784, 784).ToArray());
        Assert.Equal(Layer(model, "fc2").Bias[keep["fc2"][7]], Layer(shrunk, "fc2").Bias[7]);

        AssertSameOutputs(Silenced(model, keep), shrunk);
        AssertRoundTrips(shrunk);
    }

    [Fact]
    public void LeNet5_FilterRemoval_ShrinksConvAndFlattenedDenseColumns()
    {
        var model = OnnxTestModels.LeNet5(seed: 4);
        var keep = new Dictionary<string, int[]>
        {
            ["conv1"] = StructuredPruning.KeepTop(Layer(model, "conv1"), 0.5),
            ["conv2"] = StructuredPruning.KeepTop(Layer(model, "conv2"), 0.5),
        };
        var shrunk = StructuredPruning.RemoveUnits(model, keep);
        Assert.Equal([10, 1, 5, 5], Layer(shrunk, "conv1").WeightShape);
        Assert.Equal([25, 10, 5, 5], Layer(shrunk, "conv2").WeightShape);
        Assert.Equal([500, 25 * 4 * 4], Layer(shrunk, "fc1").WeightShape);
        Assert.Equal([10, 500], Layer(shrunk, "output").WeightShape);
        Assert.Equal([25, 4, 4], shrunk.Layers.Single(l => l.Name == "pool2").OutputShape);
        Assert.Equal(model.Layers.Select(l => l.Name), shrunk.Layers.Select(l => l.Name));
        Assert.Equal(10, ((Conv2dLayer)shrunk.Architecture.Layers[0]).OutChannels);
        Assert.Equal(25, ((Conv2dLayer)shrunk.Architecture.Layers[2]).OutChannels);

        AssertSameOutputs(Silenced(model, keep), shrunk);
        AssertRoundTrips(shrunk);
        // Pruning fc1 of the shrunk model (dense after the flatten) also works.
        var smaller = StructuredPruning.RemoveUnits(shrunk, new Dictionary<string, int[]> { ["fc1"] = StructuredPruning.KeepTop(Layer(shrunk, "fc1"), 0.2) });
        Assert.Equal([100, 400], Layer(smaller, "fc1").WeightShape);
        AssertRoundTrips(smaller);
    }

    [Fact]
    public void DepthwiseNext_DropsMatchingGroupsAndTheFollowingPointwiseInputs()
    {
        var model = OnnxTestModels.DepthwiseSeparable(seed: 6);
        // conv1 (16) → conv2 depthwise (16 groups) → conv3 pointwise (32) → conv4 depthwise → conv5 (64) → pool → flatten → output
        int[] kept = [0, 2, 3, 5, 8, 9, 12, 15];
        var shrunk = StructuredPruning.RemoveUnits(model, new Dictionary<string, int[]> { ["conv1"] = kept });
        var dw = (ConvModelLayer)Layer(shrunk, "conv2");
        Assert.Equal(8, dw.Groups);
        Assert.Equal([8, 1, 3, 3], dw.WeightShape);
        Assert.Equal([32, 8, 1, 1], Layer(shrunk, "conv3").WeightShape);
        Assert.Equal(Layer(model, "conv2").Weight.AsSpan(5 * 9, 9).ToArray(), dw.Weight.AsSpan(3 * 9, 9).ToArray());
        AssertSameOutputs(Silenced(model, new Dictionary<string, int[]> { ["conv1"] = kept }), shrunk);
        AssertRoundTrips(shrunk);

        // Removing pointwise filters before the second depthwise layer, and the final filters before the flatten.
        var keep2 = new Dictionary<string, int[]> { ["conv3"] = Enumerable.Range(0, 32).Where(i => i % 4 != 1).ToArray(), ["conv5"] = StructuredPruning.KeepTop(Layer(model, "conv5"), 0.75) };
        var shrunk2 = StructuredPruning.RemoveUnits(model, keep2);
        Assert.Equal([24, 1, 3, 3], Layer(shrunk2, "conv4").WeightShape);
        Assert.Equal([48, 24, 1, 1], Layer(shrunk2, "conv5").WeightShape);
        Assert.Equal([10, 48 * 9], Layer(shrunk2, "output").WeightShape);
        AssertRoundTrips(shrunk2);
        Assert.Throws<ArgumentException>(() => StructuredPruning.RemoveUnits(model, new Dictionary<string, int[]> { ["conv2"] = [0, 1] }));
    }

    [Fact]
    public void ShrunkModel_ExportsWithSparseWeightsAndScores()
    {
        var model = OnnxTestModels.Mlp(8, 300, 100);
        var shrunk = StructuredPruning.RemoveUnits(model, new Dictionary<string, int[]> { ["fc1"] = StructuredPruning.KeepTop(Layer(model, "fc1"), 0.25) });
        var bytes = OnnxExporter.Export(shrunk, new OnnxExportOptions { ClassNames = OnnxTestModels.Digits });
        Assert.Equal(784, OnnxExporter.ReadSignature(bytes).InputLength);
        Assert.True(bytes.Length < OnnxExporter.Export(model).Length / 3);
        var features = OnnxTestModels.RandomFeatures(5, 784, seed: 2);
        Assert.Equal(50, Scores(shrunk, features).Length);
    }

    [Fact]
    public void RankUnitsByL1_OrdersByDescendingL1_AndKeepTopIsSorted()
    {
        var model = OnnxTestModels.Mlp(1, 4);
        var fc1 = Layer(model, "fc1");
        Array.Clear(fc1.Weight);
        float[] rowScale = [1f, 3f, 2f, 3f];
        for (int u = 0; u < 4; u++)
            for (int i = 0; i < 784; i++)
                fc1.Weight[u * 784 + i] = (i % 2 == 0 ? 1 : -1) * rowScale[u];
        Assert.Equal([1, 3, 2, 0], StructuredPruning.RankUnitsByL1(fc1));
        Assert.Equal([1, 2, 3], StructuredPruning.KeepTop(fc1, 0.6)); // ceil(2.4) = 3, returned ascending
        Assert.Equal([1], StructuredPruning.KeepTop(fc1, 0.01));
        Assert.Equal([0, 1, 2, 3], StructuredPruning.KeepTop(fc1, 1.0));
        Assert.Throws<ArgumentOutOfRangeException>(() => StructuredPruning.KeepTop(fc1, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => StructuredPruning.KeepTop(fc1, 1.5));
    }

    [Theory]
    [InlineData("output", new[] { 0, 1 }, "output")]
    [InlineData("fc9", new[] { 0 }, "fc9")]
    [InlineData("fc1", new int[0], "fc1")]
    [InlineData("fc1", new[] { 3, 1 }, "fc1")]
    [InlineData("fc1", new[] { 1, 1 }, "fc1")]
    [InlineData("fc1", new[] { 0, 300 }, "fc1")]
    [InlineData("fc2", new[] { -1 }, "fc2")]
    public void BadRequests_ThrowArgumentException_NamingTheLayer(string layer, int[] keep, string named)
    {
        var model = OnnxTestModels.Mlp(1, 300, 100);
        var e = Assert.Throws<ArgumentException>(() => StructuredPruning.RemoveUnits(model, new Dictionary<string, int[]> { [layer] = keep }));
        Assert.Contains($"'{named}'", e.Message);
        var lenet = OnnxTestModels.LeNet5();
        var pool = Assert.Throws<ArgumentException>(() => StructuredPruning.RemoveUnits(lenet, new Dictionary<string, int[]> { ["pool1"] = [0] }));
        Assert.Contains("'pool1'", pool.Message);
    }

    [Fact]
    public void EmptyRequest_ReturnsAnEqualCopy()
    {
        var model = OnnxTestModels.LeNet5();
        var copy = StructuredPruning.RemoveUnits(model, new Dictionary<string, int[]>());
        Assert.Same(model.Architecture, copy.Architecture);
        Assert.Equal(OnnxExporter.Export(model), OnnxExporter.Export(copy));
        Assert.NotSame(Layer(model, "conv1").Weight, Layer(copy, "conv1").Weight);
    }
}
