using TorchSharp;
using static TorchSharp.torch;
using MLNet.Compression.Training;

namespace MLNet.Compression.Pruning;

/// <summary>
/// Magnitude masks for the weight tensors of a <see cref="TorchNetwork"/>, driven by a <see cref="PruningSchedule"/>:
/// at update steps each mask is recomputed from the current |w| (the k smallest per layer, or across the global pool,
/// become zero; exactly k, ties broken by <c>topk</c>), and after every step the masks are multiplied into the weights so
/// pruned weights stay exactly zero. Masks are float tensors on the weights' device, detached from every dispose scope and
/// released by <see cref="Dispose"/>.
/// </summary>
internal sealed class MagnitudeMasks : IDisposable
{
    /// <summary>A weighted layer to prune: its index in <see cref="TorchNetwork.ParameterizedModules"/>, its own target or null (global pool).</summary>
    internal readonly record struct Target(int ModuleIndex, string Name, double? OwnSparsity);

    private readonly PruningSchedule schedule;
    private readonly IReadOnlyList<Target> targets;
    private readonly Tensor?[] masks;

    public MagnitudeMasks(PruningSchedule schedule, IReadOnlyList<Target> targets, int moduleCount)
    {
        this.schedule = schedule;
        this.targets = targets;
        masks = new Tensor?[moduleCount];
    }

    /// <summary>Mask updates done so far.</summary>
    public int Updates { get; private set; }

    /// <summary>The sparsity a layer with its own <paramref name="target"/> gets at <paramref name="step"/>: the schedule's curve scaled to the target.</summary>
    internal double LayerSparsityAt(long step, double target) =>
        schedule.FinalSparsity > 0 ? Math.Min(target * schedule.SparsityAt(step) / schedule.FinalSparsity, 0.999999) : target;

    /// <summary>Called before the first step (step 0) and after every optimizer step: updates masks when the schedule says so, then applies them.</summary>
    public void OnStep(long step, TorchNetwork network)
    {
        if (schedule.IsUpdateStep(step))
            Update(step, network);
        Apply(network);
    }

    /// <summary>Multiplies every mask into its weight tensor.</summary>
    public void Apply(TorchNetwork network)
    {
        using var noGrad = no_grad();
        for (int i = 0; i < masks.Length; i++)
            if (masks[i] is { } mask)
            {
                var (weight, _) = TorchNetwork.ParametersOf(network.ParameterizedModules[i].Module);
                weight.mul_(mask);
            }
    }

    private void Update(long step, TorchNetwork network)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        using var zero = 0.0.ToScalar();
        var pooled = new List<(int Index, Tensor Weight)>();
        foreach (var t in targets)
        {
            var (weight, _) = TorchNetwork.ParametersOf(network.ParameterizedModules[t.ModuleIndex].Module);
            if (t.OwnSparsity is { } own)
                Replace(t.ModuleIndex, MaskOf([weight], LayerSparsityAt(step, own), zero)[0]);
            else
                pooled.Add((t.ModuleIndex, weight));
        }
        if (pooled.Count > 0)
        {
            var pooledMasks = MaskOf(pooled.Select(p => (Tensor)p.Weight).ToArray(), schedule.SparsityAt(step), zero);
            for (int i = 0; i < pooled.Count; i++)
                Replace(pooled[i].Index, pooledMasks[i]);
        }
        Updates++;
    }

    private void Replace(int index, Tensor mask)
    {
        masks[index]?.Dispose();
        masks[index] = mask.DetachFromDisposeScope();
    }

    /// <summary>
    /// Masks (1 keep, 0 prune) for <paramref name="weights"/> taken together: the round(sparsity·n) entries with the smallest
    /// magnitude across all of them become 0. Call inside a dispose scope; the returned masks belong to it.
    /// </summary>
    internal static Tensor[] MaskOf(Tensor[] weights, double sparsity, Scalar zero)
    {
        var flat = weights.Length == 1 ? weights[0].detach().abs().flatten() : cat(weights.Select(w => w.detach().abs().flatten()).ToArray(), 0);
        long n = flat.numel();
        long prune = Math.Clamp((long)Math.Round(sparsity * n), 0, n);
        var mask = ones_like(flat);
        if (prune > 0)
        {
            var (_, indices) = flat.topk(checked((int)prune), largest: false, sorted: false);
            mask.index_fill_(0, indices, zero);
        }
        var result = new Tensor[weights.Length];
        long offset = 0;
        for (int i = 0; i < weights.Length; i++)
        {
            long count = weights[i].numel();
            result[i] = mask.narrow(0, offset, count).reshape(weights[i].shape).clone();
            offset += count;
        }
        return result;
    }

    /// <summary>Releases the masks.</summary>
    public void Dispose()
    {
        for (int i = 0; i < masks.Length; i++)
        {
            masks[i]?.Dispose();
            masks[i] = null;
        }
    }
}
