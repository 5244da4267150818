using MLNet.Compression.Distillation;
using MLNet.Compression.Networks;
using TorchSharp;
using static TorchSharp.torch;
using MLNet.Compression.Training;

namespace MLNet.Compression.Incremental;

/// <summary>
/// Keeps the weights that are exactly zero when training starts (a pruned model's) at exactly zero: the masks are taken
/// from the network in <see cref="Capture"/> (before the first step) and re-applied after every optimizer step. Layers
/// without zeros get no mask. Masks are bool tensors on the weights' device, released by <see cref="Dispose"/>.
/// </summary>
internal sealed class ExactZeroMasks : IDisposable
{
    private Tensor?[] masks = [];

    /// <summary>Weights held at zero.</summary>
    public long MaskedWeights { get; private set; }

    public void Capture(TorchNetwork network)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var modules = network.ParameterizedModules;
        masks = new Tensor?[modules.Count];
        for (int i = 0; i < modules.Count; i++)
        {
            var (weight, _) = TorchNetwork.ParametersOf(modules[i].Module);
            var mask = weight.eq(Scalars.Zero);
            long zeros = mask.sum().item<long>();
            if (zeros == 0)
                continue;
            masks[i] = mask.DetachFromDisposeScope();
            MaskedWeights += zeros;
        }
    }

    public void Apply(TorchNetwork network)
    {
        using var noGrad = no_grad();
        for (int i = 0; i < masks.Length; i++)
            if (masks[i] is { } mask)
            {
                var (weight, _) = TorchNetwork.ParametersOf(network.ParameterizedModules[i].Module);
                weight.masked_fill_(mask, Scalars.Zero);
            }
    }

    public void Dispose()
    {
        foreach (var m in masks)
            m?.Dispose();
        masks = [];
    }
}

/// <summary>
/// EWC's penalty applied as a gradient: before every optimizer step, grad += λ · F ⊙ (θ − θ*) on the float32 master
/// parameters (the gradient of (λ/2) Σ F (θ − θ*)²), which works the same in every training precision.
/// </summary>
internal sealed class EwcPenalty : IDisposable
{
    private readonly EwcState state;
    private readonly double lambda;
    private Tensor[] fisher = [];
    private Tensor[] anchor = [];

    public EwcPenalty(EwcState state, double lambda)
    {
        this.state = state;
        this.lambda = lambda;
    }

    /// <summary>Copies the Fisher and anchor tensors to the device of <paramref name="network"/>'s parameters.</summary>
    public void Capture(TorchNetwork network)
    {
        var parameters = Parameters(network);
        if (parameters.Length != state.Fisher.Length)
            throw new InvalidOperationException($"The EWC state has {state.Fisher.Length} tensors but the network has {parameters.Length} parameters.");
        fisher = new Tensor[parameters.Length];
        anchor = new Tensor[parameters.Length];
        using var scope = NewDisposeScope();
        for (int i = 0; i < parameters.Length; i++)
        {
            fisher[i] = tensor(state.Fisher[i], parameters[i].shape).to(parameters[i].device).DetachFromDisposeScope();
            anchor[i] = tensor(state.Anchor[i], parameters[i].shape).to(parameters[i].device).DetachFromDisposeScope();
        }
    }

    /// <summary>Adds the penalty's gradient to the master parameters' gradients (call inside the batch's dispose scope).</summary>
    public void AddGradient(TorchNetwork network)
    {
        using var noGrad = no_grad();
        using var lam = lambda.ToScalar();
        using var minusOne = (-1.0).ToScalar();
        var parameters = Parameters(network);
        for (int i = 0; i < parameters.Length; i++)
        {
            if (parameters[i].grad is not { } grad)
                continue;
            var diff = parameters[i].detach().add(anchor[i], minusOne);
            grad.addcmul_(fisher[i], diff, lam);
        }
    }

    /// <summary>The penalty (λ/2) Σ F (θ − θ*)² for <paramref name="model"/>'s weights (for the report).</summary>
    public static double Value(EwcState state, NetworkModel model, double lambda)
    {
        double sum = 0;
        int i = 0;
        foreach (var layer in model.ParameterizedLayers)
        {
            foreach (var values in new[] { layer.Weight, layer.Bias })
            {
                var f = state.Fisher[i];
                var a = state.Anchor[i];
                for (int j = 0; j < values.Length; j++)
                {
                    double d = values[j] - a[j];
                    sum += f[j] * d * d;
                }
                i++;
            }
        }
        return lambda / 2 * sum;
    }

    private static TorchSharp.Modules.Parameter[] Parameters(TorchNetwork network) => network.ParameterizedModules.SelectMany(m =>
    {
        var (w, b) = TorchNetwork.ParametersOf(m.Module);
        return new[] { w, b };
    }).ToArray();

    public void Dispose()
    {
        foreach (var t in fisher.Concat(anchor))
            t.Dispose();
        fisher = [];
        anchor = [];
    }
}

/// <summary>
/// Learning without forgetting's teacher: the previous network, frozen, run on every training batch (new rows and replayed
/// exemplars alike) on the training device. Its logits are distilled into the student's outputs for the old classes
/// (the first <c>K_old</c> outputs, since class growth only appends classes; the one output of a binary or regression
/// network) with the previous network's output head's distillation loss; the head's training loss covers every output. The teacher runs in process rather than through the previous model's
/// <c>Transform</c> so that training keeps shuffling (the batched scoring view cannot shuffle) and sees exactly the batch the
/// student sees.
/// </summary>
internal sealed class LwfTeacher : IDisposable
{
    private readonly TorchNetwork teacher;
    private readonly int oldUnits;
    private readonly Networks.Heads.OutputHead head;
    private readonly double temperature;
    private readonly Scalar weight;
    private Tensor? logits;

    /// <param name="previous">The previous network (label units).</param>
    /// <param name="temperature">The distillation temperature (heads that have one).</param>
    /// <param name="weight">The distillation term's weight.</param>
    /// <param name="scaling">
    /// Regression: the run's target scaling; the teacher's output layer is rewritten to the standardized units the student
    /// trains in, so the head's distillation loss compares like with like. Null for classification.
    /// </param>
    public LwfTeacher(NetworkModel previous, double temperature, double weight, Networks.Heads.TargetScaling? scaling = null)
    {
        var source = previous;
        if (scaling is not null)
        {
            source = previous.Clone();
            scaling.ToStandardized(source);
        }
        teacher = new TorchNetwork(source);
        teacher.LoadWeights(source);
        teacher.eval();
        foreach (var p in teacher.parameters())
            p.requires_grad = false;
        oldUnits = previous.Head.OutputUnits(previous.NumClasses);
        head = previous.Head;
        this.temperature = temperature;
        this.weight = weight.ToScalar();
    }

    public void Capture(TorchNetwork network) => teacher.to(network.parameters().First().device);

    /// <summary>The training forward pass: runs the teacher on the batch (kept for <see cref="Loss"/>), then the student.</summary>
    public Tensor Forward(TorchNetwork student, Tensor x)
    {
        using (no_grad())
            logits = teacher.forward(x.to(ScalarType.Float32));
        return student.forward(x);
    }

    /// <summary>
    /// The head's training loss on every row + weight · the head's distillation loss against the teacher's outputs on the old
    /// outputs (multiclass: T² · KL(teacher ‖ student) on the old classes; binary: T² · BCE on the teacher's sigmoid(logit / T);
    /// regression: MSE to the teacher's standardized output).
    /// </summary>
    public Tensor Loss(Tensor studentLogits, Tensor labels)
    {
        var ce = head.Loss(studentLogits, labels);
        var old = studentLogits.size(1) == oldUnits ? studentLogits : studentLogits.narrow(1, 0, oldUnits);
        var kd = head.DistillationLoss(old, logits!, labels, temperature, 1.0, TeacherScoreKind.Logits);
        return ce.add(kd.mul(weight), Scalars.One);
    }

    public void Dispose()
    {
        teacher.Dispose();
        weight.Dispose();
    }
}
