using MLNet.Compression.Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.Compression.Networks;

/// <summary>The non-linearity applied after a layer.</summary>
public enum Activation
{
    /// <summary>No activation: the layer is linear.</summary>
    None,

    /// <summary>Rectified linear unit, max(0, x).</summary>
    Relu,
}

/// <summary>The TorchSharp and ONNX forms of each <see cref="Activation"/> (the one place that knows them).</summary>
internal static class Activations
{
    /// <summary>The module applying <paramref name="activation"/>, or null for <see cref="Activation.None"/>.</summary>
    public static nn.Module<Tensor, Tensor>? CreateModule(Activation activation) => activation switch
    {
        Activation.None => null,
        Activation.Relu => nn.ReLU(),
        _ => throw new NotSupportedException($"Activation {activation} has no TorchSharp module."),
    };

    /// <summary>Writes <paramref name="activation"/> of <paramref name="input"/> as the ONNX node(s) of layer <paramref name="layerName"/>.</summary>
    public static string Emit(OnnxGraphBuilder graph, string layerName, Activation activation, string input) => activation switch
    {
        Activation.None => input,
        Activation.Relu => graph.AddNode("Relu", [input], layerName + ".relu"),
        _ => throw new NotSupportedException($"Layer '{layerName}': activation {activation} cannot be exported to ONNX."),
    };
}
