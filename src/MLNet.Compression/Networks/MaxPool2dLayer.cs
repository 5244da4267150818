using System.Text.Json.Nodes;
using MLNet.Compression.Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.Compression.Networks;

/// <summary>Max pooling over square windows.</summary>
/// <param name="KernelSize">Side of the pooling window; must be positive.</param>
/// <param name="Stride">Stride; when 0 it equals <paramref name="KernelSize"/>.</param>
public sealed record MaxPool2dLayer(int KernelSize, int Stride = 0) : LayerSpec;

/// <summary>Resolution and JSON form of <see cref="MaxPool2dLayer"/>.</summary>
internal sealed class MaxPool2dLayerType : LayerType<MaxPool2dLayer>
{
    public override string JsonType => "maxpool2d";

    public override LayerSpec FromJson(JsonObject json) => new MaxPool2dLayer((int)json["kernel"]!, (int)json["stride"]!);

    protected override JsonObject ToJson(MaxPool2dLayer p) => new() { ["kernel"] = p.KernelSize, ["stride"] = p.Stride };

    protected override void Resolve(MaxPool2dLayer p, LayerResolver resolver)
    {
        var shape = resolver.Shape;
        if (shape.Length != 3)
            throw resolver.Error("pooling needs a [channels, height, width] input.");
        int stride = p.Stride == 0 ? p.KernelSize : p.Stride;
        if (p.KernelSize <= 0 || stride <= 0 || p.KernelSize > shape[1] || p.KernelSize > shape[2])
            throw resolver.Error($"the pooling window must be positive and fit the {shape[1]}x{shape[2]} input.");
        resolver.Add(new MaxPoolModelLayer(resolver.NextName("pool"), shape, p.KernelSize, stride));
    }
}

/// <summary>A resolved max-pooling layer.</summary>
internal sealed class MaxPoolModelLayer : ModelLayer
{
    public MaxPoolModelLayer(string name, int[] inputShape, int kernel, int stride)
        : base(name, inputShape, [inputShape[0], (inputShape[1] - kernel) / stride + 1, (inputShape[2] - kernel) / stride + 1])
    {
        Kernel = kernel;
        Stride = stride;
    }

    public int Kernel { get; }

    public int Stride { get; }

    public override bool KeepsQuantizedValues => true;

    public override ModelLayer Clone() => new MaxPoolModelLayer(Name, InputShape, Kernel, Stride);

    public override IEnumerable<(string Name, nn.Module<Tensor, Tensor> Module)> CreateModules()
    {
        yield return (Name, nn.MaxPool2d(Kernel, Stride));
    }

    /// <summary>MaxPool for every encoding (on uint8 values after a static-quantized layer).</summary>
    public override string EmitOnnx(OnnxGraphBuilder graph, OnnxLayerEmitter encoding, string input) =>
        graph.AddNode("MaxPool", [input], Name, new Dictionary<string, object>
        {
            ["kernel_shape"] = new long[] { Kernel, Kernel },
            ["strides"] = new long[] { Stride, Stride },
        });

    public override ModelLayer Shrink(int[]? keptIn, int[]? keepOwn, out int[]? keptOut)
    {
        keptOut = keptIn;
        return new MaxPoolModelLayer(Name, [keptIn?.Length ?? InputShape[0], InputShape[1], InputShape[2]], Kernel, Stride);
    }
}
