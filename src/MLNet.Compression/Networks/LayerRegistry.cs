using System.Text.Json.Nodes;

namespace MLNet.Compression.Networks;

/// <summary>
/// The layer types the library knows, one line each. A layer type is one file under Networks/ (spec record, model layer,
/// and a <see cref="LayerType"/> for resolution and JSON); adding one is that file plus a line here.
/// </summary>
internal static class LayerRegistry
{
    private static readonly LayerType[] Types =
    [
        new DenseLayerType(),
        new Conv2dLayerType(),
        new MaxPool2dLayerType(),
        new FlattenLayerType(),
        new DropoutLayerType(),
        new BatchNormLayerType(),
    ];

    private static readonly Dictionary<Type, LayerType> BySpec = Types.ToDictionary(t => t.SpecType);
    private static readonly Dictionary<string, LayerType> ByJson = Types.ToDictionary(t => t.JsonType, StringComparer.Ordinal);

    /// <summary>The type of <paramref name="spec"/>, or null when the library does not know it.</summary>
    public static LayerType? Find(LayerSpec spec) => BySpec.GetValueOrDefault(spec.GetType());

    /// <summary>The type whose JSON form is tagged <paramref name="jsonType"/>, or null.</summary>
    public static LayerType? Find(string jsonType) => ByJson.GetValueOrDefault(jsonType);

    /// <summary>The JSON "type" tags of every known layer type.</summary>
    public static IEnumerable<string> JsonTypes => ByJson.Keys;
}

/// <summary>What the library needs to know about a <see cref="LayerSpec"/> type beyond its model layer.</summary>
internal abstract class LayerType
{
    /// <summary>The spec record type.</summary>
    public abstract Type SpecType { get; }

    /// <summary>The "type" tag of the spec's JSON form in checkpoints.</summary>
    public abstract string JsonType { get; }

    /// <summary>Checks <paramref name="spec"/> against the current shape and adds its model layer(s) to <paramref name="resolver"/>.</summary>
    public abstract void Resolve(LayerSpec spec, LayerResolver resolver);

    /// <summary>The JSON fields of <paramref name="spec"/> (the registry adds "type").</summary>
    public abstract JsonObject ToJson(LayerSpec spec);

    /// <summary>The spec read back from its JSON fields.</summary>
    public abstract LayerSpec FromJson(JsonObject json);

    /// <summary>Whether the spec resolves to one weighted layer (whose width structured pruning may change).</summary>
    public virtual bool IsWeighted => false;

    /// <summary>
    /// Structured pruning: the spec with the width of its (shrunk) weighted layer <paramref name="layer"/>; null when
    /// <paramref name="layer"/> is not of this type (the architecture does not describe the model).
    /// </summary>
    public virtual LayerSpec? Resize(LayerSpec spec, ParameterizedLayer layer) => spec;
}

/// <summary>A <see cref="LayerType"/> for the spec record <typeparamref name="TSpec"/>.</summary>
internal abstract class LayerType<TSpec> : LayerType where TSpec : LayerSpec
{
    /// <inheritdoc />
    public sealed override Type SpecType => typeof(TSpec);

    /// <inheritdoc />
    public sealed override void Resolve(LayerSpec spec, LayerResolver resolver) => Resolve((TSpec)spec, resolver);

    /// <inheritdoc />
    public sealed override JsonObject ToJson(LayerSpec spec) => ToJson((TSpec)spec);

    /// <inheritdoc />
    public sealed override LayerSpec? Resize(LayerSpec spec, ParameterizedLayer layer) => Resize((TSpec)spec, layer);

    protected abstract void Resolve(TSpec spec, LayerResolver resolver);

    protected abstract JsonObject ToJson(TSpec spec);

    protected virtual TSpec? Resize(TSpec spec, ParameterizedLayer layer) => spec;
}

/// <summary>The state of <see cref="NetworkModel.Create"/> while it resolves an architecture's specs in order.</summary>
internal sealed class LayerResolver
{
    private readonly List<ModelLayer> layers = new();
    private readonly Dictionary<string, int> counters = new(StringComparer.Ordinal);

    public LayerResolver(int[] inputShape) => Shape = inputShape;

    /// <summary>Shape of one example after the layers added so far.</summary>
    public int[] Shape { get; private set; }

    /// <summary>"layer i (spec) of architecture 'name'", for error messages.</summary>
    public string Where { get; set; } = "";

    /// <summary>The layers added so far.</summary>
    public IReadOnlyList<ModelLayer> Layers => layers;

    /// <summary>The next name with <paramref name="prefix"/>: "fc1", "fc2"...</summary>
    public string NextName(string prefix)
    {
        int n = counters.GetValueOrDefault(prefix) + 1;
        counters[prefix] = n;
        return prefix + n.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>Appends <paramref name="layer"/>; its output shape becomes <see cref="Shape"/>.</summary>
    public void Add(ModelLayer layer)
    {
        layers.Add(layer);
        Shape = layer.OutputShape;
    }

    /// <summary>Adds a flatten layer unless the shape is already a vector.</summary>
    public void FlattenToVector()
    {
        if (Shape.Length != 1)
            Add(new FlattenModelLayer(NextName("flatten"), Shape));
    }

    /// <summary>An error about the spec being resolved: "{Where}: {message}", naming the architecture argument.</summary>
    public ArgumentException Error(string message) => new($"{Where}: {message}", "architecture");
}
