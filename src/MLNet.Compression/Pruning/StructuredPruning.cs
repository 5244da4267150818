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
            if (layer is not ParameterizedLayer p)
                throw new ArgumentException($"Layer '{name}' has no weights, so it has no units to remove.", nameof(keepUnitsByLayerName));
            if (p is ConvModelLayer { Groups: > 1 })
                throw new ArgumentException(
                    $"Layer '{name}' is a depthwise convolution; its filters follow its input channels. Remove filters of the layer before it instead.",
                    nameof(keepUnitsByLayerName));
            ValidateIndices(name, keep, p.OutputUnits);
        }

        // Walk the layers keeping track of which channels/features of the current activation survive (null: all of them).
        var newLayers = new List<ModelLayer>(layers.Count);
        int[]? keptIn = null;
        foreach (var layer in layers)
        {
            switch (layer)
            {
                case DenseModelLayer d:
                {
                    int[]? keptOut = keepUnitsByLayerName.TryGetValue(d.Name, out var k) ? k : null;
                    if (keptIn is not null && keptIn.Length == 0)
                        throw new InvalidOperationException($"Layer '{d.Name}' would have no inputs.");
                    int[] rows = keptOut ?? Range(d.OutFeatures);
                    int[] cols = keptIn ?? Range(d.InFeatures);
                    var nd = new DenseModelLayer(d.Name, cols.Length, rows.Length, d.Activation);
                    for (int r = 0; r < rows.Length; r++)
                    {
                        int srcRow = rows[r] * d.InFeatures;
                        int dstRow = r * cols.Length;
                        for (int c = 0; c < cols.Length; c++)
                            nd.Weight[dstRow + c] = d.Weight[srcRow + cols[c]];
                        nd.Bias[r] = d.Bias[rows[r]];
                    }
                    newLayers.Add(nd);
                    keptIn = keptOut;
                    break;
                }
                case ConvModelLayer c:
                {
                    int[] newInShape = [keptIn?.Length ?? c.InChannels, c.InputShape[1], c.InputShape[2]];
                    int[] rows;
                    int[]? keptOut;
                    int[] inChannelsPerFilter; // source in-channel indices (within a group) copied into each kept filter
                    int kk = c.Kernel * c.Kernel;
                    int inPerGroup = c.InChannels / c.Groups;
                    if (c.Groups > 1)
                    {
                        // Depthwise: each filter sees its own group's channel(s); keeping a group keeps its filters.
                        int mult = c.OutChannels / c.Groups;
                        int[] groups = keptIn ?? Range(c.Groups);
                        rows = groups.SelectMany(g => Enumerable.Range(g * mult, mult)).ToArray();
                        keptOut = keptIn is null ? null : rows;
                        inChannelsPerFilter = Range(inPerGroup);
                        var nc = new ConvModelLayer(c.Name, newInShape, rows.Length, c.Kernel, c.Stride, c.Padding, groups.Length, c.Activation);
                        CopyFilters(c, nc, rows, inChannelsPerFilter, kk, inPerGroup);
                        newLayers.Add(nc);
                    }
                    else
                    {
                        keptOut = keepUnitsByLayerName.TryGetValue(c.Name, out var k) ? k : null;
                        rows = keptOut ?? Range(c.OutChannels);
                        inChannelsPerFilter = keptIn ?? Range(c.InChannels);
                        var nc = new ConvModelLayer(c.Name, newInShape, rows.Length, c.Kernel, c.Stride, c.Padding, 1, c.Activation);
                        CopyFilters(c, nc, rows, inChannelsPerFilter, kk, inPerGroup);
                        newLayers.Add(nc);
                    }
                    keptIn = keptOut;
                    break;
                }
                case MaxPoolModelLayer mp:
                    newLayers.Add(new MaxPoolModelLayer(mp.Name, [keptIn?.Length ?? mp.InputShape[0], mp.InputShape[1], mp.InputShape[2]],
                        mp.Kernel, mp.Stride));
                    break;
                case FlattenModelLayer f:
                {
                    int[] inShape = f.InputShape.ToArray();
                    if (keptIn is not null && inShape.Length == 3)
                    {
                        int hw = inShape[1] * inShape[2];
                        keptIn = keptIn.SelectMany(ch => Enumerable.Range(ch * hw, hw)).ToArray();
                        inShape[0] = keptIn.Length / hw;
                    }
                    else if (keptIn is not null)
                    {
                        inShape[0] = keptIn.Length;
                    }
                    newLayers.Add(new FlattenModelLayer(f.Name, inShape));
                    break;
                }
                default:
                    throw new NotSupportedException($"Layer '{layer.Name}' of type {layer.GetType().Name} is not supported by structured pruning.");
            }
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

    private static void CopyFilters(ConvModelLayer src, ConvModelLayer dst, int[] rows, int[] inChannels, int kk, int srcInPerGroup)
    {
        int dstIn = inChannels.Length;
        for (int r = 0; r < rows.Length; r++)
        {
            int srcFilter = rows[r] * srcInPerGroup * kk;
            int dstFilter = r * dstIn * kk;
            for (int c = 0; c < dstIn; c++)
                Array.Copy(src.Weight, srcFilter + inChannels[c] * kk, dst.Weight, dstFilter + c * kk, kk);
            dst.Bias[r] = src.Bias[rows[r]];
        }
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
        // The k-th Dense/Conv spec resolves to the k-th parameterized layer; the output layer is appended after them.
        var hidden = newLayers.OfType<ParameterizedLayer>().SkipLast(1).ToArray();
        int specCount = arch.Layers.Count(s => s is DenseLayer or Conv2dLayer);
        if (specCount != hidden.Length)
            throw new InvalidOperationException(
                $"The architecture '{arch.Name}' has {specCount} dense/conv layers but the model has {hidden.Length} hidden parameterized layers.");
        var specs = new List<LayerSpec>(arch.Layers.Count);
        int next = 0;
        bool changed = false;
        foreach (var spec in arch.Layers)
        {
            switch (spec)
            {
                case DenseLayer d:
                {
                    int units = hidden[next++] is DenseModelLayer dl ? dl.OutFeatures
                        : throw new InvalidOperationException($"The architecture '{arch.Name}' does not describe the model's layers (dense spec {d} vs layer '{hidden[next - 1].Name}').");
                    changed |= units != d.Units;
                    specs.Add(d with { Units = units });
                    break;
                }
                case Conv2dLayer c:
                {
                    int outChannels = hidden[next++] is ConvModelLayer cl ? cl.OutChannels
                        : throw new InvalidOperationException($"The architecture '{arch.Name}' does not describe the model's layers (conv spec {c} vs layer '{hidden[next - 1].Name}').");
                    changed |= outChannels != c.OutChannels;
                    specs.Add(c with { OutChannels = outChannels });
                    break;
                }
                default:
                    specs.Add(spec);
                    break;
            }
        }
        if (!changed)
            return arch;
        bool allDense = arch.Layers.All(s => s is DenseLayer { Activation: Activation.Relu });
        string name = allDense && arch.Name.StartsWith("MLP-", StringComparison.Ordinal)
            ? "MLP-" + string.Join("-", specs.Cast<DenseLayer>().Select(d => d.Units))
            : arch.Name.EndsWith(" (structured-pruned)", StringComparison.Ordinal) ? arch.Name : arch.Name + " (structured-pruned)";
        return new NetworkArchitecture(name, arch.InputShape, specs);
    }

    private static int[] Range(int n) => Enumerable.Range(0, n).ToArray();
}
