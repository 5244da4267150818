using Microsoft.ML;
using Microsoft.ML.Transforms;
using MLNet.Compression.Tooling;

namespace TabularClassification;

/// <summary>Regression: a car's miles per gallon from its engine, weight, acceleration, year and origin.</summary>
public static class CarMpgTask
{
    /// <summary>The network: two small hidden layers.</summary>
    public static readonly NetworkSettings Network = new([32, 16], Epochs: 100, BatchSize: 32, LearningRate: 3e-3);

    /// <summary>
    /// Model Builder's data preparation: one-hot origin, missing numbers replaced by the mean, one Features vector scaled to
    /// mean 0 and variance 1. (Rows without a label are dropped before, in <see cref="Load"/>: a trainer cannot learn from them.)
    /// </summary>
    /// <param name="ml">The context.</param>
    public static IEstimator<ITransformer> Featurize(MLContext ml) =>
        ml.Transforms.Categorical.OneHotEncoding(@"Origin", @"Origin")
            .Append(ml.Transforms.ReplaceMissingValues(
                [new(@"Cylinders", @"Cylinders"), new(@"Displacement", @"Displacement"), new(@"Horsepower", @"Horsepower"),
                 new(@"Weight", @"Weight"), new(@"Acceleration", @"Acceleration"), new(@"Year", @"Year")],
                MissingValueReplacingEstimator.ReplacementMode.Mean))
            .Append(ml.Transforms.Concatenate(@"Features", @"Origin", @"Cylinders", @"Displacement", @"Horsepower", @"Weight", @"Acceleration", @"Year"))
            .Append(ml.Transforms.NormalizeMeanVariance(@"Features"));

    /// <summary>Reads a CSV file and drops the rows whose label is missing.</summary>
    /// <param name="ml">The context.</param>
    /// <param name="path">The CSV file.</param>
    public static IDataView Load(MLContext ml, string path) =>
        ml.Data.FilterRowsByMissingValues(TaskRunner.LoadCsv<CarInput>(ml, path), @"MilesPerGallon");

    /// <summary>Runs the three trainers on the same split.</summary>
    /// <param name="files">The CSV files.</param>
    /// <param name="settings">Seed, output folder, epochs.</param>
    public static TaskResult Run(VegaTaskFiles files, SampleSettings settings)
    {
        var network = settings.Adjust(Network);
        var rows = new List<TrainerRow>();
        var trainers = new (string Name, Func<MLContext, IEstimator<ITransformer>> Make)[]
        {
            ("NeuralNetwork", ml => NeuralNetworkTrainers.Regression(ml, @"MilesPerGallon", network)),
            ("Sdca", ml => ml.Regression.Trainers.Sdca(labelColumnName: @"MilesPerGallon", featureColumnName: @"Features")),
            ("LightGbm", ml => ml.Regression.Trainers.LightGbm(labelColumnName: @"MilesPerGallon", featureColumnName: @"Features")),
        };
        long trainRows = 0, testRows = 0;
        int featureLength = 0;
        foreach (var (name, make) in trainers)
        {
            var ml = new MLContext(settings.Seed);
            IDataView train = Load(ml, files.TrainPath);
            IDataView test = Load(ml, files.TestPath);
            trainRows = ml.Data.CreateEnumerable<CarInput>(train, false).LongCount();
            testRows = ml.Data.CreateEnumerable<CarInput>(test, false).LongCount();
            featureLength = TaskRunner.FeatureLength(Featurize(ml), train);
            var trainer = make(ml);
            rows.Add(TaskRunner.Run<CarInput, CarOutput>(name, Featurize(ml).Append(trainer), ml, train, test,
                Evaluate, "RSquared", settings.OutputDirectory, $"car-mpg-{name.ToLowerInvariant()}.zip",
                TaskRunner.Take<CarInput>(ml, test, 3),
                (x, y) => $"{x.Name} ({x.Year:0}, {x.Cylinders:0} cyl, {x.Horsepower:0} hp, {x.Weight:0} lbs): {y.Score:0.0} mpg (it does {x.MilesPerGallon:0.0})"));
        }
        return new TaskResult("regression", "cars.json", "Miles per gallon? (from engine, weight, acceleration, year, origin)", "MilesPerGallon",
            "RSquared", trainRows, testRows, featureLength, rows);
    }

    private static IReadOnlyDictionary<string, double> Evaluate(MLContext ml, IDataView scored)
    {
        var m = ml.Regression.Evaluate(scored, labelColumnName: @"MilesPerGallon");
        return new Dictionary<string, double>
        {
            ["RSquared"] = m.RSquared,
            ["RootMeanSquaredError"] = m.RootMeanSquaredError,
            ["MeanAbsoluteError"] = m.MeanAbsoluteError,
        };
    }
}
