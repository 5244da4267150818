using MLNet.Compression.Networks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.Compression.Training;

/// <summary>
/// Sees, and may replace, the input and the weight of every parameterized layer during <see cref="TorchNetwork.Forward(Tensor, ILayerInterceptor)"/>
/// (calibration observes inputs; quantization-aware training fake-quantizes inputs and weights).
/// </summary>
internal interface ILayerInterceptor
{
    /// <summary>The input to use for parameterized layer number <paramref name="index"/> (or <paramref name="value"/> itself).</summary>
    Tensor Input(int index, ParameterizedLayer layer, Tensor value);

    /// <summary>The weight to use for parameterized layer number <paramref name="index"/> (or <paramref name="value"/> itself).</summary>
    Tensor Weight(int index, ParameterizedLayer layer, Tensor value);

    /// <summary>
    /// The output of parameterized layer number <paramref name="index"/> before its activation (or <paramref name="value"/> itself,
    /// the default); EWC's batched Fisher keeps it to take the gradient with respect to it.
    /// </summary>
    Tensor Output(int index, ParameterizedLayer layer, Tensor value) => value;
}

/// <summary>A TorchSharp module built from a <see cref="NetworkModel"/> (each layer creates its own modules); weights copy both ways.</summary>
internal sealed class TorchNetwork : nn.Module<Tensor, Tensor>
{
    private readonly Sequential body;
    private readonly long[]? imageShape;
    private readonly List<(ParameterizedLayer Layer, nn.Module<Tensor, Tensor> Module)> parameterized = new();

    // Per model layer: its modules in order (for a parameterized layer the first holds the weights).
    private readonly List<(ModelLayer Layer, nn.Module<Tensor, Tensor>[] Modules)> steps = new();

    public TorchNetwork(NetworkModel model) : base("network")
    {
        var modules = new List<(string, nn.Module<Tensor, Tensor>)>();
        foreach (var layer in model.Layers)
        {
            var own = layer.CreateModules().ToArray();
            if (own.Length == 0)
                throw new NotSupportedException($"Layer {layer.Name} of type {layer.GetType().Name} created no TorchSharp module.");
            modules.AddRange(own);
            steps.Add((layer, own.Select(m => m.Module).ToArray()));
            if (layer is ParameterizedLayer p)
                parameterized.Add((p, own[0].Module));
        }
        body = nn.Sequential(modules);
        if (model.InputShape.Length == 3)
            imageShape = [-1, model.InputShape[0], model.InputShape[1], model.InputShape[2]];
        RegisterComponents();
    }

    /// <summary>The parameterized layers in order with the modules that hold their weights.</summary>
    public IReadOnlyList<(ParameterizedLayer Layer, nn.Module<Tensor, Tensor> Module)> ParameterizedModules => parameterized;

    public override Tensor forward(Tensor input)
    {
        var x = imageShape is null ? input : input.view(imageShape);
        return body.forward(x);
    }

    /// <summary>
    /// The same forward pass through the same modules, with <paramref name="interceptor"/> shown (and allowed to replace) the
    /// input and weight of every parameterized layer, which then computes <see cref="ParameterizedLayer.Forward"/> with them.
    /// </summary>
    public Tensor Forward(Tensor input, ILayerInterceptor interceptor)
    {
        ArgumentNullException.ThrowIfNull(interceptor);
        var x = imageShape is null ? input : input.view(imageShape);
        int k = 0;
        foreach (var (layer, modules) in steps)
        {
            int first = 0;
            if (layer is ParameterizedLayer p)
            {
                var (w, b) = ParametersOf(modules[0]);
                x = interceptor.Output(k, p, p.Forward(interceptor.Input(k, p, x), interceptor.Weight(k, p, w), b));
                k++;
                first = 1;
            }
            for (int i = first; i < modules.Length; i++)
                x = modules[i].forward(x);
        }
        return x;
    }

    /// <summary>The "weight" and "bias" parameters of the module that holds a layer's weights.</summary>
    public static (Parameter Weight, Parameter Bias) ParametersOf(nn.Module<Tensor, Tensor> module) =>
        (module.get_parameter("weight") ?? throw new NotSupportedException($"Module {module.GetName()} has no 'weight' parameter."),
         module.get_parameter("bias") ?? throw new NotSupportedException($"Module {module.GetName()} has no 'bias' parameter."));

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
        for (int i = 0; i < steps.Count; i++)
            if (model.Layers[i] is IStatefulLayer s)
                s.LoadInto(steps[i].Modules[0]);
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
        for (int i = 0; i < steps.Count; i++)
            if (model.Layers[i] is IStatefulLayer s)
                s.StoreFrom(steps[i].Modules[0]);
    }

    internal static float[] ToArray(Tensor t)
    {
        using var scope = NewDisposeScope();
        var cpu = t.detach().to(ScalarType.Float32).cpu().contiguous();
        return cpu.data<float>().ToArray();
    }
}
