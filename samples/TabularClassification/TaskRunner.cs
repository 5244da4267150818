using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression;

namespace TabularClassification;

/// <summary>One trainer's row of a task: how well it did on the test split, how big its zip is and how long it trained.</summary>
/// <param name="Trainer">NeuralNetwork, Sdca or LightGbm.</param>
/// <param name="Status">"ok" when the row ran.</param>
/// <param name="Metric">The task's main metric on the test split (accuracy, AUC or R²).</param>
/// <param name="Metrics">Every metric computed on the test split, by ML.NET's name.</param>
/// <param name="ReloadedMetric">The main metric again, from the zip loaded back with <c>ml.Model.Load</c>.</param>
/// <param name="ZipFile">The saved model's file name, in the output folder.</param>
/// <param name="ZipBytes">The saved model's size on disk.</param>
/// <param name="TrainSeconds">Wall-clock seconds of <c>Fit</c> (transforms and trainer).</param>
/// <param name="Predictions">A few test rows scored by a PredictionEngine over the reloaded model, as text.</param>
/// <param name="Note">Why a row did not run, or null.</param>
public sealed record TrainerRow(string Trainer, string Status, double? Metric, IReadOnlyDictionary<string, double>? Metrics, double? ReloadedMetric,
    string? ZipFile, long? ZipBytes, double? TrainSeconds, IReadOnlyList<string> Predictions, string? Note);

/// <summary>One task's rows, all on the same split.</summary>
/// <param name="Task">binary, multiclass or regression.</param>
/// <param name="Dataset">The source file in vega-datasets.</param>
/// <param name="Question">What is predicted, in words.</param>
/// <param name="Label">The label column.</param>
/// <param name="MetricName">The main metric: ML.NET's name of it.</param>
/// <param name="TrainRows">Training rows used (after dropping rows without a label).</param>
/// <param name="TestRows">Test rows evaluated.</param>
/// <param name="FeatureLength">The size of the Features vector after the transforms.</param>
/// <param name="Rows">One per trainer: NeuralNetwork, Sdca, LightGbm.</param>
public sealed record TaskResult(string Task, string Dataset, string Question, string Label, string MetricName, long TrainRows, long TestRows,
    int FeatureLength, IReadOnlyList<TrainerRow> Rows);

/// <summary>Fits one pipeline, evaluates it, saves it, loads it back and scores a few rows with a PredictionEngine.</summary>
public static class TaskRunner
{
    /// <summary>Runs one trainer's pipeline end to end.</summary>
    /// <typeparam name="TInput">The CSV row class.</typeparam>
    /// <typeparam name="TOutput">The prediction class.</typeparam>
    /// <param name="trainer">The row's trainer name.</param>
    /// <param name="pipeline">Transforms + trainer (+ MapKeyToValue).</param>
    /// <param name="ml">The context the pipeline was made with.</param>
    /// <param name="train">The training rows.</param>
    /// <param name="test">The test rows.</param>
    /// <param name="evaluate">ML.NET's evaluator for the task; returns the metrics by name.</param>
    /// <param name="metricName">The main metric's name in <paramref name="evaluate"/>'s result.</param>
    /// <param name="outputDirectory">Where the zip goes.</param>
    /// <param name="zipFile">The zip's file name.</param>
    /// <param name="examples">Rows to score with the PredictionEngine.</param>
    /// <param name="describe">Writes one scored example as text.</param>
    public static TrainerRow Run<TInput, TOutput>(string trainer, IEstimator<ITransformer> pipeline, MLContext ml, IDataView train, IDataView test,
        Func<MLContext, IDataView, IReadOnlyDictionary<string, double>> evaluate, string metricName, string outputDirectory, string zipFile,
        IReadOnlyList<TInput> examples, Func<TInput, TOutput, string> describe)
        where TInput : class
        where TOutput : class, new()
    {
        // Model Builder's generated code: Fit, Evaluate, Save; a consuming app then Loads and predicts.
        var clock = Stopwatch.StartNew();
        ITransformer model = pipeline.Fit(train);
        double trainSeconds = clock.Elapsed.TotalSeconds;
        var metrics = evaluate(ml, model.Transform(test));

        string zipPath = Path.Combine(outputDirectory, zipFile);
        ml.Model.SaveAtomically(model, train.Schema, zipPath);
        long zipBytes = new FileInfo(zipPath).Length;

        ITransformer loaded = ml.Model.Load(zipPath, out _);
        double reloaded;
        string[] predictions;
        try
        {
            reloaded = evaluate(ml, loaded.Transform(test))[metricName];
            using var engine = ml.Model.CreatePredictionEngine<TInput, TOutput>(loaded);
            predictions = examples.Select(e => describe(e, engine.Predict(e))).ToArray();
        }
        finally
        {
            // The network's transformers hold ONNX Runtime sessions: release them now, not at exit.
            (loaded as IDisposable)?.Dispose();
            (model as IDisposable)?.Dispose();
        }
        return new TrainerRow(trainer, "ok", metrics[metricName], metrics, reloaded, zipFile, zipBytes, trainSeconds, predictions, null);
    }

    /// <summary>
    /// Reads a CSV file with a header row into <typeparamref name="TInput"/>'s columns. <c>MissingRealsAsNaNs</c> matters:
    /// by default ML.NET's text loader reads an empty numeric field as 0, so a missing horsepower would be a real 0 and a
    /// missing label a car that does 0 miles per gallon; with it, they are NaN, which <c>ReplaceMissingValues</c> and
    /// <c>FilterRowsByMissingValues</c> see.
    /// </summary>
    /// <typeparam name="TInput">The CSV row class ([LoadColumn] attributes).</typeparam>
    /// <param name="ml">The context.</param>
    /// <param name="path">The CSV file.</param>
    public static IDataView LoadCsv<TInput>(MLContext ml, string path) =>
        ml.Data.LoadFromTextFile<TInput>(path, new TextLoader.Options
        {
            Separators = [','],
            HasHeader = true,
            AllowQuoting = true,
            MissingRealsAsNaNs = true,
        });

    /// <summary>The first <paramref name="count"/> rows of <paramref name="data"/> as objects.</summary>
    /// <typeparam name="TInput">The CSV row class.</typeparam>
    /// <param name="ml">The context.</param>
    /// <param name="data">The rows.</param>
    /// <param name="count">How many.</param>
    public static IReadOnlyList<TInput> Take<TInput>(MLContext ml, IDataView data, int count) where TInput : class, new()
        => ml.Data.CreateEnumerable<TInput>(data, reuseRowObject: false).Take(count).ToArray();

    /// <summary>The size of the Features vector the transforms make from <paramref name="train"/>.</summary>
    /// <param name="featurization">The transforms.</param>
    /// <param name="train">The training rows.</param>
    public static int FeatureLength(IEstimator<ITransformer> featurization, IDataView train)
    {
        var column = featurization.Fit(train).GetOutputSchema(train.Schema)["Features"];
        return column.Type is VectorDataViewType { Size: > 0 } v
            ? v.Size
            : throw new InvalidOperationException($"The Features column is {column.Type}, not a vector of known size.");
    }
}
