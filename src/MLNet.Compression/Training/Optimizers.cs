using System.Buffers.Binary;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.Compression.Training;

/// <summary>
/// Adam and SGD with momentum written over TorchSharp tensor operations. TorchSharp's own optimizers pass doubles that
/// become <see cref="Scalar"/> objects through implicit conversion and are left to the finalizer, which can free them while
/// libtorch still reads them (intermittent "toFloat" assertion failures in <c>addcdiv_</c>). Here every scalar is created
/// explicitly and disposed after use. The state is plain float tensors, saved in a format of our own.
/// </summary>
internal abstract class ParameterOptimizer : IDisposable
{
    protected ParameterOptimizer(IReadOnlyList<Parameter> parameters, double learningRate, double weightDecay)
    {
        Parameters = parameters;
        LearningRate = learningRate;
        WeightDecay = weightDecay;
    }

    public IReadOnlyList<Parameter> Parameters { get; }

    public double LearningRate { get; set; }

    public double WeightDecay { get; }

    public long StepCount { get; protected set; }

    /// <summary>Sets every parameter's gradient to zero (keeping the buffers).</summary>
    public void ZeroGrad()
    {
        foreach (var p in Parameters)
            p.grad?.zero_();
    }

    /// <summary>Applies one update from the parameters' gradients.</summary>
    public void Step()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        StepCount++;
        for (int i = 0; i < Parameters.Count; i++)
        {
            var p = Parameters[i];
            var grad = p.grad;
            if (grad is null)
                continue;
            if (WeightDecay != 0)
            {
                using var wd = WeightDecay.ToScalar();
                grad = grad.add(p, wd);
            }
            Update(i, p, grad);
        }
    }

    protected abstract void Update(int index, Parameter parameter, Tensor grad);

    /// <summary>Bytes of optimizer state (float32 moment buffers).</summary>
    public abstract long StateBytes { get; }

    /// <summary>The state's kind as <see cref="SaveState"/> writes it ("adam", "sgd").</summary>
    private protected abstract string StateKind { get; }

    /// <summary>The optimizer's name in messages ("Adam", "SGD").</summary>
    private protected abstract string DisplayName { get; }

    /// <summary>The state: kind, step count, parameter count, then each parameter's buffers (<see cref="WriteParameterState"/>).</summary>
    public byte[] SaveState()
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms))
        {
            w.Write(StateKind);
            w.Write(StepCount);
            w.Write(Parameters.Count);
            for (int i = 0; i < Parameters.Count; i++)
                WriteParameterState(w, i);
        }
        return ms.ToArray();
    }

    /// <summary>Writes the buffers of parameter <paramref name="index"/>.</summary>
    private protected abstract void WriteParameterState(BinaryWriter w, int index);

    /// <summary>Reads the buffers of parameter <paramref name="index"/> as <see cref="WriteParameterState"/> wrote them.</summary>
    private protected abstract void ReadParameterState(BinaryReader r, int index);

    /// <summary>
    /// The largest state <see cref="SaveState"/> writes for parameters of <paramref name="sizes"/> values each (Adam's, two
    /// buffers per parameter), computed with checked arithmetic.
    /// </summary>
    internal static long MaxStateBytes(IReadOnlyList<long> sizes)
    {
        checked
        {
            long bytes = 1 + 4 + sizeof(long) + sizeof(int); // "adam" with its length byte, step count, parameter count
            foreach (var n in sizes)
                bytes += 2 * (sizeof(int) + n * sizeof(float));
            return bytes;
        }
    }

    /// <summary>
    /// Checks that <paramref name="state"/> is a whole optimizer state (Adam or SGD, as <see cref="SaveState"/> writes it)
    /// for parameters of exactly <paramref name="sizes"/> values, in that order, with no bytes left over. Allocates nothing;
    /// throws a <see cref="CheckpointFormatException"/> on <c>optimizer.bin</c> naming the field that is wrong.
    /// </summary>
    /// <returns>The optimizer kind ("adam" or "sgd").</returns>
    internal static string ValidateState(ReadOnlySpan<byte> state, IReadOnlyList<long> sizes)
    {
        const string entry = Checkpoint.OptimizerEntry;
        int at = 0;
        ReadOnlySpan<byte> Take(ReadOnlySpan<byte> all, int count, string field)
        {
            if (count < 0 || all.Length - at < count)
                throw Checkpoint.Fault(entry, field, $"ends at byte {all.Length}, before the {count} bytes of '{field}' at byte {at}");
            var slice = all.Slice(at, count);
            at += count;
            return slice;
        }
        int nameLength = Take(state, 1, "kind")[0];
        var kind = System.Text.Encoding.ASCII.GetString(Take(state, nameLength, "kind"));
        if (kind is not ("adam" or "sgd"))
            throw Checkpoint.Fault(entry, "kind", $"is '{kind}', not 'adam' or 'sgd'");
        long steps = BinaryPrimitives.ReadInt64LittleEndian(Take(state, sizeof(long), "steps"));
        if (steps < 0)
            throw Checkpoint.Fault(entry, "steps", $"is {steps}; a step count is not negative");
        int count = BinaryPrimitives.ReadInt32LittleEndian(Take(state, sizeof(int), "parameters"));
        if (count != sizes.Count)
            throw Checkpoint.Fault(entry, "parameters", $"is {count} but the network has {sizes.Count} parameter tensors");
        for (int i = 0; i < count; i++)
        {
            int buffers = 2;
            if (kind == "sgd")
            {
                byte present = Take(state, 1, $"tensor[{i}].present")[0];
                if (present > 1)
                    throw Checkpoint.Fault(entry, $"tensor[{i}].present", $"is {present}, not 0 or 1");
                buffers = present;
            }
            for (int b = 0; b < buffers; b++)
            {
                string field = $"tensor[{i}].values";
                int n = BinaryPrimitives.ReadInt32LittleEndian(Take(state, sizeof(int), field));
                if (n != sizes[i])
                    throw Checkpoint.Fault(entry, field, $"declares {n} values for a parameter of {sizes[i]}");
                Take(state, checked(n * sizeof(float)), field);
            }
        }
        if (at != state.Length)
            throw Checkpoint.Fault(entry, "length", $"holds {state.Length - at} bytes after the last tensor");
        return kind;
    }

    /// <summary>Restores a state <see cref="SaveState"/> wrote, refusing another optimizer's or another network's.</summary>
    public void LoadState(byte[] state)
    {
        using var r = new BinaryReader(new MemoryStream(state));
        var kind = r.ReadString();
        if (kind != StateKind)
            throw new InvalidDataException($"The saved optimizer state is for '{kind}', not {DisplayName}; continue with the optimizer the model was trained with, or start fresh.");
        StepCount = r.ReadInt64();
        int count = r.ReadInt32();
        if (count != Parameters.Count)
            throw new InvalidDataException($"The saved optimizer state has {count} parameters but the network has {Parameters.Count}.");
        for (int i = 0; i < count; i++)
            ReadParameterState(r, i);
    }

    public abstract void Dispose();

    protected static void WriteTensor(BinaryWriter w, Tensor t)
    {
        var data = TorchNetwork.ToArray(t);
        w.Write(data.Length);
        foreach (var v in data)
            w.Write(v);
    }

    protected static void ReadTensorInto(BinaryReader r, Tensor target)
    {
        int n = r.ReadInt32();
        if (n != target.numel())
            throw new InvalidDataException($"The optimizer state holds {n} values for a parameter of {target.numel()}; the checkpoint belongs to another architecture.");
        var data = new float[n];
        for (int i = 0; i < n; i++)
            data[i] = r.ReadSingle();
        using var noGrad = no_grad();
        using var src = tensor(data, target.shape);
        target.copy_(src);
    }
}

internal sealed class AdamOptimizer : ParameterOptimizer
{
    private readonly double beta1, beta2, eps;
    private readonly Tensor[] m, v;

    public AdamOptimizer(IReadOnlyList<Parameter> parameters, double learningRate, double weightDecay, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
        : base(parameters, learningRate, weightDecay)
    {
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.eps = eps;
        m = parameters.Select(p => zeros_like(p).DetachFromDisposeScope()).ToArray();
        v = parameters.Select(p => zeros_like(p).DetachFromDisposeScope()).ToArray();
    }

    public override long StateBytes => Parameters.Sum(p => p.numel()) * 2 * sizeof(float);

    protected override void Update(int i, Parameter p, Tensor grad)
    {
        double bc1 = 1 - Math.Pow(beta1, StepCount);
        double bc2 = 1 - Math.Pow(beta2, StepCount);
        using var b1 = beta1.ToScalar();
        using var oneMinusB1 = (1 - beta1).ToScalar();
        using var b2 = beta2.ToScalar();
        using var oneMinusB2 = (1 - beta2).ToScalar();
        using var sqrtBc2 = Math.Sqrt(bc2).ToScalar();
        using var epsilon = eps.ToScalar();
        using var stepSize = (-LearningRate / bc1).ToScalar();
        m[i].mul_(b1).add_(grad, oneMinusB1);
        v[i].mul_(b2).addcmul_(grad, grad, oneMinusB2);
        using var denom = v[i].sqrt();
        denom.div_(sqrtBc2).add_(epsilon, Scalars.One);
        p.addcdiv_(m[i], denom, stepSize);
    }

    private protected override string StateKind => "adam";

    private protected override string DisplayName => "Adam";

    private protected override void WriteParameterState(BinaryWriter w, int index)
    {
        WriteTensor(w, m[index]);
        WriteTensor(w, v[index]);
    }

    private protected override void ReadParameterState(BinaryReader r, int index)
    {
        ReadTensorInto(r, m[index]);
        ReadTensorInto(r, v[index]);
    }

    public override void Dispose()
    {
        foreach (var t in m.Concat(v))
            t.Dispose();
    }
}

internal sealed class SgdOptimizer : ParameterOptimizer
{
    private readonly double momentum;
    private readonly Tensor?[] buffers;

    public SgdOptimizer(IReadOnlyList<Parameter> parameters, double learningRate, double momentum, double weightDecay)
        : base(parameters, learningRate, weightDecay)
    {
        this.momentum = momentum;
        buffers = new Tensor?[parameters.Count];
    }

    public override long StateBytes => momentum > 0 ? Parameters.Sum(p => p.numel()) * sizeof(float) : 0;

    protected override void Update(int i, Parameter p, Tensor grad)
    {
        using var negLr = (-LearningRate).ToScalar();
        if (momentum == 0)
        {
            p.add_(grad, negLr);
            return;
        }
        using var mu = momentum.ToScalar();
        if (buffers[i] is null)
            buffers[i] = grad.detach().clone().DetachFromDisposeScope();
        else
            buffers[i]!.mul_(mu).add_(grad, Scalars.One);
        p.add_(buffers[i]!, negLr);
    }

    private protected override string StateKind => "sgd";

    private protected override string DisplayName => "SGD";

    /// <remarks>A flag, then the momentum buffer when the parameter has one (none before its first step, none without momentum).</remarks>
    private protected override void WriteParameterState(BinaryWriter w, int index)
    {
        w.Write(buffers[index] is not null);
        if (buffers[index] is { } b)
            WriteTensor(w, b);
    }

    private protected override void ReadParameterState(BinaryReader r, int index)
    {
        if (!r.ReadBoolean())
            return;
        buffers[index] ??= zeros_like(Parameters[index]).DetachFromDisposeScope();
        ReadTensorInto(r, buffers[index]!);
    }

    public override void Dispose()
    {
        foreach (var b in buffers)
            b?.Dispose();
    }
}
