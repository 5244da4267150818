namespace MLNet.Compression.Pruning;

/// <summary>The shape of a <see cref="PruningSchedule"/>.</summary>
public enum PruningScheduleKind
{
    /// <summary>The same target sparsity at every pruning step (TF-MOT <c>ConstantSparsity</c>).</summary>
    ConstantSparsity,

    /// <summary>Sparsity rising from an initial to a final value along a polynomial (TF-MOT <c>PolynomialDecay</c>, Zhu &amp; Gupta 2017).</summary>
    PolynomialDecay,
}

/// <summary>
/// When masks are recomputed during fine-tuning, and how sparse each recomputation makes the weights. Steps count optimizer
/// steps from the start of the pruning run (step 0 is before the first update). Masks are recomputed only at steps
/// where <c>(step − BeginStep) % Frequency == 0</c> inside <c>[BeginStep, EndStep]</c>, and at <see cref="EndStep"/>
/// itself; between recomputations the pruned weights are held at exactly zero (masks are re-applied after every optimizer step).
/// The semantics follow TensorFlow Model Optimization's schedules.
/// </summary>
public sealed class PruningSchedule
{
    private PruningSchedule(PruningScheduleKind kind, double initialSparsity, double finalSparsity, long beginStep, long endStep, double power, int frequency)
    {
        Kind = kind;
        InitialSparsity = initialSparsity;
        FinalSparsity = finalSparsity;
        BeginStep = beginStep;
        EndStep = endStep;
        Power = power;
        Frequency = frequency;
    }

    /// <summary>Which kind of schedule this is.</summary>
    public PruningScheduleKind Kind { get; }

    /// <summary>Sparsity at <see cref="BeginStep"/> (equal to <see cref="FinalSparsity"/> for a constant schedule).</summary>
    public double InitialSparsity { get; }

    /// <summary>Sparsity the schedule reaches at <see cref="EndStep"/> (or keeps, for a constant schedule).</summary>
    public double FinalSparsity { get; }

    /// <summary>First step at which masks are computed.</summary>
    public long BeginStep { get; }

    /// <summary>Last step at which masks are computed; −1: the end of the fine-tuning run (a constant schedule prunes until training ends, a polynomial one reaches its final sparsity at the run's last step).</summary>
    public long EndStep { get; }

    /// <summary>Exponent of the polynomial (1 for a constant schedule).</summary>
    public double Power { get; }

    /// <summary>Steps between mask recomputations.</summary>
    public int Frequency { get; }

    /// <summary>
    /// The same sparsity at every pruning step: masks are computed at <paramref name="beginStep"/>, then every
    /// <paramref name="frequency"/> steps until <paramref name="endStep"/> (−1: until training ends).
    /// </summary>
    /// <param name="targetSparsity">Fraction of weights set to zero, in [0, 1).</param>
    /// <param name="beginStep">First pruning step (0 or more).</param>
    /// <param name="endStep">Last pruning step, greater than <paramref name="beginStep"/>; −1 prunes until training ends.</param>
    /// <param name="frequency">Steps between mask recomputations (positive).</param>
    /// <exception cref="ArgumentOutOfRangeException">A sparsity outside [0, 1), a negative begin step, an end step below −1 or a non-positive frequency.</exception>
    /// <exception cref="ArgumentException"><paramref name="endStep"/> is not −1 and not after <paramref name="beginStep"/>.</exception>
    public static PruningSchedule ConstantSparsity(double targetSparsity, long beginStep = 0, long endStep = -1, int frequency = 100)
    {
        CheckSparsity(targetSparsity, nameof(targetSparsity));
        CheckSteps(beginStep, endStep, frequency, allowOpenEnd: true);
        return new PruningSchedule(PruningScheduleKind.ConstantSparsity, targetSparsity, targetSparsity, beginStep, endStep, 1, frequency);
    }

    /// <summary>
    /// Gradual pruning (Zhu &amp; Gupta 2017): sparsity at step t is
    /// <c>s_f + (s_i − s_f)·(1 − (t − begin)/(end − begin))^power</c>, the progress clipped to [0, 1].
    /// Masks are recomputed every <paramref name="frequency"/> steps from <paramref name="beginStep"/> and at <paramref name="endStep"/>.
    /// By default (<paramref name="endStep"/> = −1) the schedule ends at the last step of the fine-tuning run, whatever the
    /// size of the data: <c>PolynomialDecay(0.5, 0.9)</c> reaches 0.9 on 1,000 rows and on 60,000. Such an open schedule
    /// recomputes masks at least 10 times over its span (every <c>min(frequency, span / 10)</c> steps).
    /// </summary>
    /// <param name="initialSparsity">Sparsity at the begin step, in [0, 1).</param>
    /// <param name="finalSparsity">Sparsity at the end step, in [0, 1), not below <paramref name="initialSparsity"/>.</param>
    /// <param name="beginStep">First pruning step (0 or more). Default 0.</param>
    /// <param name="endStep">Step at which the final sparsity is reached, after <paramref name="beginStep"/>; −1 (default): the last step of the fine-tuning run.</param>
    /// <param name="power">Exponent of the polynomial (positive; 3 in the paper).</param>
    /// <param name="frequency">Steps between mask recomputations (positive).</param>
    /// <exception cref="ArgumentOutOfRangeException">A sparsity outside [0, 1), a negative begin step, an end step below −1, a non-positive power or frequency.</exception>
    /// <exception cref="ArgumentException"><paramref name="endStep"/> is not after <paramref name="beginStep"/>, or <paramref name="initialSparsity"/> is above <paramref name="finalSparsity"/>.</exception>
    public static PruningSchedule PolynomialDecay(double initialSparsity, double finalSparsity, long beginStep = 0, long endStep = -1, double power = 3, int frequency = 100)
    {
        CheckSparsity(initialSparsity, nameof(initialSparsity));
        CheckSparsity(finalSparsity, nameof(finalSparsity));
        if (initialSparsity > finalSparsity)
            throw new ArgumentException(
                $"A pruning schedule only adds zeros: the initial sparsity ({initialSparsity}) must not be above the final sparsity ({finalSparsity}). " +
                "Swap them, or use ConstantSparsity for a fixed target.", nameof(initialSparsity));
        if (!(power > 0) || double.IsInfinity(power))
            throw new ArgumentOutOfRangeException(nameof(power), power, "The polynomial's power must be a positive number (3 in Zhu & Gupta 2017).");
        CheckSteps(beginStep, endStep, frequency, allowOpenEnd: true);
        return new PruningSchedule(PruningScheduleKind.PolynomialDecay, initialSparsity, finalSparsity, beginStep, endStep, power, frequency);
    }

    /// <summary>Whether the schedule ends with the run (<see cref="EndStep"/> = −1) rather than at a step of its own.</summary>
    public bool EndsWithRun => EndStep == -1;

    /// <summary>
    /// This schedule for a run of <paramref name="totalSteps"/> optimizer steps: a polynomial schedule that ends with the run
    /// gets <see cref="EndStep"/> = the run's last step and at least 10 mask updates over its span; anything else is returned as it is.
    /// </summary>
    /// <param name="totalSteps">The steps the fine-tuning run will make.</param>
    internal PruningSchedule ForRun(long totalSteps)
    {
        if (Kind != PruningScheduleKind.PolynomialDecay || EndStep != -1)
            return this;
        long end = Math.Max(totalSteps, BeginStep + 1);
        int frequency = (int)Math.Clamp((end - BeginStep) / 10, 1, Frequency);
        return new PruningSchedule(Kind, InitialSparsity, FinalSparsity, BeginStep, end, Power, frequency);
    }

    /// <summary>
    /// The sparsity the schedule asks for at <paramref name="step"/> (applied only at steps where <see cref="IsUpdateStep"/> is true).
    /// For a polynomial schedule the progress <c>(step − begin)/(end − begin)</c> is clipped to [0, 1].
    /// </summary>
    /// <param name="step">Optimizer steps done so far.</param>
    public double SparsityAt(long step)
    {
        if (Kind == PruningScheduleKind.ConstantSparsity)
            return FinalSparsity;
        if (EndStep == -1)
            throw new InvalidOperationException("This schedule ends with the fine-tuning run; its sparsity at a step is known once the run's length is (the pruning stage resolves it).");
        double progress = Math.Clamp((double)(step - BeginStep) / (EndStep - BeginStep), 0, 1);
        return FinalSparsity + (InitialSparsity - FinalSparsity) * Math.Pow(1 - progress, Power);
    }

    /// <summary>Whether masks are recomputed at <paramref name="step"/>.</summary>
    /// <param name="step">Optimizer steps done so far.</param>
    public bool IsUpdateStep(long step)
    {
        if (step < BeginStep || (EndStep != -1 && step > EndStep))
            return false;
        return (step - BeginStep) % Frequency == 0 || step == EndStep;
    }

    /// <summary>Whether a run of <paramref name="steps"/> optimizer steps reaches the schedule's last mask update.</summary>
    /// <param name="steps">Optimizer steps run.</param>
    public bool CompletesWithin(long steps) => EndStep == -1 ? steps >= BeginStep : steps >= EndStep;

    /// <summary>A readable description, e.g. <c>PolynomialDecay(0.5 → 0.8, steps 0..1000, power 3, every 100)</c>.</summary>
    public override string ToString() => Kind == PruningScheduleKind.ConstantSparsity
        ? $"ConstantSparsity({FinalSparsity:0.###}, from step {BeginStep}{(EndStep == -1 ? " until training ends" : $" to {EndStep}")}, every {Frequency})"
        : $"PolynomialDecay({InitialSparsity:0.###} → {FinalSparsity:0.###}, steps {BeginStep}..{(EndStep == -1 ? "end of fine-tuning" : EndStep)}, power {Power:0.###}, every {Frequency})";

    private static void CheckSparsity(double sparsity, string name)
    {
        if (!(sparsity >= 0 && sparsity < 1))
            throw new ArgumentOutOfRangeException(name, sparsity, "A sparsity is the fraction of weights set to zero and must be in [0, 1).");
    }

    private static void CheckSteps(long beginStep, long endStep, int frequency, bool allowOpenEnd)
    {
        if (beginStep < 0)
            throw new ArgumentOutOfRangeException(nameof(beginStep), beginStep, "The begin step must be 0 or more.");
        if (allowOpenEnd ? endStep < -1 : endStep < 0)
            throw new ArgumentOutOfRangeException(nameof(endStep), endStep,
                allowOpenEnd ? "The end step must be −1 (the end of the fine-tuning run) or a step after the begin step."
                             : "A polynomial schedule needs an end step (0 or more) after the begin step.");
        if (endStep != -1 && beginStep >= endStep)
            throw new ArgumentException($"The end step ({endStep}) must come after the begin step ({beginStep}).", nameof(endStep));
        if (frequency <= 0)
            throw new ArgumentOutOfRangeException(nameof(frequency), frequency, "The pruning frequency (steps between mask updates) must be positive.");
    }
}
