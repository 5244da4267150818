using Microsoft.ML;
using Microsoft.ML.Transforms;
using MLNet.Compression.Tooling;

namespace TabularClassification;

/// <summary>Binary classification: did it rain in Seattle that day, from the day's temperatures, wind and month.</summary>
public static class SeattleRainTask
{
    /// <summary>The network: two small hidden layers.</summary>
    public static readonly NetworkSettings Network = new([32, 16], Epochs: 60, BatchSize: 64, LearningRate: 3e-3);

    /// <summary>Model Builder's data preparation: one-hot month, missing numbers replaced by the mean, one Features vector scaled to [0, 1].</summary>
    /// <param name="ml">The context.</param>
    public static IEstimator<ITransformer> Featurize(MLContext ml) =>
        ml.Transforms.Categorical.OneHotEncoding(@"Month", @"Month")
            .Append(ml.Transforms.ReplaceMissingValues(
                [new(@"TempMax", @"TempMax"), new(@"TempMin", @"TempMin"), new(@"Wind", @"Wind")],
                MissingValueReplacingEstimator.ReplacementMode.Mean))
            .Append(ml.Transforms.Concatenate(@"Features", @"Month", @"TempMax", @"TempMin", @"Wind"))
            .Append(ml.Transforms.NormalizeMinMax(@"Features"));

    /// <summary>Runs the three trainers on the same split.</summary>
    /// <param name="files">The CSV files.</param>
    /// <param name="settings">Seed, output folder, epochs.</param>
    public static TaskResult Run(VegaTaskFiles files, SampleSettings settings)
    {
        var network = settings.Adjust(Network);
        var rows = new List<TrainerRow>();
        var trainers = new (string Name, Func<MLContext, IEstimator<ITransformer>> Make)[]
        {
            ("NeuralNetwork", ml => NeuralNetworkTrainers.Binary(ml, @"Rain", network)),
            ("Sdca", ml => ml.BinaryClassification.Trainers.SdcaLogisticRegression(labelColumnName: @"Rain", featureColumnName: @"Features")),
            ("LightGbm", ml => ml.BinaryClassification.Trainers.LightGbm(labelColumnName: @"Rain", featureColumnName: @"Features")),
        };
        long trainRows = 0, testRows = 0;
        int featureLength = 0;
        foreach (var (name, make) in trainers)
        {
            // A fresh context per trainer: each row's figures depend on the seed only, not on which rows ran before it.
            var ml = new MLContext(settings.Seed);
            IDataView train = TaskRunner.LoadCsv<WeatherInput>(ml, files.TrainPath);
            IDataView test = TaskRunner.LoadCsv<WeatherInput>(ml, files.TestPath);
            trainRows = train.GetRowCount() ?? ml.Data.CreateEnumerable<WeatherInput>(train, false).LongCount();
            testRows = test.GetRowCount() ?? ml.Data.CreateEnumerable<WeatherInput>(test, false).LongCount();
            featureLength = TaskRunner.FeatureLength(Featurize(ml), train);
            var trainer = make(ml);
            rows.Add(TaskRunner.Run<WeatherInput, WeatherOutput>(name, Featurize(ml).Append(trainer), ml, train, test,
                Evaluate, "AreaUnderRocCurve", settings.OutputDirectory, $"seattle-rain-{name.ToLowerInvariant()}.zip",
                TaskRunner.Take<WeatherInput>(ml, test, 3),
                (x, y) => $"{x.Date} {x.TempMin:0.#}..{x.TempMax:0.#} °C, wind {x.Wind:0.#}: rain {y.PredictedLabel} (p = {y.Probability:0.00}; it {(x.Rain ? "did" : "did not")})"));
        }
        return new TaskResult("binary", "seattle-weather.csv", "Did it rain? (precipitation > 0, from temperatures, wind, month)", "Rain",
            "AreaUnderRocCurve", trainRows, testRows, featureLength, rows);
    }

    private static IReadOnlyDictionary<string, double> Evaluate(MLContext ml, IDataView scored)
    {
        var m = ml.BinaryClassification.Evaluate(scored, labelColumnName: @"Rain");
        return new Dictionary<string, double>
        {
            ["AreaUnderRocCurve"] = m.AreaUnderRocCurve,
            ["Accuracy"] = m.Accuracy,
            ["F1Score"] = m.F1Score,
            ["LogLoss"] = m.LogLoss,
        };
    }
}
