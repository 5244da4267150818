using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using MLNet.Compression.Data;
using MLNet.Compression.Native;
using MLNet.Compression.Networks;
using MLNet.Compression.Clustering;
using MLNet.Compression.Pruning;
using MLNet.Compression.Quantization;
using MLNet.Compression.Tooling;

namespace MLNet.Compression.Benchmarks;

/// <summary>
/// Benchmark mode <c>--finetune-sweep</c> (accuracy, not time): 90 % magnitude pruning of a model trained with the trainer's
/// defaults, fine-tuned by candidate default rules, on MNIST subsets (LeNet-300-100, <c>Mlp(300, 100)</c>, trained with
/// <see cref="NeuralNetworkOptions"/>' defaults) and on the Seattle-rain tabular set (the catalog trainer's defaults). Prints
/// one Markdown row per run: test accuracy before and after, the accuracy on a bounded sample of the training rows (up to
/// 2,000) before and after (what the collapse warning compares), the epochs, learning rate and steps the run used.
/// </summary>
/// <remarks>
/// <c>dotnet run -c Release --project tests/MLNet.Compression.Benchmarks -- --finetune-sweep [--mnist 1000,6000,60000] [--tabular]
/// [--rules default,today,...] [--schedules constant,poly] [--stages cluster,cluster4,qat] [--cache DIR] [--seed N]</c> (<c>--seed</c>: the
/// MLContext seed, default 1; the base models' initialisation and row order follow it). <c>--stages</c> adds weight
/// clustering (k = 32, or 4) and int8 quantization-aware training runs with the same rules. Rules: <c>default</c> sets nothing (the library's
/// defaults as built); <c>today</c> is the old default (2 epochs, a tenth of the model's rate); <c>stepsN-lrF</c> sets
/// epochs = clamp(ceil(N / steps per epoch), 2, 50) and rate = F × the model's; <c>eE-lrF</c> sets E epochs and F × the rate.
/// <c>--cache DIR</c> keeps the trained base models as checkpoints, so a second sweep prunes the same models.
/// </remarks>
public static class FineTuneSweep
{
    private static int seed = 1;

    /// <summary>Runs the mode.</summary>
    /// <param name="args">The command line.</param>
    public static int Run(string[] args)
    {
        TorchNative.EnsureLoaded();
        var c = CultureInfo.InvariantCulture;
        var mnistRows = (Value(args, "--mnist") ?? "1000,6000").Split(',', StringSplitOptions.RemoveEmptyEntries).Select(s => int.Parse(s, c)).ToArray();
        bool tabular = args.Contains("--tabular", StringComparer.Ordinal);
        var rules = (Value(args, "--rules") ?? "default").Split(',', StringSplitOptions.RemoveEmptyEntries);
        var schedules = (Value(args, "--schedules") ?? "constant,poly").Split(',', StringSplitOptions.RemoveEmptyEntries)
            .Concat((Value(args, "--stages") ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries)).ToArray();
        string? cache = Value(args, "--cache");
        seed = int.Parse(Value(args, "--seed") ?? "1", c);
        if (cache is not null)
            Directory.CreateDirectory(cache);
        Console.WriteLine($"Fine-tuning sweep, 90 % magnitude pruning, MLContext seed {seed}. Load average {BenchmarkSettings.LoadAverage()}.");
        Console.WriteLine("| data | train rows | stage | rule | epochs | lr | steps | sparsity / ratio | test before | test after | train-sample before | train-sample after | warnings |");
        Console.WriteLine("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        if (tabular)
            RunTabular(rules, schedules, cache);
        foreach (var rows in mnistRows)
            RunMnist(rows, rules, schedules, cache);
        Console.WriteLine($"Load average after: {BenchmarkSettings.LoadAverage()}");
        return 0;
    }

    private static void RunMnist(int rows, string[] rules, string[] schedules, string? cache)
    {
        var ml = new MLContext(seed);
        var train = ml.Data.Cache(ml.Data.TakeRows(BenchmarkSettings.LoadMnist(ml, MnistSplit.Train), rows));
        var test = ml.Data.Cache(BenchmarkSettings.LoadMnist(ml, MnistSplit.Test));
        var sample = ml.Data.TakeRows(train, 2000);
        using var model = BaseModel(ml, cache, $"mnist-{rows}{(seed == 1 ? "" : $"-seed{seed}")}", () =>
            ml.Compression().NeuralNetwork(new NeuralNetworkOptions { Architecture = NetworkArchitecture.Mlp(300, 100), Device = TrainingDevice.Cpu }).Fit(train));
        double Accuracy(ITransformer m, IDataView data) => ml.MulticlassClassification.Evaluate(m.Transform(data)).MicroAccuracy;
        Sweep(ml, "MNIST", rows, model, train, rules, schedules, m => Accuracy(m, test), m => Accuracy(m, sample));
    }

    private static void RunTabular(string[] rules, string[] schedules, string? cache)
    {
        var files = VegaDatasets.WriteCsv(VegaTask.SeattleRain);
        var ml = new MLContext(seed);
        var options = new TextLoader.Options { Separators = [','], HasHeader = true, AllowQuoting = true, MissingRealsAsNaNs = true };
        var rawTrain = ml.Data.LoadFromTextFile<WeatherRow>(files.TrainPath, options);
        var rawTest = ml.Data.LoadFromTextFile<WeatherRow>(files.TestPath, options);
        var featurizer = ml.Transforms.Categorical.OneHotEncoding("Month", "Month")
            .Append(ml.Transforms.ReplaceMissingValues(
                [new("TempMax", "TempMax"), new("TempMin", "TempMin"), new("Wind", "Wind")], MissingValueReplacingEstimator.ReplacementMode.Mean))
            .Append(ml.Transforms.Concatenate("Features", "Month", "TempMax", "TempMin", "Wind"))
            .Append(ml.Transforms.NormalizeMinMax("Features"))
            .Fit(rawTrain);
        var train = ml.Data.Cache(featurizer.Transform(rawTrain));
        var test = ml.Data.Cache(featurizer.Transform(rawTest));
        var sample = ml.Data.TakeRows(train, 2000);
        int rows = (int)(train.GetRowCount() ?? ml.Data.CreateEnumerable<WeatherRow>(rawTrain, false).LongCount());
        using var model = BaseModel(ml, cache, seed == 1 ? "seattle-rain" : $"seattle-rain-seed{seed}", () => ml.BinaryClassification.Trainers.NeuralNetwork(labelColumnName: "Rain").Fit(train));
        double Accuracy(ITransformer m, IDataView data)
        {
            var scored = m.Transform(data);
            return scored.Schema.GetColumnOrNull("Probability") is null
                ? ml.BinaryClassification.EvaluateNonCalibrated(scored, "Rain").Accuracy
                : ml.BinaryClassification.Evaluate(scored, "Rain").Accuracy;
        }
        Sweep(ml, "Seattle rain", rows, model, train, rules, schedules, m => Accuracy(m, test), m => Accuracy(m, sample));
    }

    private static NeuralNetworkTransformer BaseModel(MLContext ml, string? cache, string name, Func<NeuralNetworkTransformer> train)
    {
        string? path = cache is null ? null : Path.Combine(cache, name + ".checkpoint");
        if (path is not null && File.Exists(path))
            return NeuralNetworkTransformer.LoadCheckpoint(ml, path);
        var model = train();
        if (path is not null)
            model.SaveCheckpoint(path);
        return model;
    }

    private static void Sweep(MLContext ml, string data, int rows, NeuralNetworkTransformer model, IDataView train, string[] rules, string[] schedules,
        Func<ITransformer, double> testAccuracy, Func<ITransformer, double> sampleAccuracy)
    {
        double testBefore = testAccuracy(model), sampleBefore = sampleAccuracy(model);
        var trained = model.TrainingOptions;
        long perEpoch = (rows + trained.BatchSize - 1) / trained.BatchSize;
        foreach (var scheduleName in schedules)
        {
            foreach (var rule in rules)
            {
                FineTuningOptions options = scheduleName switch
                {
                    "cluster4" => new WeightClusteringOptions { ClusterCount = 4 },
                    "cluster" => new WeightClusteringOptions(),
                    "qat" => new QuantizationOptions { Mode = QuantizationMode.Int8Static, QuantizationAwareTraining = true },
                    _ => new PruningOptions
                    {
                        Schedule = scheduleName == "poly" ? PruningSchedule.PolynomialDecay(0.5, 0.9) : PruningSchedule.ConstantSparsity(0.9),
                    },
                };
                Apply(rule, options, perEpoch, trained.LearningRate);
                string stage, epochs, lr, steps, detail;
                IReadOnlyList<string> warningList = [];
                NeuralNetworkTransformer result;
                switch (options)
                {
                    case PruningOptions p:
                    {
                        var estimator = ml.Compression().Prune(model, p);
                        result = estimator.Fit(train);
                        var report = estimator.Report!;
                        stage = p.Schedule.Kind == PruningScheduleKind.PolynomialDecay ? "PolynomialDecay(0.5, 0.9)" : "ConstantSparsity(0.9)";
                        (epochs, lr, steps, detail, warningList) = (report.FineTuningEpochs.ToString(CultureInfo.InvariantCulture),
                            report.FineTuningLearningRate?.ToString("G3", CultureInfo.InvariantCulture) ?? "-", report.StepsRun.ToString("N0", CultureInfo.InvariantCulture),
                            report.Sparsity.ToString("P1", CultureInfo.InvariantCulture), report.Warnings);
                        break;
                    }
                    case WeightClusteringOptions w:
                    {
                        var estimator = ml.Compression().ClusterWeights(model, w);
                        result = estimator.Fit(train);
                        var report = estimator.Report!;
                        stage = $"ClusterWeights(k = {w.ClusterCount})";
                        (epochs, lr, steps, detail, warningList) = (report.FineTuningEpochs.ToString(CultureInfo.InvariantCulture),
                            report.FineTuningLearningRate?.ToString("G3", CultureInfo.InvariantCulture) ?? "-", report.FineTuningSteps.ToString("N0", CultureInfo.InvariantCulture),
                            $"{report.CompressionRatio:F1}x", report.Warnings);
                        break;
                    }
                    default:
                    {
                        var q = (QuantizationOptions)options;
                        var estimator = ml.Compression().Quantize(model, q);
                        result = estimator.Fit(train);
                        stage = "Quantize(Int8Static, QAT)";
                        (epochs, lr, steps, detail) = (rule == "default" ? "-" : q.Epochs.ToString(CultureInfo.InvariantCulture),
                            q.LearningRate?.ToString("G3", CultureInfo.InvariantCulture) ?? "-", "-", "int8");
                        break;
                    }
                }
                using var _ = result;
                double testAfter = testAccuracy(result), sampleAfter = sampleAccuracy(result);
                string warnings = string.Join(" / ", warningList.Select(w => w.Length > 60 ? w[..60] + "…" : w));
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {data} | {rows:N0} | {stage} | {rule} | {epochs} | {lr} | {steps} | {detail} | {testBefore:P2} | {testAfter:P2} | {sampleBefore:P2} | {sampleAfter:P2} | {warnings} |"));
            }
        }
    }

    /// <summary>Sets the epochs and learning rate a rule names (nothing for <c>default</c>).</summary>
    private static void Apply(string rule, FineTuningOptions options, long stepsPerEpoch, double modelRate)
    {
        if (rule == "default")
            return;
        if (rule == "today")
        {
            options.Epochs = 2;
            options.LearningRate = modelRate * 0.1;
            return;
        }
        var parts = rule.Split('-');
        double factor = double.Parse(parts[1]["lr".Length..], CultureInfo.InvariantCulture);
        if (parts[0].StartsWith("steps", StringComparison.Ordinal))
        {
            long minSteps = long.Parse(parts[0]["steps".Length..], CultureInfo.InvariantCulture);
            options.Epochs = (int)Math.Clamp((minSteps + stepsPerEpoch - 1) / stepsPerEpoch, 2, 50);
        }
        else
            options.Epochs = int.Parse(parts[0][1..], CultureInfo.InvariantCulture);
        options.LearningRate = modelRate * factor;
    }

    private static string? Value(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    /// <summary>One day of seattle-weather.csv as <see cref="VegaDatasets.WriteCsv"/> writes it.</summary>
    private sealed class WeatherRow
    {
        [LoadColumn(0)] public string Date { get; set; } = "";

        [LoadColumn(1)] public string Month { get; set; } = "";

        [LoadColumn(2)] public float TempMax { get; set; }

        [LoadColumn(3)] public float TempMin { get; set; }

        [LoadColumn(4)] public float Wind { get; set; }

        [LoadColumn(5)] public bool Rain { get; set; }
    }
}
