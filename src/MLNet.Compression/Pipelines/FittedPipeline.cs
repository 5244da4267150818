using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.Compression.Pipelines;

/// <summary>
/// The network inside a fitted pipeline: finds it (exactly one, at any depth of nested <see cref="TransformerChain{TLastTransformer}"/>s),
/// runs the transforms before it, and rebuilds the pipeline with another network in its place.
/// </summary>
internal static class FittedPipeline
{
    /// <summary>
    /// The one network of this library in <paramref name="pipeline"/>; throws naming what was found when there is none or
    /// more than one.
    /// </summary>
    /// <param name="pipeline">A fitted network, or a chain (nested chains included) that contains one.</param>
    /// <param name="parameterName">The argument's name for the exception.</param>
    public static NeuralNetworkTransformer FindNetwork(ITransformer pipeline, string parameterName)
    {
        ArgumentNullException.ThrowIfNull(pipeline, parameterName);
        var found = new List<NeuralNetworkTransformer>();
        var others = new List<string>();
        Walk(pipeline, found, others);
        if (found.Count == 1)
            return found[0];
        string what = others.Count == 0 ? "no transformers" : string.Join(", ", others);
        if (found.Count == 0)
            throw new ArgumentException(
                $"The fitted pipeline contains no network of MLNet.Compression (a NeuralNetworkTransformer); it holds: {what}. " +
                "Pass the pipeline that ml.Compression().NeuralNetwork(...) or a compression stage fitted. A model loaded from a zip scores " +
                "with ONNX and cannot be trained further: continue from its checkpoint (NeuralNetworkTransformer.LoadCheckpoint) instead.", parameterName);
        throw new ArgumentException(
            $"The fitted pipeline contains {found.Count} networks of MLNet.Compression (at positions {string.Join(", ", Positions(pipeline))}); " +
            $"a stage compresses exactly one. Its transformers: {what}, and the networks. Apply the stage to the part of the pipeline that holds one network.",
            parameterName);
    }

    /// <summary>
    /// <paramref name="data"/> as the network of <paramref name="pipeline"/> reads it: every transform before the network applied
    /// (in nested chains too); the network and what follows it are not run.
    /// </summary>
    public static IDataView Before(ITransformer pipeline, NeuralNetworkTransformer network, IDataView data)
    {
        var prepared = Prepare(pipeline, network, data, out bool reached);
        if (!reached)
            throw new InvalidOperationException("The network was not found in the pipeline it was taken from.");
        return prepared;
    }

    /// <summary>
    /// <paramref name="pipeline"/> with <paramref name="network"/> replaced by <paramref name="replacement"/>: the same chain
    /// shape (nested chains rebuilt as <see cref="TransformerChain{ITransformer}"/>), every other transformer the same object.
    /// </summary>
    public static TransformerChain<ITransformer> Replace(ITransformer pipeline, NeuralNetworkTransformer network, ITransformer replacement)
    {
        var replaced = ReplaceIn(pipeline, network, replacement);
        return replaced as TransformerChain<ITransformer> ?? new TransformerChain<ITransformer>(replaced);
    }

    private static ITransformer ReplaceIn(ITransformer t, NeuralNetworkTransformer network, ITransformer replacement)
    {
        if (ReferenceEquals(t, network))
            return replacement;
        if (t is IEnumerable<ITransformer> chain && IsChain(t))
            return new TransformerChain<ITransformer>(chain.Select(item => ReplaceIn(item, network, replacement)).ToArray());
        return t;
    }

    private static IDataView Prepare(ITransformer t, NeuralNetworkTransformer network, IDataView data, out bool reached)
    {
        reached = false;
        if (ReferenceEquals(t, network))
        {
            reached = true;
            return data;
        }
        if (t is IEnumerable<ITransformer> chain && IsChain(t))
        {
            foreach (var item in chain)
            {
                var next = Prepare(item, network, data, out reached);
                if (reached)
                    return next;
                data = next;
            }
            return data;
        }
        return t.Transform(data);
    }

    private static void Walk(ITransformer t, List<NeuralNetworkTransformer> found, List<string> others)
    {
        if (t is NeuralNetworkTransformer n)
            found.Add(n);
        else if (t is IEnumerable<ITransformer> chain && IsChain(t))
            foreach (var item in chain)
                Walk(item, found, others);
        else
            others.Add(t.GetType().Name);
    }

    private static IEnumerable<string> Positions(ITransformer pipeline)
    {
        var result = new List<string>();
        void Visit(ITransformer t, string path)
        {
            if (t is NeuralNetworkTransformer)
                result.Add(path.Length == 0 ? "the top" : path);
            else if (t is IEnumerable<ITransformer> chain && IsChain(t))
            {
                int i = 0;
                foreach (var item in chain)
                    Visit(item, path.Length == 0 ? $"{i++}" : $"{path}.{i++}");
            }
        }
        Visit(pipeline, string.Empty);
        return result;
    }

    /// <summary>An ML.NET <see cref="TransformerChain{TLastTransformer}"/> of any last-transformer type.</summary>
    private static bool IsChain(ITransformer t) => t.GetType() is { IsGenericType: true } type && type.GetGenericTypeDefinition() == typeof(TransformerChain<>);
}
