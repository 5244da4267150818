using MLNet.Compression.Networks;

namespace MLNet.Compression.Memory;

/// <summary>
/// Fits a training run into <see cref="NeuralNetworkOptions.MemoryBudgetBytes"/>: the largest batch size not above the options'
/// whose <see cref="MemoryReport.Estimate(NetworkArchitecture, int, int, OptimizerKind, TrainingPrecision, double)"/> fits, in the
/// options' precision or, when allowed, in bfloat16 where that fits a larger batch.
/// </summary>
internal static class MemoryBudget
{
    /// <summary>The choice made: the options to train with and the estimate they were chosen by.</summary>
    public sealed record Choice(NeuralNetworkOptions Options, TrainingMemoryEstimate Estimate, string Message);

    /// <summary>
    /// Returns the options unchanged when no budget is set; otherwise a copy with the chosen batch size (and precision). Throws
    /// <see cref="ArgumentOutOfRangeException"/> naming <c>MemoryBudgetBytes</c> when not even one row per batch fits.
    /// </summary>
    public static Choice? Choose(NeuralNetworkOptions options, int classCount)
    {
        if (options.MemoryBudgetBytes is not long budget)
            return null;
        var precisions = new List<TrainingPrecision> { options.Precision };
        // Not for batch normalization, whose running statistics only float32 training carries (TrainingSession refuses the rest).
        if (options.AllowLowerPrecisionForBudget && options.Precision == TrainingPrecision.Float32
            && !options.Architecture.Layers.Any(l => l is Networks.BatchNormLayer))
            precisions.Add(TrainingPrecision.BFloat16);
        // The precision that allows the largest batch (the options' own on a tie).
        var (best, batch) = precisions.Select(p => (Precision: p, Batch: LargestBatch(options, classCount, p, budget))).MaxBy(c => c.Batch);
        if (batch >= 1)
        {
            var chosen = options.Clone();
            chosen.BatchSize = batch;
            chosen.Precision = best;
            var estimate = MemoryReport.Estimate(chosen, classCount);
            string message =
                $"Memory budget {MemoryReport.FormatBytes(budget)}: training with batch {batch}" +
                (batch < options.BatchSize ? $" (not {options.BatchSize})" : string.Empty) +
                (best != options.Precision ? $" in {best} (in {options.Precision} the largest batch that fits is smaller)" : $" in {best}") +
                $", estimated {MemoryReport.FormatBytes(estimate.TotalBytes)} " +
                $"({MemoryReport.FormatBytes(estimate.TotalBytes - estimate.BatchBytes)} fixed + {MemoryReport.FormatBytes(estimate.BatchBytes)} for the batch).";
            return new Choice(chosen, estimate, message);
        }
        var smallest = precisions.Select(p => MemoryReport.Estimate(options.Architecture, classCount, 1, options.Optimizer, p, options.Momentum)).MinBy(e => e.TotalBytes)!;
        throw new ArgumentOutOfRangeException(nameof(NeuralNetworkOptions.MemoryBudgetBytes), budget,
            $"NeuralNetworkOptions.MemoryBudgetBytes is {MemoryReport.FormatBytes(budget)} ({budget:N0} B), but training {options.Architecture.Name} " +
            $"with {options.Optimizer} in {smallest.Precision} needs an estimated {MemoryReport.FormatBytes(smallest.TotalBytes)} ({smallest.TotalBytes:N0} B) " +
            "even with one row per batch. Raise the budget, choose a smaller network or SGD without momentum" +
            (options.AllowLowerPrecisionForBudget ? "." : ", or set AllowLowerPrecisionForBudget to try bfloat16."));
    }

    /// <summary>The largest batch size in [1, options.BatchSize] whose estimate fits; 0 when none does.</summary>
    private static int LargestBatch(NeuralNetworkOptions options, int classCount, TrainingPrecision precision, long budget)
    {
        TrainingMemoryEstimate At(int batch) => MemoryReport.Estimate(options.Architecture, classCount, batch, options.Optimizer, precision, options.Momentum);
        var one = At(1);
        if (one.TotalBytes > budget)
            return 0;
        // Every batch-dependent term is linear in the batch size, so the answer is arithmetic; the loop only guards rounding.
        long perRow = At(2).TotalBytes - one.TotalBytes;
        long fixedBytes = one.TotalBytes - perRow;
        long batch = perRow <= 0 ? options.BatchSize : Math.Min(options.BatchSize, (budget - fixedBytes) / perRow);
        while (batch > 1 && At((int)batch).TotalBytes > budget)
            batch--;
        return (int)Math.Max(batch, 1);
    }
}
