using Google.Protobuf;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Distillation;
using MLNet.Compression.Networks;
using MLNet.Compression.Networks.Heads;
using MLNet.Compression.Onnx;
using MLNet.Compression.Onnx.Proto;
using MLNet.Compression.Tests.Onnx;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using MLNet.Compression.Training;

namespace MLNet.Compression.Tests.Networks;

public class OutputHeadTests
{
    [Fact]
    public void NetworksDefaultToTheMulticlassHead_AndCopiesKeepIt()
    {
        var model = NetworkModel.Create(NetworkArchitecture.Mlp(784, 8), 10);
        Assert.Equal(OutputHeadKind.Multiclass, model.HeadKind);
        Assert.IsType<SoftmaxMulticlassHead>(model.Head);
        Assert.Same(OutputHead.Multiclass, model.Head);
        Assert.Equal(OutputHeadKind.Multiclass, model.Clone().HeadKind);
        Assert.Equal(OutputHeadKind.Multiclass, model.WithLayers(model.Layers).HeadKind);
        // The head decides the output layer's units: one per class for softmax.
        Assert.Equal(10, ((DenseModelLayer)model.Layers[^1]).OutFeatures);

        var e = Assert.Throws<ArgumentOutOfRangeException>(() => OutputHead.For((OutputHeadKind)99));
        Assert.Equal("kind", e.ParamName);
        Assert.Contains("Multiclass", e.Message);
        Assert.Same(OutputHead.Multiclass, OutputHead.ForName("multiclass"));
        Assert.Null(OutputHead.ForName("no-such-head"));
    }

    [Fact]
    public void MulticlassLoss_IsMeanCrossEntropy_AndCorrectCountIsArgMaxHits()
    {
        float[] logits = [2f, 0.5f, -1f, /**/ 0.1f, 0.2f, 3f, /**/ -2f, 4f, 0f, /**/ 1f, 1f, 0f];
        long[] labels = [0, 1, 1, 1];
        // Expected by hand: −log softmax(row)[label], averaged; ties (row 4) count the first maximum (ArgMax semantics).
        double expected = 0;
        for (int r = 0; r < 4; r++)
        {
            var row = logits.AsSpan(r * 3, 3).ToArray();
            double max = row.Max();
            double logSum = Math.Log(row.Sum(v => Math.Exp(v - max))) + max;
            expected += logSum - row[labels[r]];
        }
        expected /= 4;

        using var scope = NewDisposeScope();
        var x = tensor(logits, [4, 3]);
        var y = tensor(labels, [4]);
        var head = OutputHead.Multiclass;
        Assert.Equal(expected, head.Loss(x, y).item<float>(), 5);
        // Row 1 argmax 0 = label 0 (hit); row 2 argmax 2 ≠ 1; row 3 argmax 1 = 1 (hit); row 4 tie → 0 ≠ 1.
        Assert.Equal(2L, head.CorrectCount(x, y).item<long>());
    }

    [Theory]
    [InlineData(TeacherScoreKind.Logits, 4.0, 0.7)]
    [InlineData(TeacherScoreKind.Probabilities, 2.0, 1.0)]
    [InlineData(TeacherScoreKind.Auto, 1.0, 0.0)]
    public void MulticlassDistillationLoss_IsHintonsLoss(TeacherScoreKind kind, double t, double alpha)
    {
        float[] student = [1f, -0.5f, 0.2f, 0.3f, 2f, -1f];
        float[] teacherLogits = [3f, 0f, -1f, 0f, 1f, 0.5f];
        long[] labels = [0, 1];
        var teacher = kind == TeacherScoreKind.Logits ? teacherLogits : Softmax(teacherLogits, 2, 3, 1.0);
        // By hand: alpha·T²·KL(softmax(teacherLogits/T) ‖ softmax(student/T)) + (1 − alpha)·CE(student, labels).
        var pt = Softmax(teacherLogits, 2, 3, t);
        var ps = Softmax(student, 2, 3, t);
        var p1 = Softmax(student, 2, 3, 1.0);
        double kl = 0, ce = 0;
        for (int r = 0; r < 2; r++)
        {
            for (int k = 0; k < 3; k++)
                kl += pt[r * 3 + k] * Math.Log(pt[r * 3 + k] / ps[r * 3 + k]);
            ce -= Math.Log(p1[r * 3 + labels[r]]);
        }
        double expected = alpha * t * t * kl / 2 + (1 - alpha) * ce / 2;

        using var scope = NewDisposeScope();
        var loss = OutputHead.Multiclass.DistillationLoss(tensor(student, [2, 3]), tensor(teacher, [2, 3]), tensor(labels, [2]), t, alpha, kind);
        Assert.Equal(expected, loss.item<float>(), 4);
        // The static entry point used before heads existed is the multiclass head's loss.
        var legacy = DistillationLoss.Compute(tensor(student, [2, 3]), tensor(teacher, [2, 3]), tensor(labels, [2]), t, alpha, kind);
        Assert.Equal(loss.item<float>(), legacy.item<float>());
    }

    [Fact]
    public void MulticlassExport_EndsWithSoftmaxAndArgMax_AndWritesNoHeadMetadata()
    {
        var model = OnnxTestModels.Mlp();
        var proto = ModelProto.Parser.ParseFrom(OnnxExporter.Export(model, new OnnxExportOptions { ScoreName = "P", LabelIndexName = "I" }));
        var nodes = proto.Graph.Node;
        // Softmax into P, ArgMax of P, and the missing class -1 for a row whose scores are NaN: Where(IsNaN(Σ P), −1, ArgMax) into I.
        Assert.Equal("Softmax", nodes[^7].OpType);
        Assert.Equal(["P"], nodes[^7].Output);
        Assert.Equal(1L, nodes[^7].Attribute.Single(a => a.Name == "axis").I);
        Assert.Equal("ArgMax", nodes[^6].OpType);
        Assert.Equal(["P"], nodes[^6].Input);
        Assert.Equal(0L, nodes[^6].Attribute.Single(a => a.Name == "keepdims").I);
        Assert.Equal(["Einsum", "IsNaN", "Cast", "Neg", "Where"], nodes.TakeLast(5).Select(n => n.OpType));
        Assert.Equal(["I"], nodes[^1].Output);
        Assert.Equal(nodes[^6].Output[0], nodes[^1].Input[2]);
        Assert.Equal(["P", "I"], proto.Graph.Output.Select(o => o.Name));
        Assert.Equal(10L, proto.Graph.Output[0].Type.TensorType.Shape.Dim[1].DimValue);
        Assert.DoesNotContain(proto.MetadataProps, p => p.Key == OutputHead.MetadataKey);
        Assert.Equal(OutputHeadKind.Multiclass, OnnxExporter.ReadSignature(proto.ToByteArray()).Head);
    }

    [Fact]
    public void ReadSignature_RejectsAnUnknownHead_NamingIt()
    {
        var proto = ModelProto.Parser.ParseFrom(OnnxExporter.Export(OnnxTestModels.Mlp()));
        proto.MetadataProps.Add(new StringStringEntryProto { Key = OutputHead.MetadataKey, Value = "ordinal" });
        var e = Assert.Throws<ArgumentException>(() => OnnxExporter.ReadSignature(proto.ToByteArray()));
        Assert.Equal("onnx", e.ParamName);
        Assert.Contains("'ordinal'", e.Message);
        Assert.Contains(OutputHead.MetadataKey, e.Message);
    }

    [Fact]
    public void BatchedView_AddsTheHeadsColumns_AndNamesTheTypeToReadThemAs()
    {
        var ml = new MLContext(1);
        var onnx = OnnxExporter.Export(OnnxTestModels.Mlp());
        var data = OnnxTestModels.Data(ml, 5, seed: 3);
        using var scorer = new BatchedOnnxScorer(onnx);
        Assert.Equal(10, scorer.OutputWidth);
        var view = new BatchedScoringDataView(data, scorer, "Features", OnnxTestModels.Digits);
        var expected = OutputHead.Multiclass.ScoredColumns(scorer.Signature, OnnxTestModels.Digits);
        var added = view.Schema.Skip(data.Schema.Count).ToArray();
        Assert.Equal(expected.Select(c => (c.Name, c.Type)), added.Select(c => (c.Name, c.Type)));
        Assert.Equal(["Score", "PredictedLabel"], added.Select(c => c.Name));

        using var cursor = view.GetRowCursor(view.Schema);
        var e = Assert.Throws<InvalidOperationException>(() => cursor.GetGetter<float>(view.Schema["Score"]));
        Assert.Contains("VBuffer<Single>", e.Message);
        var score = cursor.GetGetter<VBuffer<float>>(view.Schema["Score"]);
        var label = cursor.GetGetter<uint>(view.Schema["PredictedLabel"]);
        VBuffer<float> s = default;
        uint k = 0;
        int rows = 0;
        while (cursor.MoveNext())
        {
            score(ref s);
            label(ref k);
            var values = s.DenseValues().ToArray();
            Assert.Equal(1.0, values.Sum(), 4);
            Assert.Equal(Array.IndexOf(values, values.Max()) + 1, (int)k);
            rows++;
        }
        Assert.Equal(5, rows);
    }

    private sealed class TextRow
    {
        public string Name { get; set; } = "";

        [VectorType(2)]
        public float[] Features { get; set; } = [];
    }

    [Fact]
    public void MulticlassLabelReader_GivesZeroBasedClassIndices_AndSkipsMissingLabels()
    {
        var ml = new MLContext(1);
        // "?" is not among the key values, so MapValueToKey gives it key 0 (missing): the row is skipped.
        var rows = ml.Data.LoadFromEnumerable(new[] { "b", "?", "c", "a" }.Select((n, i) => new TextRow { Name = n, Features = [i, -i] }));
        var keys = ml.Data.LoadFromEnumerable(new[] { "a", "b", "c" }.Select(n => new TextRow { Name = n, Features = [0, 0] }));
        var data = ml.Transforms.Conversion.MapValueToKey("Label", "Name", keyData: ml.Transforms.SelectColumns("Name").Fit(keys).Transform(keys))
            .Fit(rows).Transform(rows);
        var stream = new BatchStream(data, "Label", "Features", 2, head: OutputHead.Multiclass);
        Assert.Equal(3, stream.ClassCount);
        var batch = stream.Read(8, null, null).Single();
        Assert.Equal(3, batch.Count);
        Assert.Equal([1L, 2L, 0L], batch.Labels.Take(3));
        Assert.Equal([0f, 0f, 2f, -2f, 3f, -3f], batch.Features.Take(6));
    }

    private static float[] Softmax(float[] values, int rows, int cols, double t)
    {
        var result = new float[values.Length];
        for (int r = 0; r < rows; r++)
        {
            var row = values.AsSpan(r * cols, cols).ToArray().Select(v => v / t).ToArray();
            double max = row.Max();
            double sum = row.Sum(v => Math.Exp(v - max));
            for (int k = 0; k < cols; k++)
                result[r * cols + k] = (float)(Math.Exp(row[k] - max) / sum);
        }
        return result;
    }
}
