using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression;

namespace MnistCompression;

/// <summary>One finished epoch of a training or fine-tuning run (from <see cref="NeuralNetworkTransformer.TrainingHistory"/>).</summary>
/// <param name="Epoch">One-based epoch.</param>
/// <param name="Loss">Mean training loss.</param>
/// <param name="Accuracy">Training accuracy.</param>
/// <param name="Seconds">Wall-clock seconds of the epoch.</param>
/// <param name="Rows">Training rows seen.</param>
internal sealed record EpochRecord(int Epoch, double Loss, double Accuracy, double Seconds, long Rows);

/// <summary>One row of the final table and of results.json.</summary>
/// <param name="Name">Row name, e.g. "baseline", "pruned", "lenet5-quantized-int4".</param>
/// <param name="Stage">The stage that produced it (the <c>--stages</c> name).</param>
/// <param name="Architecture">The network's architecture name.</param>
/// <param name="Device">Where it was trained.</param>
/// <param name="Accuracy">Test accuracy (MicroAccuracy of ML.NET's multiclass evaluator).</param>
/// <param name="TestRows">Test rows evaluated.</param>
/// <param name="Parameters">Weights and biases.</param>
/// <param name="NonZeroParameters">Those that are not zero.</param>
/// <param name="ArtifactBytes">Bytes of the ONNX model.</param>
/// <param name="ZipBytes">Bytes of the saved ML.NET zip.</param>
/// <param name="CompressionReference">The float32 row of the same architecture family this row is compared with.</param>
/// <param name="ReferenceArtifactBytes">That row's ONNX bytes.</param>
/// <param name="CompressionRatio">ReferenceArtifactBytes / ArtifactBytes.</param>
/// <param name="ResidentWeightBytes">Weight bytes held in memory when scoring.</param>
/// <param name="ScoringRowsPerSecond">In-process batched scoring of the test rows.</param>
/// <param name="TrainSeconds">Wall-clock time of this row's training, fine-tuning or calibration.</param>
/// <param name="PeakTrainingBytes">Process peak resident memory while training, when this row trained.</param>
/// <param name="ReloadedLabelsIdentical">Whether the reloaded zip predicted every test label as the in-process model did.</param>
/// <param name="ReloadedScoresIdentical">Whether it also gave bit-identical scores.</param>
/// <param name="History">Training epochs of this row's own training or fine-tuning run (empty when it did not train).</param>
internal sealed record StageResult(string Name, string Stage, string Architecture, string Device, double Accuracy, long TestRows,
    long Parameters, long NonZeroParameters, long ArtifactBytes, long ZipBytes, string CompressionReference, long ReferenceArtifactBytes,
    double CompressionRatio, long ResidentWeightBytes, double ScoringRowsPerSecond, double TrainSeconds, long? PeakTrainingBytes,
    bool ReloadedLabelsIdentical, bool ReloadedScoresIdentical, IReadOnlyList<EpochRecord> History)
{
    /// <summary>Stage-specific figures (the incremental scenarios' accuracy after each step, forgetting, memory carried); null for most rows.</summary>
    public IReadOnlyDictionary<string, object?>? Details { get; init; }

    /// <summary>Misclassified test rows.</summary>
    public long TestErrors => (long)Math.Round((1 - Accuracy) * TestRows);
}

/// <summary>
/// Turns a stage's model into a <see cref="StageResult"/>: evaluates it on the test rows, times batched scoring, saves the
/// zip and a checkpoint, reloads the zip in a fresh MLContext and compares every prediction.
/// </summary>
internal static class StageEvaluator
{
    /// <summary>Evaluates <paramref name="model"/> and writes <c>&lt;name&gt;.zip</c> and <c>&lt;name&gt;.checkpoint</c>.</summary>
    /// <param name="context">The run.</param>
    /// <param name="stage">The stage name.</param>
    /// <param name="name">The row name (also the file names).</param>
    /// <param name="model">The model to evaluate.</param>
    /// <param name="trainSeconds">Its training, fine-tuning or calibration time.</param>
    /// <param name="reference">The float32 model of the same architecture family (null: the model is its own reference).</param>
    public static StageResult Evaluate(MainJobContext context, string stage, string name, NeuralNetworkTransformer model, double trainSeconds,
        TrainedModel? reference)
    {
        var ml = context.Ml;
        var zipPath = context.OutputPath(name + ".zip");
        var outcome = context.Ui.Evaluate(name, context.TestRows, progress =>
        {
            progress.Step("evaluating");
            var metrics = ml.MulticlassClassification.Evaluate(model.Transform(context.Test));
            progress.Advance(context.TestRows);

            progress.Step("timing batched scoring");
            var sw = Stopwatch.StartNew();
            var (scores, labels) = ReadPredictions(model.Transform(context.Test), progress.Advance);
            double rowsPerSecond = labels.Length / Math.Max(sw.Elapsed.TotalSeconds, 1e-9);

            progress.Step("saving zip and checkpoint");
            ml.Model.SaveAtomically(model, context.Train.Schema, zipPath);
            model.SaveCheckpoint(context.OutputPath(name + ".checkpoint"));

            progress.Step("reloading the zip and comparing");
            var loaded = new MLContext().Model.Load(zipPath, out _);
            var (loadedScores, loadedLabels) = ReadPredictions(loaded.Transform(context.Test), progress.Advance);
            int sameLabels = labels.Zip(loadedLabels).Count(p => p.First == p.Second);
            bool identical = sameLabels == labels.Length && loadedLabels.Length == labels.Length
                && scores.Zip(loadedScores).All(p => p.First.AsSpan().SequenceEqual(p.Second));
            double maxDiff = scores.Zip(loadedScores).Max(p => p.First.Zip(p.Second).Max(q => Math.Abs(q.First - q.Second)));
            return (metrics.MicroAccuracy, rowsPerSecond, labels.Length, sameLabels, identical, maxDiff);
        });

        bool labelsIdentical = outcome.sameLabels == outcome.Length;
        context.AllReloadsIdentical &= labelsIdentical;
        long zipBytes = new FileInfo(zipPath).Length;
        var referenceModel = reference?.Model ?? model;
        var result = new StageResult(name, stage, model.Architecture.Name, model.Memory.Device, outcome.MicroAccuracy, outcome.Length,
            model.ParameterCount, model.NonZeroParameterCount, model.Memory.ArtifactBytes, zipBytes, reference?.Name ?? name,
            referenceModel.Memory.ArtifactBytes, (double)referenceModel.Memory.ArtifactBytes / model.Memory.ArtifactBytes,
            model.Memory.ResidentWeightBytes, outcome.rowsPerSecond, trainSeconds, model.Memory.PeakTrainingBytes,
            labelsIdentical, outcome.identical,
            model.TrainingHistory.Select(e => new EpochRecord(e.Epoch, e.Loss, e.Accuracy, e.Seconds, e.Rows)).ToList());

        context.Ui.RowDone(result, outcome.identical
            ? $"reloaded {name}.zip: all {outcome.Length:N0} predictions identical"
            : $"reloaded {name}.zip: {outcome.sameLabels:N0} of {outcome.Length:N0} predicted labels identical, scores differ by at most {outcome.maxDiff:G3} " +
              "(ONNX Runtime runs some low-precision kernels differently for one row than for a batch)");
        return result;
    }

    /// <summary>Reads every Score and PredictedLabel of a scored view, reporting progress every 1,024 rows.</summary>
    public static (float[][] Scores, uint[] Labels) ReadPredictions(IDataView scored, Action<long>? advance = null)
    {
        var scores = new List<float[]>();
        var labels = new List<uint>();
        using var cursor = scored.GetRowCursor([scored.Schema["Score"], scored.Schema["PredictedLabel"]]);
        var getScore = cursor.GetGetter<VBuffer<float>>(scored.Schema["Score"]);
        var getLabel = cursor.GetGetter<uint>(scored.Schema["PredictedLabel"]);
        VBuffer<float> s = default;
        uint l = 0;
        while (cursor.MoveNext())
        {
            getScore(ref s);
            getLabel(ref l);
            scores.Add(s.DenseValues().ToArray());
            labels.Add(l);
            if (advance is not null && labels.Count % 1024 == 0)
                advance(1024);
        }
        advance?.Invoke(labels.Count % 1024);
        return (scores.ToArray(), labels.ToArray());
    }
}
