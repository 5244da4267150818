using System.Buffers.Binary;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Networks;
using TorchSharp;
using static TorchSharp.torch;
using MLNet.Compression.Native;
using MLNet.Compression.Training;

namespace MLNet.Compression.Incremental;

/// <summary>
/// Elastic weight consolidation's memory (Kirkpatrick et al., 2017), in its online form (Schwarz et al., 2018): one
/// diagonal Fisher information value per parameter and the anchor weights θ* it was measured at. Continued training adds
/// λ · F ⊙ (θ − θ*) to every gradient, the gradient of the penalty (λ/2) Σ F (θ − θ*)². After each increment the Fisher of
/// the new task is added to the decayed old one (F ← γ·F_old + F_new) and the anchor moves to the new weights, so the state
/// is two floats per parameter however many increments have run.
/// </summary>
internal sealed class EwcState
{
    private const string Magic = "MLNC-EWC";
    private const int Version = 1;

    /// <param name="fisher">Per weighted layer, in <see cref="NetworkModel.ParameterizedLayers"/> order: weight then bias.</param>
    /// <param name="anchor">Same layout: the weights the Fisher was measured at.</param>
    /// <param name="tasks">How many tasks' Fisher information is summed in.</param>
    public EwcState(float[][] fisher, float[][] anchor, int tasks)
    {
        if (fisher.Length != anchor.Length || fisher.Zip(anchor).Any(p => p.First.Length != p.Second.Length))
            throw new ArgumentException("The Fisher information and the anchor weights must have the same layout.");
        Fisher = fisher;
        Anchor = anchor;
        Tasks = tasks;
    }

    public float[][] Fisher { get; }

    public float[][] Anchor { get; }

    public int Tasks { get; }

    /// <summary>Bytes held: Fisher and anchor, float32.</summary>
    public long Bytes => Fisher.Sum(f => (long)f.Length) * 2 * sizeof(float);

    /// <summary>Whether the layout matches <paramref name="model"/>'s parameters.</summary>
    public bool Matches(NetworkModel model)
    {
        var layers = model.ParameterizedLayers.ToArray();
        if (Fisher.Length != 2 * layers.Length)
            return false;
        for (int i = 0; i < layers.Length; i++)
            if (Fisher[2 * i].Length != layers[i].Weight.Length || Fisher[2 * i + 1].Length != layers[i].Bias.Length)
                return false;
        return true;
    }

    /// <summary>
    /// The state for a model whose output layer grew from <paramref name="oldClasses"/> to <paramref name="newClasses"/>
    /// rows: the new rows get Fisher 0 (no penalty: nothing was learned about them) and anchor 0.
    /// </summary>
    public EwcState GrowOutput(int oldClasses, int newClasses)
    {
        var fisher = Fisher.Select(f => (float[])f.Clone()).ToArray();
        var anchor = Anchor.Select(a => (float[])a.Clone()).ToArray();
        int w = fisher.Length - 2, b = fisher.Length - 1;
        int fanIn = fisher[w].Length / oldClasses;
        Array.Resize(ref fisher[w], newClasses * fanIn);
        Array.Resize(ref anchor[w], newClasses * fanIn);
        Array.Resize(ref fisher[b], newClasses);
        Array.Resize(ref anchor[b], newClasses);
        return new EwcState(fisher, anchor, Tasks);
    }

    /// <summary>
    /// This state in the units a regression run trains in: the output layer's anchor rewritten as
    /// <see cref="Networks.Heads.TargetScaling.ToStandardized"/> rewrites its weights (w / std, (b − mean) / std) and its Fisher
    /// multiplied by std² to match, so the penalty (λ/2) Σ F (θ − θ*)² is the same number in either parameterization.
    /// </summary>
    public EwcState InTrainingUnits(Networks.Heads.TargetScaling scaling)
    {
        var fisher = Fisher.Select(f => (float[])f.Clone()).ToArray();
        var anchor = Anchor.Select(a => (float[])a.Clone()).ToArray();
        int w = fisher.Length - 2, b = fisher.Length - 1;
        double std = scaling.Std;
        for (int j = 0; j < fisher[w].Length; j++)
        {
            fisher[w][j] = (float)(fisher[w][j] * std * std);
            anchor[w][j] = scaling.StandardizedWeight(anchor[w][j]);
        }
        for (int j = 0; j < fisher[b].Length; j++)
        {
            fisher[b][j] = (float)(fisher[b][j] * std * std);
            anchor[b][j] = scaling.StandardizedBias(anchor[b][j]);
        }
        return new EwcState(fisher, anchor, Tasks);
    }

    /// <summary>
    /// Online EWC's update: F = <paramref name="decay"/> · F_old + F_new, anchor = the new task's weights.
    /// <paramref name="previous"/> may be null (first task).
    /// </summary>
    public static EwcState Combine(EwcState? previous, EwcState current, double decay)
    {
        if (previous is null)
            return current;
        var fisher = new float[current.Fisher.Length][];
        for (int i = 0; i < fisher.Length; i++)
        {
            var f = (float[])current.Fisher[i].Clone();
            var old = previous.Fisher[i];
            for (int j = 0; j < f.Length; j++)
                f[j] += (float)decay * old[j];
            fisher[i] = f;
        }
        return new EwcState(fisher, current.Anchor, previous.Tasks + current.Tasks);
    }

    /// <summary>
    /// The diagonal Fisher information of <paramref name="model"/> on up to <paramref name="maxRows"/> rows of
    /// <paramref name="data"/>, from the model's head's own likelihood (<see cref="Networks.Heads.OutputHead.FisherOutputGradient"/>):
    /// multiclass and binary the empirical-predictive Fisher, the mean over rows of the squared gradient of log p(ŷ | x), ŷ the
    /// model's predicted class (as van de Ven &amp; Tolias compute it); regression the Gaussian likelihood's, in the units of
    /// <paramref name="scaling"/>. Only the feature column is read, on the CPU. The per-row squared gradients are computed
    /// exactly for a batch of rows at once (<see cref="EstimateBatched"/>: autograd gives each layer's per-row output gradient,
    /// the layer's <see cref="ParameterizedLayer.SquaredGradientSums"/> turns it into squared weight gradients); when a layer
    /// type has no batched form, the whole network takes one backward pass per row (<see cref="EstimatePerRow"/>) and
    /// <paramref name="log"/> is told why.
    /// </summary>
    public static EwcState Estimate(NetworkModel model, IDataView data, string featureColumnName, int maxRows, int seed,
        Networks.Heads.TargetScaling? scaling = null, Action<string>? log = null)
    {
        TorchNative.EnsureLoaded();
        var featureColumn = SchemaValidation.FeatureColumn(data.Schema, featureColumnName, model.InputLength);
        if (EstimateBatched(model, data, featureColumn, maxRows, seed, scaling, out var unsupported) is { } batched)
            return batched;
        log?.Invoke($"EWC's Fisher information takes one backward pass per row (slower): {unsupported}");
        return EstimatePerRow(model, data, featureColumn, maxRows, seed, scaling);
    }

    /// <summary>The model's network in TorchSharp with its weights loaded, in evaluation mode (the caller disposes it).</summary>
    private static TorchNetwork EvaluationNetwork(NetworkModel model)
    {
        TorchNative.EnsureLoaded();
        var net = new TorchNetwork(model);
        try
        {
            net.LoadWeights(model);
            net.eval();
            return net;
        }
        catch
        {
            net.Dispose();
            throw;
        }
    }

    /// <summary>One backward pass per row (any network).</summary>
    internal static EwcState EstimatePerRow(NetworkModel model, IDataView data, DataViewSchema.Column featureColumn, int maxRows, int seed,
        Networks.Heads.TargetScaling? scaling = null)
    {
        var head = model.Head;
        var layers = model.ParameterizedLayers.ToArray();
        using var net = EvaluationNetwork(model);
        var parameters = net.ParameterizedModules.SelectMany(m =>
        {
            var (w, b) = TorchNetwork.ParametersOf(m.Module);
            return new[] { w, b };
        }).ToArray();
        var sums = parameters.Select(p => zeros_like(p).DetachFromDisposeScope()).ToArray();
        try
        {
            using var cursor = data.GetRowCursor([featureColumn], data.CanShuffle ? new Random(seed) : null);
            var getter = cursor.GetGetter<VBuffer<float>>(featureColumn);
            VBuffer<float> features = default;
            var row = new float[model.InputLength];
            int rows = 0;
            while (rows < maxRows && cursor.MoveNext())
            {
                getter(ref features);
                features.CopyTo(row);
                using var scope = NewDisposeScope();
                foreach (var p in parameters)
                    p.grad?.zero_();
                var x = tensor(row, [1, model.InputLength]);
                // g · ∂z/∂θ with g the head's output gradient (softmax: softmax(z) − onehot(ŷ), the gradient of −log p(ŷ | x)).
                var z = net.forward(x);
                var outputGradient = head.FisherOutputGradient(z.detach(), scaling);
                z.mul(outputGradient).sum().backward();
                using (no_grad())
                    for (int i = 0; i < parameters.Length; i++)
                        if (parameters[i].grad is { } g)
                            sums[i].addcmul_(g, g, Scalars.One);
                rows++;
            }
            return FromSums(layers, sums, rows);
        }
        finally
        {
            foreach (var s in sums)
                s.Dispose();
        }
    }

    /// <summary>
    /// The exact per-row Fisher diagonal of any network whose weighted layers all have a batched form, a batch of rows at a
    /// time: the network's own forward (<see cref="TorchNetwork.Forward(Tensor, ILayerInterceptor)"/>) keeps each weighted
    /// layer's input and pre-activation output, one autograd pass gives the gradient of Σ z · g (g the head's per-row output
    /// gradient) with respect to every such output, which keeps the rows apart, and each layer's
    /// <see cref="ParameterizedLayer.SquaredGradientSums"/> sums its rows' squared weight and bias gradients. Returns null, with
    /// <paramref name="unsupported"/> saying which layer, when a layer type has no batched form. <paramref name="batch"/> rows
    /// go through at a time (the result does not depend on it beyond rounding).
    /// </summary>
    internal static EwcState? EstimateBatched(NetworkModel model, IDataView data, DataViewSchema.Column featureColumn, int maxRows, int seed,
        Networks.Heads.TargetScaling? scaling, out string? unsupported, int batch = 256)
    {
        unsupported = null;
        var head = model.Head;
        var layers = model.ParameterizedLayers.ToArray();
        using var net = EvaluationNetwork(model);
        var sumW = layers.Select(l => zeros(l.WeightShape.Select(d => (long)d).ToArray()).DetachFromDisposeScope()).ToArray();
        var sumB = layers.Select(l => zeros(l.OutputUnits).DetachFromDisposeScope()).ToArray();
        try
        {
            using var cursor = data.GetRowCursor([featureColumn], data.CanShuffle ? new Random(seed) : null);
            var getter = cursor.GetGetter<VBuffer<float>>(featureColumn);
            VBuffer<float> features = default;
            var buffer = new float[batch * model.InputLength];
            int rows = 0;
            while (rows < maxRows)
            {
                int n = 0;
                while (n < batch && rows + n < maxRows && cursor.MoveNext())
                {
                    getter(ref features);
                    features.CopyTo(buffer.AsSpan(n * model.InputLength, model.InputLength));
                    n++;
                }
                if (n == 0)
                    break;
                using (var scope = NewDisposeScope())
                {
                    var capture = new LayerCapture(layers.Length);
                    var x = tensor(buffer, [batch, model.InputLength]).narrow(0, 0, n);
                    var z = net.Forward(x, capture);
                    // dL/dz of the output for the head's likelihood (softmax: L = -log p(ŷ | x), ŷ = arg max, so softmax(z) - onehot(ŷ)),
                    // one row per example; autograd carries it back to every weighted layer's output, each row on its own.
                    var outputGradient = head.FisherOutputGradient(z.detach(), scaling);
                    var layerGradients = autograd.grad([z], capture.Outputs, [outputGradient]);
                    using (no_grad())
                        for (int i = 0; i < layers.Length; i++)
                        {
                            if (layers[i].SquaredGradientSums(capture.Inputs[i].detach(), layerGradients[i]) is not { } sums)
                            {
                                unsupported = $"layer '{layers[i].Name}' ({layers[i].GetType().Name}) has no batched form (ParameterizedLayer.SquaredGradientSums).";
                                return null;
                            }
                            sumW[i].add_(sums.Weight, Scalars.One);
                            sumB[i].add_(sums.Bias, Scalars.One);
                        }
                }
                rows += n;
            }
            return FromSums(layers, sumW.Zip(sumB, (w, b) => new[] { w, b }).SelectMany(p => p).ToArray(), rows);
        }
        finally
        {
            foreach (var s in sumW.Concat(sumB))
                s.Dispose();
        }
    }

    /// <summary>
    /// The state of one task from the sums over <paramref name="rows"/> rows of the squared gradients, one tensor per parameter
    /// in the order weight, bias of each of <paramref name="layers"/> (divided in place): the Fisher information is their mean,
    /// the anchor the layers' current weights.
    /// </summary>
    private static EwcState FromSums(ParameterizedLayer[] layers, Tensor[] sums, int rows)
    {
        if (rows == 0)
            throw new ArgumentException("The data for EWC's Fisher information has no rows.", "data");
        using var inv = (1.0 / rows).ToScalar();
        var fisher = new float[sums.Length][];
        var anchor = new float[sums.Length][];
        for (int i = 0; i < sums.Length; i++)
        {
            fisher[i] = TorchNetwork.ToArray(sums[i].mul_(inv));
            anchor[i] = i % 2 == 0 ? (float[])layers[i / 2].Weight.Clone() : (float[])layers[i / 2].Bias.Clone();
        }
        return new EwcState(fisher, anchor, 1);
    }

    /// <summary>Keeps each weighted layer's input and pre-activation output during the network's own forward pass.</summary>
    private sealed class LayerCapture(int layers) : ILayerInterceptor
    {
        /// <summary>Per weighted layer, its input in the last forward pass.</summary>
        public Tensor[] Inputs { get; } = new Tensor[layers];

        /// <summary>Per weighted layer, its output before the activation in the last forward pass.</summary>
        public Tensor[] Outputs { get; } = new Tensor[layers];

        public Tensor Input(int index, ParameterizedLayer layer, Tensor value) => Inputs[index] = value;

        public Tensor Weight(int index, ParameterizedLayer layer, Tensor value) => value;

        public Tensor Output(int index, ParameterizedLayer layer, Tensor value) => Outputs[index] = value;
    }

    public void Write(Stream stream)
    {
        using var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        w.Write(Magic);
        w.Write(Version);
        w.Write(Tasks);
        w.Write(Fisher.Length);
        for (int i = 0; i < Fisher.Length; i++)
        {
            w.Write(Fisher[i].Length);
            foreach (var v in Fisher[i])
                w.Write(v);
            foreach (var v in Anchor[i])
                w.Write(v);
        }
    }

    /// <summary>Bytes of <see cref="Write"/>'s header: magic, version, tasks, tensor count.</summary>
    private static readonly int HeaderBytes = 1 + Magic.Length + 4 + 4 + 4;

    /// <summary>
    /// Reads a state written by <see cref="Write"/> from <paramref name="stream"/>, whose length is <paramref name="length"/>
    /// bytes, for <paramref name="model"/>: the tensor count and the exact length the model's parameters imply (checked
    /// arithmetic) are compared with the header and with <paramref name="length"/> before anything is allocated.
    /// Throws <see cref="CheckpointFormatException"/> on <c>ewc.bin</c> naming the field.
    /// </summary>
    public static EwcState Read(Stream stream, long length, NetworkModel model)
    {
        const string entry = IncrementalState.EwcEntry;
        var sizes = model.ParameterizedLayers.SelectMany(l => new[] { l.Weight.Length, l.Bias.Length }).ToArray();
        long expected = HeaderBytes;
        foreach (var n in sizes)
            expected = checked(expected + sizeof(int) + 2L * n * sizeof(float));
        if (length != expected)
            throw Checkpoint.Fault(entry, "length", $"is {length} bytes but the Fisher and anchor values of this network's {sizes.Length} parameter tensors take exactly {expected}");
        var h = Checkpoint.ReadMagicHeader(stream, HeaderBytes, Magic, entry, "an EWC state").AsSpan();
        int version = BinaryPrimitives.ReadInt32LittleEndian(h);
        if (version != Version)
            throw Checkpoint.Fault(entry, "version", $"is {version}; this library reads version {Version}");
        int tasks = BinaryPrimitives.ReadInt32LittleEndian(h[4..]);
        if (tasks < 1)
            throw Checkpoint.Fault(entry, "tasks", $"is {tasks}; the state sums at least one task's Fisher information");
        int tensors = BinaryPrimitives.ReadInt32LittleEndian(h[8..]);
        if (tensors != sizes.Length)
            throw Checkpoint.Fault(entry, "tensors", $"is {tensors} but the network has {sizes.Length} parameter tensors");
        var fisher = new float[tensors][];
        var anchor = new float[tensors][];
        var count = new byte[sizeof(int)];
        for (int i = 0; i < tensors; i++)
        {
            Checkpoint.ReadExactly(stream, count, entry);
            int n = BinaryPrimitives.ReadInt32LittleEndian(count);
            if (n != sizes[i])
                throw Checkpoint.Fault(entry, $"tensor[{i}].values", $"is {n} but that parameter of the network has {sizes[i]} values");
            fisher[i] = ReadFloats(stream, n, entry);
            anchor[i] = ReadFloats(stream, n, entry);
            foreach (var f in fisher[i])
                if (!(f >= 0) || float.IsInfinity(f))
                    throw Checkpoint.Fault(entry, $"tensor[{i}].fisher", $"holds {f}; Fisher information is a finite, non-negative number");
        }
        if (stream.ReadByte() != -1)
            throw Checkpoint.Fault(entry, "length", $"holds more than the {length} bytes its zip entry declares");
        return new EwcState(fisher, anchor, tasks);
    }

    private static float[] ReadFloats(Stream stream, int count, string entry)
    {
        var values = new float[count];
        var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan());
        Checkpoint.ReadExactly(stream, bytes, entry);
        if (!BitConverter.IsLittleEndian)
            for (int i = 0; i < count; i++)
                values[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.Slice(i * 4, 4));
        return values;
    }
}
