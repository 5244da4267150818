using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Networks;
using MLNet.Compression.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.Compression.Incremental;

/// <summary>What replay needs from the data and the network: feature ranges, herding, stored outputs.</summary>
internal static class ExemplarTools
{
    /// <summary>Rows per forward pass when computing embeddings or outputs.</summary>
    private const int Chunk = 1024;

    /// <summary>Per-feature minimum and maximum of the finite values of the labelled rows of <paramref name="view"/> (NaN where none).</summary>
    public static (float[] Min, float[] Max) Range(IncrementalDataView view)
    {
        var label = view.Schema[0];
        var features = view.Schema[1];
        var min = new float[view.FeatureLength];
        var max = new float[view.FeatureLength];
        Array.Fill(min, float.NaN);
        Array.Fill(max, float.NaN);
        using var cursor = view.GetRowCursor([label, features]);
        var getLabel = view.LabelCodes(cursor);
        var getFeatures = cursor.GetGetter<VBuffer<float>>(features);
        VBuffer<float> values = default;
        var dense = new float[view.FeatureLength];
        while (cursor.MoveNext())
        {
            if (getLabel() < 0)
                continue;
            getFeatures(ref values);
            values.CopyTo(dense);
            for (int i = 0; i < dense.Length; i++)
            {
                float v = dense[i];
                if (!float.IsFinite(v))
                    continue;
                if (!(v >= min[i]))
                    min[i] = v;
                if (!(v <= max[i]))
                    max[i] = v;
            }
        }
        return (min, max);
    }

    /// <summary>
    /// Herding's update after an increment: every class that has a candidate pool (the new data's classes) gets its exemplars
    /// chosen anew from the pool, one at a time so that their mean penultimate-layer feature (L2-normalized, as iCaRL) best
    /// approximates the pool's mean; every class (old and new) gets an equal share of <paramref name="capacity"/> (the first
    /// ones one more while the division leaves a remainder); old classes keep their first-chosen exemplars.
    /// </summary>
    public static void Herd(ReplayMemory memory, IReadOnlyDictionary<int, ReplayMemory> pools, NetworkModel network, int capacity)
    {
        foreach (var c in pools.Keys)
            memory.TrimClass(c, 0);
        var held = memory.CountsPerClass();
        var classes = Enumerable.Range(0, held.Length).Where(c => held[c] > 0).Concat(pools.Keys).Distinct().Order().ToArray();
        if (classes.Length == 0)
            return;
        memory.Resize(capacity);
        var quota = Quotas(classes, c => pools.TryGetValue(c, out var p) ? p.Count : held[c], capacity);
        foreach (var c in classes.Where(c => !pools.ContainsKey(c)))
            memory.TrimClass(c, quota[c]);
        using var net = new TorchNetwork(network);
        net.LoadWeights(network);
        net.eval();
        foreach (var c in classes.Where(pools.ContainsKey))
        {
            var pool = pools[c];
            var order = Select(net, pool, quota[c]);
            memory.AddCodes(c, pool, order);
        }
        memory.Canonicalize();
    }

    /// <summary>Equal shares of <paramref name="capacity"/>, never more than a class has, what is left given to the others in class order.</summary>
    private static Dictionary<int, int> Quotas(int[] classes, Func<int, int> available, int capacity)
    {
        var quota = classes.ToDictionary(c => c, _ => 0);
        int left = capacity;
        var open = classes.Where(c => available(c) > 0).ToList();
        while (left > 0 && open.Count > 0)
        {
            int share = Math.Max(1, left / open.Count);
            foreach (var c in open.ToArray())
            {
                if (left == 0)
                    break;
                int take = Math.Min(Math.Min(share, available(c) - quota[c]), left);
                quota[c] += take;
                left -= take;
                if (quota[c] >= available(c))
                    open.Remove(c);
            }
        }
        return quota;
    }

    /// <summary>The slots of <paramref name="pool"/> herding picks, in the order it picks them (at most <paramref name="count"/>).</summary>
    internal static int[] Select(TorchNetwork net, ReplayMemory pool, int count)
    {
        count = Math.Min(count, pool.Count);
        if (count == 0)
            return [];
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var phi = Embed(net, pool);
        // Scalars explicit and kept alive (see Training.Scalars).
        using var tiny = 1e-12.ToScalar();
        using var two = 2.ToScalar();
        phi = phi.div(phi.norm(1, keepdim: true).clamp_min(tiny));
        var mean = phi.mean([0]);
        var sqNorm = phi.pow(two).sum(1);
        var sum = zeros_like(mean);
        var taken = zeros(phi.size(0));
        var picked = new int[count];
        for (int k = 1; k <= count; k++)
        {
            // argmin_i ‖k·μ − S − φ_i‖² = argmin_i ‖φ_i‖² − 2 (k·μ − S)·φ_i (the target's own norm is the same for every i).
            using var inner = NewDisposeScope();
            using var kScalar = k.ToScalar();
            var target = mean.mul(kScalar).sub(sum);
            var score = sqNorm.sub(phi.mv(target).mul(two)).add(taken, Scalars.One);
            int i = (int)score.argmin().item<long>();
            picked[k - 1] = i;
            taken[i].fill_(double.PositiveInfinity);
            sum.add_(phi[i], Scalars.One);
        }
        return picked;
    }

    /// <summary>Penultimate-layer features (the last weighted layer's input) of <paramref name="pool"/>'s exemplars as decoded.</summary>
    private static Tensor Embed(TorchNetwork net, ReplayMemory pool)
    {
        var capture = new PenultimateCapture(net.ParameterizedModules.Count - 1);
        var parts = new List<Tensor>();
        var rows = new float[Math.Min(Chunk, pool.Count) * pool.FeatureLength];
        for (int start = 0; start < pool.Count; start += Chunk)
        {
            int n = Math.Min(Chunk, pool.Count - start);
            for (int r = 0; r < n; r++)
                pool.CopyFeatures(start + r, rows.AsSpan(r * pool.FeatureLength, pool.FeatureLength));
            var x = tensor(rows, [rows.Length / pool.FeatureLength, pool.FeatureLength]).narrow(0, 0, n);
            net.Forward(x, capture);
            parts.Add(capture.Value!.reshape(n, -1));
        }
        return cat(parts, 0);
    }

    /// <summary>Stores <paramref name="network"/>'s outputs for every exemplar of <paramref name="memory"/> that has none yet.</summary>
    public static void FillLogits(ReplayMemory memory, NetworkModel network)
    {
        if (memory.LogitLength == 0)
            return;
        var missing = Enumerable.Range(0, memory.Count).Where(s => !memory.HasLogits(s)).ToArray();
        if (missing.Length == 0)
            return;
        using var net = new TorchNetwork(network);
        net.LoadWeights(network);
        net.eval();
        using var noGrad = no_grad();
        var rows = new float[Math.Min(Chunk, missing.Length) * memory.FeatureLength];
        for (int start = 0; start < missing.Length; start += Chunk)
        {
            using var scope = NewDisposeScope();
            int n = Math.Min(Chunk, missing.Length - start);
            for (int r = 0; r < n; r++)
                memory.CopyFeatures(missing[start + r], rows.AsSpan(r * memory.FeatureLength, memory.FeatureLength));
            var x = tensor(rows, [rows.Length / memory.FeatureLength, memory.FeatureLength]).narrow(0, 0, n);
            var outputs = net.forward(x).to(ScalarType.Float32).contiguous().data<float>().ToArray();
            int k = outputs.Length / n;
            for (int r = 0; r < n; r++)
                memory.SetLogits(missing[start + r], outputs.AsSpan(r * k, k));
        }
    }

    private sealed class PenultimateCapture(int index) : ILayerInterceptor
    {
        public Tensor? Value { get; private set; }

        public Tensor Input(int i, ParameterizedLayer layer, Tensor value)
        {
            if (i == index)
                Value = value;
            return value;
        }

        public Tensor Weight(int i, ParameterizedLayer layer, Tensor value) => value;
    }
}

/// <summary>
/// DER++'s terms (Buzzega et al., 2020) over a batch read from <see cref="IncrementalDataView"/> with its replay-target column:
/// α · the mean squared error between the outputs and the stored outputs of the exemplars (over the classes each exemplar's
/// outputs cover), plus (β − 1) · the exemplars' summed cross-entropy / batch rows, so that with the head's mean cross-entropy
/// the exemplars' label term weighs β against the new rows'.
/// </summary>
internal sealed class LogitReplayLoss(double alpha, double beta) : IDisposable
{
    private readonly Scalar alphaScalar = alpha.ToScalar();
    private readonly Scalar betaMinusOne = (beta - 1).ToScalar();

    /// <summary>The extra loss for the float32 <paramref name="outputs"/> of <paramref name="batch"/> (inside the batch's dispose scope).</summary>
    public Tensor Loss(Tensor outputs, BatchStream.Batch batch)
    {
        int n = (int)outputs.size(0);
        int width = batch.Targets.Length / batch.Capacity;
        var targets = tensor(batch.Targets, [batch.Capacity, width]).narrow(0, 0, n).to(outputs.device);
        using var half = 0.5.ToScalar();
        using var two = 2.ToScalar();
        using var one = 1.ToScalar();
        var isExemplar = targets.select(1, 0).gt(half);
        var stored = targets.narrow(1, 1, width - 1);
        int k = (int)Math.Min(stored.size(1), outputs.size(1));
        stored = stored.narrow(1, 0, k);
        var known = stored.isnan().logical_not().logical_and(isExemplar.unsqueeze(1));
        var diff = outputs.narrow(1, 0, k).sub(stored.nan_to_num(0)).pow(two).mul(known.to(ScalarType.Float32));
        var mse = diff.sum().div(known.sum().clamp_min(one));
        var loss = mse.mul(alphaScalar);
        if (beta != 1)
        {
            var y = tensor(batch.Labels, [batch.Capacity]).narrow(0, 0, n).to(outputs.device);
            var ce = nn.functional.cross_entropy(outputs, y, reduction: nn.Reduction.None);
            using var rows = n.ToScalar();
            var exemplarCe = ce.mul(isExemplar.to(ScalarType.Float32)).sum().div(rows);
            loss = loss.add(exemplarCe.mul(betaMinusOne), Scalars.One);
        }
        return loss;
    }

    public void Dispose()
    {
        alphaScalar.Dispose();
        betaMinusOne.Dispose();
    }
}
