using System.Text.Json.Nodes;
using MLNet.Compression.Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.Compression.Networks;

/// <summary>Flattens a [channels, height, width] activation into a vector; needed between convolutional and dense layers.</summary>
public sealed record FlattenLayer : LayerSpec;

/// <summary>Resolution and JSON form of <see cref="FlattenLayer"/>.</summary>
internal sealed class FlattenLayerType : LayerType<FlattenLayer>
{
    public override string JsonType => "flatten";

    public override LayerSpec FromJson(JsonObject json) => new FlattenLayer();

    protected override JsonObject ToJson(FlattenLayer spec) => new();

    protected override void Resolve(FlattenLayer spec, LayerResolver resolver) => resolver.FlattenToVector();
}

/// <summary>A resolved flatten layer (NCHW order).</summary>
internal sealed class FlattenModelLayer : ModelLayer
{
    public FlattenModelLayer(string name, int[] inputShape)
        : base(name, inputShape, [checked((int)ShapeSize(inputShape))])
    {
    }

    public override bool KeepsQuantizedValues => true;

    public override ModelLayer Clone() => new FlattenModelLayer(Name, InputShape);

    public override IEnumerable<(string Name, nn.Module<Tensor, Tensor> Module)> CreateModules()
    {
        yield return (Name, nn.Flatten());
    }

    public override string EmitOnnx(OnnxGraphBuilder graph, OnnxLayerEmitter encoding, string input) =>
        graph.AddNode("Flatten", [input], Name, new Dictionary<string, object> { ["axis"] = 1L });

    /// <summary>Surviving channels become their H×W blocks of features.</summary>
    public override ModelLayer Shrink(int[]? keptIn, int[]? keepOwn, out int[]? keptOut)
    {
        int[] inShape = InputShape.ToArray();
        keptOut = keptIn;
        if (keptIn is not null && inShape.Length == 3)
        {
            int hw = inShape[1] * inShape[2];
            keptOut = keptIn.SelectMany(ch => Enumerable.Range(ch * hw, hw)).ToArray();
            inShape[0] = keptOut.Length / hw;
        }
        else if (keptIn is not null)
        {
            inShape[0] = keptIn.Length;
        }
        return new FlattenModelLayer(Name, inShape);
    }
}
