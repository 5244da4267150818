using MLNet.Compression.Networks;
using MLNet.Compression.Training;

namespace MLNet.Compression.Incremental;

/// <summary>
/// Class growth for class-incremental learning: label key values are merged by name (the previous model's classes keep
/// their indices, names it has not seen are appended in the new data's key order), and the output layer grows by one row
/// per appended class while every other weight, and the old classes' rows, stay as they were.
/// </summary>
internal static class ClassGrowth
{
    /// <summary>The merged class names and, for each class index of the new data's key, its merged index.</summary>
    public static (string[] Merged, int[] Map) Merge(IReadOnlyList<string> previous, IReadOnlyList<string> incoming)
    {
        var merged = previous.ToList();
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < merged.Count; i++)
            index[merged[i]] = i;
        var map = new int[incoming.Count];
        for (int i = 0; i < incoming.Count; i++)
        {
            if (!index.TryGetValue(incoming[i], out int at))
            {
                at = merged.Count;
                merged.Add(incoming[i]);
                index[incoming[i]] = at;
            }
            map[i] = at;
        }
        return (merged.ToArray(), map);
    }

    /// <summary>
    /// A copy of <paramref name="network"/> with <paramref name="classes"/> outputs: the old output rows are copied, the new
    /// rows (and their biases) are initialised the way PyTorch initialises a Linear layer, from <paramref name="seed"/>.
    /// </summary>
    public static NetworkModel GrowOutput(NetworkModel network, int classes, int seed)
    {
        if (classes < network.NumClasses)
            throw new ArgumentOutOfRangeException(nameof(classes), classes, "The output layer can only grow.");
        if (classes == network.NumClasses)
            return network.Clone();
        var grown = NetworkModel.Create(network.Architecture, classes);
        NeuralNetworkTrainer.InitializeWeights(grown, seed);
        var from = network.ParameterizedLayers.ToArray();
        var to = grown.ParameterizedLayers.ToArray();
        for (int i = 0; i < from.Length - 1; i++)
        {
            to[i].Weight = (float[])from[i].Weight.Clone();
            to[i].Bias = (float[])from[i].Bias.Clone();
        }
        foreach (var (source, target) in network.Layers.OfType<IStatefulLayer>().Zip(grown.Layers.OfType<IStatefulLayer>()))
            target.State = source.State.Select(a => (float[])a.Clone()).ToArray();
        var oldOut = from[^1];
        var newOut = to[^1];
        Array.Copy(oldOut.Weight, newOut.Weight, oldOut.Weight.Length); // rows 0..K_old-1, row-major [K, in]
        Array.Copy(oldOut.Bias, newOut.Bias, oldOut.Bias.Length);
        return grown;
    }

    /// <summary>
    /// The optimizer state (see <see cref="ParameterOptimizer.SaveState"/>) of a network whose output layer grew from
    /// <paramref name="oldClasses"/> to <paramref name="newClasses"/> rows of <paramref name="fanIn"/> weights: the output
    /// weight's and bias's buffers (the last two parameters) get zero state for the new rows. Null when the state does not
    /// have the expected layout (then training starts with a fresh optimizer).
    /// </summary>
    public static byte[]? GrowOptimizerState(byte[] state, int fanIn, int oldClasses, int newClasses)
    {
        try
        {
            using var r = new BinaryReader(new MemoryStream(state));
            using var ms = new MemoryStream();
            using var w = new BinaryWriter(ms);
            string kind = r.ReadString();
            if (kind is not ("adam" or "sgd"))
                return null;
            w.Write(kind);
            w.Write(r.ReadInt64());
            int count = r.ReadInt32();
            if (count < 2)
                return null;
            w.Write(count);
            for (int p = 0; p < count; p++)
            {
                int? target = p == count - 2 ? newClasses * fanIn : p == count - 1 ? newClasses : null;
                int? expected = p == count - 2 ? oldClasses * fanIn : p == count - 1 ? oldClasses : null;
                int buffers = kind == "adam" ? 2 : 1;
                if (kind == "sgd")
                {
                    bool has = r.ReadBoolean();
                    w.Write(has);
                    if (!has)
                        continue;
                }
                for (int b = 0; b < buffers; b++)
                {
                    int n = r.ReadInt32();
                    if (expected is { } e && n != e)
                        return null;
                    w.Write(target ?? n);
                    for (int i = 0; i < n; i++)
                        w.Write(r.ReadSingle());
                    for (int i = n; i < (target ?? n); i++)
                        w.Write(0f);
                }
            }
            if (r.BaseStream.Position != r.BaseStream.Length)
                return null;
            w.Flush();
            return ms.ToArray();
        }
        catch (EndOfStreamException)
        {
            return null;
        }
    }
}
