using System.Diagnostics;
using Google.Protobuf;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Onnx;
using MLNet.Compression.Onnx.Proto;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Onnx;

public class OnnxScoringChainTests(ITestOutputHelper output)
{
    private static readonly string[] Digits = OnnxTestModels.Digits;

    [Fact]
    public void Chain_ProducesScoreVectorAndScalarKeyPredictedLabelWithLabelKeyValues()
    {
        var ml = new MLContext(seed: 1);
        var data = OnnxTestModels.Data(ml, 20, seed: 1);
        var onnx = OnnxExporter.Export(OnnxTestModels.Mlp());
        var scored = OnnxScoringChain.Build(ml, onnx, data.Schema, "Features", Digits).Transform(data);

        var score = scored.Schema["Score"];
        var label = scored.Schema["PredictedLabel"];
        Assert.Equal(new VectorDataViewType(NumberDataViewType.Single, 10), score.Type);
        Assert.Equal(new KeyDataViewType(typeof(uint), 10), label.Type);
        VBuffer<ReadOnlyMemory<char>> keyValues = default, labelKeyValues = default;
        label.GetKeyValues(ref keyValues);
        scored.Schema["Label"].GetKeyValues(ref labelKeyValues);
        Assert.Equal(labelKeyValues.DenseValues().Select(v => v.ToString()), keyValues.DenseValues().Select(v => v.ToString()));
        // Temporary columns are gone (also the hidden ones).
        Assert.DoesNotContain(scored.Schema, c => c.Name.StartsWith("__mlnc_", StringComparison.Ordinal) || c.Name == "PredictedLabelIndex");

        var (scores, labels) = OnnxTestModels.ReadOutputs(scored);
        var features = data.GetColumn<float[]>("Features").ToArray();
        var model = OnnxTestModels.Mlp();
        for (int r = 0; r < scores.Length; r++)
        {
            Assert.Equal(1f, scores[r].Sum(), 1e-5f);
            var reference = OnnxTestModels.Reference(model, features[r]);
            Assert.Equal(Array.IndexOf(reference, reference.Max()) + 1, (int)labels[r]);
        }
        var metrics = ml.MulticlassClassification.Evaluate(scored);
        Assert.InRange(metrics.MicroAccuracy, 0, 1);
    }

    [Theory]
    [InlineData("mlp", 300, 128)]
    [InlineData("lenet5", 150, 64)]
    [InlineData("depthwise", 70, 1024)]
    public void BatchedDataView_MatchesTheMlNetChain(string architecture, int rows, int blockSize)
    {
        var ml = new MLContext(seed: 1);
        var data = OnnxTestModels.Data(ml, rows, seed: 2);
        var model = architecture switch { "mlp" => OnnxTestModels.Mlp(), "lenet5" => OnnxTestModels.LeNet5(), _ => OnnxTestModels.DepthwiseSeparable() };
        var onnx = OnnxExporter.Export(model);

        var chainOut = OnnxScoringChain.Build(ml, onnx, data.Schema, "Features", Digits).Transform(data);
        using var scorer = new BatchedOnnxScorer(onnx);
        var batched = new BatchedScoringDataView(data, scorer, "Features", Digits, blockSize);

        AssertSameVisibleSchema(chainOut.Schema, batched.Schema);
        var (s1, l1) = OnnxTestModels.ReadOutputs(chainOut);
        var (s2, l2) = OnnxTestModels.ReadOutputs(batched);
        Assert.Equal(rows, s2.Length);
        Assert.Equal(l1, l2);
        int bitwiseEqual = 0;
        double maxDiff = 0;
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < 10; k++)
            {
                if (BitConverter.SingleToInt32Bits(s1[r][k]) == BitConverter.SingleToInt32Bits(s2[r][k]))
                    bitwiseEqual++;
                maxDiff = Math.Max(maxDiff, Math.Abs(s1[r][k] - s2[r][k]));
            }
        output.WriteLine($"{architecture}: {bitwiseEqual}/{rows * 10} scores bitwise equal, max |diff| = {maxDiff:E2}");
        Assert.True(maxDiff <= 1e-6, $"max |chain - batched| = {maxDiff:E2}");

        // Pass-through columns are the source's.
        Assert.Equal(data.GetColumn<uint>("Label"), batched.GetColumn<uint>("Label"));
        Assert.Equal(chainOut.GetColumn<uint>("Label"), batched.GetColumn<uint>("Label"));
    }

    [Fact]
    public void BatchedDataView_ComputesNothingUnlessAsked_AndServesSparseReads()
    {
        var ml = new MLContext(seed: 1);
        var data = OnnxTestModels.Data(ml, 100, seed: 3);
        var onnx = OnnxExporter.Export(OnnxTestModels.Mlp());
        using var scorer = new BatchedOnnxScorer(onnx);
        var view = new BatchedScoringDataView(data, scorer, "Features", Digits, blockSize: 16);

        Assert.Equal(100, view.GetColumn<uint>("Label").Count());
        Assert.Equal(0, scorer.RowsScored);
        Assert.False(view.CanShuffle);
        Assert.Equal(100, view.GetRowCount());

        var all = view.GetColumn<uint>("PredictedLabel").ToArray();
        Assert.Equal(100, scorer.RowsScored);

        // Reading the label on every 7th row only gives the same values and skips the blocks in between.
        var col = view.Schema["PredictedLabel"];
        using var cursor = view.GetRowCursor([col]);
        var getter = cursor.GetGetter<uint>(col);
        uint v = 0;
        while (cursor.MoveNext())
            if (cursor.Position % 7 == 0)
            {
                getter(ref v);
                Assert.Equal(all[cursor.Position], v);
            }
        Assert.True(scorer.RowsScored < 200);
        Assert.Throws<InvalidOperationException>(() => cursor.GetGetter<float>(view.Schema["Score"]));
    }

    [Fact]
    public void SavedAndLoadedChain_GivesIdenticalOutputs_AndEvaluates_AndWorksInPredictionEngine()
    {
        var ml = new MLContext(seed: 1);
        var data = OnnxTestModels.Data(ml, 200, seed: 4);
        var onnx = OnnxExporter.Export(OnnxTestModels.LeNet5());
        var chain = OnnxScoringChain.Build(ml, onnx, data.Schema, "Features", Digits);
        var path = Path.Combine(Path.GetTempPath(), $"mlnc-onnx-chain-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(chain, data.Schema, path);
            var ml2 = new MLContext(seed: 2);
            var loaded = ml2.Model.Load(path, out var loadedSchema);
            Assert.NotNull(loadedSchema.GetColumnOrNull("Features"));

            var before = chain.Transform(data);
            var after = loaded.Transform(data);
            AssertSameVisibleSchema(before.Schema, after.Schema);
            var (s1, l1) = OnnxTestModels.ReadOutputs(before);
            var (s2, l2) = OnnxTestModels.ReadOutputs(after);
            Assert.Equal(l1, l2);
            for (int r = 0; r < s1.Length; r++)
                Assert.Equal(s1[r], s2[r]); // same model, same session settings, one row per call: bitwise equal

            var m1 = ml.MulticlassClassification.Evaluate(before);
            var m2 = ml2.MulticlassClassification.Evaluate(after);
            using var scorer = new BatchedOnnxScorer(onnx);
            var m3 = ml.MulticlassClassification.Evaluate(new BatchedScoringDataView(data, scorer, "Features", Digits));
            Assert.Equal(m1.MicroAccuracy, m2.MicroAccuracy);
            Assert.Equal(m1.MicroAccuracy, m3.MicroAccuracy);
            Assert.Equal(m1.LogLoss, m2.LogLoss);
            Assert.Equal(m1.LogLoss, m3.LogLoss, 1e-6);
            Assert.Equal(10, m1.ConfusionMatrix.NumberOfClasses);
            var expectedAccuracy = l1.Zip(data.GetColumn<uint>("Label")).Average(p => p.First == p.Second ? 1.0 : 0.0);
            Assert.Equal(expectedAccuracy, m1.MicroAccuracy, 1e-12);

            // A consumer's PredictionEngine with uint PredictedLabel over the loaded zip.
            var engine = ml2.Model.CreatePredictionEngine<FeaturesInput, Prediction>(loaded);
            var features = data.GetColumn<float[]>("Features").Take(5).ToArray();
            for (int r = 0; r < features.Length; r++)
            {
                var p = engine.Predict(new FeaturesInput { Features = features[r] });
                Assert.Equal(l1[r], p.PredictedLabel);
                Assert.Equal(s1[r], p.Score);
            }
            // The key maps back to the class name.
            VBuffer<ReadOnlyMemory<char>> names = default;
            engine.OutputSchema["PredictedLabel"].GetKeyValues(ref names);
            Assert.Equal(Digits, names.DenseValues().Select(n => n.ToString()));
        }
        finally
        {
            File.Delete(path);
        }
    }

    public sealed class FeaturesInput
    {
        [VectorType(784)]
        public float[] Features { get; set; } = [];
    }

    public sealed class Prediction
    {
        public uint PredictedLabel { get; set; }

        public float[] Score { get; set; } = [];
    }

    public sealed class Wrong100
    {
        [VectorType(100)]
        public float[] Features { get; set; } = [];
    }

    public sealed class WrongDouble
    {
        [VectorType(784)]
        public double[] Features { get; set; } = [];
    }

    public sealed class NoFeatures
    {
        public float Pixels { get; set; }
    }

    [Fact]
    public void BadFeatureColumn_GivesAClearError()
    {
        var ml = new MLContext(seed: 1);
        var onnx = OnnxExporter.Export(OnnxTestModels.Mlp());
        using var scorer = new BatchedOnnxScorer(onnx);
        var wrongSize = ml.Data.LoadFromEnumerable([new Wrong100 { Features = new float[100] }]);
        var wrongType = ml.Data.LoadFromEnumerable([new WrongDouble { Features = new double[784] }]);
        var missing = ml.Data.LoadFromEnumerable([new NoFeatures()]);

        foreach (var (view, type) in new[] { (wrongSize, "Vector<Single, 100>"), (wrongType, "Vector<Double, 784>") })
        {
            var e1 = Assert.Throws<ArgumentException>(() => new BatchedScoringDataView(view, scorer, "Features", Digits));
            var e2 = Assert.Throws<ArgumentException>(() => OnnxScoringChain.Build(ml, onnx, view.Schema, "Features", Digits));
            foreach (var e in new[] { e1, e2 })
            {
                Assert.Contains("'Features'", e.Message);
                Assert.Contains(type, e.Message);
                Assert.Contains("Vector<Single, 784>", e.Message);
            }
        }
        var e3 = Assert.Throws<ArgumentException>(() => new BatchedScoringDataView(missing, scorer, "Features", Digits));
        Assert.Contains("no column named 'Features'", e3.Message);
        Assert.Contains("'Pixels'", e3.Message);
        Assert.Throws<ArgumentException>(() => OnnxScoringChain.Build(ml, onnx, missing.Schema, "Features", Digits));
        Assert.Throws<ArgumentException>(() => new BatchedScoringDataView(wrongSize, scorer, "Features", ["a", "b"]));
    }

    [Fact]
    public void FeatureColumnWithAnotherName_IsCopiedToTheOnnxInput()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Transforms.CopyColumns("Pixels", "Features").Fit(OnnxTestModels.Data(ml, 30, 5)).Transform(OnnxTestModels.Data(ml, 30, 5));
        data = ml.Transforms.DropColumns("Features").Fit(data).Transform(data);
        var onnx = OnnxExporter.Export(OnnxTestModels.Mlp());
        var chainOut = OnnxScoringChain.Build(ml, onnx, data.Schema, "Pixels", Digits).Transform(data);
        Assert.Null(chainOut.Schema.GetColumnOrNull("Features"));
        using var scorer = new BatchedOnnxScorer(onnx);
        var batched = new BatchedScoringDataView(data, scorer, "Pixels", Digits);
        Assert.Equal(OnnxTestModels.ReadOutputs(chainOut).Labels, OnnxTestModels.ReadOutputs(batched).Labels);
    }

    [Fact]
    public void Scorer_RejectsShortBuffers_AndFallsBackWhenCudaIsMissing()
    {
        var onnx = OnnxExporter.Export(OnnxTestModels.Mlp());
        using var scorer = new BatchedOnnxScorer(onnx);
        Assert.Equal(784, scorer.InputLength);
        Assert.Equal(10, scorer.ClassCount);
        Assert.Throws<ArgumentException>(() => scorer.Score(new float[783], 1, new float[10]));
        Assert.Throws<ArgumentException>(() => scorer.Score(new float[784], 1, new float[9]));

        // The CPU-only ONNX Runtime package has no CUDA provider: with fallback we score on the CPU, without it we throw.
        using var fallback = new BatchedOnnxScorer(onnx, gpuDeviceId: 0, fallbackToCpu: true);
        var p1 = new float[10];
        var p2 = new float[10];
        var x = OnnxTestModels.RandomFeatures(1, 784, 9)[0];
        fallback.Score(x, 1, p1);
        scorer.Score(x, 1, p2);
        Assert.Equal(p2, p1);
        if (!fallback.UsesGpu)
        {
            Assert.NotNull(fallback.FallbackReason);
            var e = Assert.Throws<InvalidOperationException>(() => new BatchedOnnxScorer(onnx, gpuDeviceId: 0, fallbackToCpu: false));
            Assert.Contains("CUDA", e.Message);
        }
    }

    public sealed class X4
    {
        [VectorType(4)]
        public float[] X { get; set; } = [];
    }

    /// <summary>
    /// Evidence for the PredictedLabel design: in ML.NET 5.0 an ONNX output of shape [N] becomes vector&lt;T, 1&gt;, and a
    /// rank-0 output gets a scalar column type that cannot be read (the getter casts the ONNX Runtime tensor to T).
    /// If this test starts failing because rank-0 reads succeed, OnnxScoringChain can drop its Hash-based conversion.
    /// </summary>
    [Fact]
    public void RankZeroOnnxOutput_IsNotReadableThroughOnnxTransformer()
    {
        var g = new OnnxGraphBuilder("rank0");
        g.AddInput("X", TensorProto.Types.DataType.Float, [null, 4]);
        var index = g.AddNode("ArgMax", ["X"], "IndexN", new Dictionary<string, object> { ["axis"] = 1L, ["keepdims"] = 0L });
        var empty = g.AddInt64Initializer("scalar_shape", [], [0]);
        g.AddNode("Reshape", [index, empty], "Index0");
        g.AddNode("Cast", ["Index0"], "Text0", new Dictionary<string, object> { ["to"] = (long)TensorProto.Types.DataType.String });
        g.AddNode("Cast", ["Index0"], "Float0", new Dictionary<string, object> { ["to"] = (long)TensorProto.Types.DataType.Float });
        g.AddOutput("IndexN", TensorProto.Types.DataType.Int64, [null]);
        g.AddOutput("Index0", TensorProto.Types.DataType.Int64, []);
        g.AddOutput("Text0", TensorProto.Types.DataType.String, []);
        g.AddOutput("Float0", TensorProto.Types.DataType.Float, []);
        var model = new ModelProto { IrVersion = 8, ProducerName = "test", Graph = g.Graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });

        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable([new X4 { X = [0f, 3f, 1f, 2f] }, new X4 { X = [5f, 3f, 1f, 2f] }]);
        var scored = ml.Transforms.ApplyOnnxModel(["IndexN", "Index0", "Text0", "Float0"], ["X"], new MemoryStream(model.ToByteArray()))
            .Fit(data).Transform(data);

        Assert.Equal(new VectorDataViewType(NumberDataViewType.Int64, 1), scored.Schema["IndexN"].Type);
        Assert.Equal([1L, 0L], scored.GetColumn<long[]>("IndexN").Select(v => v.Single()));
        Assert.Equal(NumberDataViewType.Int64, scored.Schema["Index0"].Type);
        Assert.Equal(TextDataViewType.Instance, scored.Schema["Text0"].Type);
        Assert.Equal(NumberDataViewType.Single, scored.Schema["Float0"].Type);

        AssertScalarReadFails<long>(scored, "Index0");
        AssertScalarReadFails<ReadOnlyMemory<char>>(scored, "Text0");
        AssertScalarReadFails<float>(scored, "Float0");
    }

    private void AssertScalarReadFails<T>(IDataView scored, string column)
    {
        var col = scored.Schema[column];
        var e = Assert.ThrowsAny<Exception>(() =>
        {
            using var cursor = scored.GetRowCursor([col]);
            var getter = cursor.GetGetter<T>(col);
            T value = default!;
            while (cursor.MoveNext())
                getter(ref value);
        });
        while (e.InnerException is not null)
            e = e.InnerException; // the cursor may run the getter on a worker thread and wrap the error
        output.WriteLine($"{column}: {e.GetType().Name}: {e.Message}");
        // OnnxTransformer.Mapper.MakeObjectGetter calls AsEnumerable<NamedOnnxValue>() on the tensor (null) and then Select.
        var argumentNull = Assert.IsType<ArgumentNullException>(e);
        Assert.Equal("source", argumentNull.ParamName);
        Assert.Contains("MakeObjectGetter", e.StackTrace);
    }

    [Fact]
    public void Throughput_BatchedViewVersusOnnxTransformerChain_IsPrinted()
    {
        var ml = new MLContext(seed: 1);
        const int rows = 20_000;
        var data = ml.Data.Cache(OnnxTestModels.Data(ml, rows, seed: 6));
        var onnx = OnnxExporter.Export(OnnxTestModels.Mlp(7, 300, 100));
        var chainOut = OnnxScoringChain.Build(ml, onnx, data.Schema, "Features", Digits).Transform(data);
        using var scorer = new BatchedOnnxScorer(onnx);
        var batched = new BatchedScoringDataView(data, scorer, "Features", Digits);
        _ = OnnxTestModels.ReadOutputs(batched); // warm up: fills the cache, starts the session

        var sw = Stopwatch.StartNew();
        var (_, lb) = OnnxTestModels.ReadOutputs(batched);
        double batchedRate = rows / sw.Elapsed.TotalSeconds;
        sw.Restart();
        var (_, lc) = OnnxTestModels.ReadOutputs(chainOut);
        double chainRate = rows / sw.Elapsed.TotalSeconds;
        output.WriteLine($"MLP 784-300-100-10, {rows} rows: BatchedScoringDataView {batchedRate:N0} rows/s, ApplyOnnxModel chain {chainRate:N0} rows/s ({batchedRate / chainRate:N1}x)");
        Console.WriteLine($"[onnx-throughput] batched {batchedRate:N0} rows/s, chain {chainRate:N0} rows/s");
        Assert.Equal(lc, lb);
    }

    private static void AssertSameVisibleSchema(DataViewSchema expected, DataViewSchema actual)
    {
        var e = expected.Where(c => !c.IsHidden).ToArray();
        var a = actual.Where(c => !c.IsHidden).ToArray();
        Assert.Equal(e.Select(c => c.Name), a.Select(c => c.Name));
        for (int i = 0; i < e.Length; i++)
        {
            Assert.Equal(e[i].Type, a[i].Type);
            Assert.Equal(e[i].Annotations.Schema.Select(m => (m.Name, m.Type)), a[i].Annotations.Schema.Select(m => (m.Name, m.Type)));
        }
        VBuffer<ReadOnlyMemory<char>> k1 = default, k2 = default;
        expected["PredictedLabel"].GetKeyValues(ref k1);
        actual["PredictedLabel"].GetKeyValues(ref k2);
        Assert.Equal(k1.DenseValues().Select(v => v.ToString()), k2.DenseValues().Select(v => v.ToString()));
    }
}
