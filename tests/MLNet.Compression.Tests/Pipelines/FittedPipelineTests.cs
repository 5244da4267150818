using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Clustering;
using MLNet.Compression.Incremental;
using MLNet.Compression.Pruning;
using MLNet.Compression.Quantization;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Pipelines;

/// <summary>A fitted Concatenate → NormalizeMinMax → MapValueToKey → network → MapKeyToValue pipeline on generated raw rows.</summary>
public sealed class TabularPipelineFixture : IDisposable
{
    public TabularPipelineFixture()
    {
        Context = new MLContext(seed: 1);
        Train = Context.Data.LoadFromEnumerable(TabularData.Rows(1200, seed: 1));
        Test = Context.Data.LoadFromEnumerable(TabularData.Rows(600, seed: 2));
        Fitted = TabularData.Pipeline(Context).Fit(Train);
        BaseAccuracy = TabularData.Accuracy(Fitted.Transform(Test));
    }

    public MLContext Context { get; }

    public IDataView Train { get; }

    public IDataView Test { get; }

    public ITransformer Fitted { get; }

    public double BaseAccuracy { get; }

    public void Dispose() => Fitted.GetNeuralNetwork().Dispose();
}

public sealed class FittedPipelineTests : IClassFixture<TabularPipelineFixture>
{
    private readonly TabularPipelineFixture fixture;
    private readonly ITestOutputHelper output;

    public FittedPipelineTests(TabularPipelineFixture fixture, ITestOutputHelper output)
    {
        this.fixture = fixture;
        this.output = output;
    }

    private MLContext Ml => fixture.Context;

    [Fact]
    public void EveryStageTakesTheFittedPipelineAndReturnsItWithOnlyTheNetworkReplaced()
    {
        var original = fixture.Fitted.GetNeuralNetwork();
        var originalWeights = original.GetSparsity().ZeroWeights;
        var stages = new (string Name, Func<IEstimator<TransformerChain<ITransformer>>> Make, Action<ITransformer> Check)[]
        {
            ("prune", () => Ml.Compression().Prune(fixture.Fitted, new PruningOptions { Schedule = PruningSchedule.ConstantSparsity(0.6), Epochs = 6 }),
                p => Assert.True(p.GetSparsity().Sparsity > 0.59, $"sparsity {p.GetSparsity().Sparsity:P1}")),
            ("quantize", () => Ml.Compression().Quantize(fixture.Fitted, new QuantizationOptions { Mode = QuantizationMode.Int8Static }),
                p => Assert.IsType<QuantizationReport>(p.GetNeuralNetwork().CompressionHistory[^1])),
            ("cluster", () => Ml.Compression().ClusterWeights(fixture.Fitted, new WeightClusteringOptions { ClusterCount = 8, Epochs = 1 }),
                p => Assert.All(p.GetNeuralNetwork().CountDistinctWeights().Values, n => Assert.True(n <= 8, $"{n} distinct weights"))),
            ("continue", () => Ml.Compression().ContinueTraining(fixture.Fitted, new ContinueTrainingOptions { Epochs = 2 }),
                p => Assert.IsType<ContinueTrainingReport>(p.GetNeuralNetwork().CompressionHistory[^1])),
        };
        var fittedItems = Flatten(fixture.Fitted).ToArray();
        var fittedColumns = fixture.Fitted.GetOutputSchema(fixture.Test.Schema).Select(c => (c.Name, c.Type.ToString())).ToArray();
        foreach (var (name, make, check) in stages)
        {
            var estimator = make();
            var result = estimator.Fit(fixture.Train);
            var network = result.GetNeuralNetwork();
            try
            {
                // The same chain shape: every transformer but the network is the same object, and the columns are the same.
                Assert.Equal(Shape(fixture.Fitted), Shape(result));
                var items = Flatten(result).ToArray();
                Assert.Equal(fittedItems.Length, items.Length);
                for (int i = 0; i < items.Length; i++)
                    if (fittedItems[i] is NeuralNetworkTransformer)
                        Assert.Same(network, items[i]);
                    else
                        Assert.Same(fittedItems[i], items[i]);
                Assert.NotSame(original, network);
                Assert.Equal(fittedColumns, result.GetOutputSchema(fixture.Test.Schema).Select(c => (c.Name, c.Type.ToString())).ToArray());
                check(result);

                // The network saw normalized features: accuracy holds on raw test rows.
                var scored = result.Transform(fixture.Test);
                double accuracy = TabularData.Accuracy(scored);
                output.WriteLine($"{name}: accuracy {accuracy:F4} (fitted pipeline {fixture.BaseAccuracy:F4}); report type {network.CompressionHistory[^1].GetType().Name}");
                Assert.True(accuracy > fixture.BaseAccuracy - 0.03, $"{name}: {accuracy:F4} vs {fixture.BaseAccuracy:F4}");

                // Saved and loaded in a fresh context: the same predictions, from ML.NET's own transforms and ONNX only.
                using var zip = new MemoryStream();
                Ml.Model.Save(result, fixture.Train.Schema, zip);
                zip.Position = 0;
                var loaded = new MLContext(seed: 7).Model.Load(zip, out _);
                Assert.DoesNotContain(Flatten(loaded), t => t.GetType().Assembly == typeof(NeuralNetworkTransformer).Assembly);
                Assert.Contains(Flatten(loaded), t => t.GetType().Name == "OnnxTransformer");
                var (expectedScores, expectedLabels) = TabularData.Read(scored);
                var (loadedScores, loadedLabels) = TabularData.Read(loaded.Transform(fixture.Test));
                Assert.Equal(expectedLabels, loadedLabels);
                Assert.Equal(expectedScores, loadedScores);
            }
            finally
            {
                network.Dispose();
            }
        }
        // The fitted pipeline was not changed.
        Assert.Same(original, fixture.Fitted.GetNeuralNetwork());
        Assert.Equal(originalWeights, original.GetSparsity().ZeroWeights);
    }

    [Fact]
    public void APipelineWithoutANetworkOrWithTwoIsRefusedSayingWhatItHolds()
    {
        var noNetwork = TabularData.Prepare(Ml).Fit(fixture.Train);
        var e1 = Assert.Throws<ArgumentException>(() => Ml.Compression().Prune(noNetwork, new PruningOptions()));
        Assert.Equal("fittedPipeline", e1.ParamName);
        Assert.Contains("contains no network", e1.Message);
        Assert.Contains("NormalizingTransformer", e1.Message);
        Assert.Contains("ValueToKeyMappingTransformer", e1.Message);

        var network = fixture.Fitted.GetNeuralNetwork();
        var twice = new TransformerChain<ITransformer>(fixture.Fitted, new TransformerChain<ITransformer>(network));
        var e2 = Assert.Throws<ArgumentException>(() => Ml.Compression().Quantize(twice, new QuantizationOptions()));
        Assert.Contains("contains 2 networks", e2.Message);
        output.WriteLine(e2.Message);
        Assert.Contains("positions 0.1, 1.0", e2.Message); // where they are inside the nested chains
        Assert.Throws<ArgumentException>(() => twice.GetNeuralNetwork());
        // A NeuralNetworkTransformer is its own pipeline.
        Assert.Same(network, network.GetNeuralNetwork());
    }

    [Fact]
    public void ChainedStagesOnAnEstimatorChainCompressTheNetworkInsideAndKeepTheColumns()
    {
        var options = TabularData.Network(epochs: 8);
        var plain = TabularData.Pipeline(Ml, options).Fit(fixture.Train);
        var estimator = TabularData.Pipeline(Ml, options)
            .Prune(new PruningOptions { Schedule = PruningSchedule.ConstantSparsity(0.7) })
            .Quantize(QuantizationMode.Int8Dynamic);
        var result = estimator.Fit(fixture.Train);
        var network = result.GetNeuralNetwork();
        try
        {
            Assert.Equal(plain.GetOutputSchema(fixture.Test.Schema).Select(c => c.Name), result.GetOutputSchema(fixture.Test.Schema).Select(c => c.Name));
            Assert.Equal([typeof(PruningReport), typeof(QuantizationReport)], network.CompressionHistory.Select(r => r.GetType()));
            Assert.NotNull(estimator.Report);
            Assert.True(result.GetSparsity().Sparsity > 0.69, $"{result.GetSparsity().Sparsity:P1}");
            double plainAccuracy = TabularData.Accuracy(plain.Transform(fixture.Test)), accuracy = TabularData.Accuracy(result.Transform(fixture.Test));
            output.WriteLine($"plain {plainAccuracy:F4}, pruned 70% + int8 {accuracy:F4}");
            Assert.True(accuracy > plainAccuracy - 0.03, $"{accuracy:F4} vs {plainAccuracy:F4}");
        }
        finally
        {
            network.Dispose();
            plain.GetNeuralNetwork().Dispose();
        }
    }

    [Fact]
    public void ByDefaultAPolynomialScheduleEndsWithTheFineTuningAndReachesItsTargetOn1000Rows()
    {
        var rows = Ml.Data.TakeRows(fixture.Train, 1000);
        var estimator = Ml.Compression().Prune(fixture.Fitted, new PruningOptions { Schedule = PruningSchedule.PolynomialDecay(0.5, 0.9) });
        var pruned = estimator.Fit(rows);
        try
        {
            var report = estimator.Report!;
            output.WriteLine(report.ToString());
            Assert.True(report.ScheduleCompleted);
            Assert.Empty(report.Warnings);
            Assert.Equal(report.StepsRun, report.PlannedEndStep); // the schedule ended at the run's last step
            Assert.InRange(report.Sparsity, 0.895, 0.91);
            Assert.InRange(pruned.GetSparsity().Sparsity, 0.895, 0.91);
        }
        finally
        {
            pruned.GetNeuralNetwork().Dispose();
        }

        // A schedule the run cannot finish says so in the report the user reads, not only in the log.
        var tooLong = Ml.Compression().Prune(fixture.Fitted, new PruningOptions { Schedule = PruningSchedule.PolynomialDecay(0.5, 0.9, endStep: 100_000), Epochs = 1 });
        var partial = tooLong.Fit(rows);
        partial.GetNeuralNetwork().Dispose();
        Assert.False(tooLong.Report!.ScheduleCompleted);
        Assert.Contains(tooLong.Report.Warnings, w => w.Contains("step 100000", StringComparison.Ordinal) && w.Contains("Epochs", StringComparison.Ordinal));
        Assert.Contains("WARNING:", tooLong.Report.ToString(), StringComparison.Ordinal);
        Assert.True(tooLong.Report.Sparsity < 0.6, $"{tooLong.Report.Sparsity:P1}");

        // A schedule going down is refused.
        var e = Assert.Throws<ArgumentException>(() => PruningSchedule.PolynomialDecay(0.9, 0.5));
        Assert.Equal("initialSparsity", e.ParamName);
        Assert.Contains("must not be above the final sparsity", e.Message, StringComparison.Ordinal);
    }

    /// <summary>The nesting of chains, e.g. <c>[[T, T, T], T, T]</c>.</summary>
    private static string Shape(ITransformer t) =>
        t is IEnumerable<ITransformer> chain ? "[" + string.Join(", ", chain.Select(Shape)) + "]" : "T";

    private static IEnumerable<ITransformer> Flatten(ITransformer t) =>
        t is IEnumerable<ITransformer> chain ? chain.SelectMany(Flatten) : [t];
}
