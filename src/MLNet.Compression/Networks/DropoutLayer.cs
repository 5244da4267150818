using System.Text.Json.Nodes;
using MLNet.Compression.Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.Compression.Networks;

/// <summary>
/// Dropout: while training, each value is zeroed with probability <see cref="Rate"/> and the others are scaled by
/// 1 / (1 − rate); in evaluation, validation, scoring and the exported ONNX model it is the identity.
/// </summary>
/// <param name="Rate">Probability of zeroing a value while training, in [0, 1).</param>
public sealed record DropoutLayer(double Rate) : LayerSpec;

/// <summary>Resolution and JSON form of <see cref="DropoutLayer"/>.</summary>
internal sealed class DropoutLayerType : LayerType<DropoutLayer>
{
    public override string JsonType => "dropout";

    public override LayerSpec FromJson(JsonObject json) => new DropoutLayer((double)json["rate"]!);

    protected override JsonObject ToJson(DropoutLayer spec) => new() { ["rate"] = spec.Rate };

    protected override void Resolve(DropoutLayer spec, LayerResolver resolver)
    {
        if (!(spec.Rate >= 0 && spec.Rate < 1))
            throw resolver.Error($"the dropout rate must be in [0, 1), but is {spec.Rate}.");
        resolver.Add(new DropoutModelLayer(resolver.NextName("dropout"), resolver.Shape, spec.Rate));
    }
}

/// <summary>A resolved dropout layer: active in training mode only.</summary>
internal sealed class DropoutModelLayer : ModelLayer
{
    public DropoutModelLayer(string name, int[] shape, double rate) : base(name, shape, shape) => Rate = rate;

    public double Rate { get; }

    public override bool KeepsQuantizedValues => true;

    /// <summary>The output and the kept-values mask.</summary>
    public override long ActivationElements => 2 * ShapeSize(OutputShape);

    public override ModelLayer Clone() => new DropoutModelLayer(Name, InputShape, Rate);

    public override IEnumerable<(string Name, nn.Module<Tensor, Tensor> Module)> CreateModules()
    {
        yield return (Name, nn.Dropout(Rate));
    }

    /// <summary>The identity in every encoding: exported models are for inference.</summary>
    public override string EmitOnnx(OnnxGraphBuilder graph, OnnxLayerEmitter encoding, string input) => input;

    public override ModelLayer Shrink(int[]? keptIn, int[]? keepOwn, out int[]? keptOut)
    {
        keptOut = keptIn;
        int[] shape = InputShape.ToArray();
        if (keptIn is not null)
            shape[0] = keptIn.Length;
        return new DropoutModelLayer(Name, shape, Rate);
    }
}
