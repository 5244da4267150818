using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Compression.Networks;
using MLNet.Compression.Onnx;
using MLNet.Compression.Onnx.Proto;
using Xunit;

namespace MLNet.Compression.Tests.Onnx;

public class OnnxExporterTests
{
    public static TheoryData<string> Architectures => new() { "mlp", "lenet5", "depthwise", "linear" };

    private static NetworkModel Model(string name) => name switch
    {
        "mlp" => OnnxTestModels.Mlp(),
        "lenet5" => OnnxTestModels.LeNet5(),
        "depthwise" => OnnxTestModels.DepthwiseSeparable(),
        "linear" => OnnxTestModels.Fill(NetworkModel.Create(NetworkArchitecture.Mlp(784), 10), 4),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Architectures))]
    public void OnnxRuntimeOutput_MatchesNaiveReferenceForwardPass(string architecture)
    {
        var model = Model(architecture);
        var bytes = OnnxExporter.Export(model, new OnnxExportOptions { ClassNames = OnnxTestModels.Digits });
        const int rows = 7;
        var features = OnnxTestModels.RandomFeatures(rows, model.InputLength, seed: 11);

        using var session = new InferenceSession(bytes);
        var input = new DenseTensor<float>(features.SelectMany(f => f).ToArray(), [rows, model.InputLength]);
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("Features", input)]);
        var score = results.Single(r => r.Name == "Score").AsTensor<float>();
        var label = results.Single(r => r.Name == "PredictedLabelIndex").AsTensor<long>();
        Assert.Equal([rows, 10], score.Dimensions.ToArray());
        Assert.Equal([rows], label.Dimensions.ToArray());

        double maxDiff = 0;
        for (int r = 0; r < rows; r++)
        {
            var expected = OnnxTestModels.Reference(model, features[r]);
            for (int k = 0; k < 10; k++)
                maxDiff = Math.Max(maxDiff, Math.Abs(expected[k] - score[r, k]));
            int argMax = Enumerable.Range(0, 10).MaxBy(k => score[r, k]);
            Assert.Equal(argMax, label[r]);
        }
        Assert.True(maxDiff <= 1e-5, $"{architecture}: max |ORT - reference| = {maxDiff:E2}");
        // The weights are random, so the probabilities are not degenerate (a wrong layout would not pass by chance).
        Assert.True(Enumerable.Range(0, rows).Select(r => label[r]).Distinct().Count() > 1 || rows < 3);
    }

    [Fact]
    public void Export_WritesHeaderMetadataAndRawLittleEndianInitializers()
    {
        var model = OnnxTestModels.LeNet5();
        var bytes = OnnxExporter.Export(model, new OnnxExportOptions { ClassNames = OnnxTestModels.Digits });
        var proto = ModelProto.Parser.ParseFrom(bytes);

        Assert.Equal(8, proto.IrVersion);
        Assert.Equal("MLNet.Compression", proto.ProducerName);
        Assert.Equal(17, Assert.Single(proto.OpsetImport).Version);
        var meta = proto.MetadataProps.ToDictionary(p => p.Key, p => p.Value);
        Assert.Equal("LeNet-5", meta[OnnxExporter.ArchitectureKey]);
        Assert.Equal("[\"0\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]", meta[OnnxExporter.ClassNamesKey]);
        Assert.Equal("[1,28,28]", meta[OnnxExporter.InputShapeKey]);

        var input = Assert.Single(proto.Graph.Input);
        Assert.Equal("Features", input.Name);
        Assert.Equal("N", input.Type.TensorType.Shape.Dim[0].DimParam);
        Assert.Equal(784, input.Type.TensorType.Shape.Dim[1].DimValue);
        Assert.Equal(["Score", "PredictedLabelIndex"], proto.Graph.Output.Select(o => o.Name));
        // The head: the non-finite probe (outputs + mean of (features − features) per row, ReduceMean with keepdims, broadcast), Softmax, and the NaN-aware ArgMax (-1 where a score is NaN).
        Assert.Equal(["Reshape", "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm",
                "Sub", "ReduceMean", "Add", "Softmax", "ArgMax", "Einsum", "IsNaN", "Cast", "Neg", "Where"],
            proto.Graph.Node.Select(n => n.OpType));

        var conv1 = model.ParameterizedLayers.First();
        var w = proto.Graph.Initializer.Single(t => t.Name == "conv1.weight");
        Assert.Equal((int)TensorProto.Types.DataType.Float, w.DataType);
        Assert.Equal([20L, 1, 5, 5], w.Dims);
        Assert.Empty(w.FloatData);
        Assert.Equal(conv1.Weight.Length * 4, w.RawData.Length);
        Assert.Equal(conv1.Weight[123], OnnxGraphBuilder.ReadFloat(w.RawData.Span, 123));

        // proto2: zero-valued attributes are written explicitly (keepdims = 0).
        var argMax = proto.Graph.Node.Single(n => n.OpType == "ArgMax");
        Assert.True(argMax.Attribute.Single(a => a.Name == "keepdims").HasI);
    }

    [Fact]
    public void Export_HonoursNamesAndOpset()
    {
        var model = OnnxTestModels.Mlp();
        var bytes = OnnxExporter.Export(model, new OnnxExportOptions { InputName = "Pixels", ScoreName = "Probabilities", LabelIndexName = "Index", Opset = 13 });
        var sig = OnnxExporter.ReadSignature(bytes);
        Assert.Equal(new OnnxModelSignature("Pixels", 784, "Probabilities", "Index", 10), sig);
        Assert.Equal(7, ModelProto.Parser.ParseFrom(bytes).IrVersion);
        using var session = new InferenceSession(bytes);
        Assert.Equal(["Probabilities", "Index"], session.OutputMetadata.Keys);

        Assert.Throws<ArgumentOutOfRangeException>(() => OnnxExporter.Export(model, new OnnxExportOptions { Opset = 12 }));
        Assert.Throws<ArgumentException>(() => OnnxExporter.Export(model, new OnnxExportOptions { ClassNames = ["a", "b"] }));
        Assert.Throws<ArgumentException>(() => OnnxExporter.Export(model, new OnnxExportOptions { ScoreName = "Features" }));
    }

    private sealed class ScaledWeightEmitter : OnnxLayerEmitter
    {
        // A stand-in for a compressed encoding: store W/2 and multiply back with a Mul node.
        public override string EmitWeight(OnnxGraphBuilder graph, ParameterizedLayer layer)
        {
            var half = graph.AddFloatInitializer(layer.Name + ".weight_half", layer.Weight.Select(v => v / 2).ToArray(), layer.WeightShape);
            var two = graph.AddFloatInitializer(layer.Name + ".two", [2f], []);
            return graph.AddNode("Mul", [half, two], layer.Name + ".weight");
        }
    }

    [Fact]
    public void LayerEmitter_CanReplaceTheWeightEncoding()
    {
        var model = OnnxTestModels.Mlp();
        var plain = OnnxExporter.Export(model);
        var custom = OnnxExporter.Export(model, new OnnxExportOptions { LayerEmitter = new ScaledWeightEmitter() });
        Assert.Contains(ModelProto.Parser.ParseFrom(custom).Graph.Node, n => n.OpType == "Mul");
        var features = OnnxTestModels.RandomFeatures(4, 784, 5).SelectMany(f => f).ToArray();
        using var a = new BatchedOnnxScorer(plain);
        using var b = new BatchedOnnxScorer(custom);
        var pa = new float[40];
        var pb = new float[40];
        a.Score(features, 4, pa);
        b.Score(features, 4, pb);
        for (int i = 0; i < 40; i++)
            Assert.Equal(pa[i], pb[i], 1e-6f);
    }
}
