using System.Text.Json.Nodes;
using MLNet.Compression.Onnx;
using MLNet.Compression.Quantization;
using TorchSharp;
using static TorchSharp.torch;
using DataType = MLNet.Compression.Onnx.Proto.TensorProto.Types.DataType;

namespace MLNet.Compression.Networks;

/// <summary>A fully connected layer: y = activation(W·x + b).</summary>
/// <param name="Units">Number of output units (neurons); must be positive.</param>
/// <param name="Activation">Activation applied to the output.</param>
public sealed record DenseLayer(int Units, Activation Activation = Activation.Relu) : LayerSpec;

/// <summary>Resolution and JSON form of <see cref="DenseLayer"/>.</summary>
internal sealed class DenseLayerType : LayerType<DenseLayer>
{
    public override string JsonType => "dense";

    public override bool IsWeighted => true;

    public override LayerSpec FromJson(JsonObject json) =>
        new DenseLayer((int)json["units"]!, Enum.Parse<Activation>((string)json["activation"]!));

    protected override JsonObject ToJson(DenseLayer spec) => new() { ["units"] = spec.Units, ["activation"] = spec.Activation.ToString() };

    protected override void Resolve(DenseLayer spec, LayerResolver resolver)
    {
        if (spec.Units <= 0)
            throw resolver.Error("a dense layer needs a positive number of units.");
        resolver.FlattenToVector();
        resolver.Add(new DenseModelLayer(resolver.NextName("fc"), resolver.Shape[0], spec.Units, spec.Activation));
    }

    protected override DenseLayer? Resize(DenseLayer spec, ParameterizedLayer layer) =>
        layer is DenseModelLayer d ? spec with { Units = d.OutFeatures } : null;
}

/// <summary>A resolved dense layer: weights [out, in].</summary>
internal sealed class DenseModelLayer(string name, int inFeatures, int outFeatures, Activation activation)
    : ParameterizedLayer(name, [inFeatures], [outFeatures], [outFeatures, inFeatures], activation)
{
    public int InFeatures { get; } = inFeatures;

    public int OutFeatures { get; } = outFeatures;

    public override string OnnxOperator => "Gemm";

    public override string QuantizedOperator => "QGemm";

    public override bool CanBeOutputLayer => true;

    public override bool HasDynamicInt8Kernel => true;

    public override bool HasInt4Kernel => true;

    public override ModelLayer Clone()
    {
        var c = new DenseModelLayer(Name, InFeatures, OutFeatures, Activation);
        c.CopyParametersFrom(this);
        return c;
    }

    public override IEnumerable<(string Name, nn.Module<Tensor, Tensor> Module)> CreateModules()
    {
        yield return (Name, nn.Linear(InFeatures, OutFeatures));
        if (Activations.CreateModule(Activation) is { } act)
            yield return (Name + "_relu", act);
    }

    public override Tensor Forward(Tensor input, Tensor weight, Tensor bias) => nn.functional.linear(input, weight, bias);

    /// <inheritdoc />
    /// <remarks>
    /// A row's weight gradient is the outer product gᵀx of its output gradient g [out] and its input x [in], so its square is
    /// (g²)ᵀ(x²) and the sum over rows is one matrix product of the squared batches; the bias gradient is g itself.
    /// </remarks>
    public override (Tensor Weight, Tensor Bias)? SquaredGradientSums(Tensor input, Tensor outputGradient)
    {
        var g2 = outputGradient.square();
        return (g2.t().matmul(input.square()), g2.sum(0L));
    }

    public override ModelLayer Shrink(int[]? keptIn, int[]? keepOwn, out int[]? keptOut)
    {
        if (keptIn is not null && keptIn.Length == 0)
            throw new InvalidOperationException($"Layer '{Name}' would have no inputs.");
        int[] rows = keepOwn ?? Enumerable.Range(0, OutFeatures).ToArray();
        int[] cols = keptIn ?? Enumerable.Range(0, InFeatures).ToArray();
        var nd = new DenseModelLayer(Name, cols.Length, rows.Length, Activation);
        for (int r = 0; r < rows.Length; r++)
        {
            int srcRow = rows[r] * InFeatures;
            int dstRow = r * cols.Length;
            for (int c = 0; c < cols.Length; c++)
                nd.Weight[dstRow + c] = Weight[srcRow + cols[c]];
            nd.Bias[r] = Bias[rows[r]];
        }
        keptOut = keepOwn;
        return nd;
    }

    /// <summary>
    /// Gemm(x, W, b) with transB for float, float16, int8 static (QDQ), sparse and clustered weights; the encoding's own
    /// kernels for int8 dynamic (<see cref="EmitDynamicInt8"/>) and int4 (<see cref="EmitInt4"/>).
    /// </summary>
    public override string EmitOnnx(OnnxGraphBuilder graph, OnnxLayerEmitter encoding, string input)
    {
        var y = encoding.ComputeOf(this) switch
        {
            WeightCompute.DynamicInt8 => EmitDynamicInt8(graph, encoding, input),
            WeightCompute.Int4 => EmitInt4(graph, encoding, input),
            _ => graph.AddNode("Gemm", [encoding.EmitInput(graph, this, input), encoding.EmitWeight(graph, this), encoding.EmitBias(graph, this)],
                Name, new Dictionary<string, object> { ["transB"] = 1L }),
        };
        var output = encoding.EmitActivation(graph, this, y);
        // None and ReLU never increase a magnitude: a bound on y holds for the layer's output too.
        if (graph.MagnitudeBounds.TryGetValue(y, out double bound) && Activation is Activation.None or Activation.Relu)
            graph.MagnitudeBounds[output] = bound;
        return output;
    }

    /// <summary>
    /// Per-row dynamic quantization: each row's activations get their own uint8 scale, the int8 weights [in, out] are
    /// multiplied with them by ONNX Runtime's <c>MatMulIntegerToFloat</c> (com.microsoft), which applies the weights'
    /// per-column scales inside the integer product (activation scale 1), and the row's scale and the bias follow:
    /// y = (x_q·W) · w_scale · x_scale + b. Unlike DynamicQuantizeLinear (one scale for the whole batch), a row's result does
    /// not depend on the other rows it is scored with, so batched in-process scoring and ML.NET's one-row-at-a-time scoring
    /// give identical outputs. After a Relu the row's values are never below 0: scale = max / 255, zero point 0. Elsewhere
    /// (the model's input) the scale is symmetric, max |x| / 127, with the fixed zero point 128, which the integer kernel
    /// takes out itself (issue 19: no per-row zero point, no column-sum correction, no Cast, no [N, out] scale product).
    /// </summary>
    private string EmitDynamicInt8(OnnxGraphBuilder graph, OnnxLayerEmitter encoding, string input)
    {
        if (encoding.PerBatchActivationScales)
            return EmitPerBatchInt8(graph, encoding, input);
        var q = encoding.QuantizeWeights(this);
        int k = InFeatures, n = OutFeatures;
        string name = Name;
        var w = encoding.AddIntegerTensor(graph, name + ".weight_q", InputMajor(q.Values!), [k, n], 8);
        var ws = QuantizedStorage.AddScale(graph, name + ".weight_scale", q.Scales); // per column [n], or one per tensor
        var unit = graph.AddFloatInitializer(name + ".unit_scale", [1f], []);
        var tiny = graph.AddFloatInitializer(name + ".min_scale", [1e-30f], []);
        var rowAxis = new Dictionary<string, object> { ["axes"] = new long[] { 1 }, ["keepdims"] = 1L };
        var perRow = new Dictionary<string, object> { ["axis"] = 0L };
        // A row holding a NaN or an infinity gets meaningless codes here; the output head's non-finite guard scores it NaN.
        var rowMax = graph.AddNode("ReduceMax", [input], name + ".row_max", rowAxis);
        string scale, z;
        if (IsNonNegative(graph, input))
        {
            // A ReLU's output: the row minimum is 0 (and the maximum at least 0), so uint8 codes 0-255 cover [0, max] with zero point 0.
            var levels = graph.AddFloatInitializer(name + ".levels", [255f], []);
            scale = graph.AddNode("Max", [graph.AddNode("Div", [rowMax, levels], name + ".row_scale_raw"), tiny], name + ".row_scale");
            var xq = graph.AddNode("QuantizeLinear", [input, graph.AddNode("Squeeze", [scale], name + ".row_scale_vector")], name + ".input_q", perRow);
            z = graph.AddNode("MatMulIntegerToFloat", [xq, w, unit, ws], name + ".matmul_scaled", domain: OnnxExporter.MicrosoftDomain);
        }
        else
        {
            // Any sign: symmetric codes 1-255 around the zero point 128 for [-max|x|, max|x|] (127 steps a side);
            // max |x| = max(row max, -row min), never below 0.
            var levels = graph.AddFloatInitializer(name + ".levels", [127f], []);
            var rowMinNeg = graph.AddNode("Neg", [graph.AddNode("ReduceMin", [input], name + ".row_min", rowAxis)], name + ".row_min_neg");
            var absMax = graph.AddNode("Max", [rowMax, rowMinNeg], name + ".row_abs_max");
            scale = graph.AddNode("Max", [graph.AddNode("Div", [absMax, levels], name + ".row_scale_raw"), tiny], name + ".row_scale");
            var rowScales = graph.AddNode("Squeeze", [scale], name + ".row_scale_vector");
            var midpoint = graph.AddRawInitializer(name + ".zero_point", DataType.Uint8, [128], 1, [], 1);
            // QuantizeLinear along axis 0 takes one zero point per row: 128 repeated to the row count.
            var rowZeroPoints = graph.AddNode("Expand", [midpoint, graph.AddNode("Shape", [rowScales], name + ".row_count")], name + ".row_zero_point_vector");
            var xq = graph.AddNode("QuantizeLinear", [input, rowScales, rowZeroPoints], name + ".input_q", perRow);
            z = graph.AddNode("MatMulIntegerToFloat", [xq, w, unit, ws, midpoint], name + ".matmul_scaled", domain: OnnxExporter.MicrosoftDomain);
        }
        var y = graph.AddNode("Mul", [z, scale], name + ".matmul");
        return graph.AddNode("Add", [y, encoding.EmitBias(graph, this)], name);
    }

    /// <summary>
    /// Per-batch dynamic quantization (<see cref="Quantization.ActivationScaleScope.PerBatch"/>, opt-in): DynamicQuantizeLinear
    /// gives the whole batch one uint8 scale and zero point, then MatMulInteger(x_q, W [in, out], zp) → Cast → Mul(x_scale ·
    /// w_scale) → Add(bias), which ONNX Runtime fuses into DynamicQuantizeMatMul. The input is cleaned first so that one bad
    /// row cannot make the shared scale infinite or NaN and with it every other row's scores NaN:
    /// <list type="bullet">
    /// <item>on the model's input (the first layer): a row with a NaN or infinite feature is replaced by zeros as a whole,
    /// found through the row mean of (x − x) (the same Sub and ReduceMean as the output head's non-finite guard, which ONNX
    /// Runtime's common-subexpression elimination merges with them), inside an If so that only a batch holding such a row
    /// pays for the Where; then Clip to ±<see cref="PerBatchInputLimit"/> so that the batch's max − min cannot overflow; the
    /// guard still scores the bad row NaN;</item>
    /// <item>a hidden layer's activations after such a layer (and None/ReLU activations) need nothing: their magnitude is
    /// bounded by the clip and the weights (<see cref="OnnxGraphBuilder.MagnitudeBounds"/>), below
    /// <see cref="PerBatchActivationLimit"/>, so no value can be infinite or NaN (issue 19: the If, its read pass and the
    /// copy of its else branch cost the per-batch form about a tenth of its time);</item>
    /// <item>elsewhere (activations with no such bound, e.g. after a float convolution, where an outlier row may have
    /// overflowed to infinity): if the sum of squares of the whole batch is not finite (one read pass), every value whose
    /// magnitude is not below <see cref="PerBatchActivationLimit"/> (NaN, ±infinity) is replaced by 0 (Less → Where; after a
    /// ReLU without the Abs).</item>
    /// </list>
    /// </summary>
    private string EmitPerBatchInt8(OnnxGraphBuilder graph, OnnxLayerEmitter encoding, string input)
    {
        var q = encoding.QuantizeWeights(this);
        int k = InFeatures, n = OutFeatures;
        string name = Name;
        var w = encoding.AddIntegerTensor(graph, name + ".weight_q", InputMajor(q.Values!), [k, n], 8);
        var ws = QuantizedStorage.AddScale(graph, name + ".weight_scale", q.Scales);
        string clean;
        double inputBound;
        if (graph.Graph.Input.Any(i => i.Name == input))
        {
            var limit = graph.AddFloatInitializer(name + ".finite_limit", [PerBatchInputLimit], []);
            var zero = graph.AddFloatInitializer(name + ".zero", [0f], []);
            // The row mean of x − x: 0 for a finite row, NaN for a row with a NaN or infinite feature ([N, 1]).
            var rowZero = graph.NonFiniteRowProbe(input, name + ".input_");
            var minusLimit = graph.AddFloatInitializer(name + ".finite_limit_neg", [-PerBatchInputLimit], []);
            // Only a batch that holds such a row pays for zeroing it (the Where over [N, in] is most of the clean's cost): If
            // the sum of the row means is NaN, Where(IsNaN(row mean), 0, x) → Clip, else Clip alone.
            var anyBad = graph.AddNode("IsNaN", [graph.AddNode("ReduceSum", [rowZero], name + ".input_any_bad_sum",
                new Dictionary<string, object> { ["keepdims"] = 0L })], name + ".input_any_bad");
            var zeroRows = graph.Branch(name + ".zero_bad_rows",
                ("IsNaN", [rowZero]), ("Where", ["$previous", zero, input]), ("Clip", ["$previous", minusLimit, limit]));
            var keepRows = graph.Branch(name + ".all_rows_finite", ("Clip", [input, minusLimit, limit]));
            clean = graph.AddNode("If", [anyBad], name + ".input_clean",
                new Dictionary<string, object> { ["then_branch"] = zeroRows, ["else_branch"] = keepRows });
            inputBound = PerBatchInputLimit;
        }
        else if (graph.MagnitudeBounds.TryGetValue(input, out double bound) && bound < PerBatchActivationLimit)
        {
            // Issue 19: the activations are finite and below the limit by construction (a bound carried from the clipped input
            // through the layers before: see the end of this method), so the clean could never change a value: none is written.
            clean = input;
            inputBound = bound;
        }
        else
        {
            var limit = graph.AddFloatInitializer(name + ".finite_limit", [PerBatchActivationLimit], []);
            var zero = graph.AddFloatInitializer(name + ".zero", [0f], []);
            // Only a batch whose activations hold a NaN, an infinity or a huge value pays for the clean: If the sum of squares
            // (NaN or infinite then; one read pass) is not below infinity, Where(in range, x, 0), else x. A ReLU's output is never
            // below 0, so x < limit suffices there (false for NaN too); otherwise |x| < limit (false for NaN and ±inf).
            var sumSquares = graph.AddNode("ReduceSumSquare", [input], name + ".input_sum_squares", new Dictionary<string, object> { ["keepdims"] = 0L });
            var infinity = graph.AddFloatInitializer(name + ".infinity", [float.PositiveInfinity], []);
            var suspect = graph.AddNode("Not", [graph.AddNode("Less", [sumSquares, infinity], name + ".input_sum_squares_finite")], name + ".input_suspect");
            var zeroOutOfRange = IsNonNegative(graph, input)
                ? graph.Branch(name + ".zero_out_of_range", ("Less", [input, limit]), ("Where", ["$previous", input, zero]))
                : graph.Branch(name + ".zero_out_of_range", ("Abs", [input]), ("Less", ["$previous", limit]), ("Where", ["$previous", input, zero]));
            var unchanged = graph.Branch(name + ".all_in_range", ("Identity", [input]));
            clean = graph.AddNode("If", [suspect], name + ".input_clean",
                new Dictionary<string, object> { ["then_branch"] = zeroOutOfRange, ["else_branch"] = unchanged });
            inputBound = PerBatchActivationLimit;
        }
        var dql = graph.AddNode("DynamicQuantizeLinear", [clean], [name + ".input_q", name + ".batch_scale", name + ".batch_zero_point"]);
        var mm = graph.AddNode("MatMulInteger", [dql[0], w, dql[2]], name + ".matmul_int32");
        var mmf = graph.AddNode("Cast", [mm], name + ".matmul_float", new Dictionary<string, object> { ["to"] = (long)DataType.Float });
        var outScale = graph.AddNode("Mul", [dql[1], ws], name + ".output_scale");
        var y = graph.AddNode("Mul", [mmf, outScale], name + ".matmul");
        var result = graph.AddNode("Add", [y, encoding.EmitBias(graph, this)], name);
        // A bound on |result|: the batch's scale is (max(x, 0) − min(x, 0)) / 255 ≤ 2·bound / 255 and |x_q − zero point| ≤ 255, so
        // each output is at most 2·bound·Σ|dequantized weights of its row| + |bias|; with a margin for float rounding.
        var dequantized = q.Dequantize();
        double rowSum = 0;
        for (int o = 0; o < n; o++)
        {
            double sum = 0;
            foreach (float v in dequantized.AsSpan(o * k, k))
                sum += Math.Abs(v);
            rowSum = Math.Max(rowSum, sum);
        }
        double outputBound = (2 * inputBound * rowSum + Bias.Select(b => Math.Abs((double)b)).DefaultIfEmpty(0).Max()) * 1.01;
        if (double.IsFinite(outputBound))
            graph.MagnitudeBounds[result] = outputBound;
        return result;
    }

    /// <summary>
    /// Per-batch int8: the model's input is clipped to ± this before the batch's scale is taken, so that max − min cannot overflow
    /// and the activations of the layers after it stay finite and below <see cref="PerBatchActivationLimit"/> (each layer's
    /// bound follows from its weights); a feature this large already flattens its batch's scale for every other row.
    /// </summary>
    internal const float PerBatchInputLimit = 1e18f;

    /// <summary>
    /// Per-batch int8: a hidden layer's values of at least this magnitude (half of float.MaxValue) are replaced by 0 before the
    /// batch's scale is taken, where the layers before it cannot bound them below it.
    /// </summary>
    internal const float PerBatchActivationLimit = float.MaxValue / 2;

    /// <summary>
    /// The integer weights [out, in] (this layer's layout) as [in, out], the layout MatMulInteger and MatMul take as their
    /// second input.
    /// </summary>
    private sbyte[] InputMajor(sbyte[] values)
    {
        int k = InFeatures, n = OutFeatures;
        var transposed = new sbyte[values.Length];
        for (int o = 0; o < n; o++)
            for (int i = 0; i < k; i++)
                transposed[i * n + o] = values[o * k + i];
        return transposed;
    }

    /// <summary>Whether <paramref name="value"/> is the output of a Relu node of <paramref name="graph"/> (never below 0).</summary>
    private static bool IsNonNegative(OnnxGraphBuilder graph, string value) =>
        graph.Graph.Node.LastOrDefault(n => n.Output.Contains(value)) is { OpType: "Relu" };

    /// <summary>
    /// MatMul(x, DequantizeLinear(W_int4 [in, out], scales [blocks, out], axis = 0, block_size)) + bias: opset-21 blocked
    /// quantization that ONNX Runtime rewrites into MatMulNBits.
    /// </summary>
    private string EmitInt4(OnnxGraphBuilder graph, OnnxLayerEmitter encoding, string input)
    {
        var q = encoding.QuantizeWeights(this);
        int k = InFeatures, n = OutFeatures, bs = q.BlockSize;
        int blocks = q.BlocksPerRow;
        var scales = new float[blocks * n];
        for (int b = 0; b < blocks; b++)
            for (int o = 0; o < n; o++)
                scales[b * n + o] = q.Scales[o * blocks + b];
        var w = encoding.AddIntegerTensor(graph, Name + ".weight_q4", InputMajor(q.Values!), [k, n], 4);
        var s = graph.AddFloatInitializer(Name + ".weight_scale", scales, [blocks, n]);
        var wf = graph.AddNode("DequantizeLinear", [w, s], Name + ".weight_t",
            new Dictionary<string, object> { ["axis"] = 0L, ["block_size"] = (long)bs });
        var y = graph.AddNode("MatMul", [input, wf], Name + ".matmul");
        return graph.AddNode("Add", [y, encoding.EmitBias(graph, this)], Name);
    }
}
