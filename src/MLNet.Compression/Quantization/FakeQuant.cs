using MLNet.Compression.Networks;
using TorchSharp;
using static TorchSharp.torch;
using MLNet.Compression.Training;

namespace MLNet.Compression.Quantization;

/// <summary>An <see cref="ILayerInterceptor"/> from two delegates (either may be null: the value is used unchanged).</summary>
internal sealed class LayerInterceptor(Func<int, ParameterizedLayer, Tensor, Tensor>? input, Func<int, ParameterizedLayer, Tensor, Tensor>? weight) : ILayerInterceptor
{
    /// <inheritdoc />
    public Tensor Input(int index, ParameterizedLayer layer, Tensor value) => input is null ? value : input(index, layer, value);

    /// <inheritdoc />
    public Tensor Weight(int index, ParameterizedLayer layer, Tensor value) => weight is null ? value : weight(index, layer, value);
}

/// <summary>
/// Simulated quantization with a straight-through estimator: the forward pass sees the rounded value, the gradient passes
/// through as if rounding were the identity (<c>x + (q(x) - x).detach()</c>).
/// </summary>
internal static class FakeQuant
{
    private static readonly Scalar Int8Max = 127.0.ToScalar();
    private static readonly Scalar Int8Min = (-127.0).ToScalar();
    private static readonly Scalar Tiny = 1e-12.ToScalar();
    private static readonly Scalar MinusOne = (-1.0).ToScalar();

    /// <summary>Symmetric int8 rounding of a weight tensor, one scale per output channel (first dimension) or per tensor.</summary>
    public static Tensor Weight(Tensor w, bool perChannel)
    {
        var wd = w.detach();
        var rows = wd.reshape(wd.shape[0], -1);
        var amax = perChannel ? rows.abs().amax([1], keepdim: true) : rows.abs().max();
        var scale = amax.div(Int8Max).clamp_min(Tiny);
        var q = rows.div(scale).round().clamp(Int8Min, Int8Max).mul(scale).reshape(wd.shape);
        return w.add(q.add(wd, MinusOne), Scalars.One);
    }

    /// <summary>The quantized values of <see cref="Weight"/> without the gradient path (what the exported int8 weights dequantize to).</summary>
    public static float[] RoundTrip(float[] weight, int outputs, bool perChannel)
    {
        var result = new float[weight.Length];
        int fanIn = weight.Length / outputs;
        float tensorMax = perChannel ? 0 : weight.Max(MathF.Abs);
        for (int o = 0; o < outputs; o++)
        {
            var row = weight.AsSpan(o * fanIn, fanIn);
            float amax = perChannel ? 0 : tensorMax;
            if (perChannel)
                foreach (var v in row)
                    amax = MathF.Max(amax, MathF.Abs(v));
            float scale = MathF.Max(amax / 127f, 1e-12f);
            for (int i = 0; i < fanIn; i++)
                result[o * fanIn + i] = Math.Clamp(MathF.Round(row[i] / scale, MidpointRounding.ToEven), -127f, 127f) * scale;
        }
        return result;
    }

    /// <summary>
    /// Asymmetric uint8 rounding of an activation over [<paramref name="min"/>, <paramref name="max"/>] (widened to hold 0,
    /// so that 0 is exact), with a straight-through gradient.
    /// </summary>
    public static Tensor Activation(Tensor x, float min, float max)
    {
        min = MathF.Min(min, 0);
        max = MathF.Max(max, 0);
        if (!(max - min > 1e-12f))
            return x;
        double scale = (max - min) / 255.0;
        double zeroPoint = Math.Clamp(Math.Round(-min / scale), 0, 255);
        using var s = scale.ToScalar();
        using var zp = zeroPoint.ToScalar();
        using var lo = 0.0.ToScalar();
        using var hi = 255.0.ToScalar();
        var xd = x.detach();
        var q = xd.div(s).round().add(zp, Scalars.One).clamp(lo, hi).add(zp, MinusOne).mul(s);
        return x.add(q.add(xd, MinusOne), Scalars.One);
    }
}

/// <summary>
/// Quantization-aware fine-tuning through <see cref="TrainingHooks"/>: the training forward runs with fake-quantized weights
/// (int8, symmetric) and, when <c>activations</c> is set, fake-quantized layer inputs over running (moving-average)
/// min/max ranges that start from a calibration of the float model. The optimizer updates the float master weights.
/// Weights that are exactly zero at the start (pruned) are held at zero after every step.
/// </summary>
internal sealed class FakeQuantTraining : IDisposable
{
    private const float Averaging = 0.01f;
    private static readonly Scalar Zero = 0.0.ToScalar();
    private readonly bool perChannel;
    private readonly bool[] quantized;
    private readonly float[]? min;
    private readonly float[]? max;
    private readonly Tensor?[] masks;

    public FakeQuantTraining(NetworkModel model, bool perChannel, ISet<string> keepFloat, IReadOnlyDictionary<string, ActivationRange>? initialRanges)
    {
        this.perChannel = perChannel;
        var layers = model.ParameterizedLayers.ToArray();
        quantized = layers.Select(l => !keepFloat.Contains(l.Name)).ToArray();
        masks = new Tensor?[layers.Length];
        if (initialRanges is not null)
        {
            min = layers.Select(l => initialRanges.TryGetValue(l.Name, out var r) ? r.Min : float.NaN).ToArray();
            max = layers.Select(l => initialRanges.TryGetValue(l.Name, out var r) ? r.Max : float.NaN).ToArray();
        }
    }

    public TrainingHooks Hooks() => new()
    {
        BeforeTraining = CaptureMasks,
        Forward = Forward,
        AfterStep = (_, net) => ApplyMasks(net),
    };

    private Tensor Forward(TorchNetwork net, Tensor x) =>
        net.Forward(x, new LayerInterceptor(min is null ? null : QuantizeInput, QuantizeWeight));

    private Tensor QuantizeWeight(int index, ParameterizedLayer layer, Tensor w) =>
        quantized[index] ? FakeQuant.Weight(w, perChannel) : w;

    private Tensor QuantizeInput(int index, ParameterizedLayer layer, Tensor x)
    {
        if (!quantized[index])
            return x;
        float lo, hi;
        using (no_grad())
        {
            using var mn = x.min();
            using var mx = x.max();
            lo = mn.to(ScalarType.Float32).item<float>();
            hi = mx.to(ScalarType.Float32).item<float>();
        }
        if (float.IsNaN(min![index]))
        {
            min[index] = lo;
            max![index] = hi;
        }
        else
        {
            min[index] += Averaging * (lo - min[index]);
            max![index] += Averaging * (hi - max[index]);
        }
        return FakeQuant.Activation(x, min[index], max[index]);
    }

    private void CaptureMasks(TorchNetwork net)
    {
        using var noGrad = no_grad();
        for (int i = 0; i < masks.Length; i++)
        {
            var (w, _) = TorchNetwork.ParametersOf(net.ParameterizedModules[i].Module);
            using var zero = w.eq(Zero);
            using var any = zero.any();
            if (any.item<bool>())
            {
                using var keep = zero.logical_not();
                masks[i] = keep.to(w.dtype);
            }
        }
        ApplyMasks(net);
    }

    private void ApplyMasks(TorchNetwork net)
    {
        using var noGrad = no_grad();
        for (int i = 0; i < masks.Length; i++)
            if (masks[i] is { } mask)
                TorchNetwork.ParametersOf(net.ParameterizedModules[i].Module).Weight.mul_(mask);
    }

    public void Dispose()
    {
        foreach (var m in masks)
            m?.Dispose();
    }
}
