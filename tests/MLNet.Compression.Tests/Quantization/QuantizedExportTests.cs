using System.Diagnostics;
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

public class QuantizedExportTests(ITestOutputHelper output)
{
    public static TheoryData<string, QuantizationMode> ModelsAndModes()
    {
        var data = new TheoryData<string, QuantizationMode>();
        foreach (var model in new[] { "mlp", "mlp-gauss", "lenet" })
            foreach (var mode in Enum.GetValues<QuantizationMode>())
                data.Add(model, mode);
        return data;
    }

    /// <summary>LeNet-300-100 with N(0, 0.05) weights and biases.</summary>
    internal static NetworkModel GaussianMlp(int seed = 11)
    {
        var model = NetworkModel.Create(NetworkArchitecture.Mlp(300, 100), 10);
        var rng = new Random(seed);
        foreach (var layer in model.ParameterizedLayers)
        {
            for (int i = 0; i < layer.Weight.Length; i++)
                layer.Weight[i] = Gaussian(rng) * 0.05f;
            for (int i = 0; i < layer.Bias.Length; i++)
                layer.Bias[i] = Gaussian(rng) * 0.05f;
        }
        return model;
    }

    private static float Gaussian(Random rng) =>
        (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));

    /// <summary>
    /// "mlp": LeNet-300-100 with uniform weights scaled by 1/sqrt(fan-in) (logits of order 1, like a trained network);
    /// "mlp-gauss": N(0, 0.05) weights, whose probabilities are nearly uniform (many near-ties); "lenet": LeNet-5, fan-in scaled.
    /// </summary>
    private static NetworkModel Model(string name) => name switch
    {
        "mlp" => OnnxTestModels.Mlp(5, 300, 100),
        "mlp-gauss" => GaussianMlp(),
        _ => OnnxTestModels.LeNet5(seed: 7),
    };

    /// <summary>Rows of independent U(0, 1) features. Seeds here differ from the weight seeds: rows drawn from the same generator
    /// as a layer's weights would be correlated with them and drive activations far outside any calibrated range.</summary>
    private static float[][] UniformRows(int rows, int length, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, rows).Select(_ => Enumerable.Range(0, length).Select(_ => (float)rng.NextDouble()).ToArray()).ToArray();
    }

    /// <summary>The spec for <paramref name="mode"/>, with input ranges calibrated (min/max) on 200 rows unlike the test rows.</summary>
    private static QuantizationSpec Spec(NetworkModel model, QuantizationMode mode, int blockSize = 32, IReadOnlyCollection<string>? keepFloat = null) =>
        new(mode, PerChannel: true, BlockSize: blockSize,
            InputRanges: mode == QuantizationMode.Int8Static ? CalibrateMinMax(model, UniformRows(200, model.InputLength, seed: 1099)) : null,
            KeepFloat: keepFloat);

    [Theory]
    [MemberData(nameof(ModelsAndModes))]
    public void QuantizedModel_AgreesWithFloatModel(string modelName, QuantizationMode mode)
    {
        var model = Model(modelName);
        var spec = Spec(model, mode);
        var rows = UniformRows(500, model.InputLength, seed: 1005);
        var floatOnnx = OnnxExporter.Export(model);
        var quantOnnx = OnnxExporter.Export(model, QuantizedExport.Options(model, spec));
        var expected = RunOrt(floatOnnx, rows);
        var actual = RunOrt(quantOnnx, rows);
        int agree = 0, decided = 0, agreeDecided = 0;
        double maxDiff = 0;
        var margins = new List<double>();
        for (int r = 0; r < rows.Length; r++)
        {
            bool same = ArgMax(expected, r) == ArgMax(actual, r);
            agree += same ? 1 : 0;
            var sorted = expected.Skip(r * 10).Take(10).OrderDescending().ToArray();
            double margin = sorted[0] - sorted[1];
            margins.Add(margin);
            if (margin >= 0.01)
            {
                decided++;
                agreeDecided += same ? 1 : 0;
            }
            for (int c = 0; c < 10; c++)
                maxDiff = Math.Max(maxDiff, Math.Abs(expected[r * 10 + c] - actual[r * 10 + c]));
        }
        double agreement = agree / (double)rows.Length;
        double decidedAgreement = decided == 0 ? 1 : agreeDecided / (double)decided;
        margins.Sort();
        output.WriteLine($"{modelName} ({model.Architecture.Name}) {mode}: argmax agreement {agreement:P1} on {rows.Length} rows " +
            $"({decidedAgreement:P1} of the {decided} rows whose float top-2 probability margin is ≥ 0.01; median margin {margins[margins.Count / 2]:F4}), " +
            $"max |Δp| = {maxDiff:E2}, ONNX {floatOnnx.Length:N0} → {quantOnnx.Length:N0} bytes");
        double required = mode == QuantizationMode.Int4WeightOnly ? 0.90 : 0.97;
        // The N(0, 0.05) MLP's probabilities are nearly uniform, so tiny perturbations flip near-ties: there only rows with a
        // clear float decision count.
        Assert.True((modelName == "mlp-gauss" ? decidedAgreement : agreement) >= required, $"agreement {agreement:P1}, decided {decidedAgreement:P1}");
        Assert.True(maxDiff < (mode == QuantizationMode.Float16 ? 1e-2 : 0.25), $"max |Δp| = {maxDiff}");
    }

    [Theory]
    [MemberData(nameof(ModelsAndModes))]
    public void DequantizedWeights_AreWithinOneStep_AndDescribeMatchesTheFile(string modelName, QuantizationMode mode)
    {
        var model = Model(modelName);
        var spec = Spec(model, mode);
        foreach (var layer in model.ParameterizedLayers)
        {
            var q = QuantizedExport.QuantizeWeights(layer, spec);
            var dq = QuantizedExport.DequantizedWeights(model, spec, layer.Name);
            Assert.Equal(layer.Weight.Length, dq.Length);
            double worst = 0;
            for (int i = 0; i < dq.Length; i++)
            {
                float step = q.Step(i);
                float err = Math.Abs(dq[i] - layer.Weight[i]);
                // Round to nearest (float16, int8): half a step; error diffusion (int4): one step.
                float bound = q.BlockSize > 0 ? step : step * 0.5f;
                Assert.True(err <= bound * 1.0001f + 1e-12f, $"{layer.Name}[{i}]: |{dq[i]} − {layer.Weight[i]}| > {bound} (step {step})");
                worst = Math.Max(worst, step == 0 ? 0 : err / step);
            }
            output.WriteLine($"{layer.Name}: {q.Encoding}, worst error {worst:F3} step");
        }

        // Describe's stored bytes are exactly the layer's initializers in the file (activation scales excluded).
        var info = QuantizedExport.Describe(model, spec);
        var proto = ModelProto.Parser.ParseFrom(OnnxExporter.Export(model, QuantizedExport.Options(model, spec)));
        foreach (var l in info.Layers)
        {
            long inFile = proto.Graph.Initializer.Where(t => t.Name.StartsWith(l.Name + ".", StringComparison.Ordinal) && !t.Name.Contains(".input_") && !t.Name.EndsWith(".relu_zero"))
                .Sum(t => (long)t.RawData.Length)
                + proto.Graph.Node.Where(n => n.OpType == "Constant" && n.Output[0].StartsWith(l.Name + ".", StringComparison.Ordinal))
                    .Sum(n => (long)n.Attribute.Single(a => a.Name == "value").T.RawData.Length);
            output.WriteLine($"{l.Name}: {l.Encoding}, {l.Compute}; weights stored {l.WeightBytes:N0} B, resident {l.ResidentWeightBytes:N0} B, bias {l.BiasBytes:N0} B (float32 {l.FloatWeightBytes:N0} B)");
            Assert.Equal(l.Bytes, inFile);
        }
    }

    [Fact]
    public void ArtifactSizes_ShrinkAsExpected()
    {
        var model = GaussianMlp();
        long floatBytes = OnnxExporter.Export(model).Length;
        output.WriteLine($"{"LeNet-300-100",-26} {"ONNX bytes",10} {"ratio",6} {"weights stored",15} {"resident",10}");
        output.WriteLine($"{"float32",-26} {floatBytes,10:N0} {1.0,6:F2}");
        double Ratio(QuantizationMode mode, int blockSize = 32)
        {
            var spec = Spec(model, mode, blockSize);
            long bytes = OnnxExporter.Export(model, QuantizedExport.Options(model, spec)).Length;
            var info = QuantizedExport.Describe(model, spec);
            double ratio = (double)floatBytes / bytes;
            output.WriteLine($"{mode + (mode == QuantizationMode.Int4WeightOnly ? $" block {blockSize}" : ""),-26} {bytes,10:N0} {ratio,6:F2} {info.StoredBytes,15:N0} {info.ResidentBytes,10:N0}");
            return ratio;
        }
        Assert.InRange(Ratio(QuantizationMode.Float16), 1.9, 2.05);
        Assert.True(Ratio(QuantizationMode.Int8Dynamic) >= 3.8);
        Assert.True(Ratio(QuantizationMode.Int8Static) >= 3.8);
        // A float32 scale per 32 weights costs one bit per weight: 5 bits in all, 6.4x at best.
        Assert.True(Ratio(QuantizationMode.Int4WeightOnly, 32) >= 6.0);
        Assert.True(Ratio(QuantizationMode.Int4WeightOnly, 64) >= 6.8);
        Assert.True(Ratio(QuantizationMode.Int4WeightOnly, 128) >= 7.0);
    }

    [Fact]
    public void Int4_LargerBlocks_StillAgree()
    {
        var model = Model("mlp");
        var rows = UniformRows(500, model.InputLength, seed: 1006);
        var expected = RunOrt(OnnxExporter.Export(model), rows);
        foreach (var bs in new[] { 16, 64, 128, 256 })
        {
            var actual = RunOrt(OnnxExporter.Export(model, QuantizedExport.Options(model, Spec(model, QuantizationMode.Int4WeightOnly, bs))), rows);
            double agreement = Enumerable.Range(0, rows.Length).Count(r => ArgMax(expected, r) == ArgMax(actual, r)) / (double)rows.Length;
            output.WriteLine($"int4 block {bs}: agreement {agreement:P1}");
            Assert.True(agreement >= 0.90, $"block {bs}: agreement {agreement:P1}");
        }
    }

    /// <summary>
    /// One weight scale per tensor (<c>PerChannel = false</c>) exports and scores for both int8 dynamic forms and int8 static:
    /// the per-row graph's MatMulIntegerToFloat takes the scale as a scalar (it once declared it [out] with one value, which
    /// ONNX Runtime refused to load), the labels agree with float32, and the in-process graph scores as the exported one.
    /// </summary>
    [Theory]
    [InlineData(QuantizationMode.Int8Dynamic, ActivationScaleScope.PerRow)]
    [InlineData(QuantizationMode.Int8Dynamic, ActivationScaleScope.PerBatch)]
    [InlineData(QuantizationMode.Int8Static, ActivationScaleScope.PerRow)]
    public void PerTensorWeightScales_ExportAndScore(QuantizationMode mode, ActivationScaleScope scales)
    {
        var model = Model("mlp");
        var rows = UniformRows(300, model.InputLength, seed: 1007);
        var spec = Spec(model, mode) with { PerChannel = false, ActivationScales = scales };
        var onnx = OnnxExporter.Export(model, QuantizedExport.Options(model, spec));
        var expected = RunOrt(OnnxExporter.Export(model), rows);
        var actual = RunOrt(onnx, rows);
        double agreement = Enumerable.Range(0, rows.Length).Count(r => ArgMax(expected, r) == ArgMax(actual, r)) / (double)rows.Length;
        output.WriteLine($"{mode} {scales}, per-tensor weight scales: agreement with float32 {agreement:P1}");
        Assert.True(agreement >= 0.95, $"agreement {agreement:P1}");

        var flat = rows.SelectMany(r => r).ToArray();
        using var exported = new BatchedOnnxScorer(onnx, hostRowChecks: false);
        using var inProcess = new BatchedOnnxScorer(onnx);
        var a = new float[rows.Length * 10];
        var b = new float[rows.Length * 10];
        exported.Score((float[])flat.Clone(), rows.Length, a);
        inProcess.Score((float[])flat.Clone(), rows.Length, b);
        Assert.Equal(a.Select(BitConverter.SingleToInt32Bits), b.Select(BitConverter.SingleToInt32Bits));
    }

    [Theory]
    [InlineData(QuantizationMode.Float16)]
    [InlineData(QuantizationMode.Int8Dynamic)]
    [InlineData(QuantizationMode.Int8Static)]
    [InlineData(QuantizationMode.Int4WeightOnly)]
    public void ScoringChain_SavedAndLoaded_ScoresLikeTheSession(QuantizationMode mode)
    {
        var model = GaussianMlp();
        var onnx = OnnxExporter.Export(model, QuantizedExport.Options(model, Spec(model, mode)));
        var ml = new MLContext(seed: 1);
        var data = OnnxTestModels.Data(ml, 100, seed: 17);
        var features = OnnxTestModels.RandomFeatures(100, 784, seed: 17);
        var chain = OnnxScoringChain.Build(ml, onnx, data.Schema, "Features", OnnxTestModels.Digits);
        using var ms = new MemoryStream();
        ml.Model.Save(chain, data.Schema, ms);
        ms.Position = 0;
        var loaded = ml.Model.Load(ms, out _);
        var (scores, labels) = OnnxTestModels.ReadOutputs(loaded.Transform(data));

        // OnnxTransformer scores one row per run; so does the reference session here (Int8Dynamic quantizes each run's input as a whole).
        using var session = new InferenceSession(onnx);
        for (int r = 0; r < features.Length; r++)
        {
            var p = RunOrt(session, [features[r]]);
            Assert.Equal(p, scores[r]);
            Assert.Equal((uint)ArgMax(p, 0) + 1, labels[r]);
        }

        // The batched scorer (many rows per run) gives the same scores (Int8Dynamic quantizes each row on its own).
        using var scorer = new BatchedOnnxScorer(onnx);
        var flat = features.SelectMany(f => f).ToArray();
        var batched = new float[features.Length * 10];
        scorer.Score(flat, features.Length, batched);
        double diff = 0;
        int agree = 0;
        for (int r = 0; r < features.Length; r++)
        {
            agree += ArgMax(batched, r) == labels[r] - 1 ? 1 : 0;
            for (int c = 0; c < 10; c++)
                diff = Math.Max(diff, Math.Abs(batched[r * 10 + c] - scores[r][c]));
        }
        output.WriteLine($"{mode}: batched (100 rows per run) vs one row per run: max |Δp| = {diff:E2}, labels agree on {agree}/100");
        Assert.True(diff <= 1e-5, $"max |Δp| = {diff}");
    }

    [Fact]
    public void KeepFloat_LeavesTheLayerInFloat32()
    {
        var model = GaussianMlp();
        var spec = Spec(model, QuantizationMode.Int8Static, keepFloat: ["output"]);
        var proto = ModelProto.Parser.ParseFrom(OnnxExporter.Export(model, QuantizedExport.Options(model, spec)));
        var w = proto.Graph.Initializer.Single(t => t.Name == "output.weight");
        Assert.Equal((int)TensorProto.Types.DataType.Float, w.DataType);
        Assert.DoesNotContain(proto.Graph.Initializer, t => t.Name.StartsWith("output.", StringComparison.Ordinal) && t.Name != "output.weight" && t.Name != "output.bias");
        Assert.Equal("float32", QuantizedExport.Describe(model, spec).Layers.Single(l => l.Name == "output").Encoding);
        Assert.Contains(proto.Graph.Initializer, t => t.Name == "fc1.weight_q");
        // Ranges are needed only for the quantized layers.
        var ranges = spec.InputRanges!.Where(kv => kv.Key != "output").ToDictionary(kv => kv.Key, kv => kv.Value);
        QuantizedExport.Options(model, spec with { InputRanges = ranges });
        Assert.Throws<ArgumentException>(() => QuantizedExport.Options(model, spec with { KeepFloat = ["nope"] }));
    }

    [Theory]
    [InlineData(8)]
    [InlineData(15)]
    [InlineData(48)]
    [InlineData(0)]
    [InlineData(-32)]
    public void Int4_BadBlockSize_Throws(int blockSize)
    {
        var model = GaussianMlp();
        var spec = new QuantizationSpec(QuantizationMode.Int4WeightOnly, BlockSize: blockSize);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => QuantizedExport.Options(model, spec));
        Assert.Equal("blockSize", e.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => QuantizedExport.Describe(model, spec));
    }

    [Fact]
    public void Int8Static_MissingRange_ThrowsNamingTheLayer()
    {
        var model = OnnxTestModels.LeNet5();
        var full = CalibrateMinMax(model, UniformRows(20, model.InputLength, 1));
        var e = Assert.Throws<ArgumentException>(() => QuantizedExport.Options(model, new QuantizationSpec(QuantizationMode.Int8Static)));
        Assert.Contains("conv1", e.Message);
        var partial = full.Where(kv => kv.Key != "conv2").ToDictionary(kv => kv.Key, kv => kv.Value);
        e = Assert.Throws<ArgumentException>(() => QuantizedExport.Describe(model, new QuantizationSpec(QuantizationMode.Int8Static, InputRanges: partial)));
        Assert.Contains("conv2", e.Message);
        var bad = new Dictionary<string, ActivationRange>(full) { ["fc1"] = new(1f, float.NaN) };
        e = Assert.Throws<ArgumentException>(() => QuantizedExport.Options(model, new QuantizationSpec(QuantizationMode.Int8Static, InputRanges: bad)));
        Assert.Contains("fc1", e.Message);
    }

    [Theory]
    [MemberData(nameof(ModelsAndModes))]
    public void OnnxRuntime_RewritesTheGraphIntoQuantizedKernels(string modelName, QuantizationMode mode)
    {
        var model = Model(modelName);
        var onnx = OnnxExporter.Export(model, QuantizedExport.Options(model, Spec(model, mode)));
        var path = Path.Combine(Path.GetTempPath(), $"qexport-{Guid.NewGuid():N}.onnx");
        try
        {
            using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = path })
            using (new InferenceSession(onnx, options))
            {
            }
            var optimized = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
            var ops = optimized.Graph.Node.GroupBy(n => (n.Domain is "" or null ? "" : n.Domain + ".") + n.OpType)
                .Select(g => $"{g.Key}×{g.Count()}").ToArray();
            output.WriteLine($"{model.Architecture.Name} {mode}: optimized graph: {string.Join(", ", ops)}");
            var initializers = optimized.Graph.Initializer.GroupBy(t => (TensorProto.Types.DataType)t.DataType)
                .Select(g => $"{g.Key}: {g.Sum(t => (long)t.RawData.Length):N0} B").ToArray();
            output.WriteLine($"  initializers: {string.Join(", ", initializers)}");

            // The resident sizes Describe reports rely on these rewrites.
            int Count(string op) => optimized.Graph.Node.Count(n => n.OpType == op);
            int dense = model.Layers.OfType<DenseModelLayer>().Count(), conv = model.Layers.OfType<ConvModelLayer>().Count();
            switch (mode)
            {
                case QuantizationMode.Float16:
                    // Folded: float32 weights resident (no Cast of a stored tensor is left; the output head's own Casts of
                    // computed values, e.g. the NaN check's bool → int64, are not weight casts).
                    var stored = optimized.Graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
                    Assert.Equal(0, optimized.Graph.Node.Count(n => n.OpType == "Cast" && n.Input.Any(stored.Contains)));
                    Assert.DoesNotContain(optimized.Graph.Initializer, t => t.DataType == (int)TensorProto.Types.DataType.Float16);
                    break;
                case QuantizationMode.Int8Dynamic:
                    // int8 GEMM with per-row activation scales: MatMulIntegerToFloat applies the weights' per-column scales inside
                    // the integer product, and its activation scale (one per tensor) is the constant 1, never a row's scale (over a
                    // per-row scale it would give every row the first row's scale); the row's scale is a Mul after it.
                    Assert.Equal(dense, Count("MatMulIntegerToFloat"));
                    Assert.Equal(0, Count("MatMulInteger"));
                    var constants = optimized.Graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
                    foreach (var mmitf in optimized.Graph.Node.Where(n => n.OpType == "MatMulIntegerToFloat"))
                    {
                        Assert.True(constants.TryGetValue(mmitf.Input[2], out var aScale), $"{mmitf.Name}: the activation scale is computed, not the constant 1");
                        Assert.Empty(aScale!.Dims);
                        Assert.Equal(1f, OnnxGraphBuilder.ReadFloat(aScale.RawData.Span, 0));
                    }
                    // A dense layer whose input is a ReLU's output needs no row minimum (it is 0): ReduceMin only for the others.
                    var reluInputs = QuantizedExport.ReluInputLayers(model);
                    Assert.Equal(model.Layers.OfType<DenseModelLayer>().Count(l => !reluInputs.Contains(l.Name)), Count("ReduceMin"));
                    Assert.Equal(conv, Count("DequantizeLinear")); // conv weights stay int8, dequantized per run
                    break;
                case QuantizationMode.Int8Static:
                    Assert.Equal(dense, Count("QGemm"));
                    Assert.Equal(conv, Count("QLinearConv"));
                    Assert.Equal(0, Count("DequantizeLinear"));
                    break;
                case QuantizationMode.Int4WeightOnly:
                    Assert.Equal(dense, Count("MatMulNBits"));
                    Assert.Equal(conv, Count("DequantizeLinear"));
                    break;
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Throughput_IsPrinted()
    {
        var rows = UniformRows(10_000, 784, seed: 1003);
        var flat = rows.SelectMany(r => r).ToArray();
        foreach (var (name, model) in new[] { ("LeNet-300-100", Model("mlp")), ("LeNet-5", Model("lenet")) })
        {
            var probs = new float[rows.Length * 10];
            foreach (var mode in new QuantizationMode?[] { null, QuantizationMode.Float16, QuantizationMode.Int8Dynamic, QuantizationMode.Int8Static, QuantizationMode.Int4WeightOnly })
            {
                var onnx = mode is { } m ? OnnxExporter.Export(model, QuantizedExport.Options(model, Spec(model, m))) : OnnxExporter.Export(model);
                using var scorer = new BatchedOnnxScorer(onnx);
                const int batch = 256;
                scorer.Score(flat, batch, probs); // warm-up
                var sw = Stopwatch.StartNew();
                for (int start = 0; start < rows.Length; start += batch)
                {
                    int n = Math.Min(batch, rows.Length - start);
                    scorer.Score(flat.AsSpan(start * 784, n * 784), n, probs.AsSpan(start * 10, n * 10));
                }
                sw.Stop();
                output.WriteLine($"{name} {(mode?.ToString() ?? "Float32"),-16}: {rows.Length / sw.Elapsed.TotalSeconds,10:N0} rows/s (batches of {batch}, {Environment.ProcessorCount} cores)");
            }
        }
    }

    private static int ArgMax(float[] p, int row)
    {
        int best = 0;
        for (int c = 1; c < 10; c++)
            if (p[row * 10 + c] > p[row * 10 + best])
                best = c;
        return best;
    }

    private static float[] RunOrt(byte[] onnx, float[][] features)
    {
        using var session = new InferenceSession(onnx);
        return RunOrt(session, features);
    }

    private static float[] RunOrt(InferenceSession session, float[][] features)
    {
        var input = new DenseTensor<float>(features.SelectMany(f => f).ToArray(), [features.Length, features[0].Length]);
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("Features", input)]);
        return results.Single(r => r.Name == "Score").AsTensor<float>().ToArray();
    }

    /// <summary>Min/max of each weighted layer's input over <paramref name="rows"/>, by a plain float forward pass.</summary>
    internal static Dictionary<string, ActivationRange> CalibrateMinMax(NetworkModel model, float[][] rows)
    {
        var min = new Dictionary<string, float>();
        var max = new Dictionary<string, float>();
        foreach (var row in rows)
        {
            float[] x = row;
            foreach (var layer in model.Layers)
            {
                if (layer is ParameterizedLayer p)
                {
                    min[p.Name] = Math.Min(min.GetValueOrDefault(p.Name, float.MaxValue), x.Min());
                    max[p.Name] = Math.Max(max.GetValueOrDefault(p.Name, float.MinValue), x.Max());
                }
                x = layer switch
                {
                    DenseModelLayer d => Activate(Dense(d, x), d.Activation),
                    ConvModelLayer c => Activate(Conv(c, x), c.Activation),
                    MaxPoolModelLayer mp => MaxPool(mp, x),
                    _ => x,
                };
            }
        }
        return min.Keys.ToDictionary(k => k, k => new ActivationRange(min[k], max[k]));
    }

    private static float[] Activate(float[] x, Activation a) => a == Activation.Relu ? x.Select(v => Math.Max(0f, v)).ToArray() : x;

    private static float[] Dense(DenseModelLayer d, float[] x)
    {
        var y = new float[d.OutFeatures];
        for (int o = 0; o < d.OutFeatures; o++)
        {
            float s = d.Bias[o];
            for (int i = 0; i < d.InFeatures; i++)
                s += d.Weight[o * d.InFeatures + i] * x[i];
            y[o] = s;
        }
        return y;
    }

    private static float[] Conv(ConvModelLayer c, float[] x)
    {
        int inH = c.InputShape[1], inW = c.InputShape[2], outC = c.OutputShape[0], outH = c.OutputShape[1], outW = c.OutputShape[2];
        int k = c.Kernel, inPerGroup = c.InChannels / c.Groups, outPerGroup = outC / c.Groups;
        var y = new float[outC * outH * outW];
        for (int oc = 0; oc < outC; oc++)
            for (int oh = 0; oh < outH; oh++)
                for (int ow = 0; ow < outW; ow++)
                {
                    float s = c.Bias[oc];
                    for (int icl = 0; icl < inPerGroup; icl++)
                    {
                        int ic = oc / outPerGroup * inPerGroup + icl;
                        for (int kh = 0; kh < k; kh++)
                            for (int kw = 0; kw < k; kw++)
                            {
                                int ih = oh * c.Stride - c.Padding + kh, iw = ow * c.Stride - c.Padding + kw;
                                if (ih >= 0 && ih < inH && iw >= 0 && iw < inW)
                                    s += c.Weight[((oc * inPerGroup + icl) * k + kh) * k + kw] * x[(ic * inH + ih) * inW + iw];
                            }
                    }
                    y[(oc * outH + oh) * outW + ow] = s;
                }
        return y;
    }

    private static float[] MaxPool(MaxPoolModelLayer p, float[] x)
    {
        int ch = p.InputShape[0], inH = p.InputShape[1], inW = p.InputShape[2], outH = p.OutputShape[1], outW = p.OutputShape[2];
        var y = new float[ch * outH * outW];
        for (int c = 0; c < ch; c++)
            for (int oh = 0; oh < outH; oh++)
                for (int ow = 0; ow < outW; ow++)
                {
                    float m = float.NegativeInfinity;
                    for (int kh = 0; kh < p.Kernel; kh++)
                        for (int kw = 0; kw < p.Kernel; kw++)
                            m = Math.Max(m, x[(c * inH + oh * p.Stride + kh) * inW + ow * p.Stride + kw]);
                    y[(c * outH + oh) * outW + ow] = m;
                }
        return y;
    }
}
