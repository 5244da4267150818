using System.Text.Json.Nodes;
using MLNet.Compression.Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.Compression.Networks;

/// <summary>
/// A 2-D convolution over an input of shape [channels, height, width]. With <see cref="Depthwise"/> each input channel
/// is convolved with its own filter (groups = channels) and <see cref="OutChannels"/> must be a multiple of the input channels.
/// </summary>
/// <param name="OutChannels">Number of output channels (filters); must be positive.</param>
/// <param name="KernelSize">Side of the square kernel; must be positive.</param>
/// <param name="Stride">Stride in both directions; must be positive.</param>
/// <param name="Padding">Zero padding on each side; must be non-negative.</param>
/// <param name="Activation">Activation applied to the output.</param>
/// <param name="Depthwise">Whether the convolution is depthwise (one group per input channel).</param>
public sealed record Conv2dLayer(int OutChannels, int KernelSize, int Stride = 1, int Padding = 0,
    Activation Activation = Activation.Relu, bool Depthwise = false) : LayerSpec;

/// <summary>Resolution and JSON form of <see cref="Conv2dLayer"/>.</summary>
internal sealed class Conv2dLayerType : LayerType<Conv2dLayer>
{
    public override string JsonType => "conv2d";

    public override bool IsWeighted => true;

    public override LayerSpec FromJson(JsonObject json) =>
        new Conv2dLayer((int)json["outChannels"]!, (int)json["kernel"]!, (int)json["stride"]!, (int)json["padding"]!,
            Enum.Parse<Activation>((string)json["activation"]!), (bool)json["depthwise"]!);

    protected override JsonObject ToJson(Conv2dLayer c) => new()
    {
        ["outChannels"] = c.OutChannels, ["kernel"] = c.KernelSize, ["stride"] = c.Stride,
        ["padding"] = c.Padding, ["activation"] = c.Activation.ToString(), ["depthwise"] = c.Depthwise,
    };

    protected override void Resolve(Conv2dLayer c, LayerResolver resolver)
    {
        var shape = resolver.Shape;
        if (shape.Length != 3)
            throw resolver.Error($"a convolution needs a [channels, height, width] input, but the input here is [{string.Join(", ", shape)}].");
        if (c.OutChannels <= 0 || c.KernelSize <= 0 || c.Stride <= 0 || c.Padding < 0)
            throw resolver.Error("channels, kernel size and stride must be positive and padding non-negative.");
        int groups = 1;
        if (c.Depthwise)
        {
            groups = shape[0];
            if (c.OutChannels % groups != 0)
                throw resolver.Error($"a depthwise convolution needs a multiple of the {groups} input channels as output channels.");
        }
        var outShape = ConvModelLayer.ConvOutput(shape, c.OutChannels, c.KernelSize, c.Stride, c.Padding);
        if (outShape[1] <= 0 || outShape[2] <= 0)
            throw resolver.Error($"the kernel does not fit the {shape[1]}x{shape[2]} input.");
        resolver.Add(new ConvModelLayer(resolver.NextName("conv"), shape, c.OutChannels, c.KernelSize, c.Stride, c.Padding, groups, c.Activation));
    }

    protected override Conv2dLayer? Resize(Conv2dLayer spec, ParameterizedLayer layer) =>
        layer is ConvModelLayer c ? spec with { OutChannels = c.OutChannels } : null;
}

/// <summary>A resolved convolution: weights [out, in/groups, k, k].</summary>
internal sealed class ConvModelLayer(string name, int[] inputShape, int outChannels, int kernel, int stride, int padding, int groups, Activation activation)
    : ParameterizedLayer(name, inputShape, ConvOutput(inputShape, outChannels, kernel, stride, padding),
        [outChannels, inputShape[0] / groups, kernel, kernel], activation)
{
    public int InChannels { get; } = inputShape[0];

    public int OutChannels { get; } = outChannels;

    public int Kernel { get; } = kernel;

    public int Stride { get; } = stride;

    public int Padding { get; } = padding;

    public int Groups { get; } = groups;

    public override string OnnxOperator => "Conv";

    public override string QuantizedOperator => "QLinearConv";

    public override string? UnitsNotRemovable => Groups > 1
        ? "is a depthwise convolution; its filters follow its input channels. Remove filters of the layer before it instead."
        : null;

    internal static int[] ConvOutput(int[] input, int outChannels, int kernel, int stride, int padding)
    {
        int h = (input[1] + 2 * padding - kernel) / stride + 1;
        int w = (input[2] + 2 * padding - kernel) / stride + 1;
        return [outChannels, h, w];
    }

    public override ModelLayer Clone()
    {
        var c = new ConvModelLayer(Name, InputShape, OutChannels, Kernel, Stride, Padding, Groups, Activation);
        c.CopyParametersFrom(this);
        return c;
    }

    public override IEnumerable<(string Name, nn.Module<Tensor, Tensor> Module)> CreateModules()
    {
        yield return (Name, nn.Conv2d(InChannels, OutChannels, Kernel, stride: Stride, padding: Padding, groups: Groups));
        if (Activations.CreateModule(Activation) is { } act)
            yield return (Name + "_relu", act);
    }

    public override Tensor Forward(Tensor input, Tensor weight, Tensor bias) =>
        nn.functional.conv2d(input, weight, bias, strides: [Stride, Stride], padding: [Padding, Padding], dilation: [1, 1], groups: Groups);

    /// <inheritdoc />
    /// <remarks>
    /// Per row, the weight gradient is the output gradient [out, positions] times the unfolded input (im2col: [positions,
    /// in/groups · k · k] per group), so a batched matrix product over rows and groups gives every row's gradient apart; they are
    /// squared and summed over rows. The bias gradient of a row is its output gradient summed over positions.
    /// </remarks>
    public override (Tensor Weight, Tensor Bias)? SquaredGradientSums(Tensor input, Tensor outputGradient)
    {
        long n = input.shape[0];
        long positions = (long)OutputShape[1] * OutputShape[2];
        long perGroupIn = FanIn;
        var columns = nn.functional.unfold(input, Kernel, dilation: 1, padding: Padding, stride: Stride)
            .view(n, Groups, perGroupIn, positions); // [N, G, in/G·k·k, L]
        var g = outputGradient.reshape(n, Groups, OutChannels / Groups, positions); // [N, G, out/G, L]
        var perRow = g.matmul(columns.transpose(2, 3)); // [N, G, out/G, in/G·k·k]
        var weight = perRow.square().sum(0L).view(WeightShape.Select(d => (long)d).ToArray());
        var bias = outputGradient.reshape(n, OutChannels, positions).sum(2L).square().sum(0L);
        return (weight, bias);
    }

    /// <summary>
    /// Conv(x, W, b) (NCHW, the layer's stride, padding and groups) for every encoding: the encoding supplies the weight
    /// (float, float16, int8 behind DequantizeLinear, sparse, clustered), the bias and, for int8 static, the quantized input.
    /// Convolutions have no integer kernel of their own: int8 dynamic and int4 store int8 weights computed in float.
    /// </summary>
    public override string EmitOnnx(OnnxGraphBuilder graph, OnnxLayerEmitter encoding, string input)
    {
        var y = graph.AddNode("Conv", [encoding.EmitInput(graph, this, input), encoding.EmitWeight(graph, this), encoding.EmitBias(graph, this)], Name,
            new Dictionary<string, object>
            {
                ["kernel_shape"] = new long[] { Kernel, Kernel },
                ["strides"] = new long[] { Stride, Stride },
                ["pads"] = new long[] { Padding, Padding, Padding, Padding },
                ["dilations"] = new long[] { 1, 1 },
                ["group"] = (long)Groups,
            });
        return encoding.EmitActivation(graph, this, y);
    }

    /// <summary>
    /// Keeps the named filters (and the input channels that survive); a depthwise convolution keeps the groups of the
    /// surviving input channels with their filters, which then shrinks the next layer in turn.
    /// </summary>
    public override ModelLayer Shrink(int[]? keptIn, int[]? keepOwn, out int[]? keptOut)
    {
        int[] newInShape = [keptIn?.Length ?? InChannels, InputShape[1], InputShape[2]];
        int kk = Kernel * Kernel;
        int inPerGroup = InChannels / Groups;
        int[] rows;
        int[] inChannelsPerFilter; // source in-channel indices (within a group) copied into each kept filter
        ConvModelLayer nc;
        if (Groups > 1)
        {
            int mult = OutChannels / Groups;
            int[] groups = keptIn ?? Enumerable.Range(0, Groups).ToArray();
            rows = groups.SelectMany(g => Enumerable.Range(g * mult, mult)).ToArray();
            keptOut = keptIn is null ? null : rows;
            inChannelsPerFilter = Enumerable.Range(0, inPerGroup).ToArray();
            nc = new ConvModelLayer(Name, newInShape, rows.Length, Kernel, Stride, Padding, groups.Length, Activation);
        }
        else
        {
            keptOut = keepOwn;
            rows = keepOwn ?? Enumerable.Range(0, OutChannels).ToArray();
            inChannelsPerFilter = keptIn ?? Enumerable.Range(0, InChannels).ToArray();
            nc = new ConvModelLayer(Name, newInShape, rows.Length, Kernel, Stride, Padding, 1, Activation);
        }
        int dstIn = inChannelsPerFilter.Length;
        for (int r = 0; r < rows.Length; r++)
        {
            int srcFilter = rows[r] * inPerGroup * kk;
            int dstFilter = r * dstIn * kk;
            for (int c = 0; c < dstIn; c++)
                Array.Copy(Weight, srcFilter + inChannelsPerFilter[c] * kk, nc.Weight, dstFilter + c * kk, kk);
            nc.Bias[r] = Bias[rows[r]];
        }
        return nc;
    }
}
