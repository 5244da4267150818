using TorchSharp;
using static TorchSharp.torch;

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
/// Hinton, Vinyals and Dean's distillation loss: alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) +
/// (1 − alpha) · cross-entropy(student, labels), averaged over the batch. Also used by learning without forgetting, where the
/// teacher is the previous model.
/// </summary>
internal static class DistillationLoss
{
    /// <summary>
    /// Probabilities below this, the smallest normal float32, are clamped before taking logarithms: only a probability that
    /// underflowed to zero is changed. A higher floor would flatten a confident teacher's small probabilities to one value and
    /// erase the ranking of the wrong classes, which is the knowledge distillation transfers.
    /// </summary>
    public const double ProbabilityFloor = 1.1754944e-38;

    /// <summary>The loss for one batch; every tensor it creates belongs to the caller's dispose scope.</summary>
    /// <param name="studentLogits">float32 [N, C].</param>
    /// <param name="teacherScores">float32 [N, C] on the same device.</param>
    /// <param name="labels">int64 [N] class indices.</param>
    /// <param name="temperature">T &gt; 0.</param>
    /// <param name="alpha">Weight of the soft term, in [0, 1].</param>
    /// <param name="kind">What <paramref name="teacherScores"/> holds.</param>
    public static Tensor Compute(Tensor studentLogits, Tensor teacherScores, Tensor labels, double temperature, double alpha, TeacherScoreKind kind)
    {
        using var invT = (1.0 / temperature).ToScalar();
        using var softWeight = (alpha * temperature * temperature).ToScalar();
        using var hardWeight = (1 - alpha).ToScalar();
        using var floor = ProbabilityFloor.ToScalar();
        bool probabilities = kind switch
        {
            TeacherScoreKind.Probabilities => true,
            TeacherScoreKind.Logits => false,
            _ => LooksLikeProbabilities(teacherScores),
        };
        var teacherLogits = probabilities ? teacherScores.clamp_min(floor).log() : teacherScores;
        var teacherLogP = nn.functional.log_softmax(teacherLogits.mul(invT), 1);
        var studentLogP = nn.functional.log_softmax(studentLogits.mul(invT), 1);
        var kl = teacherLogP.exp().mul(teacherLogP.add(studentLogP.neg(), Scalars.One)).sum(1).mean();
        var loss = kl.mul(softWeight);
        if (alpha < 1)
            loss = loss.add(nn.functional.cross_entropy(studentLogits, labels).mul(hardWeight), Scalars.One);
        return loss;
    }

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
