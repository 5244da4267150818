namespace MLNet.Compression.Networks;

/// <summary>
/// A network with every size resolved and its weights as plain arrays: what the trainer produces, the compression stages
/// change, the ONNX exporter writes and the checkpoint stores. The last layer is the dense output layer (logits).
/// </summary>
/// <remarks>Built by <see cref="Create"/>, <see cref="Clone"/> and <see cref="WithLayers"/>.</remarks>
internal sealed class NetworkModel(NetworkArchitecture architecture, int numClasses, IReadOnlyList<ModelLayer> layers, Heads.OutputHeadKind headKind)
{
    public NetworkArchitecture Architecture { get; } = architecture;

    public int NumClasses { get; } = numClasses;

    /// <summary>Which output head the network has (what its last layer's outputs mean); persisted with the model.</summary>
    public Heads.OutputHeadKind HeadKind { get; } = headKind;

    /// <summary>The output head: losses, ONNX outputs and scoring columns.</summary>
    public Heads.OutputHead Head => Heads.OutputHead.For(HeadKind);

    public IReadOnlyList<ModelLayer> Layers { get; } = layers;

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
        if (numClasses < (headKind == Heads.OutputHeadKind.Regression ? 1 : 2))
            throw new ArgumentOutOfRangeException(nameof(numClasses), numClasses,
                headKind == Heads.OutputHeadKind.Regression ? "A regression has one output." : "A classifier needs at least two classes.");
        var resolver = new LayerResolver(architecture.InputShape.ToArray());
        for (int i = 0; i < architecture.Layers.Count; i++)
        {
            var spec = architecture.Layers[i];
            resolver.Where = $"layer {i} ({spec}) of architecture '{architecture.Name}'";
            var type = LayerRegistry.Find(spec)
                ?? throw resolver.Error($"unsupported layer type {spec.GetType().Name}.");
            try
            {
                type.Resolve(spec, resolver);
            }
            catch (OverflowException e)
            {
                throw new ArgumentException(
                    $"{resolver.Where}: its output or weight count overflows a 32-bit size; use smaller sizes.", nameof(architecture), e);
            }
        }
        resolver.Where = $"the output layer of architecture '{architecture.Name}'";
        resolver.FlattenToVector();
        var layers = resolver.Layers.ToList();
        var shape = resolver.Shape;
        layers.Add(new DenseModelLayer("output", shape[0], Heads.OutputHead.For(headKind).OutputUnits(numClasses), Activation.None));
        return new NetworkModel(architecture, numClasses, layers, headKind);
    }

    /// <summary>A deep copy, weights included.</summary>
    public NetworkModel Clone() => new(Architecture, NumClasses, Layers.Select(l => l.Clone()).ToArray(), HeadKind);

    /// <summary>Creates a model with the same architecture and class count whose layers are <paramref name="layers"/>.</summary>
    public NetworkModel WithLayers(IReadOnlyList<ModelLayer> layers) => new(Architecture, NumClasses, layers, HeadKind);
}
