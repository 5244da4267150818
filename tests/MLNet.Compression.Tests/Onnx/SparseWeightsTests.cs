using System.IO.Compression;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Compression.Networks;
using MLNet.Compression.Onnx;
using MLNet.Compression.Onnx.Proto;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Onnx;

public class SparseWeightsTests(ITestOutputHelper output)
{
    private static readonly Dictionary<string, double> Uniform92 = new() { ["fc1"] = 0.92, ["fc2"] = 0.92, ["output"] = 0.92 };

    /// <summary>Sparsity per layer reported by Han et al. (2015) for LeNet-300-100.</summary>
    private static readonly Dictionary<string, double> Han = new() { ["fc1"] = 0.92, ["fc2"] = 0.91, ["output"] = 0.74 };

    /// <summary>LeNet-300-100 with random weights, each layer magnitude-pruned to the given fraction of zeros.</summary>
    internal static NetworkModel PrunedLeNet300(IReadOnlyDictionary<string, double> zeros, int seed = 5)
    {
        var model = OnnxTestModels.Mlp(seed, 300, 100);
        foreach (var layer in model.ParameterizedLayers)
            MagnitudePrune(layer, zeros[layer.Name]);
        return model;
    }

    internal static void MagnitudePrune(ParameterizedLayer layer, double fractionZero)
    {
        int k = (int)Math.Round(layer.Weight.Length * fractionZero);
        var order = Enumerable.Range(0, layer.Weight.Length).OrderBy(i => Math.Abs(layer.Weight[i])).ThenBy(i => i).Take(k);
        foreach (var i in order)
            layer.Weight[i] = 0f;
    }

    private static float[] RunOrt(byte[] onnx, float[][] features)
    {
        using var session = new InferenceSession(onnx);
        int length = features[0].Length;
        var input = new DenseTensor<float>(features.SelectMany(f => f).ToArray(), [features.Length, length]);
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("Features", input)]);
        return results.Single(r => r.Name == "Score").AsTensor<float>().ToArray();
    }

    private static double MaxDiff(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        double m = 0;
        for (int i = 0; i < a.Length; i++)
            m = Math.Max(m, Math.Abs(a[i] - b[i]));
        return m;
    }

    private static long DeflatedSize(byte[] bytes)
    {
        using var ms = new MemoryStream();
        using (var z = new DeflateStream(ms, CompressionLevel.Optimal, leaveOpen: true))
            z.Write(bytes);
        return ms.Length;
    }

    private static byte[] Export(NetworkModel model, SparseWeightsMode mode, SparseWeightEncoding encoding = SparseWeightEncoding.DeltaUInt8) =>
        OnnxExporter.Export(model, new OnnxExportOptions { ClassNames = OnnxTestModels.Digits, SparseWeights = mode, SparseEncoding = encoding });

    [Fact]
    public void DeltaUInt8_RoundTrips_WithLongGapsAndLeadingNonZero()
    {
        var dense = new float[2000];
        dense[0] = 1.5f;
        dense[1] = -2f;
        dense[700] = 3f;       // gap 699 > 255: bridged by zero entries
        dense[1999] = -0.25f;  // gap 1299
        var (values, gaps) = SparseWeights.EncodeDeltaUInt8(dense);
        Assert.Equal(dense, SparseWeights.DecodeDeltaUInt8(values, gaps, dense.Length));
        Assert.Equal(4 + 2 + 5, values.Length);
        Assert.Equal(0, gaps[0]);

        var leading = new float[600];
        leading[599] = 7f; // first non-zero after a long run of zeros
        var enc = SparseWeights.EncodeDeltaUInt8(leading);
        Assert.Equal(leading, SparseWeights.DecodeDeltaUInt8(enc.Values, enc.Gaps, leading.Length));
        Assert.Empty(SparseWeights.EncodeDeltaUInt8(new float[300]).Values);
    }

    [Fact]
    public void EncodingComparison_LeNet300At92Percent_EveryCandidateLoadsAndScoresIdentically()
    {
        foreach (var (label, zeros) in new[] { ("uniform 92%", Uniform92), ("Han 92/91/74%", Han) })
        {
            var model = PrunedLeNet300(zeros);
            var features = OnnxTestModels.RandomFeatures(50, 784, seed: 21);
            var dense = Export(model, SparseWeightsMode.Never);
            var expected = RunOrt(dense, features);
            long denseZip = DeflatedSize(dense);
            output.WriteLine($"LeNet-300-100, {label}: {model.NonZeroParameterCount:N0} non-zero of {model.ParameterCount:N0} parameters");
            output.WriteLine($"{"encoding",-24} {"ONNX bytes",12} {"ratio",7} {"deflated",10} {"ratio",7}  max|Δscore|");
            output.WriteLine($"{"dense float32",-24} {dense.Length,12:N0} {1.0,7:F2} {denseZip,10:N0} {1.0,7:F2}");
            foreach (var encoding in new[] { SparseWeightEncoding.SparseInitializerInt64, SparseWeightEncoding.SparseInitializerInt32,
                         SparseWeightEncoding.Bitmask, SparseWeightEncoding.DeltaUInt8 })
            {
                var bytes = Export(model, SparseWeightsMode.Always, encoding);
                long zip = DeflatedSize(bytes);
                string result;
                try
                {
                    double diff = MaxDiff(expected, RunOrt(bytes, features));
                    result = $"{diff:E1}";
                    if (encoding != SparseWeightEncoding.SparseInitializerInt32)
                        Assert.True(diff <= 1e-6, $"{encoding}: max |Δscore| = {diff:E2}");
                }
                catch (OnnxRuntimeException e) when (encoding == SparseWeightEncoding.SparseInitializerInt32)
                {
                    result = "ORT rejects: " + e.Message.Split('\n')[0];
                }
                output.WriteLine($"{encoding,-24} {bytes.Length,12:N0} {(double)dense.Length / bytes.Length,7:F2} {zip,10:N0} {(double)denseZip / zip,7:F2}  {result}");
            }
        }
    }

    [Fact]
    public void PrunedLeNet300_AutoExport_ScoresLikeDense_AndOnnxAndZipAreAtLeast5xSmaller()
    {
        var model = PrunedLeNet300(Uniform92);
        var dense = Export(model, SparseWeightsMode.Never);
        var compact = OnnxExporter.Export(model, new OnnxExportOptions { ClassNames = OnnxTestModels.Digits }); // defaults: Auto
        Assert.NotEqual(dense, compact);

        // Same probabilities from ONNX Runtime on 200 random inputs.
        var features = OnnxTestModels.RandomFeatures(200, 784, seed: 31);
        double diff = MaxDiff(RunOrt(dense, features), RunOrt(compact, features));
        Assert.True(diff <= 1e-6, $"max |Δscore| = {diff:E2}");

        // Every weight tensor is encoded, and the report says so truthfully.
        var info = SparseWeights.Describe(model);
        Assert.All(info, i => Assert.Equal(SparseWeightEncoding.DeltaUInt8, i.Encoding));
        Assert.All(info, i => Assert.Equal(i.DenseBytes, i.ResidentBytes));
        var proto = ModelProto.Parser.ParseFrom(compact);
        Assert.Equal(info.Sum(i => i.EncodedBytes),
            proto.Graph.Initializer.Where(t => t.Name.EndsWith(".values") || t.Name.EndsWith(".gaps")).Sum(t => (long)t.RawData.Length));
        foreach (var i in info)
            output.WriteLine($"{i.Layer}: {i.Encoding}, density {i.Density:P1}, stored {i.EncodedBytes:N0} B, dense {i.DenseBytes:N0} B, resident {i.ResidentBytes:N0} B");

        // ML.NET zips (the ONNX bytes are deflated inside), saved and loaded.
        var ml = new MLContext(seed: 1);
        var data = OnnxTestModels.Data(ml, 200, seed: 31);
        long ZipSize(byte[] onnx, out (float[][] Scores, uint[] Labels) outputs)
        {
            var chain = OnnxScoringChain.Build(ml, onnx, data.Schema, "Features", OnnxTestModels.Digits);
            using var ms = new MemoryStream();
            ml.Model.Save(chain, data.Schema, ms);
            long size = ms.Length;
            ms.Position = 0;
            var loaded = ml.Model.Load(ms, out _);
            outputs = OnnxTestModels.ReadOutputs(loaded.Transform(data));
            var direct = OnnxTestModels.ReadOutputs(chain.Transform(data));
            Assert.Equal(direct.Labels, outputs.Labels);
            Assert.Equal(direct.Scores, outputs.Scores);
            return size;
        }
        long denseZip = ZipSize(dense, out var denseOut);
        long compactZip = ZipSize(compact, out var compactOut);
        Assert.Equal(denseOut.Labels, compactOut.Labels);
        double zipDiff = MaxDiff(denseOut.Scores.SelectMany(s => s).ToArray(), compactOut.Scores.SelectMany(s => s).ToArray());
        Assert.True(zipDiff <= 1e-6, $"ML.NET max |Δscore| = {zipDiff:E2}");
        // The unpruned network the pruned one came from: what a user ships without pruning.
        var unpruned = Export(OnnxTestModels.Mlp(5, 300, 100), SparseWeightsMode.Auto);
        long unprunedZip = ZipSize(unpruned, out _);

        double onnxRatio = (double)dense.Length / compact.Length;
        double zipRatio = (double)unprunedZip / compactZip;
        output.WriteLine($"ONNX: unpruned {unpruned.Length:N0} B, pruned stored dense {dense.Length:N0} B, pruned compact {compact.Length:N0} B: {onnxRatio:F2}x smaller");
        output.WriteLine($"ML.NET zip: unpruned {unprunedZip:N0} B, pruned stored dense {denseZip:N0} B ({(double)unprunedZip / denseZip:F2}x, deflate squeezes the zeros), " +
            $"pruned compact {compactZip:N0} B: {zipRatio:F2}x smaller than unpruned, {(double)denseZip / compactZip:F2}x smaller than pruned-dense");
        Assert.Equal(unpruned.Length, dense.Length); // zeros stored densely cost as much as any weight
        Assert.True(onnxRatio >= 5, $"ONNX only {onnxRatio:F2}x smaller ({dense.Length} → {compact.Length} B)");
        Assert.True(zipRatio >= 5, $"zip only {zipRatio:F2}x smaller ({unprunedZip} → {compactZip} B)");
        Assert.True(compactZip < denseZip, $"compact zip {compactZip} B is not smaller than the deflated dense-stored zip {denseZip} B");
    }

    [Theory]
    [InlineData("mlp")]
    [InlineData("lenet5")]
    [InlineData("depthwise")]
    public void ModelWithoutZeros_IsExportedByteIdentically(string architecture)
    {
        var model = architecture switch
        {
            "mlp" => OnnxTestModels.Mlp(7, 300, 100),
            "lenet5" => OnnxTestModels.LeNet5(),
            _ => OnnxTestModels.DepthwiseSeparable(),
        };
        Assert.Equal(model.ParameterCount - model.ParameterizedLayers.Sum(l => l.Bias.Length),
            model.ParameterizedLayers.Sum(l => SparseWeights.CountNonZeros(l.Weight)));
        var before = OnnxExporter.Export(model, new OnnxExportOptions { ClassNames = OnnxTestModels.Digits, SparseWeights = SparseWeightsMode.Never });
        var auto = OnnxExporter.Export(model, new OnnxExportOptions { ClassNames = OnnxTestModels.Digits });
        Assert.Equal(before, auto);
        Assert.All(SparseWeights.Describe(model), i => Assert.Equal(SparseWeightEncoding.Dense, i.Encoding));
        // A model that is only mildly pruned (density above the threshold) stays dense as well.
        foreach (var layer in model.ParameterizedLayers)
            MagnitudePrune(layer, 0.3);
        var mild = model.Clone();
        Assert.Equal(
            OnnxExporter.Export(mild, new OnnxExportOptions { SparseWeights = SparseWeightsMode.Never }),
            OnnxExporter.Export(mild));
    }

    [Fact]
    public void LeNet5At80PercentZeros_ConvAndDenseWeightsEncoded_ScoresMatchDenseAndReference()
    {
        var model = OnnxTestModels.LeNet5(seed: 9);
        foreach (var layer in model.ParameterizedLayers)
            MagnitudePrune(layer, 0.8);
        var dense = Export(model, SparseWeightsMode.Never);
        var compact = Export(model, SparseWeightsMode.Auto);
        var info = SparseWeights.Describe(model);
        Assert.All(info, i => Assert.Equal(SparseWeightEncoding.DeltaUInt8, i.Encoding));

        var features = OnnxTestModels.RandomFeatures(40, 784, seed: 41);
        var scores = RunOrt(compact, features);
        Assert.True(MaxDiff(RunOrt(dense, features), scores) <= 1e-6);
        double refDiff = 0;
        for (int r = 0; r < features.Length; r++)
        {
            var expected = OnnxTestModels.Reference(model, features[r]);
            for (int k = 0; k < 10; k++)
                refDiff = Math.Max(refDiff, Math.Abs(expected[k] - scores[r * 10 + k]));
        }
        Assert.True(refDiff <= 1e-5, $"max |ORT - reference| = {refDiff:E2}");
        double ratio = (double)dense.Length / compact.Length;
        output.WriteLine($"LeNet-5 at 80% zeros: dense {dense.Length:N0} B, compact {compact.Length:N0} B, {ratio:F2}x; deflated {DeflatedSize(dense):N0} → {DeflatedSize(compact):N0} B");
        Assert.True(ratio >= 3, $"only {ratio:F2}x");

        // Always: every tensor (including the small conv1 and the depthwise/pointwise ones) goes through the encoded path.
        var always = Export(model, SparseWeightsMode.Always);
        Assert.True(MaxDiff(RunOrt(dense, features), RunOrt(always, features)) <= 1e-6);
        var dw = OnnxTestModels.DepthwiseSeparable();
        foreach (var layer in dw.ParameterizedLayers)
            MagnitudePrune(layer, 0.8);
        // Tiny tensors (the 144-weight depthwise kernels) are not worth the extra nodes in Auto mode.
        Assert.Equal(SparseWeightEncoding.Dense, SparseWeights.Describe(dw).Single(i => i.Layer == "conv2").Encoding);
        Assert.True(MaxDiff(RunOrt(Export(dw, SparseWeightsMode.Never), features), RunOrt(Export(dw, SparseWeightsMode.Always), features)) <= 1e-6);
    }

    [Fact]
    public void OnnxRuntime_FoldsTheReconstructionAtLoad_SoScoringRunsPlainGemm()
    {
        var model = PrunedLeNet300(Uniform92);
        var path = Path.Combine(Path.GetTempPath(), $"mlnc-sparse-{Guid.NewGuid():N}.onnx");
        try
        {
            using (var options = new SessionOptions { OptimizedModelFilePath = path, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC })
            using (new InferenceSession(Export(model, SparseWeightsMode.Auto), options))
            {
            }
            var optimized = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
            var ops = optimized.Graph.Node.Select(n => n.OpType).ToArray();
            output.WriteLine("optimized graph: " + string.Join(", ", ops));
            Assert.DoesNotContain("ScatterElements", ops);
            Assert.DoesNotContain("CumSum", ops);
            Assert.Equal(3, ops.Count(o => o == "Gemm"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void AllZeroLayer_AndCustomEmitter_AndBadThreshold()
    {
        var model = PrunedLeNet300(Uniform92);
        Array.Clear(((ParameterizedLayer)model.Layers.Single(l => l.Name == "fc2")).Weight);
        var features = OnnxTestModels.RandomFeatures(10, 784, seed: 51);
        foreach (var encoding in new[] { SparseWeightEncoding.DeltaUInt8, SparseWeightEncoding.Bitmask })
            Assert.True(MaxDiff(RunOrt(Export(model, SparseWeightsMode.Never), features), RunOrt(Export(model, SparseWeightsMode.Always, encoding), features)) <= 1e-6);

        // A stage with its own emitter keeps full control over the weight encoding.
        var custom = new OnnxExportOptions { LayerEmitter = new CustomEmitter() };
        Assert.False(OnnxExporter.UsesSparseWeights(custom));
        Assert.DoesNotContain(ModelProto.Parser.ParseFrom(OnnxExporter.Export(model, custom)).Graph.Initializer, t => t.Name.EndsWith(".gaps"));
        Assert.All(SparseWeights.Describe(model, custom), i => Assert.Equal(SparseWeightEncoding.Dense, i.Encoding));

        Assert.Throws<ArgumentOutOfRangeException>(() => OnnxExporter.Export(model, new OnnxExportOptions { SparseDensityThreshold = 1.5 }));
    }

    private sealed class CustomEmitter : OnnxLayerEmitter
    {
    }
}
