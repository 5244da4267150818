using MLNet.Compression.Networks;
using MLNet.Compression.Networks.Heads;
using MLNet.Compression.Onnx;
using MLNet.Compression.Onnx.Proto;
using MLNet.Compression.Quantization;
using MLNet.Compression.Tests.Quantization;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Onnx;

/// <summary>
/// Issue 19: the batched scorer makes the exported graph's row checks (the non-finite probe, the per-batch int8 clean) on the
/// host and runs a graph without them. Its outputs must be the exported graph's bit for bit, on ordinary rows and on rows
/// with NaN, infinities and huge finite values, for every encoding and head.
/// </summary>
public sealed class HostRowChecksTests(ITestOutputHelper output)
{
    public static TheoryData<string, string> ModelsAndEncodings()
    {
        var data = new TheoryData<string, string>();
        foreach (var model in new[] { "mlp", "lenet", "binary", "regression" })
            foreach (var encoding in new[] { "float32", "float16", "int8-dynamic", "int8-dynamic-per-batch", "int8-static", "int4" })
                data.Add(model, encoding);
        return data;
    }

    private static NetworkModel Model(string name) => name switch
    {
        "mlp" => OnnxTestModels.Mlp(5, 64, 32),
        "lenet" => OnnxTestModels.LeNet5(seed: 7),
        "binary" => OnnxTestModels.Fill(NetworkModel.Create(NetworkArchitecture.Mlp(32), 2, OutputHeadKind.Binary), 9),
        _ => OnnxTestModels.Fill(NetworkModel.Create(NetworkArchitecture.Mlp(32), 1, OutputHeadKind.Regression), 10),
    };

    private static byte[] Export(NetworkModel model, string encoding)
    {
        if (encoding == "float32")
            return OnnxExporter.Export(model);
        var mode = encoding switch
        {
            "float16" => QuantizationMode.Float16,
            "int8-dynamic" or "int8-dynamic-per-batch" => QuantizationMode.Int8Dynamic,
            "int8-static" => QuantizationMode.Int8Static,
            _ => QuantizationMode.Int4WeightOnly,
        };
        var rows = OnnxTestModels.RandomFeatures(100, model.InputLength, seed: 77);
        var spec = new QuantizationSpec(mode,
            InputRanges: mode == QuantizationMode.Int8Static ? QuantizedExportTests.CalibrateMinMax(model, rows) : null,
            ActivationScales: encoding == "int8-dynamic-per-batch" ? ActivationScaleScope.PerBatch : ActivationScaleScope.PerRow);
        return OnnxExporter.Export(model, QuantizedExport.Options(model, spec));
    }

    /// <summary>64 ordinary rows, then rows that exercise every check: NaN, ±infinity, float.MaxValue, huge finite values of both signs.</summary>
    private static float[] Rows(int length, out int count)
    {
        var rows = OnnxTestModels.RandomFeatures(64, length, seed: 123).ToList();
        float[] With(int column, float value)
        {
            var r = (float[])rows[0].Clone();
            r[column] = value;
            return r;
        }
        rows.Add(With(3, float.NaN));
        rows.Add(With(length - 1, float.PositiveInfinity));
        rows.Add(With(length / 2, float.NegativeInfinity));
        rows.Add(Enumerable.Repeat(float.MaxValue, length).ToArray());
        rows.Add(Enumerable.Range(0, length).Select(i => i % 2 == 0 ? -3e38f : 3e38f).ToArray());
        rows.Add(With(5, 1e30f));
        rows.Add(With(7, -float.MaxValue));
        count = rows.Count;
        return rows.SelectMany(r => r).ToArray();
    }

    [Theory]
    [MemberData(nameof(ModelsAndEncodings))]
    public void TheInProcessGraph_ScoresAsTheExportedGraph_BitForBit(string modelName, string encoding)
    {
        var model = Model(modelName);
        var onnx = Export(model, encoding);
        var checks = HostRowChecks.Rewrite(onnx);

        // The checks left the graph: no Sub(x, x) probe, no If cleaning the model's input (per-batch int8: the hidden layers'
        // cleans stay, they read activations); the head's probe is an input now.
        Assert.True(checks.HasRowProbe || checks.HasRowProbeVector, "every exported graph has the output head's non-finite guard");
        var graph = ModelProto.Parser.ParseFrom(checks.Onnx).Graph;
        string x = graph.Input[0].Name;
        Assert.DoesNotContain(graph.Node, n => n.OpType == "Sub" && n.Input.All(i => i == x));
        Assert.DoesNotContain(graph.Node, n => n.OpType == "If" && n.Attribute.Any(a => a.G is { } b && b.Node.Any(i => i.Input.Contains(x))));
        // The per-batch clean is written before a dense first layer only (convolutions compute in float).
        Assert.Equal(encoding == "int8-dynamic-per-batch" && modelName != "lenet" ? DenseModelLayer.PerBatchInputLimit : null, checks.ClipLimit);
        // Per-row int8 dynamic with a dense first layer: its row range (ReduceMax, ReduceMin over the features) comes from the
        // host; with the input codes (the default) the row scale made from it does, and the range is no longer an input.
        bool perRowDense = encoding == "int8-dynamic" && modelName != "lenet";
        Assert.False(checks.HasRowAbsMax);
        Assert.Equal(perRowDense, checks.HasRowScale);
        Assert.Equal(perRowDense, HostRowChecks.Rewrite(onnx, quantizeInput: false).HasRowAbsMax);
        Assert.DoesNotContain(graph.Node, n => n.OpType is "ReduceMax" or "ReduceMin" && n.Input[0] == x);
        // Int8 static and per-row int8 dynamic with a dense first layer: the host writes the first layer's uint8 codes and the
        // graph takes them instead of the float features (no QuantizeLinear of the features left).
        bool codes = encoding is "int8-static" or "int8-dynamic" && modelName != "lenet";
        Assert.Equal(codes, checks.QuantizedInput is not null);
        Assert.Equal(codes ? HostRowChecks.QuantizedInputName : OnnxExporter.ReadSignature(onnx).InputName, x);
        Assert.Equal(codes ? (int)TensorProto.Types.DataType.Uint8 : (int)TensorProto.Types.DataType.Float, graph.Input[0].Type.TensorType.ElemType);
        if (codes)
            Assert.Equal(encoding == "int8-static", checks.QuantizedInput!.Scale is not null); // a fixed scale, or the row's own
        Assert.DoesNotContain(graph.Node, n => n.OpType == "QuantizeLinear" && n.Input[0] == OnnxExporter.ReadSignature(onnx).InputName);
        Assert.True(checks.Onnx.Length < onnx.Length);
        // The scorer's form also drops the outputs it does not fetch: the multiclass PredictedLabel branch (ArgMax, its NaN
        // test) goes; the view takes the label from the scores.
        var signature = OnnxExporter.ReadSignature(onnx);
        var fetched = signature.OutputHead.BatchedOutputs(signature).Select(o => o.Name).ToArray();
        var scorerGraph = ModelProto.Parser.ParseFrom(HostRowChecks.Rewrite(onnx, outputs: fetched).Onnx).Graph;
        Assert.Equal(fetched, scorerGraph.Output.Select(o => o.Name));
        Assert.Equal(modelName != "regression", graph.Output.Count > fetched.Length); // a regression graph has its one output
        Assert.DoesNotContain(scorerGraph.Node, n => n.OpType == "ArgMax");
        Assert.Contains(graph.Node, n => n.OpType == "ArgMax" || modelName is "binary" or "regression");

        var features = Rows(model.InputLength, out int rows);
        using var exported = new BatchedOnnxScorer(onnx, hostRowChecks: false);
        using var inProcess = new BatchedOnnxScorer(onnx);
        using var floatFeatures = new BatchedOnnxScorer(onnx, hostQuantizedInput: false);
        int width = exported.OutputWidth;
        var expected = new float[rows * width];
        exported.Score((float[])features.Clone(), rows, expected);
        var withoutCodes = new float[rows * width];
        floatFeatures.Score((float[])features.Clone(), rows, withoutCodes);

        // The scorer's own pass over the block, and the batched view's path (rows copied through CopyRow, probes handed over).
        var scanned = new float[rows * width];
        inProcess.Score((float[])features.Clone(), rows, scanned);
        // The span overload (the scorer's own staging: for a model scored from codes, one row of floats, no block).
        var staged = new float[rows * width];
        inProcess.Score((ReadOnlySpan<float>)features, rows, (Span<float>)staged);
        var block = new float[features.Length];
        var values = inProcess.NewRowValues(rows);
        for (int r = 0; r < rows; r++)
            inProcess.CopyRow(features.AsSpan(r * model.InputLength, model.InputLength), block.AsSpan(r * model.InputLength, model.InputLength), values, r);
        var copied = new float[rows * width];
        // A model scored from input codes does not read the float block: the view keeps none (an empty array is enough).
        Assert.Equal(codes, inProcess.TakesInputCodes);
        inProcess.Score(codes ? [] : block, rows, copied, values);

        // Bit for bit, except that a NaN's payload is not compared (NaN is NaN; which NaN depends on the path that made it).
        static bool Same(float a, float b) => float.IsNaN(a) ? float.IsNaN(b) : BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(Same(expected[i], scanned[i]), $"row {i / width}, output {i % width}: {expected[i]} vs {scanned[i]} (host scan)");
            Assert.True(Same(expected[i], copied[i]), $"row {i / width}, output {i % width}: {expected[i]} vs {copied[i]} (checked copy)");
            Assert.True(Same(expected[i], withoutCodes[i]), $"row {i / width}, output {i % width}: {expected[i]} vs {withoutCodes[i]} (host checks, float features)");
            Assert.True(Same(expected[i], staged[i]), $"row {i / width}, output {i % width}: {expected[i]} vs {staged[i]} (span overload)");
        }
        // The rows with a NaN or an infinity score NaN, the ordinary rows do not (huge finite rows may overflow in float).
        for (int r = 0; r < 67; r++)
            Assert.Equal(r >= 64, float.IsNaN(expected[r * width]));
        output.WriteLine($"{modelName} {encoding}: {rows} rows equal bit for bit; graph {onnx.Length:N0} → {checks.Onnx.Length:N0} B");
    }

    [Fact]
    public void CopyRow_CopiesAndReportsNonFiniteRows_AndRejectsAMismatchedRow()
    {
        var checks = HostRowChecks.Rewrite(OnnxExporter.Export(OnnxTestModels.Mlp(5, 16)));
        Assert.Null(checks.ClipLimit);
        // 37 values: whole vectors and a tail, with the bad value in either part.
        foreach (int at in new[] { -1, 0, 20, 36 })
            foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
            {
                var row = Enumerable.Range(0, 37).Select(i => i * 5e36f - 1e38f).ToArray();
                if (at >= 0)
                    row[at] = bad;
                var copy = new float[37];
                var values = new HostRowValues(1);
                checks.CopyRow(row, copy, values, 0);
                float probe = values.Probes[0];
                Assert.Equal(row, copy);
                Assert.Equal(at >= 0, float.IsNaN(probe));
                Assert.True(at >= 0 || BitConverter.SingleToInt32Bits(probe) == 0, "a finite row's probe is +0, as x − x is");
            }
        var e = Assert.Throws<ArgumentException>(() => checks.CopyRow(new float[5], new float[4], new HostRowValues(1), 0));
        Assert.Equal("source", e.ParamName);
    }

    [Fact]
    public void PerBatchClean_ZeroesNonFiniteRows_AndClipsHugeValues_InTheBlock()
    {
        var model = OnnxTestModels.Mlp(5, 16);
        var checks = HostRowChecks.Rewrite(Export(model, "int8-dynamic-per-batch"));
        float limit = DenseModelLayer.PerBatchInputLimit;
        Assert.Equal(limit, checks.ClipLimit);
        var row = new float[model.InputLength];
        row[1] = float.MaxValue;
        row[2] = -float.MaxValue;
        row[3] = 0.5f;
        var copy = new float[row.Length];
        var values = new HostRowValues(1);
        checks.CopyRow(row, copy, values, 0);
        Assert.Equal(0f, values.Probes[0]);
        Assert.Equal([0f, limit, -limit, 0.5f], copy[..4]);
        row[4] = float.NaN;
        checks.CopyRow(row, copy, values, 0);
        Assert.True(float.IsNaN(values.Probes[0]));
        Assert.All(copy, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void RowAbsMax_IsTheLargestMagnitude_ExactlyAsTheGraphComputesIt()
    {
        var rng = new Random(4);
        foreach (int length in new[] { 1, 7, 8, 37, 784 })
        {
            var model = OnnxTestModels.Fill(NetworkModel.Create(NetworkArchitecture.Mlp(inputLength: length, hiddenUnits: [16]), 10), 5);
            var onnx = Export(model, "int8-dynamic");
            // Without the input codes the graph takes the range; with them (the default), the scale the row was quantized with.
            var checks = HostRowChecks.Rewrite(onnx, quantizeInput: false);
            var withCodes = HostRowChecks.Rewrite(onnx);
            Assert.True(checks.HasRowAbsMax);
            Assert.True(withCodes.HasRowScale);
            var values = checks.NewValues(1);
            var codeValues = withCodes.NewValues(1);
            for (int trial = 0; trial < 20; trial++)
            {
                var row = Enumerable.Range(0, length).Select(_ => (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-3, 4)))).ToArray();
                float absMax = Math.Max(row.Max(), -row.Min());
                checks.CopyRow(row, new float[length], values, 0);
                Assert.Equal(absMax, values.AbsMax[0]);
                withCodes.CopyRow(row, new float[length], codeValues, 0);
                Assert.Equal(Math.Max(absMax / 127f, 1e-30f), codeValues.RowScales[0]); // the graph's Div by 127 and Max with 1e-30
                Assert.Equal(absMax, HostRowChecks.RowMagnitude(row, out bool finite));
                Assert.True(finite);
                var bad = (float[])row.Clone();
                bad[trial % length] = trial % 2 == 0 ? float.NaN : float.NegativeInfinity;
                HostRowChecks.RowMagnitude(bad, out finite);
                Assert.False(finite);
            }
        }
    }

    /// <summary>
    /// The host's codes against ONNX Runtime's own QuantizeLinear, per tensor (int8 static's form) and along the rows (per-row
    /// int8 dynamic's form), on values chosen to catch a rounding that is not the graph's: halfway points between codes and
    /// their float neighbours, both ends of the code range and past them, ±0, denormals, ±infinity and float.MaxValue.
    /// </summary>
    [Theory]
    [InlineData(0.0123f, 128, false)]
    [InlineData(0.0123f, 128, true)]
    [InlineData(1f / 255f, 0, false)]
    [InlineData(1f / 255f, 0, true)]
    [InlineData(3.3e-3f, 37, false)]
    [InlineData(1e-30f, 128, true)]
    [InlineData(7.5f, 200, true)]
    public void Quantize_GivesOnnxRuntimesQuantizeLinearCodes_BitForBit(float scale, int zeroPoint, bool perRow)
    {
        var values = new List<float> { 0f, -0f, 1e-45f, -1e-45f, 1e-38f, float.PositiveInfinity, float.NegativeInfinity, float.MaxValue, -float.MaxValue };
        for (int k = -300; k <= 300; k++)
        {
            float half = (k + 0.5f) * scale, whole = k * scale;
            values.AddRange([half, MathF.BitIncrement(half), MathF.BitDecrement(half), whole, MathF.BitIncrement(whole), MathF.BitDecrement(whole)]);
        }
        var rng = new Random(zeroPoint);
        while (values.Count % 40 != 0)
            values.Add((float)((rng.NextDouble() - 0.5) * 600 * scale));
        const int width = 40;
        int rows = values.Count / width;
        // Per row: each row its own scale around the given one (the graph's Div/Max make it; here it is simply an input).
        var scales = Enumerable.Range(0, rows).Select(r => perRow ? scale * (1 + (r % 5) * 0.25f) : scale).ToArray();

        var g = new OnnxGraphBuilder("quantize") { Opset = 17 };
        var x = g.AddInput("x", TensorProto.Types.DataType.Float, [null, width]);
        string q;
        if (perRow)
        {
            var s = g.AddInput("s", TensorProto.Types.DataType.Float, [null]);
            var z = g.AddInput("z", TensorProto.Types.DataType.Uint8, [null]);
            q = g.AddNode("QuantizeLinear", [x, s, z], "q", new Dictionary<string, object> { ["axis"] = 0L });
        }
        else
            q = g.AddNode("QuantizeLinear", [x, g.AddFloatInitializer("s", [scale], []), g.AddRawInitializer("z", TensorProto.Types.DataType.Uint8, [(byte)zeroPoint], 1, [], 1)], "q");
        g.AddOutput(q, TensorProto.Types.DataType.Uint8, [null, width]);
        var proto = new ModelProto { IrVersion = 8, Graph = g.Graph };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(Google.Protobuf.MessageExtensions.ToByteArray(proto));
        var inputs = new List<Microsoft.ML.OnnxRuntime.NamedOnnxValue>
        {
            Microsoft.ML.OnnxRuntime.NamedOnnxValue.CreateFromTensor("x", new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<float>(values.ToArray(), [rows, width])),
        };
        if (perRow)
        {
            inputs.Add(Microsoft.ML.OnnxRuntime.NamedOnnxValue.CreateFromTensor("s", new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<float>(scales, [rows])));
            inputs.Add(Microsoft.ML.OnnxRuntime.NamedOnnxValue.CreateFromTensor("z", new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<byte>(Enumerable.Repeat((byte)zeroPoint, rows).ToArray(), [rows])));
        }
        using var results = session.Run(inputs);
        var expected = results.First().AsEnumerable<byte>().ToArray();

        // The dispatching entry point, and each implementation on its own (AVX-512 where this processor has it; the portable
        // one runs everywhere), over rows of 40 values: whole vectors and a tail for both.
        var paths = new List<(string Name, Func<float[], int, byte[], bool> Run)>
        {
            ("Quantize", (v, r, c) => HostQuantizedInput.Quantize(v.AsSpan(r * width, width), c.AsSpan(r * width, width), scales[r], (byte)zeroPoint)),
            ("QuantizePortable", (v, r, c) => HostQuantizedInput.QuantizePortable(v.AsSpan(r * width, width), c.AsSpan(r * width, width), scales[r], (byte)zeroPoint)),
        };
        if (System.Runtime.Intrinsics.X86.Avx512F.IsSupported)
            paths.Add(("QuantizeAvx512", (v, r, c) => HostQuantizedInput.QuantizeAvx512(v.AsSpan(r * width, width), c.AsSpan(r * width, width), scales[r], (byte)zeroPoint)));
        var all = values.ToArray();
        foreach (var (name, run) in paths)
        {
            var codes = new byte[values.Count];
            for (int r = 0; r < rows; r++)
                Assert.Equal(values.Skip(r * width).Take(width).All(float.IsFinite), run(all, r, codes));
            for (int i = 0; i < codes.Length; i++)
                Assert.True(expected[i] == codes[i], $"{name}: value {values[i]:R} (scale {scales[i / width]:R}, zero point {zeroPoint}): ONNX Runtime {expected[i]}, host {codes[i]}");
            output.WriteLine($"{name}: {codes.Length} codes equal");
        }
        var e = Assert.Throws<ArgumentException>(() => HostQuantizedInput.Quantize(new float[3], new byte[2], 1f, 0));
        Assert.Equal("codes", e.ParamName);
    }

    [Fact]
    public void CopyRow_IntoCodes_RefusesAMismatchedRowAndValuesWithoutRoomForCodes()
    {
        var model = OnnxTestModels.Mlp(5, 16);
        var checks = HostRowChecks.Rewrite(Export(model, "int8-static"));
        Assert.NotNull(checks.QuantizedInput);
        var e = Assert.Throws<ArgumentException>(() => checks.CopyRow(new float[5], new float[5], checks.NewValues(1), 0));
        Assert.Equal("source", e.ParamName);
        e = Assert.Throws<ArgumentException>(() => checks.CopyRow(new float[784], new float[784], new HostRowValues(1), 0));
        Assert.Equal("values", e.ParamName);
        Assert.Contains("NewValues", e.Message);
        Assert.Equal(784, checks.NewValues(2).Codes.Length / 2);
    }

    /// <summary>
    /// The batched view over sparse feature vectors (densified one row at a time; with input codes there is no float block to
    /// densify into) scores as it does over the same rows stored dense, for a float model and both models scored from codes.
    /// </summary>
    [Theory]
    [InlineData("float32")]
    [InlineData("int8-static")]
    [InlineData("int8-dynamic")]
    public void TheBatchedView_ScoresSparseRowsAsTheSameDenseRows(string encoding)
    {
        var ml = new Microsoft.ML.MLContext(seed: 1);
        var model = OnnxTestModels.Mlp(5, 16);
        using var scorer = new BatchedOnnxScorer(Export(model, encoding));
        Assert.Equal(encoding != "float32", scorer.TakesInputCodes);
        var dense = OnnxTestModels.RandomFeatures(70, 784, seed: 8);
        foreach (var row in dense)
            for (int i = 0; i < row.Length; i++)
                if (i % 7 != 0)
                    row[i] = 0f;
        var sparse = dense.Select(r =>
        {
            var indices = Enumerable.Range(0, r.Length).Where(i => r[i] != 0f).ToArray();
            return new SparseFeatures { Features = new Microsoft.ML.Data.VBuffer<float>(r.Length, indices.Length, indices.Select(i => r[i]).ToArray(), indices) };
        }).ToList();
        Assert.All(sparse, r => Assert.False(r.Features.IsDense));
        var classes = Enumerable.Range(0, 10).Select(i => i.ToString()).ToArray();
        var fromDense = OnnxTestModels.ReadOutputs(new BatchedScoringDataView(
            ml.Data.LoadFromEnumerable(dense.Select(r => new OnnxScoringChainTests.FeaturesInput { Features = r })), scorer, "Features", classes, blockSize: 32));
        var fromSparse = OnnxTestModels.ReadOutputs(new BatchedScoringDataView(ml.Data.LoadFromEnumerable(sparse), scorer, "Features", classes, blockSize: 32));
        Assert.Equal(fromDense.Item2, fromSparse.Item2);
        for (int r = 0; r < dense.Length; r++)
            Assert.Equal(fromDense.Item1[r].Select(BitConverter.SingleToInt32Bits), fromSparse.Item1[r].Select(BitConverter.SingleToInt32Bits));
    }

    public sealed class SparseFeatures
    {
        [Microsoft.ML.Data.VectorType(784)]
        public Microsoft.ML.Data.VBuffer<float> Features { get; set; }
    }

    /// <summary>
    /// The features' QuantizeLinear moves to the host only when nothing else reads the float features and its codes are
    /// uint8; otherwise the rewrite keeps the float input (and its other checks). A graph that takes host values refuses
    /// to build its inputs without them.
    /// </summary>
    [Theory]
    [InlineData("uint8", false, true)]
    [InlineData("uint8", true, false)]
    [InlineData("int8", false, false)]
    public void TheFeaturesQuantizeLinear_MovesToTheHostOnlyWhenTheFloatsAreNotReadElsewhere(string zeroPointType, bool floatsReadElsewhere, bool moves)
    {
        var g = new OnnxGraphBuilder("q") { Opset = 17 };
        var x = g.AddInput("Features", TensorProto.Types.DataType.Float, [null, 8]);
        var type = zeroPointType == "uint8" ? TensorProto.Types.DataType.Uint8 : TensorProto.Types.DataType.Int8;
        var scale = g.AddFloatInitializer("s", [0.05f], []);
        var zero = g.AddRawInitializer("z", type, [zeroPointType == "uint8" ? (byte)128 : (byte)0], 1, [], 1);
        var dq = g.AddNode("DequantizeLinear", [g.AddNode("QuantizeLinear", [x, scale, zero], "q"), scale, zero], "dq");
        var y = floatsReadElsewhere ? g.AddNode("Add", [dq, x], "y") : g.AddNode("Relu", [dq], "y");
        g.AddOutput(y, TensorProto.Types.DataType.Float, [null, 8]);
        var model = new ModelProto { IrVersion = 8, Graph = g.Graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        var bytes = Google.Protobuf.MessageExtensions.ToByteArray(model);

        var checks = HostRowChecks.Rewrite(bytes);
        Assert.Equal(moves, checks.QuantizedInput is not null);
        var graph = ModelProto.Parser.ParseFrom(checks.Onnx).Graph;
        Assert.Equal(moves ? HostRowChecks.QuantizedInputName : "Features", graph.Input[0].Name);
        Assert.Equal(moves ? HostRowChecks.QuantizedInputName : "Features", checks.InputNames("Features")[0]);
        Assert.Equal(moves, graph.Input[0].Type.TensorType.ElemType == (int)TensorProto.Types.DataType.Uint8);
        if (!moves)
            return;
        var e = Assert.Throws<ArgumentNullException>(() => checks.CreateInputs(new float[8], null, 1, 8));
        Assert.Equal("values", e.ParamName);
        // Scored from the host's codes, the rewritten graph gives what the original gives on the same rows.
        var rows = new float[] { 0.1f, -0.2f, 3f, -7f, 0.025f, 0.075f, -0.025f, 6.4f, 1, 2, 3, 4, 5, 6, 7, 8 };
        using var original = new Microsoft.ML.OnnxRuntime.InferenceSession(bytes);
        using var expected = original.Run([Microsoft.ML.OnnxRuntime.NamedOnnxValue.CreateFromTensor("Features", new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<float>(rows, [2, 8]))]);
        var values = checks.NewValues(2);
        for (int r = 0; r < 2; r++)
            checks.CopyRow(rows.AsSpan(r * 8, 8), new float[8], values, r);
        using var rewritten = new Microsoft.ML.OnnxRuntime.InferenceSession(checks.Onnx);
        var inputs = checks.CreateInputs(Memory<float>.Empty, values, 2, 8);
        try
        {
            using var actual = rewritten.Run(new Microsoft.ML.OnnxRuntime.RunOptions(), checks.InputNames("Features"), inputs, [y]);
            Assert.Equal(expected.First().AsEnumerable<float>().ToArray(), actual[0].GetTensorDataAsSpan<float>().ToArray());
        }
        finally
        {
            foreach (var v in inputs)
                v.Dispose();
        }
    }

    [Fact]
    public void AGraphWithoutRowChecks_IsLeftAsItIs()
    {
        var g = new OnnxGraphBuilder("plain") { Opset = 17 };
        var x = g.AddInput("Features", TensorProto.Types.DataType.Float, [null, 4]);
        var y = g.AddNode("Relu", [x], "y");
        g.AddOutput(y, TensorProto.Types.DataType.Float, [null, 4]);
        var model = new ModelProto { IrVersion = 8, Graph = g.Graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        var bytes = Google.Protobuf.MessageExtensions.ToByteArray(model);
        var checks = HostRowChecks.Rewrite(bytes);
        Assert.False(checks.Any);
        Assert.Same(bytes, checks.Onnx);
    }
}
