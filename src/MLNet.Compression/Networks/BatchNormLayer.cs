using System.IO.Compression;
using System.Text.Json.Nodes;
using MLNet.Compression.Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.Compression.Networks;

/// <summary>
/// Batch normalization of the layer before it, then <see cref="Activation"/>: y = activation(γ · (x − μ) / √(σ² + ε) + β) per
/// feature (after a <see cref="DenseLayer"/>) or per channel (after a <see cref="Conv2dLayer"/>). While training, μ and σ² are
/// the batch's statistics and the running statistics follow them with <see cref="Momentum"/>; in evaluation, validation,
/// scoring and the exported ONNX model the running statistics are used. At export the normalization is folded into the
/// preceding layer's weights and bias (W' = W · γ/√(σ² + ε), b' = (b − μ) · γ/√(σ² + ε) + β), so the ONNX graph has no
/// BatchNormalization node and every encoding writes the folded weights.
/// </summary>
/// <remarks>
/// It must directly follow a dense or convolution layer whose own activation is <see cref="Activation.None"/> (the
/// activation moves here): <c>new DenseLayer(128, Activation.None), new BatchNormLayer(Activation.Relu)</c>. Anything else is
/// refused when the architecture is resolved, since it could not be folded.
/// </remarks>
public sealed record BatchNormLayer : LayerSpec
{
    private readonly double momentum = 0.1;
    private readonly double epsilon = 1e-5;

    /// <summary>Creates a batch-normalization layer.</summary>
    /// <param name="activation">Activation applied after the normalization.</param>
    /// <param name="momentum">Weight of the current batch in the running statistics, in (0, 1).</param>
    /// <param name="epsilon">Added to the variance before the square root; must be positive.</param>
    public BatchNormLayer(Activation activation = Activation.None, double momentum = 0.1, double epsilon = 1e-5)
    {
        Activation = activation;
        Momentum = momentum;
        Epsilon = epsilon;
    }

    /// <summary>Activation applied after the normalization.</summary>
    public Activation Activation { get; init; }

    /// <summary>Weight of the current batch in the running statistics (PyTorch's convention), in (0, 1); 0.1 by default.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not in (0, 1).</exception>
    public double Momentum
    {
        get => momentum;
        init => momentum = value > 0 && value < 1
            ? value
            : throw new ArgumentOutOfRangeException(nameof(Momentum), value, "The batch-normalization momentum must be in (0, 1); 0.1 is the usual value.");
    }

    /// <summary>Added to the variance before the square root, for numerical stability; must be positive; 1e-5 by default.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not positive (or not finite).</exception>
    public double Epsilon
    {
        get => epsilon;
        init => epsilon = value > 0 && double.IsFinite(value)
            ? value
            : throw new ArgumentOutOfRangeException(nameof(Epsilon), value, "The batch-normalization epsilon must be positive and finite; 1e-5 is the usual value.");
    }
}

/// <summary>Resolution and JSON form of <see cref="BatchNormLayer"/>.</summary>
internal sealed class BatchNormLayerType : LayerType<BatchNormLayer>
{
    public override string JsonType => "batchnorm";

    public override LayerSpec FromJson(JsonObject json) =>
        new BatchNormLayer(Enum.Parse<Activation>((string)json["activation"]!), (double)json["momentum"]!, (double)json["epsilon"]!);

    protected override JsonObject ToJson(BatchNormLayer spec) =>
        new() { ["activation"] = spec.Activation.ToString(), ["momentum"] = spec.Momentum, ["epsilon"] = spec.Epsilon };

    protected override void Resolve(BatchNormLayer spec, LayerResolver resolver)
    {
        if (resolver.Layers.Count == 0 || resolver.Layers[^1] is not (DenseModelLayer or ConvModelLayer))
            throw resolver.Error("batch normalization must directly follow a dense or convolution layer (it is folded into that layer's " +
                "weights at export); put it right after one.");
        var previous = (ParameterizedLayer)resolver.Layers[^1];
        if (previous.Activation != Activation.None)
            throw resolver.Error($"the layer before it has activation {previous.Activation}, so the normalization could not be folded into " +
                $"its weights. Give that layer Activation.None and this layer the activation: new {(previous is DenseModelLayer ? "DenseLayer(units" : "Conv2dLayer(channels, kernel")}, " +
                $"Activation: Activation.None), new BatchNormLayer({previous.Activation}).");
        resolver.Add(new BatchNormModelLayer(resolver.NextName("bn"), resolver.Shape, spec.Activation, spec.Momentum, spec.Epsilon));
    }
}

/// <summary>
/// A layer without weights of its own whose trained values (parameters and buffers of its module, such as batch
/// normalization's γ, β and running statistics) still travel with the model: copied to and from its module, kept by the
/// best-epoch restore, written to checkpoints.
/// </summary>
internal interface IStatefulLayer
{
    /// <summary>The layer's values as arrays, in a fixed order; setting checks the lengths.</summary>
    float[][] State { get; set; }

    /// <summary>Copies the layer's values into <paramref name="module"/> (its first module).</summary>
    void LoadInto(nn.Module module);

    /// <summary>Copies the values of <paramref name="module"/> (its first module) into the layer.</summary>
    void StoreFrom(nn.Module module);
}

/// <summary>
/// A resolved batch normalization over the first dimension of each example (features or channels): γ (weight), β (bias),
/// running mean and running variance, one per channel; TorchSharp's BatchNorm1d or BatchNorm2d while training.
/// </summary>
internal sealed class BatchNormModelLayer : ModelLayer, IStatefulLayer
{
    private static readonly string[] StateNames = ["weight", "bias", "running_mean", "running_var"];
    private float[] gamma;
    private float[] beta;
    private float[] mean;
    private float[] variance;

    public BatchNormModelLayer(string name, int[] shape, Activation activation, double momentum, double epsilon)
        : base(name, shape, shape)
    {
        Activation = activation;
        Momentum = momentum;
        Epsilon = epsilon;
        gamma = Enumerable.Repeat(1f, Channels).ToArray();
        beta = new float[Channels];
        mean = new float[Channels];
        variance = Enumerable.Repeat(1f, Channels).ToArray();
    }

    public Activation Activation { get; }

    public double Momentum { get; }

    public double Epsilon { get; }

    /// <summary>Features (after a dense layer) or channels (after a convolution) normalized.</summary>
    public int Channels => InputShape[0];

    /// <summary>γ, β, running mean, running variance.</summary>
    public float[][] State
    {
        get => [gamma, beta, mean, variance];
        set
        {
            if (value is null || value.Length != 4 || value.Any(a => a is null || a.Length != Channels))
                throw new ArgumentException($"Layer '{Name}' needs 4 arrays of {Channels} values (gamma, beta, running mean, running variance).", nameof(value));
            (gamma, beta, mean, variance) = (value[0], value[1], value[2], value[3]);
        }
    }

    /// <summary>The normalized values kept for the backward pass, the output, and the activation's copy.</summary>
    public override long ActivationElements => ShapeSize(OutputShape) * (Activation == Activation.None ? 2 : 3);

    public override string? UnitsNotRemovable =>
        "is a batch normalization; its channels follow the layer before it. Remove units of that layer instead.";

    public override ModelLayer Clone() => new BatchNormModelLayer(Name, InputShape, Activation, Momentum, Epsilon)
    {
        State = State.Select(a => (float[])a.Clone()).ToArray(),
    };

    public override IEnumerable<(string Name, nn.Module<Tensor, Tensor> Module)> CreateModules()
    {
        yield return (Name, InputShape.Length == 1
            ? nn.BatchNorm1d(Channels, eps: Epsilon, momentum: Momentum)
            : nn.BatchNorm2d(Channels, eps: Epsilon, momentum: Momentum));
        if (Activations.CreateModule(Activation) is { } act)
            yield return (Name + "_relu", act);
    }

    public void LoadInto(nn.Module module)
    {
        using var noGrad = no_grad();
        var state = State;
        for (int i = 0; i < StateNames.Length; i++)
        {
            using var t = tensor(state[i], [Channels]);
            Find(module, StateNames[i]).copy_(t);
        }
    }

    public void StoreFrom(nn.Module module) =>
        State = StateNames.Select(n => Training.TorchNetwork.ToArray(Find(module, n))).ToArray();

    private Tensor Find(nn.Module module, string name) =>
        (Tensor?)module.get_parameter(name) ?? module.get_buffer(name)
        ?? throw new NotSupportedException($"The module of layer '{Name}' has no '{name}' parameter or buffer.");

    /// <summary>Never reached: <see cref="BatchNormFolding.Fold"/> removes the layer before the exporter emits layers.</summary>
    public override string EmitOnnx(OnnxGraphBuilder graph, OnnxLayerEmitter encoding, string input) =>
        throw new InvalidOperationException($"Layer '{Name}' is a batch normalization, which is folded into the layer before it at export; it has no ONNX form of its own.");

    /// <summary>
    /// Weight clustering keeps one codebook per layer; folding multiplies each output unit's weights by its own factor, so
    /// the folded weights would no longer take the codebook's values.
    /// </summary>
    public override string? CannotEncode(LayerEncoding encoding) => encoding == LayerEncoding.Clustered
        ? "batch normalization is folded into the preceding layer's weights at export, scaling each output unit by its own factor, which " +
          "would undo that layer's shared codebook. Train the network without BatchNormLayer to cluster it."
        : null;

    /// <summary>Keeps the surviving channels of the layer before it (their γ, β and statistics).</summary>
    public override ModelLayer Shrink(int[]? keptIn, int[]? keepOwn, out int[]? keptOut)
    {
        keptOut = keptIn;
        if (keptIn is null)
            return Clone();
        int[] shape = InputShape.ToArray();
        shape[0] = keptIn.Length;
        return new BatchNormModelLayer(Name, shape, Activation, Momentum, Epsilon)
        {
            State = State.Select(a => keptIn.Select(c => a[c]).ToArray()).ToArray(),
        };
    }

    /// <summary>
    /// The preceding dense or convolution layer <paramref name="layer"/> with this normalization folded into its weights and
    /// bias (computed in double), and this layer's activation: W' = W · s, b' = (b − μ) · s + β with s = γ / √(σ² + ε) per
    /// output unit. A zero weight stays zero.
    /// </summary>
    public ParameterizedLayer FoldInto(ParameterizedLayer layer)
    {
        if (layer.Activation != Activation.None || layer.OutputUnits != Channels)
            throw new InvalidOperationException(
                $"Layer '{Name}' cannot be folded into '{layer.Name}' ({layer.OutputUnits} units, activation {layer.Activation}): it needs {Channels} units and no activation.");
        ParameterizedLayer folded = layer switch
        {
            DenseModelLayer d => new DenseModelLayer(d.Name, d.InFeatures, d.OutFeatures, Activation),
            ConvModelLayer c => new ConvModelLayer(c.Name, c.InputShape, c.OutChannels, c.Kernel, c.Stride, c.Padding, c.Groups, Activation),
            _ => throw new InvalidOperationException($"Layer '{Name}' cannot be folded into '{layer.Name}' of type {layer.GetType().Name}."),
        };
        int fanIn = layer.FanIn;
        var w = layer.Weight;
        var b = layer.Bias;
        var fw = folded.Weight;
        var fb = folded.Bias;
        for (int o = 0; o < Channels; o++)
        {
            double s = gamma[o] / Math.Sqrt(variance[o] + Epsilon);
            for (int i = o * fanIn, end = i + fanIn; i < end; i++)
                fw[i] = (float)(w[i] * s);
            fb[o] = (float)((b[o] - (double)mean[o]) * s + beta[o]);
        }
        return folded;
    }
}

/// <summary>Folds every <see cref="BatchNormModelLayer"/> of a model into the layer before it (the exported form).</summary>
internal static class BatchNormFolding
{
    /// <summary>
    /// <paramref name="model"/> itself when it has no batch normalization; otherwise a model with the same layer names and
    /// sizes, each normalization folded into its preceding dense or convolution layer, which takes its activation.
    /// </summary>
    public static NetworkModel Fold(NetworkModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (!model.Layers.Any(l => l is BatchNormModelLayer))
            return model;
        var layers = new List<ModelLayer>(model.Layers.Count);
        foreach (var layer in model.Layers)
        {
            if (layer is not BatchNormModelLayer bn)
                layers.Add(layer);
            else if (layers.Count > 0 && layers[^1] is ParameterizedLayer previous)
                layers[^1] = bn.FoldInto(previous);
            else
                throw new InvalidOperationException($"Layer '{bn.Name}' does not follow a dense or convolution layer, so it cannot be folded.");
        }
        return model.WithLayers(layers);
    }

    /// <summary>
    /// The sizes of <paramref name="layer"/>'s trained tensors in the order of its module's parameters (weight and bias; γ and
    /// β for a normalization): what the optimizer state holds for it.
    /// </summary>
    public static IEnumerable<long> TrainedTensorSizes(ModelLayer layer) => layer switch
    {
        ParameterizedLayer p => [p.WeightCount, p.OutputUnits],
        BatchNormModelLayer bn => [bn.Channels, bn.Channels],
        _ => [],
    };

    /// <summary>Checkpoint entry of the <see cref="IStatefulLayer"/> values (float32, layer order), present only when the model has such layers.</summary>
    public const string StateEntry = "layer_state.bin";

    /// <summary>Writes the values of <paramref name="model"/>'s stateful layers to <paramref name="zip"/>, if it has any.</summary>
    public static void WriteState(ZipArchive zip, NetworkModel model)
    {
        var stateful = model.Layers.OfType<IStatefulLayer>().ToArray();
        if (stateful.Length == 0)
            return;
        using var s = new BinaryWriter(zip.CreateEntry(StateEntry, CompressionLevel.Fastest).Open());
        foreach (var layer in stateful)
            foreach (var array in layer.State)
                foreach (var v in array)
                    s.Write(v);
    }

    /// <summary>Reads the values of <paramref name="model"/>'s stateful layers back from <paramref name="zip"/>.</summary>
    /// <exception cref="Training.CheckpointFormatException">The entry is missing or has the wrong length (the checkpoint reader adds the file's path).</exception>
    public static void ReadState(ZipArchive zip, NetworkModel model)
    {
        var stateful = model.Layers.OfType<IStatefulLayer>().ToArray();
        if (stateful.Length == 0)
            return;
        long need = stateful.Sum(l => l.State.Sum(a => (long)a.Length)) * sizeof(float);
        var entry = zip.GetEntry(StateEntry)
            ?? throw Training.Checkpoint.Fault(StateEntry, null, "is missing, but the architecture has batch normalization, whose statistics it holds");
        if (entry.Length != need)
            throw Training.Checkpoint.Fault(StateEntry, "length", $"is {entry.Length} bytes, but the architecture's batch normalizations need exactly {need}");
        using var s = new BinaryReader(entry.Open());
        foreach (var layer in stateful)
            layer.State = layer.State.Select(a => Enumerable.Range(0, a.Length).Select(_ => s.ReadSingle()).ToArray()).ToArray();
    }
}
