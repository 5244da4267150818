using MLNet.Compression.Networks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.Compression;

/// <summary>A TorchSharp module built from a <see cref="NetworkModel"/>; weights copy both ways.</summary>
internal sealed class TorchNetwork : nn.Module<Tensor, Tensor>
{
    private readonly Sequential body;
    private readonly long[]? imageShape;
    private readonly List<(ParameterizedLayer Layer, nn.Module<Tensor, Tensor> Module)> parameterized = new();

    public TorchNetwork(NetworkModel model) : base("network")
    {
        var modules = new List<(string, nn.Module<Tensor, Tensor>)>();
        foreach (var layer in model.Layers)
        {
            switch (layer)
            {
                case DenseModelLayer d:
                    var linear = nn.Linear(d.InFeatures, d.OutFeatures);
                    modules.Add((d.Name, linear));
                    parameterized.Add((d, linear));
                    if (d.Activation == Activation.Relu)
                        modules.Add((d.Name + "_relu", nn.ReLU()));
                    break;
                case ConvModelLayer c:
                    var conv = nn.Conv2d(c.InChannels, c.OutChannels, c.Kernel, stride: c.Stride, padding: c.Padding, groups: c.Groups);
                    modules.Add((c.Name, conv));
                    parameterized.Add((c, conv));
                    if (c.Activation == Activation.Relu)
                        modules.Add((c.Name + "_relu", nn.ReLU()));
                    break;
                case MaxPoolModelLayer p:
                    modules.Add((p.Name, nn.MaxPool2d(p.Kernel, p.Stride)));
                    break;
                case FlattenModelLayer f:
                    modules.Add((f.Name, nn.Flatten()));
                    break;
                default:
                    throw new NotSupportedException($"Layer {layer.Name} of type {layer.GetType().Name} has no TorchSharp equivalent.");
            }
        }
        body = nn.Sequential(modules);
        if (model.InputShape.Length == 3)
            imageShape = [-1, model.InputShape[0], model.InputShape[1], model.InputShape[2]];
        RegisterComponents();
    }

    /// <summary>The parameterized layers in order with their modules (Linear or Conv2d).</summary>
    public IReadOnlyList<(ParameterizedLayer Layer, nn.Module<Tensor, Tensor> Module)> ParameterizedModules => parameterized;

    public override Tensor forward(Tensor input)
    {
        var x = imageShape is null ? input : input.view(imageShape);
        return body.forward(x);
    }

    /// <summary>Weight and bias parameters of a Linear or Conv2d module.</summary>
    public static (Parameter Weight, Parameter Bias) ParametersOf(nn.Module<Tensor, Tensor> module) => module switch
    {
        Linear l => (l.weight!, l.bias!),
        Conv2d c => (c.weight!, c.bias!),
        _ => throw new NotSupportedException(module.GetType().Name),
    };

    /// <summary>Copies the weights of <paramref name="model"/> into this module (any device, any dtype).</summary>
    public void LoadWeights(NetworkModel model)
    {
        using var noGrad = no_grad();
        var layers = model.ParameterizedLayers.ToArray();
        if (layers.Length != parameterized.Count)
            throw new InvalidOperationException($"The network has {parameterized.Count} weighted layers but the model has {layers.Length}.");
        for (int i = 0; i < layers.Length; i++)
        {
            var (w, b) = ParametersOf(parameterized[i].Module);
            using var wt = tensor(layers[i].Weight, layers[i].WeightShape.Select(d => (long)d).ToArray());
            using var bt = tensor(layers[i].Bias, [layers[i].Bias.LongLength]);
            w.copy_(wt);
            b.copy_(bt);
        }
    }

    /// <summary>Copies this module's weights into <paramref name="model"/>'s arrays.</summary>
    public void StoreWeights(NetworkModel model)
    {
        var layers = model.ParameterizedLayers.ToArray();
        for (int i = 0; i < layers.Length; i++)
        {
            var (w, b) = ParametersOf(parameterized[i].Module);
            layers[i].Weight = ToArray(w);
            layers[i].Bias = ToArray(b);
        }
    }

    internal static float[] ToArray(Tensor t)
    {
        using var scope = NewDisposeScope();
        var cpu = t.detach().to(ScalarType.Float32).cpu().contiguous();
        return cpu.data<float>().ToArray();
    }
}
