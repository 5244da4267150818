using MLNet.Compression.Networks;
using MLNet.Compression.Networks.Heads;
using TorchSharp;
using static TorchSharp.torch;
using MLNet.Compression.Training;

namespace MLNet.Compression.Distillation;

/// <summary>What a teacher's score column holds.</summary>
public enum TeacherScoreKind
{
    /// <summary>Decide per batch: rows of non-negative values that sum to 1 are probabilities, anything else logits.</summary>
    Auto,

    /// <summary>Class probabilities (ML.NET's multiclass trainers, this library's networks): their logarithms are used as logits.</summary>
    Probabilities,

    /// <summary>Unnormalized logits (e.g. an ONNX model's raw output).</summary>
    Logits,
}

/// <summary>
/// Shared pieces of the distillation losses: what a teacher's scores are (<see cref="LooksLikeProbabilities"/>) and how small a
/// probability may be before its logarithm is taken. The losses themselves belong to the output heads
/// (<see cref="OutputHead.DistillationLoss"/>): callers that hold a model use its <see cref="NetworkModel.Head"/>.
/// </summary>
internal static class DistillationLoss
{
    /// <summary>
    /// Probabilities below this, the smallest normal float32, are clamped before taking logarithms: only a probability that
    /// underflowed to zero is changed. A higher floor would flatten a confident teacher's small probabilities to one value and
    /// erase the ranking of the wrong classes, which is the knowledge distillation transfers.
    /// </summary>
    public const double ProbabilityFloor = 1.1754944e-38;

    /// <summary>
    /// The softmax multiclass head's loss (Hinton, Vinyals and Dean): alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) +
    /// (1 − alpha) · cross-entropy(student, labels), averaged over the batch; see <see cref="SoftmaxMulticlassHead"/>.
    /// Every tensor it creates belongs to the caller's dispose scope.
    /// </summary>
    /// <param name="studentLogits">float32 [N, C].</param>
    /// <param name="teacherScores">float32 [N, C] on the same device.</param>
    /// <param name="labels">int64 [N] class indices.</param>
    /// <param name="temperature">T &gt; 0.</param>
    /// <param name="alpha">Weight of the soft term, in [0, 1].</param>
    /// <param name="kind">What <paramref name="teacherScores"/> holds.</param>
    public static Tensor Compute(Tensor studentLogits, Tensor teacherScores, Tensor labels, double temperature, double alpha, TeacherScoreKind kind) =>
        OutputHead.Multiclass.DistillationLoss(studentLogits, teacherScores, labels, temperature, alpha, kind);

    /// <summary>True when every row is non-negative and sums to 1 (within 1e-3).</summary>
    public static bool LooksLikeProbabilities(Tensor scores)
    {
        using var scope = NewDisposeScope();
        if (scores.lt(Scalars.Zero).any().item<bool>())
            return false;
        using var tol = 1e-3.ToScalar();
        using var minusOne = (-1.0).ToScalar();
        return scores.sum(1).add(minusOne, Scalars.One).abs().le(tol).all().item<bool>();
    }
}
