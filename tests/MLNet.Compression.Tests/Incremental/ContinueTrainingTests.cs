using System.IO.Compression;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Incremental;
using MLNet.Compression.Networks;
using MLNet.Compression.Pruning;
using MLNet.Compression.Quantization;
using Xunit;
using Xunit.Abstractions;
using static MLNet.Compression.Tests.Incremental.IncrementalData;

namespace MLNet.Compression.Tests.Incremental;

/// <summary>Rows 0-999 and 1,000-1,999 of MNIST, 1,000 test rows, and a small MLP trained on the first increment.</summary>
public sealed class IncrementFixture : IDisposable
{
    public IncrementFixture()
    {
        Context = new MLContext(seed: 1);
        var train = TestMnist.LoadTrain(Context);
        First = Context.Data.TakeRows(train, 1000);
        Second = Context.Data.TakeRows(Context.Data.SkipRows(train, 1000), 1000);
        Test = Context.Data.TakeRows(TestMnist.LoadTest(Context), 1000);
        Model = Context.Compression().NeuralNetwork(Options()).Fit(First);
    }

    public MLContext Context { get; }

    public IDataView First { get; }

    public IDataView Second { get; }

    public IDataView Test { get; }

    public NeuralNetworkTransformer Model { get; }

    public void Dispose() => Model.Dispose();
}

public sealed class ContinueTrainingTests : IClassFixture<IncrementFixture>
{
    private readonly IncrementFixture fixture;
    private readonly ITestOutputHelper output;

    public ContinueTrainingTests(IncrementFixture fixture, ITestOutputHelper output)
    {
        this.fixture = fixture;
        this.output = output;
    }

    private MLContext Ml => fixture.Context;

    [Fact]
    public void WarmStartLearnsTheNewIncrementKeepsTheOldOneAndBeatsAColdStart()
    {
        var model = fixture.Model;
        double oldBefore = Accuracy(model, fixture.First), newBefore = Accuracy(model, fixture.Second), testBefore = Accuracy(model, fixture.Test);
        var estimator = Ml.Compression().ContinueTraining(model, new ContinueTrainingOptions { Epochs = 3 });
        using var continued = estimator.Fit(fixture.Second);
        double oldAfter = Accuracy(continued, fixture.First), newAfter = Accuracy(continued, fixture.Second), testAfter = Accuracy(continued, fixture.Test);
        using var cold = Ml.Compression().NeuralNetwork(Options(epochs: 3)).Fit(fixture.Second);
        double testCold = Accuracy(cold, fixture.Test);
        output.WriteLine(estimator.Report!.ToString());
        output.WriteLine($"old increment {oldBefore:F3} -> {oldAfter:F3}; new increment {newBefore:F3} -> {newAfter:F3}; test {testBefore:F3} -> {testAfter:F3}; cold start on the new increment alone: test {testCold:F3}");

        Assert.True(estimator.Report!.OptimizerStateReused);
        Assert.Equal(1, estimator.Report.Increment);
        Assert.Equal(1000, estimator.Report.NewRows);
        Assert.Equal(3 * 16, estimator.Report.Steps); // 1,000 rows at batch 64
        Assert.True(newAfter > newBefore + 0.03, $"accuracy on the new increment {newBefore:F3} -> {newAfter:F3}");
        // Stated bound: the old increment loses at most 3 points (same distribution, so it usually gains).
        Assert.True(oldAfter >= oldBefore - 0.03, $"accuracy on the old increment {oldBefore:F3} -> {oldAfter:F3}");
        Assert.True(testAfter > testBefore, $"test accuracy {testBefore:F3} -> {testAfter:F3}");
        Assert.True(testAfter > testCold + 0.01, $"warm start {testAfter:F3} vs cold start {testCold:F3}");
        // The previous model is untouched.
        Assert.Equal(testBefore, Accuracy(model, fixture.Test));
    }

    [Fact]
    public void ReplayMemoryStaysWithinItsBudgetAndClassBalanced()
    {
        // The memory itself, fed real MNIST rows one class pair at a time (class-incremental order).
        var memory = new ReplayMemory(784, 50, 42);
        var ml = Ml;
        var train = TestMnist.LoadTrain(ml);
        var expectedClasses = 0;
        for (int task = 0; task < 3; task++)
        {
            var rows = ml.Data.TakeRows(Digits(ml, train, 2 * task, 2 * task + 1), 600);
            var labels = rows.GetColumn<uint>("Label").ToArray();
            var features = rows.GetColumn<float[]>("Features").ToArray();
            for (int i = 0; i < labels.Length; i++)
            {
                memory.Offer(features[i], (int)labels[i] - 1, () => $"row {i}");
                Assert.True(memory.Count <= memory.Capacity);
                Assert.True(memory.Bytes <= 50 * (784 + 4));
            }
            expectedClasses += 2;
            var counts = memory.CountsPerClass();
            output.WriteLine($"after task {task}: {string.Join(" ", counts)}");
            Assert.Equal(50, memory.Count);
            Assert.Equal(expectedClasses, counts.Count(c => c > 0));
            Assert.True(counts.Where(c => c > 0).Max() - counts.Where(c => c > 0).Min() <= 1, string.Join(" ", counts));
        }
        // Exemplars are the rows' own pixels: decoding gives back exactly the loader's floats for each stored row.
        var decoded = new float[784];
        memory.CopyFeatures(0, decoded);
        Assert.All(decoded, v => Assert.Equal(MathF.Round(v * 255f) / 255f, v));
        Assert.Equal(50L * 788, memory.Bytes);

        // End to end: three increments under a byte budget; the memory never exceeds it and the total stays bounded.
        var budget = ReplayBudget.Bytes(120 * 788 + 500); // 120 exemplars
        NeuralNetworkTransformer current = fixture.Model;
        var totals = new List<long>();
        try
        {
            for (int increment = 0; increment < 3; increment++)
            {
                var data = ml.Data.TakeRows(ml.Data.SkipRows(train, 2000 + 300 * increment), 300);
                var estimator = ml.Compression().ContinueTraining(current, new ContinueTrainingOptions
                {
                    Strategies = ContinualStrategies.Replay,
                    ReplayBudget = budget,
                    PreviousData = fixture.First,
                    Epochs = 1,
                });
                var next = estimator.Fit(data);
                if (!ReferenceEquals(current, fixture.Model))
                    current.Dispose();
                current = next;
                var report = estimator.Report!;
                output.WriteLine(report.ToString());
                Assert.Equal(increment + 1, report.Increment);
                Assert.Equal(120 * 788, report.ReplayBudgetBytes);
                Assert.Equal(120 * 788, report.ReplayBytes);
                Assert.Equal(120, report.ExemplarsPerClass.Values.Sum());
                Assert.True(report.ExemplarsPerClass.Values.Max() - report.ExemplarsPerClass.Values.Min() <= 1);
                Assert.True(report.TotalBytes <= report.BoundBytes);
                Assert.Equal(120, current.IncrementalState!.Replay!.Count);
                totals.Add(report.TotalBytes);
            }
            Assert.Single(totals.Distinct()); // no growth from increment to increment
        }
        finally
        {
            if (!ReferenceEquals(current, fixture.Model))
                current.Dispose();
        }
    }

    [Fact]
    public void ClassGrowthKeepsOldClassesAndAddsNewOnes()
    {
        var ml = Ml;
        var train = TestMnist.LoadTrain(ml);
        var test = TestMnist.LoadTest(ml);
        // Task 1: digits 0-4, task 2: digits 5-9, each with its label re-keyed on its own rows (5 classes each).
        var task1 = Rekey(ml, ml.Data.TakeRows(Digits(ml, train, 0, 4), 1500));
        var task2 = Rekey(ml, ml.Data.TakeRows(Digits(ml, train, 5, 9), 1500));
        var oldTest = ml.Data.TakeRows(Digits(ml, test, 0, 4), 500);
        var newTest = ml.Data.TakeRows(Digits(ml, test, 5, 9), 500);
        using var first = ml.Compression().NeuralNetwork(Options()).Fit(task1);
        Assert.Equal(["0", "1", "2", "3", "4"], first.ClassNames);
        double oldBefore = Accuracy(first, oldTest);

        // Growing the output layer alone changes nothing for the old classes: their rows and every other weight are kept.
        var grown = ClassGrowth.GrowOutput(first.Network, 10, 3);
        var before = first.Network.ParameterizedLayers.ToArray();
        var after = grown.ParameterizedLayers.ToArray();
        for (int i = 0; i < before.Length - 1; i++)
            Assert.Equal(before[i].Weight, after[i].Weight);
        Assert.Equal(before[^1].Weight, after[^1].Weight.Take(before[^1].Weight.Length));
        Assert.Equal(before[^1].Bias, after[^1].Bias.Take(5));
        Assert.Equal(10 * 128, after[^1].Weight.Length);

        var estimator = ml.Compression().ContinueTraining(first, new ContinueTrainingOptions
        {
            Strategies = ContinualStrategies.Replay,
            ReplayBudget = ReplayBudget.Rows(300),
            PreviousData = task1,
            Epochs = 4,
        });
        using var both = estimator.Fit(task2);
        var report = estimator.Report!;
        output.WriteLine(report.ToString());
        Assert.Equal(["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"], both.ClassNames);
        Assert.Equal(["5", "6", "7", "8", "9"], report.AddedClasses);
        Assert.True(report.OptimizerStateReused); // Adam's state grew with the output layer
        Assert.Equal(10, both.Network.NumClasses);
        var scored = both.Transform(oldTest);
        Assert.Equal(both.ClassNames, KeyNames(scored.Schema["PredictedLabel"]));
        double oldAfter = Accuracy(both, oldTest), newAfter = Accuracy(both, newTest);
        output.WriteLine($"old classes {oldBefore:F3} -> {oldAfter:F3}; new classes {newAfter:F3}; replay fraction {report.ReplayFraction:F2}");
        Assert.True(oldAfter > 0.85, $"old-class accuracy {oldAfter:F3} (was {oldBefore:F3})");
        Assert.True(newAfter > 0.85, $"new-class accuracy {newAfter:F3}");

        // New data whose key values mix known and unknown names: known names keep their index, unknown ones are appended.
        var mixed = Rekey(ml, ml.Data.TakeRows(Digits(ml, train, 3, 6), 300));
        var third = ml.Compression().ContinueTraining(first, new ContinueTrainingOptions { Epochs = 1 });
        using var grownAgain = third.Fit(mixed);
        Assert.Equal(["0", "1", "2", "3", "4", "5", "6"], grownAgain.ClassNames);
    }

    [Fact]
    public void ContinuingAPrunedModelKeepsItsZerosAndAQuantizedModelIsQuantizedAgain()
    {
        var ml = Ml;
        using var pruned = ml.Compression().Prune(fixture.Model, new PruningOptions
        {
            Schedule = PruningSchedule.ConstantSparsity(0.8, frequency: 1_000_000),
            Epochs = 1,
        }).Fit(fixture.First);
        var sparsity = pruned.GetSparsity();
        var estimator = ml.Compression().ContinueTraining(pruned, new ContinueTrainingOptions
        {
            Strategies = ContinualStrategies.Replay | ContinualStrategies.LearningWithoutForgetting,
            PreviousData = fixture.First,
            ReplayBudget = ReplayBudget.Rows(200),
            Epochs = 2,
        });
        using var continued = estimator.Fit(fixture.Second);
        output.WriteLine(estimator.Report!.ToString());
        var zerosBefore = pruned.Network.ParameterizedLayers.Select(l => Enumerable.Range(0, l.Weight.Length).Where(i => l.Weight[i] == 0f).ToHashSet()).ToArray();
        var layersAfter = continued.Network.ParameterizedLayers.ToArray();
        for (int i = 0; i < layersAfter.Length; i++)
        {
            Assert.All(zerosBefore[i], j => Assert.Equal(0f, layersAfter[i].Weight[j]));
            int changed = Enumerable.Range(0, layersAfter[i].Weight.Length).Count(j => !zerosBefore[i].Contains(j) && layersAfter[i].Weight[j] != pruned.Network.ParameterizedLayers.ElementAt(i).Weight[j]);
            Assert.True(changed > 0, $"layer {i}: the kept weights did not train");
        }
        Assert.True(continued.GetSparsity().Sparsity >= sparsity.Sparsity, $"sparsity {sparsity.Sparsity:P2} -> {continued.GetSparsity().Sparsity:P2}");
        Assert.Equal(sparsity.ZeroWeights, estimator.Report.MaskedZeroWeights);
        Assert.True(Accuracy(continued, fixture.Test) > Accuracy(pruned, fixture.Test) - 0.02);

        // Quantized (int8 dynamic): the continued model is exported with the same quantization.
        using var quantized = ml.Compression().Quantize(fixture.Model, new QuantizationOptions { Mode = QuantizationMode.Int8Dynamic }).Fit(fixture.First);
        var q = ml.Compression().ContinueTraining(quantized, new ContinueTrainingOptions { Epochs = 2 });
        using var requantized = q.Fit(fixture.Second);
        output.WriteLine(q.Report!.ToString());
        Assert.Equal(QuantizationMode.Int8Dynamic, requantized.Recipe.Quantization?.Mode);
        Assert.Equal(QuantizationMode.Int8Dynamic, q.Report.Requantized);
        Assert.True(requantized.Memory.ArtifactBytes < 0.4 * fixture.Model.Memory.ArtifactBytes,
            $"ONNX {requantized.Memory.ArtifactBytes:N0} B vs float {fixture.Model.Memory.ArtifactBytes:N0} B");
        Assert.True(requantized.Memory.ResidentWeightBytes < 0.4 * fixture.Model.Memory.ResidentWeightBytes);
        double accuracy = Accuracy(requantized, fixture.Test);
        Assert.True(accuracy > Accuracy(quantized, fixture.Test), $"re-quantized accuracy {accuracy:F3}");
        // The saved zip scores with the quantized graph too.
        using var dir = TestMnist.NewTempDirectory();
        ml.Model.Save(requantized, fixture.Second.Schema, dir["q.zip"]);
        var loaded = ml.Model.Load(dir["q.zip"], out _);
        Assert.Equal(Predictions(requantized, fixture.Test), Predictions(loaded, fixture.Test));
    }

    [Fact]
    public void ReplayMemoryAndEwcStateSurviveTheCheckpointAndChainIncrements()
    {
        var ml = Ml;
        var options = new ContinueTrainingOptions
        {
            Strategies = ContinualStrategies.Replay | ContinualStrategies.ElasticWeightConsolidation,
            PreviousData = fixture.First,
            ReplayBudget = ReplayBudget.Rows(150),
            EwcFisherRows = 200,
            Epochs = 1,
        };
        using var first = ml.Compression().ContinueTraining(fixture.Model, options).Fit(fixture.Second);
        var state = first.IncrementalState!;
        Assert.Equal(150, state.Replay!.Count);
        Assert.Equal(2, state.Ewc!.Tasks); // the previous task's Fisher plus this one's
        using var dir = TestMnist.NewTempDirectory();
        first.SaveCheckpoint(dir["inc.checkpoint"]);
        using var loaded = NeuralNetworkTransformer.LoadCheckpoint(ml, dir["inc.checkpoint"]);
        var back = loaded.IncrementalState!;
        Assert.Equal(1, back.Increments);
        Assert.Equal(state.Replay.Count, back.Replay!.Count);
        Assert.Equal(state.Replay.Capacity, back.Replay.Capacity);
        Assert.Equal(state.Replay.SeenPerClass(), back.Replay.SeenPerClass());
        for (int i = 0; i < state.Replay.Count; i++)
        {
            Assert.Equal(state.Replay.LabelAt(i), back.Replay.LabelAt(i));
            Assert.True(state.Replay.CodesAt(i).SequenceEqual(back.Replay.CodesAt(i)), $"exemplar {i} differs");
        }
        for (int i = 0; i < state.Ewc.Fisher.Length; i++)
        {
            Assert.Equal(state.Ewc.Fisher[i], back.Ewc!.Fisher[i]);
            Assert.Equal(state.Ewc.Anchor[i], back.Ewc.Anchor[i]);
        }
        Assert.Equal(first.OptimizerState, loaded.OptimizerState);
        Assert.Equal(Predictions(first, fixture.Test), Predictions(loaded, fixture.Test));

        // The next increment starts from the loaded memory (no PreviousData needed) and from the in-memory model alike.
        var next = ml.Data.TakeRows(ml.Data.SkipRows(TestMnist.LoadTrain(ml), 2000), 300);
        var chained = new ContinueTrainingOptions { Strategies = options.Strategies, ReplayBudget = ReplayBudget.Rows(150), EwcFisherRows = 200, Epochs = 1 };
        var fromLoaded = ml.Compression().ContinueTraining(loaded, chained);
        using var second = fromLoaded.Fit(next);
        var fromMemory = ml.Compression().ContinueTraining(first, chained);
        using var secondInMemory = fromMemory.Fit(next);
        Assert.Equal(2, fromLoaded.Report!.Increment);
        Assert.Equal(150, fromLoaded.Report.ExemplarsReplayed);
        Assert.Equal(Predictions(secondInMemory, fixture.Test), Predictions(second, fixture.Test));
        Assert.Equal(3, second.IncrementalState!.Ewc!.Tasks);
        // The earlier model keeps its own memory.
        Assert.Equal(state.Replay.SeenPerClass(), first.IncrementalState!.Replay!.SeenPerClass());

        // A version-1 checkpoint (before incremental state existed) still loads.
        fixture.Model.SaveCheckpoint(dir["v1.checkpoint"]);
        using (var zip = ZipFile.Open(dir["v1.checkpoint"], ZipArchiveMode.Update))
        {
            var entry = zip.GetEntry("checkpoint.json")!;
            JsonNode meta;
            using (var s = entry.Open())
                meta = JsonNode.Parse(s)!;
            Assert.Equal(4, (int)meta["version"]!); // the current format (4 since the recipe is stored in the steps' own form)
            Assert.Null(meta["incremental"]);
            meta["version"] = 1;
            entry.Delete();
            using var w = zip.CreateEntry("checkpoint.json").Open();
            w.Write(System.Text.Encoding.UTF8.GetBytes(meta.ToJsonString()));
        }
        using var v1 = NeuralNetworkTransformer.LoadCheckpoint(ml, dir["v1.checkpoint"]);
        Assert.Null(v1.IncrementalState);
        Assert.Equal(Predictions(fixture.Model, fixture.Test), Predictions(v1, fixture.Test));

        // A damaged replay memory is reported as an unreadable checkpoint.
        File.Copy(dir["inc.checkpoint"], dir["bad.checkpoint"]);
        using (var zip = ZipFile.Open(dir["bad.checkpoint"], ZipArchiveMode.Update))
        {
            zip.GetEntry("replay.bin")!.Delete();
            using var w = zip.CreateEntry("replay.bin").Open();
            w.Write(new byte[10]);
        }
        var e = Assert.Throws<CheckpointException>(() => NeuralNetworkTransformer.LoadCheckpoint(ml, dir["bad.checkpoint"]));
        Assert.Contains("replay.bin", e.Message);
    }

    [Fact]
    public void TheBatchedFisherOfADenseNetworkEqualsOneBackwardPassPerRow()
    {
        var data = Ml.Data.TakeRows(fixture.Second, 300);
        var column = data.Schema["Features"];
        var batched = EwcState.EstimateBatched(fixture.Model.Network, data, column, 200, 3, null, out _)!;
        var perRow = EwcState.EstimatePerRow(fixture.Model.Network, data, column, 200, 3);
        Assert.Equal(perRow.Fisher.Length, batched.Fisher.Length);
        for (int i = 0; i < perRow.Fisher.Length; i++)
        {
            float scale = perRow.Fisher[i].Max();
            Assert.True(scale > 0, $"tensor {i} has no Fisher information");
            for (int j = 0; j < perRow.Fisher[i].Length; j++)
                Assert.True(Math.Abs(perRow.Fisher[i][j] - batched.Fisher[i][j]) <= 1e-4f * scale + 1e-9f,
                    $"tensor {i}[{j}]: per row {perRow.Fisher[i][j]}, batched {batched.Fisher[i][j]}");
            Assert.Equal(perRow.Anchor[i], batched.Anchor[i]);
        }
    }

    [Fact]
    public void EwcAndLwfHoldThePreviousModelCloserThanFineTuning()
    {
        var ml = Ml;
        var train = TestMnist.LoadTrain(ml);
        // A shifted task: the second increment holds only digits 5-9, so plain fine-tuning forgets 0-4.
        var shifted = ml.Data.TakeRows(Digits(ml, ml.Data.SkipRows(train, 1000), 5, 9), 800);
        var oldTest = ml.Data.TakeRows(Digits(ml, TestMnist.LoadTest(ml), 0, 4), 500);
        double Run(ContinualStrategies strategies)
        {
            var estimator = ml.Compression().ContinueTraining(fixture.Model, new ContinueTrainingOptions
            {
                Strategies = strategies,
                PreviousData = fixture.First,
                EwcFisherRows = 300,
                Epochs = 2,
            });
            using var model = estimator.Fit(shifted);
            double accuracy = Accuracy(model, oldTest);
            output.WriteLine($"{strategies}: accuracy on digits 0-4 {accuracy:F3}; {estimator.Report}");
            return accuracy;
        }
        double fineTune = Run(ContinualStrategies.None);
        double ewc = Run(ContinualStrategies.ElasticWeightConsolidation);
        double lwf = Run(ContinualStrategies.LearningWithoutForgetting);
        Assert.True(ewc > fineTune + 0.05, $"EWC {ewc:F3} vs fine-tuning {fineTune:F3}");
        Assert.True(lwf > fineTune + 0.05, $"LwF {lwf:F3} vs fine-tuning {fineTune:F3}");
    }

    [Fact]
    public void BadInputThrowsAndNamesWhatIsWrong()
    {
        var ml = Ml;
        var model = fixture.Model;
        Assert.Equal("rows", Assert.Throws<ArgumentOutOfRangeException>(() => ReplayBudget.Rows(0)).ParamName);
        Assert.Equal("bytes", Assert.Throws<ArgumentOutOfRangeException>(() => ReplayBudget.Bytes(-5)).ParamName);
        var tooSmall = Assert.Throws<ArgumentOutOfRangeException>(() =>
            ml.Compression().ContinueTraining(model, new ContinueTrainingOptions { Strategies = ContinualStrategies.Replay, ReplayBudget = ReplayBudget.Bytes(500) }));
        Assert.Contains("ReplayBudget", tooSmall.Message);
        Assert.Equal("Strategies", Assert.Throws<ArgumentOutOfRangeException>(() =>
            ml.Compression().ContinueTraining(model, new ContinueTrainingOptions { Strategies = (ContinualStrategies)8 })).ParamName);
        Assert.Equal("EwcLambda", Assert.Throws<ArgumentOutOfRangeException>(() =>
            ml.Compression().ContinueTraining(model, new ContinueTrainingOptions { EwcLambda = -1 })).ParamName);
        Assert.Equal("ReplayFraction", Assert.Throws<ArgumentOutOfRangeException>(() =>
            ml.Compression().ContinueTraining(model, new ContinueTrainingOptions { ReplayFraction = 1 })).ParamName);
        Assert.Equal("Epochs", Assert.Throws<ArgumentOutOfRangeException>(() =>
            ml.Compression().ContinueTraining(model, new ContinueTrainingOptions { Epochs = 0 })).ParamName);
        Assert.Equal("EwcDecay", Assert.Throws<ArgumentOutOfRangeException>(() =>
            ml.Compression().ContinueTraining(model, new ContinueTrainingOptions { EwcDecay = 0 })).ParamName);

        // New data with another feature size.
        var narrow = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 20).Select(i => new SmallRow { Label = (uint)(i % 10 + 1), Features = new float[100] }),
            SmallRow.Schema(ml, 100));
        var sizeError = Assert.Throws<ArgumentException>(() => ml.Compression().ContinueTraining(model).Fit(narrow));
        Assert.Contains("100 values per row", sizeError.Message);
        Assert.Contains("784", sizeError.Message);

        // A missing (NaN) feature cannot be stored as an exemplar (values outside [0, 1] can: ReplayOptionsTests).
        var missing = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 20).Select(i => new SmallRow { Label = (uint)(i % 10 + 1), Features = Enumerable.Repeat(i == 7 ? float.NaN : 0.5f, 784).ToArray() }),
            SmallRow.Schema(ml, 784));
        var nan = Assert.Throws<InvalidDataException>(() => ml.Compression().ContinueTraining(model, new ContinueTrainingOptions
        {
            Strategies = ContinualStrategies.Replay,
            Epochs = 1,
        }).Fit(missing));
        Assert.Contains("NaN", nan.Message);
        Assert.Contains("Row 7", nan.Message);

        // EWC on a model that carries no Fisher information, without PreviousData.
        var ewc = Assert.Throws<ArgumentException>(() => ml.Compression().ContinueTraining(model, new ContinueTrainingOptions
        {
            Strategies = ContinualStrategies.ElasticWeightConsolidation,
        }).Fit(fixture.Second));
        Assert.Contains("PreviousData", ewc.Message);

        // PreviousData with a class the model does not know.
        var foreign = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 20).Select(i => new SmallRow { Label = (uint)(i % 11 + 1), Features = new float[784] }),
            SmallRow.Schema(ml, 784, classes: 11));
        var unknown = Assert.Throws<ArgumentException>(() => ml.Compression().ContinueTraining(model, new ContinueTrainingOptions
        {
            Strategies = ContinualStrategies.Replay,
            PreviousData = foreign,
        }).Fit(fixture.Second));
        Assert.Contains("PreviousData", unknown.Message);
    }

    private sealed class SmallRow
    {
        public uint Label { get; set; }

        public float[] Features { get; set; } = [];

        public static SchemaDefinition Schema(MLContext ml, int size, int classes = 10)
        {
            var schema = SchemaDefinition.Create(typeof(SmallRow));
            schema["Label"].ColumnType = new KeyDataViewType(typeof(uint), classes);
            schema["Features"].ColumnType = new VectorDataViewType(NumberDataViewType.Single, size);
            _ = ml;
            return schema;
        }
    }
}
