using MLNet.Compression.Networks;

namespace MLNet.Compression.Pruning;

/// <summary>
/// Structured pruning in plain C#: removes whole neurons (dense rows) or filters (conv output channels) from a
/// <see cref="NetworkModel"/> and the matching input columns or channels of the layer that consumes them, so the result
/// is a genuinely smaller dense network (fewer parameters, fewer FLOPs, smaller artifact) rather than one with zeros.
/// </summary>
internal static class StructuredPruning
{
    /// <summary>
    /// Returns a new model in which each layer named in <paramref name="keepUnitsByLayerName"/> keeps only the listed output
    /// units (dense neurons or conv filters), and the next parameterized layer loses the matching inputs: dense columns,
    /// conv input channels, the matching groups and filters of a depthwise convolution (which then shrinks the layer after it
    /// in turn), or the matching H×W blocks of columns of a dense layer after a flatten (NCHW order).
    /// The returned model's <see cref="NetworkModel.Architecture"/> describes the smaller widths, so
    /// <c>NetworkModel.Create(result.Architecture, result.NumClasses)</c> rebuilds the same layer shapes. Layer names are kept.
    /// </summary>
    /// <param name="model">The model to shrink; it is not modified.</param>
    /// <param name="keepUnitsByLayerName">Per hidden layer name, the sorted unique output unit indices to keep (at least one).</param>
    /// <returns>A new, smaller model.</returns>
    /// <exception cref="ArgumentException">A name is unknown, names the output layer, a depthwise or parameterless layer,
    /// or an index list is empty, unsorted, has duplicates or is out of range.</exception>
    public static NetworkModel RemoveUnits(NetworkModel model, IReadOnlyDictionary<string, int[]> keepUnitsByLayerName)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(keepUnitsByLayerName);
        var layers = model.Layers;
        var output = layers[^1];
        foreach (var (name, keep) in keepUnitsByLayerName)
        {
            var layer = layers.FirstOrDefault(l => l.Name == name)
                ?? throw new ArgumentException(
                    $"The model has no layer named '{name}' (layers: {string.Join(", ", layers.Select(l => l.Name))}).",
                    nameof(keepUnitsByLayerName));
            if (ReferenceEquals(layer, output))
                throw new ArgumentException(
                    $"Layer '{name}' is the output layer; its units are the classes and cannot be removed.", nameof(keepUnitsByLayerName));
            if (layer.UnitsNotRemovable is not null || layer is not ParameterizedLayer p)
                throw new ArgumentException($"Layer '{name}' {layer.UnitsNotRemovable}", nameof(keepUnitsByLayerName));
            ValidateIndices(name, keep, p.OutputUnits);
        }

        // Walk the layers keeping track of which channels/features of the current activation survive (null: all of them).
        var newLayers = new List<ModelLayer>(layers.Count);
        int[]? keptIn = null;
        foreach (var layer in layers)
        {
            // Each layer type owns its rule (ModelLayer.Shrink): which inputs it loses, which outputs survive.
            var keepOwn = keepUnitsByLayerName.TryGetValue(layer.Name, out var k) ? k : null;
            newLayers.Add(layer.Shrink(keptIn, keepOwn, out keptIn));
        }

        var architecture = ShrinkArchitecture(model, newLayers);
        var rebuilt = NetworkModel.Create(architecture, model.NumClasses);
        if (rebuilt.Layers.Count != newLayers.Count)
            throw new InvalidOperationException(
                $"The architecture '{model.Architecture.Name}' does not describe the model's layers; structured pruning cannot rebuild it.");
        for (int i = 0; i < newLayers.Count; i++)
        {
            var a = rebuilt.Layers[i];
            var b = newLayers[i];
            if (a.GetType() != b.GetType() || a.Name != b.Name
                || !a.InputShape.SequenceEqual(b.InputShape) || !a.OutputShape.SequenceEqual(b.OutputShape))
                throw new InvalidOperationException(
                    $"Layer {i} of the rebuilt architecture ({a.Name}) does not match the shrunk layer ({b.Name}); the model's architecture does not describe its layers.");
        }
        return rebuilt.WithLayers(newLayers);
    }

    /// <summary>Output units of <paramref name="layer"/> ordered by descending L1 norm of their incoming weights (ties: lower index first).</summary>
    /// <param name="layer">A dense or conv layer.</param>
    /// <returns>Unit indices, most important first.</returns>
    public static int[] RankUnitsByL1(ParameterizedLayer layer)
    {
        ArgumentNullException.ThrowIfNull(layer);
        int units = layer.OutputUnits, fanIn = layer.FanIn;
        var norms = new double[units];
        for (int u = 0; u < units; u++)
        {
            double s = 0;
            var row = layer.Weight.AsSpan(u * fanIn, fanIn);
            foreach (var w in row)
                s += Math.Abs(w);
            norms[u] = s;
        }
        return Enumerable.Range(0, units).OrderByDescending(u => norms[u]).ThenBy(u => u).ToArray();
    }

    /// <summary>
    /// The indices (sorted ascending, ready for <see cref="RemoveUnits"/>) of the <c>ceil(fraction × units)</c> units with the
    /// largest L1 norm, at least one.
    /// </summary>
    /// <param name="layer">A dense or conv layer.</param>
    /// <param name="fraction">Fraction of units to keep, in (0, 1].</param>
    /// <returns>Sorted unit indices to keep.</returns>
    public static int[] KeepTop(ParameterizedLayer layer, double fraction)
    {
        ArgumentNullException.ThrowIfNull(layer);
        if (!(fraction > 0 && fraction <= 1))
            throw new ArgumentOutOfRangeException(nameof(fraction), fraction, $"The fraction of units of layer '{layer.Name}' to keep must be in (0, 1].");
        int count = Math.Clamp((int)Math.Ceiling(fraction * layer.OutputUnits - 1e-9), 1, layer.OutputUnits);
        var top = RankUnitsByL1(layer).Take(count).ToArray();
        Array.Sort(top);
        return top;
    }

    private static void ValidateIndices(string name, int[]? keep, int units)
    {
        if (keep is null || keep.Length == 0)
            throw new ArgumentException($"Layer '{name}' must keep at least one unit.", "keepUnitsByLayerName");
        for (int i = 0; i < keep.Length; i++)
        {
            if (keep[i] < 0 || keep[i] >= units)
                throw new ArgumentException($"Layer '{name}': unit index {keep[i]} is out of range [0, {units}).", "keepUnitsByLayerName");
            if (i > 0 && keep[i] <= keep[i - 1])
                throw new ArgumentException($"Layer '{name}': unit indices must be sorted ascending without duplicates ({keep[i - 1]} then {keep[i]}).", "keepUnitsByLayerName");
        }
    }

    private static NetworkArchitecture ShrinkArchitecture(NetworkModel model, List<ModelLayer> newLayers)
    {
        var arch = model.Architecture;
        // The k-th weighted spec (dense, conv) resolves to the k-th parameterized layer; the output layer is appended after them.
        var hidden = newLayers.OfType<ParameterizedLayer>().SkipLast(1).ToArray();
        int specCount = arch.Layers.Count(s => LayerRegistry.Find(s)?.IsWeighted == true);
        if (specCount != hidden.Length)
            throw new InvalidOperationException(
                $"The architecture '{arch.Name}' has {specCount} dense/conv layers but the model has {hidden.Length} hidden parameterized layers.");
        var specs = new List<LayerSpec>(arch.Layers.Count);
        int next = 0;
        bool changed = false;
        foreach (var spec in arch.Layers)
        {
            var type = LayerRegistry.Find(spec);
            if (type?.IsWeighted != true)
            {
                specs.Add(spec);
                continue;
            }
            var layer = hidden[next++];
            var resized = type.Resize(spec, layer)
                ?? throw new InvalidOperationException($"The architecture '{arch.Name}' does not describe the model's layers (spec {spec} vs layer '{layer.Name}').");
            changed |= resized != spec;
            specs.Add(resized);
        }
        if (!changed)
            return arch;
        bool allDense = arch.Layers.All(s => s is DenseLayer { Activation: Activation.Relu });
        string name = allDense && arch.Name.StartsWith("MLP-", StringComparison.Ordinal)
            ? "MLP-" + string.Join("-", specs.Cast<DenseLayer>().Select(d => d.Units))
            : arch.Name.EndsWith(" (structured-pruned)", StringComparison.Ordinal) ? arch.Name : arch.Name + " (structured-pruned)";
        return new NetworkArchitecture(name, arch.InputShape, specs);
    }
}
