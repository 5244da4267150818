using System.Globalization;
using Microsoft.ML;
using MLNet.Compression.Networks.Heads;

namespace MLNet.Compression;

/// <summary>
/// The check a compression stage runs after fine-tuning: the model it started from and the model it made are scored on the same
/// bounded sample of the training rows, and a large loss of accuracy becomes a warning in the stage's report (and the log).
/// </summary>
internal static class FineTuningCheck
{
    /// <summary>The most training rows scored by each model (the first ones of the data given to <c>Fit</c>).</summary>
    public const int SampleRows = 2000;

    /// <summary>
    /// The loss of accuracy on the sample, in points (0.05 = 5 percentage points), above which the stage warns. Measured with
    /// 90 % pruning (benchmark mode <c>--finetune-sweep</c>, seeds 1 to 3): with the default fine-tuning, at most 2.1 points on
    /// MNIST 1,000 to 60,000 rows and the Seattle-rain set; with the old defaults (2 epochs at a tenth of the rate), 4.0 and
    /// 7.4 points on 60,000 rows (test losses of 2.6 and 6.5) and 10 to 44 points on 1,000 to 6,000 rows.
    /// </summary>
    public const double WarningDrop = 0.05;

    /// <summary>
    /// Scores <paramref name="before"/> and <paramref name="after"/> on up to <see cref="SampleRows"/> rows of <paramref name="data"/>
    /// and returns a warning when the accuracy fell by more than <see cref="WarningDrop"/>; null otherwise, and for a regression
    /// head (no accuracy) or a label the evaluator cannot read (logged as information).
    /// </summary>
    /// <param name="context">The context (evaluators, log).</param>
    /// <param name="before">The model the stage started from.</param>
    /// <param name="after">The model the stage made.</param>
    /// <param name="data">The data given to <c>Fit</c>.</param>
    /// <param name="stage">What the stage did, for the message ("Pruning to 90.0 % sparsity").</param>
    /// <param name="tuning">The fine-tuning settings used.</param>
    /// <param name="steps">Optimizer steps made.</param>
    /// <param name="optionsName">The options class ("PruningOptions").</param>
    /// <param name="lowerTarget">What a lower target is called for this stage ("a lower target sparsity"), or null when none applies.</param>
    /// <param name="log">Where a skipped check is noted.</param>
    public static string? CollapseWarning(MLContext context, NeuralNetworkTransformer before, NeuralNetworkTransformer after, IDataView data,
        string stage, NeuralNetworkOptions tuning, long steps, string optionsName, string? lowerTarget, ContextLog log)
    {
        if (before.HeadKind == OutputHeadKind.Regression)
            return null;
        var sample = context.Data.TakeRows(data, SampleRows);
        double accuracyBefore, accuracyAfter;
        try
        {
            accuracyBefore = Accuracy(context, before, sample);
            accuracyAfter = Accuracy(context, after, sample);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException)
        {
            log.Info($"The accuracy check after fine-tuning was skipped: the label column could not be evaluated ({e.Message}).");
            return null;
        }
        if (double.IsNaN(accuracyBefore) || double.IsNaN(accuracyAfter) || accuracyBefore - accuracyAfter <= WarningDrop)
            return null;
        var c = CultureInfo.InvariantCulture;
        double own = before.TrainingOptions.LearningRate;
        string rate = tuning.LearningRate < own ? string.Format(c, ", a higher learning rate ({0}.LearningRate, e.g. the model's own {1:G3})", optionsName, own)
            : tuning.LearningRate > own ? string.Format(c, ", a lower learning rate ({0}.LearningRate, e.g. the model's own {1:G3})", optionsName, own)
            : string.Empty;
        string lower = lowerTarget is null ? "" : $", or {lowerTarget}";
        return string.Create(c,
            $"{stage} lost {(accuracyBefore - accuracyAfter) * 100:F1} points of accuracy: {accuracyBefore:P1} before, {accuracyAfter:P1} after, on the first " +
            $"{Math.Min(SampleRows, RowsOf(sample)):N0} training rows, after fine-tuning {tuning.Epochs} epoch(s), {steps:N0} steps at learning rate " +
            $"{tuning.LearningRate:G3}. Try more fine-tuning ({optionsName}.Epochs){rate}{lower}.");
    }

    private static double Accuracy(MLContext context, NeuralNetworkTransformer model, IDataView sample)
    {
        var scored = model.Transform(sample);
        return model.HeadKind == OutputHeadKind.Binary
            ? context.BinaryClassification.EvaluateNonCalibrated(scored, model.LabelColumnName, NeuralNetworkTransformer.ScoreColumnName).Accuracy
            : context.MulticlassClassification.Evaluate(scored, model.LabelColumnName, NeuralNetworkTransformer.ScoreColumnName).MicroAccuracy;
    }

    private static long RowsOf(IDataView sample) => sample.GetRowCount() ?? FineTuningOptions.CountRows(sample);
}
