using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using MLNet.Compression.Networks;

namespace MLNet.Compression.Tests.Incremental;

/// <summary>MNIST slices for the incremental tests: digit ranges, labels re-keyed on a slice, accuracy by class name.</summary>
internal static class IncrementalData
{
    public static NeuralNetworkOptions Options(int epochs = 4, int seed = 5) => new()
    {
        Architecture = NetworkArchitecture.Mlp(128),
        Epochs = epochs,
        BatchSize = 64,
        LearningRate = 2e-3,
        Seed = seed,
        Device = TrainingDevice.Cpu,
    };

    /// <summary>
    /// Rows whose digit is in [<paramref name="first"/>, <paramref name="last"/>] (the key column's fraction filter, with
    /// margins that hold whichever point of a key's interval the filter tests).
    /// </summary>
    public static IDataView Digits(MLContext ml, IDataView data, int first, int last) =>
        ml.Data.FilterRowsByKeyColumnFraction(data, "Label", Math.Max(0, first / 10.0 - 0.01), (last + 1) / 10.0 - 0.01);

    /// <summary>The label re-keyed on <paramref name="data"/> alone: key values are only the digits it holds, sorted.</summary>
    public static IDataView Rekey(MLContext ml, IDataView data) =>
        ml.Transforms.Conversion.MapKeyToValue("Digit", "Label")
            .Append(ml.Transforms.Conversion.MapValueToKey("Label", "Digit", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue))
            .Fit(data).Transform(data);

    /// <summary>Share of rows whose predicted class name equals the label's key value (works whatever the key orders are).</summary>
    public static double Accuracy(ITransformer model, IDataView data)
    {
        var scored = model.Transform(data);
        var truth = KeyNames(scored.Schema["Label"]);
        var predicted = KeyNames(scored.Schema["PredictedLabel"]);
        using var cursor = scored.GetRowCursor([scored.Schema["Label"], scored.Schema["PredictedLabel"]]);
        var getLabel = cursor.GetGetter<uint>(scored.Schema["Label"]);
        var getPredicted = cursor.GetGetter<uint>(scored.Schema["PredictedLabel"]);
        uint l = 0, p = 0;
        long rows = 0, correct = 0;
        while (cursor.MoveNext())
        {
            getLabel(ref l);
            getPredicted(ref p);
            rows++;
            if (l > 0 && p > 0 && truth[l - 1] == predicted[p - 1])
                correct++;
        }
        return (double)correct / rows;
    }

    /// <summary>Predicted class names, row by row.</summary>
    public static string[] Predictions(ITransformer model, IDataView data)
    {
        var scored = model.Transform(data);
        var names = KeyNames(scored.Schema["PredictedLabel"]);
        return scored.GetColumn<uint>("PredictedLabel").Select(p => names[p - 1]).ToArray();
    }

    public static string[] KeyNames(DataViewSchema.Column column)
    {
        VBuffer<ReadOnlyMemory<char>> values = default;
        column.GetKeyValues(ref values);
        return values.DenseValues().Select(v => v.ToString()).ToArray();
    }
}
