using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Compression.Networks;
using MLNet.Compression.Onnx;
using MLNet.Compression.Onnx.Proto;
using MLNet.Compression.Quantization;
using MLNet.Compression.Tests.Onnx;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Quantization;

/// <summary>Encodings compose: pruned weights that are then quantized keep a sparse storage (int8 or int4 values plus uint8 gaps).</summary>
public class SparseQuantizedExportTests(ITestOutputHelper output)
{
    private static readonly Dictionary<string, double> Ninety = new() { ["fc1"] = 0.9, ["fc2"] = 0.9, ["output"] = 0.9 };

    private static QuantizationSpec Spec(NetworkModel model, QuantizationMode mode) =>
        new(mode, InputRanges: mode == QuantizationMode.Int8Static
            ? QuantizedExportTests.CalibrateMinMax(model, OnnxTestModels.RandomFeatures(200, model.InputLength, seed: 77))
            : null);

    private static byte[] Export(NetworkModel model, QuantizationSpec spec, SparseWeightsMode sparse) =>
        OnnxExporter.Export(model, QuantizedExport.Options(model, spec, new OnnxExportOptions { ClassNames = OnnxTestModels.Digits, SparseWeights = sparse }));

    private static float[] RunOrt(byte[] onnx, float[][] features)
    {
        using var session = new InferenceSession(onnx);
        var input = new DenseTensor<float>(features.SelectMany(f => f).ToArray(), [features.Length, features[0].Length]);
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("Features", input)]);
        return results.Single(r => r.Name == "Score").AsTensor<float>().ToArray();
    }

    [Theory]
    [InlineData(QuantizationMode.Int8Static)]
    [InlineData(QuantizationMode.Int8Dynamic)]
    [InlineData(QuantizationMode.Int4WeightOnly)]
    public void PrunedThenQuantized_IsSmallerThanEitherAlone_ScoresLikeDenseQuantized_AndOnnxRuntimeStillFuses(QuantizationMode mode)
    {
        var model = SparseWeightsTests.PrunedLeNet300(Ninety);
        var spec = Spec(model, mode);
        var prunedFloat = OnnxExporter.Export(model, new OnnxExportOptions { ClassNames = OnnxTestModels.Digits });
        var denseQuantized = Export(model, spec, SparseWeightsMode.Never);
        var sparseQuantized = Export(model, spec, SparseWeightsMode.Auto);
        output.WriteLine($"90 %-pruned LeNet-300-100: float32 sparse {prunedFloat.Length:N0} B, {mode} dense {denseQuantized.Length:N0} B, " +
            $"{mode} sparse {sparseQuantized.Length:N0} B");
        Assert.True(sparseQuantized.Length < prunedFloat.Length, $"{sparseQuantized.Length} B is not smaller than pruned float32 {prunedFloat.Length} B");
        Assert.True(sparseQuantized.Length < denseQuantized.Length, $"{sparseQuantized.Length} B is not smaller than dense {mode} {denseQuantized.Length} B");

        // The rebuilt integer tensors are the dense ones: identical scores.
        var rows = OnnxTestModels.RandomFeatures(300, 784, seed: 78);
        Assert.Equal(RunOrt(denseQuantized, rows), RunOrt(sparseQuantized, rows));

        // Describe counts the sparse storage.
        var described = QuantizedExport.Describe(model, spec).Layers;
        Assert.All(described, l => Assert.True(l.WeightBytes < l.ResidentWeightBytes, $"{l.Name}: stored {l.WeightBytes} B, resident {l.ResidentWeightBytes} B"));

        // ONNX Runtime folds the rebuild at load and fuses the integer kernels as for dense tensors.
        var path = Path.Combine(Path.GetTempPath(), $"mlnc-sparseq-{Guid.NewGuid():N}.onnx");
        try
        {
            using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = path })
            using (new InferenceSession(sparseQuantized, options))
            {
            }
            var ops = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)).Graph.Node.Select(n => n.OpType).ToArray();
            output.WriteLine("optimized graph: " + string.Join(", ", ops));
            Assert.DoesNotContain("ScatterElements", ops);
            Assert.DoesNotContain("CumSum", ops);
            int Count(string op) => ops.Count(o => o == op);
            switch (mode)
            {
                case QuantizationMode.Int8Static:
                    Assert.Equal(3, Count("QGemm"));
                    Assert.Equal(0, Count("DequantizeLinear"));
                    break;
                case QuantizationMode.Int8Dynamic:
                    Assert.Equal(3, Count("MatMulInteger") + Count("MatMulIntegerToFloat"));
                    break;
                case QuantizationMode.Int4WeightOnly:
                    Assert.Equal(3, Count("MatMulNBits"));
                    break;
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData(QuantizationMode.Int8Static)]
    [InlineData(QuantizationMode.Int4WeightOnly)]
    public void SparseQuantizedZip_SavedAndLoaded_PredictsLikeInProcess(QuantizationMode mode)
    {
        var model = SparseWeightsTests.PrunedLeNet300(Ninety);
        var onnx = Export(model, Spec(model, mode), SparseWeightsMode.Auto);
        Assert.Contains(ModelProto.Parser.ParseFrom(onnx).Graph.Node, n => n.OpType == "ScatterElements");
        var ml = new MLContext(seed: 1);
        var data = OnnxTestModels.Data(ml, 200, seed: 31);
        var chain = OnnxScoringChain.Build(ml, onnx, data.Schema, "Features", OnnxTestModels.Digits);
        using var ms = new MemoryStream();
        ml.Model.Save(chain, data.Schema, ms);
        ms.Position = 0;
        var loaded = ml.Model.Load(ms, out _);
        var direct = OnnxTestModels.ReadOutputs(chain.Transform(data));
        var reloaded = OnnxTestModels.ReadOutputs(loaded.Transform(data));
        Assert.Equal(direct.Labels, reloaded.Labels);
        Assert.Equal(direct.Scores, reloaded.Scores);
        Assert.True(direct.Labels.Distinct().Count() > 1);
    }

    [Fact]
    public void ModelWithoutZeros_QuantizesByteIdenticallyWithOrWithoutSparseStorage()
    {
        var model = OnnxTestModels.Mlp(5, 300, 100);
        foreach (var mode in new[] { QuantizationMode.Int8Static, QuantizationMode.Int8Dynamic, QuantizationMode.Int4WeightOnly })
        {
            var spec = Spec(model, mode);
            Assert.Equal(Export(model, spec, SparseWeightsMode.Never), Export(model, spec, SparseWeightsMode.Auto));
        }
    }
}
