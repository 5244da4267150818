namespace MLNet.Compression.Networks;

/// <summary>One resolved layer of a <see cref="NetworkModel"/>: sizes known, weights held as flat float arrays.</summary>
internal abstract class ModelLayer
{
    protected ModelLayer(string name, int[] inputShape, int[] outputShape)
    {
        Name = name;
        InputShape = inputShape;
        OutputShape = outputShape;
    }

    /// <summary>Stable name used for parameters ("fc1", "conv2", "output").</summary>
    public string Name { get; }

    /// <summary>Shape of one example entering the layer (no batch dimension).</summary>
    public int[] InputShape { get; }

    /// <summary>Shape of one example leaving the layer (no batch dimension).</summary>
    public int[] OutputShape { get; }

    /// <summary>Whether the layer has weights.</summary>
    public virtual bool HasParameters => false;

    public abstract ModelLayer Clone();
}

/// <summary>A layer with a weight tensor and a bias vector.</summary>
internal abstract class ParameterizedLayer : ModelLayer
{
    protected ParameterizedLayer(string name, int[] inputShape, int[] outputShape, int[] weightShape, Activation activation)
        : base(name, inputShape, outputShape)
    {
        WeightShape = weightShape;
        Activation = activation;
        Weight = new float[weightShape.Aggregate(1, (a, b) => a * b)];
        Bias = new float[weightShape[0]];
    }

    public override bool HasParameters => true;

    /// <summary>Weight shape in PyTorch/ONNX layout: [out, in] for dense, [out, in/groups, k, k] for conv.</summary>
    public int[] WeightShape { get; }

    public Activation Activation { get; }

    /// <summary>Row-major weights in <see cref="WeightShape"/> layout.</summary>
    public float[] Weight { get; set; }

    /// <summary>One bias per output unit or channel.</summary>
    public float[] Bias { get; set; }

    /// <summary>Number of output units (dense) or filters (conv): the first weight dimension.</summary>
    public int OutputUnits => WeightShape[0];

    /// <summary>Weights per output unit or filter.</summary>
    public int FanIn => Weight.Length / WeightShape[0];

    public long ParameterCount => Weight.Length + Bias.Length;

    protected void CopyParametersFrom(ParameterizedLayer other)
    {
        Weight = (float[])other.Weight.Clone();
        Bias = (float[])other.Bias.Clone();
    }
}

internal sealed class DenseModelLayer : ParameterizedLayer
{
    public DenseModelLayer(string name, int inFeatures, int outFeatures, Activation activation)
        : base(name, [inFeatures], [outFeatures], [outFeatures, inFeatures], activation)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
    }

    public int InFeatures { get; }

    public int OutFeatures { get; }

    public override ModelLayer Clone()
    {
        var c = new DenseModelLayer(Name, InFeatures, OutFeatures, Activation);
        c.CopyParametersFrom(this);
        return c;
    }
}

internal sealed class ConvModelLayer : ParameterizedLayer
{
    public ConvModelLayer(string name, int[] inputShape, int outChannels, int kernel, int stride, int padding, int groups, Activation activation)
        : base(name, inputShape, ConvOutput(inputShape, outChannels, kernel, stride, padding),
            [outChannels, inputShape[0] / groups, kernel, kernel], activation)
    {
        InChannels = inputShape[0];
        OutChannels = outChannels;
        Kernel = kernel;
        Stride = stride;
        Padding = padding;
        Groups = groups;
    }

    public int InChannels { get; }

    public int OutChannels { get; }

    public int Kernel { get; }

    public int Stride { get; }

    public int Padding { get; }

    public int Groups { get; }

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
}

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

    public override ModelLayer Clone() => new MaxPoolModelLayer(Name, InputShape, Kernel, Stride);
}

internal sealed class FlattenModelLayer : ModelLayer
{
    public FlattenModelLayer(string name, int[] inputShape)
        : base(name, inputShape, [inputShape.Aggregate(1, (a, b) => a * b)])
    {
    }

    public override ModelLayer Clone() => new FlattenModelLayer(Name, InputShape);
}

/// <summary>
/// A network with every size resolved and its weights as plain arrays: what the trainer produces, the compression stages
/// change, the ONNX exporter writes and the checkpoint stores. The last layer is the dense output layer (logits).
/// </summary>
internal sealed class NetworkModel
{
    private NetworkModel(NetworkArchitecture architecture, int numClasses, IReadOnlyList<ModelLayer> layers, Heads.OutputHeadKind headKind)
    {
        Architecture = architecture;
        NumClasses = numClasses;
        Layers = layers;
        HeadKind = headKind;
    }

    public NetworkArchitecture Architecture { get; }

    public int NumClasses { get; }

    /// <summary>Which output head the network has (what its last layer's outputs mean); persisted with the model.</summary>
    public Heads.OutputHeadKind HeadKind { get; }

    /// <summary>The output head: losses, ONNX outputs and scoring columns.</summary>
    public Heads.OutputHead Head => Heads.OutputHead.For(HeadKind);

    public IReadOnlyList<ModelLayer> Layers { get; }

    public int[] InputShape => Architecture.InputShape.ToArray();

    public int InputLength => Architecture.InputLength;

    public IEnumerable<ParameterizedLayer> ParameterizedLayers => Layers.OfType<ParameterizedLayer>();

    public long ParameterCount => ParameterizedLayers.Sum(l => l.ParameterCount);

    public long NonZeroParameterCount =>
        ParameterizedLayers.Sum(l => (long)l.Weight.Count(w => w != 0f) + l.Bias.Count(b => b != 0f));

    /// <summary>
    /// Resolves <paramref name="architecture"/> for a label of <paramref name="numClasses"/> classes and the output head
    /// <paramref name="headKind"/> (which decides the output units); weights start at zero.
    /// </summary>
    public static NetworkModel Create(NetworkArchitecture architecture, int numClasses, Heads.OutputHeadKind headKind = Heads.OutputHeadKind.Multiclass)
    {
        ArgumentNullException.ThrowIfNull(architecture);
        if (numClasses < 2)
            throw new ArgumentOutOfRangeException(nameof(numClasses), numClasses, "A classifier needs at least two classes.");
        var layers = new List<ModelLayer>();
        int[] shape = architecture.InputShape.ToArray();
        int dense = 0, conv = 0, pool = 0, flat = 0;
        for (int i = 0; i < architecture.Layers.Count; i++)
        {
            var spec = architecture.Layers[i];
            string where = $"layer {i} ({spec}) of architecture '{architecture.Name}'";
            switch (spec)
            {
                case DenseLayer d:
                    if (d.Units <= 0)
                        throw new ArgumentException($"{where}: a dense layer needs a positive number of units.", nameof(architecture));
                    if (shape.Length != 1)
                    {
                        var autoFlatten = new FlattenModelLayer($"flatten{++flat}", shape);
                        layers.Add(autoFlatten);
                        shape = autoFlatten.OutputShape;
                    }
                    var dl = new DenseModelLayer($"fc{++dense}", shape[0], d.Units, d.Activation);
                    layers.Add(dl);
                    shape = dl.OutputShape;
                    break;
                case Conv2dLayer c:
                    if (shape.Length != 3)
                        throw new ArgumentException($"{where}: a convolution needs a [channels, height, width] input, but the input here is [{string.Join(", ", shape)}].", nameof(architecture));
                    if (c.OutChannels <= 0 || c.KernelSize <= 0 || c.Stride <= 0 || c.Padding < 0)
                        throw new ArgumentException($"{where}: channels, kernel size and stride must be positive and padding non-negative.", nameof(architecture));
                    int groups = 1;
                    if (c.Depthwise)
                    {
                        groups = shape[0];
                        if (c.OutChannels % groups != 0)
                            throw new ArgumentException($"{where}: a depthwise convolution needs a multiple of the {groups} input channels as output channels.", nameof(architecture));
                    }
                    var outShape = ConvModelLayer.ConvOutput(shape, c.OutChannels, c.KernelSize, c.Stride, c.Padding);
                    if (outShape[1] <= 0 || outShape[2] <= 0)
                        throw new ArgumentException($"{where}: the kernel does not fit the {shape[1]}x{shape[2]} input.", nameof(architecture));
                    var cl = new ConvModelLayer($"conv{++conv}", shape, c.OutChannels, c.KernelSize, c.Stride, c.Padding, groups, c.Activation);
                    layers.Add(cl);
                    shape = cl.OutputShape;
                    break;
                case MaxPool2dLayer p:
                    if (shape.Length != 3)
                        throw new ArgumentException($"{where}: pooling needs a [channels, height, width] input.", nameof(architecture));
                    int stride = p.Stride == 0 ? p.KernelSize : p.Stride;
                    if (p.KernelSize <= 0 || stride <= 0 || p.KernelSize > shape[1] || p.KernelSize > shape[2])
                        throw new ArgumentException($"{where}: the pooling window must be positive and fit the {shape[1]}x{shape[2]} input.", nameof(architecture));
                    var pl = new MaxPoolModelLayer($"pool{++pool}", shape, p.KernelSize, stride);
                    layers.Add(pl);
                    shape = pl.OutputShape;
                    break;
                case FlattenLayer:
                    if (shape.Length != 1)
                    {
                        var fl = new FlattenModelLayer($"flatten{++flat}", shape);
                        layers.Add(fl);
                        shape = fl.OutputShape;
                    }
                    break;
                default:
                    throw new ArgumentException($"{where}: unsupported layer type {spec.GetType().Name}.", nameof(architecture));
            }
        }
        if (shape.Length != 1)
        {
            var fl = new FlattenModelLayer($"flatten{++flat}", shape);
            layers.Add(fl);
            shape = fl.OutputShape;
        }
        layers.Add(new DenseModelLayer("output", shape[0], Heads.OutputHead.For(headKind).OutputUnits(numClasses), Activation.None));
        return new NetworkModel(architecture, numClasses, layers, headKind);
    }

    /// <summary>A deep copy, weights included.</summary>
    public NetworkModel Clone() => new(Architecture, NumClasses, Layers.Select(l => l.Clone()).ToArray(), HeadKind);

    /// <summary>Creates a model with the same architecture and class count whose layers are <paramref name="layers"/>.</summary>
    public NetworkModel WithLayers(IReadOnlyList<ModelLayer> layers) => new(Architecture, NumClasses, layers, HeadKind);
}
