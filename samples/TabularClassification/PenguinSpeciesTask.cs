using Microsoft.ML;
using Microsoft.ML.Transforms;
using MLNet.Compression.Tooling;

namespace TabularClassification;

/// <summary>Multiclass classification: a penguin's species from its measurements, island and sex.</summary>
public static class PenguinSpeciesTask
{
    /// <summary>The network: two small hidden layers.</summary>
    public static readonly NetworkSettings Network = new([64, 32], Epochs: 60, BatchSize: 32, LearningRate: 3e-3);

    /// <summary>
    /// Model Builder's data preparation: the species as a key label, one-hot island and sex, missing measurements replaced
    /// by the mean, one Features vector scaled to mean 0 and variance 1.
    /// </summary>
    /// <param name="ml">The context.</param>
    public static IEstimator<ITransformer> Featurize(MLContext ml) =>
        ml.Transforms.Conversion.MapValueToKey(@"Label", @"Species")
            .Append(ml.Transforms.Categorical.OneHotEncoding([new(@"Island", @"Island"), new(@"Sex", @"Sex")]))
            .Append(ml.Transforms.ReplaceMissingValues(
                [new(@"BeakLength", @"BeakLength"), new(@"BeakDepth", @"BeakDepth"), new(@"FlipperLength", @"FlipperLength"), new(@"BodyMass", @"BodyMass")],
                MissingValueReplacingEstimator.ReplacementMode.Mean))
            .Append(ml.Transforms.Concatenate(@"Features", @"Island", @"Sex", @"BeakLength", @"BeakDepth", @"FlipperLength", @"BodyMass"))
            .Append(ml.Transforms.NormalizeMeanVariance(@"Features"));

    /// <summary>Runs the three trainers on the same split.</summary>
    /// <param name="files">The CSV files.</param>
    /// <param name="settings">Seed, output folder, epochs.</param>
    public static TaskResult Run(VegaTaskFiles files, SampleSettings settings)
    {
        var network = settings.Adjust(Network);
        var rows = new List<TrainerRow>();
        long trainRows = 0, testRows = 0;
        int featureLength = 0;
        foreach (string name in new[] { "NeuralNetwork", "Sdca", "LightGbm" })
        {
            var ml = new MLContext(settings.Seed);
            IDataView train = TaskRunner.LoadCsv<PenguinInput>(ml, files.TrainPath);
            IDataView test = TaskRunner.LoadCsv<PenguinInput>(ml, files.TestPath);
            trainRows = train.GetRowCount() ?? ml.Data.CreateEnumerable<PenguinInput>(train, false).LongCount();
            testRows = test.GetRowCount() ?? ml.Data.CreateEnumerable<PenguinInput>(test, false).LongCount();
            featureLength = TaskRunner.FeatureLength(Featurize(ml), train);
            IEstimator<ITransformer> trainer = name switch
            {
                "NeuralNetwork" => NeuralNetworkTrainers.Multiclass(ml, @"Label", network),
                "Sdca" => ml.MulticlassClassification.Trainers.SdcaMaximumEntropy(labelColumnName: @"Label", featureColumnName: @"Features"),
                _ => ml.MulticlassClassification.Trainers.LightGbm(labelColumnName: @"Label", featureColumnName: @"Features"),
            };
            var pipeline = Featurize(ml).Append(trainer).Append(ml.Transforms.Conversion.MapKeyToValue(@"PredictedLabel", @"PredictedLabel"));
            rows.Add(TaskRunner.Run<PenguinInput, PenguinOutput>(name, pipeline, ml, train, test,
                Evaluate, "MicroAccuracy", settings.OutputDirectory, $"penguin-species-{name.ToLowerInvariant()}.zip",
                TaskRunner.Take<PenguinInput>(ml, test, 3),
                (x, y) => $"{x.Island}, beak {x.BeakLength:0.#} x {x.BeakDepth:0.#} mm, flipper {x.FlipperLength:0} mm, {x.BodyMass:0} g: " +
                          $"{y.PredictedLabel} (p = {(y.Score.Length > 0 ? y.Score.Max() : float.NaN):0.00}; it is {x.Species})"));
        }
        return new TaskResult("multiclass", "penguins.json", "Which species? (from beak, flipper, mass, island, sex)", "Species",
            "MicroAccuracy", trainRows, testRows, featureLength, rows);
    }

    private static IReadOnlyDictionary<string, double> Evaluate(MLContext ml, IDataView scored)
    {
        var m = ml.MulticlassClassification.Evaluate(scored, labelColumnName: @"Label");
        return new Dictionary<string, double>
        {
            ["MicroAccuracy"] = m.MicroAccuracy,
            ["MacroAccuracy"] = m.MacroAccuracy,
            ["LogLoss"] = m.LogLoss,
        };
    }
}
