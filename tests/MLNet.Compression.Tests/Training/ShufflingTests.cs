using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Networks;
using MLNet.Compression.Training;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Training;

/// <summary>
/// Shuffling on views that cannot shuffle (<c>LoadFromTextFile</c>, <c>LoadFromEnumerable</c>): the in-memory cache and the shuffle
/// buffer visit every row once per pass in a seed-determined order, and a CSV sorted by label trains as well as the same rows shuffled.
/// </summary>
public sealed class ShufflingTests
{
    private readonly ITestOutputHelper output;

    public ShufflingTests(ITestOutputHelper output) => this.output = output;

    /// <summary>A row with a key label (LoadFromEnumerable treats the largest key value of [KeyType(3)] as missing, so 1 and 2 are used).</summary>
    private sealed class IndexedRow
    {
        [KeyType(3)]
        public uint Label { get; set; }

        [VectorType(2)]
        public float[] Features { get; set; } = [];
    }

    /// <summary>Rows whose first feature is their position, so a pass's order can be read back from the batches.</summary>
    private static IDataView Indexed(MLContext ml, int rows, Func<int, float>? second = null) =>
        ml.Data.LoadFromEnumerable(Enumerable.Range(0, rows).Select(i => new IndexedRow { Label = (uint)(i % 2) + 1, Features = [i, second?.Invoke(i) ?? 0f] }));

    private static List<int> Order(BatchStream stream, int batchSize, Random? rand, Func<DataViewRowId, bool>? include = null)
    {
        var order = new List<int>();
        foreach (var batch in stream.Read(batchSize, rand, include))
            for (int i = 0; i < batch.Count; i++)
                order.Add((int)batch.Features[i * 2]);
        return order;
    }

    [Theory]
    [InlineData("cache")]
    [InlineData("buffer")]
    [InlineData("cache too small")]
    public void EveryRowIsVisitedOncePerPassInASeedDeterminedOrder(string mode)
    {
        var ml = new MLContext(seed: 1);
        const int rows = 1000;
        var data = Indexed(ml, rows);
        Assert.False(data.CanShuffle);
        var stream = new BatchStream(data, "Label", "Features", 2)
        {
            ShuffleCacheLimitBytes = mode switch { "cache" => 1 << 20, "buffer" => 0, _ => 300 * (2 * sizeof(float) + sizeof(long)) },
            ShuffleBufferRows = 100,
        };
        var expectedOrder = mode == "cache" ? RowOrder.ShuffledInMemory : RowOrder.ShuffleBuffer;

        var first = Order(stream, 64, new Random(5));
        Assert.Equal(expectedOrder, stream.LastOrder);
        Assert.Equal(Enumerable.Range(0, rows), first.Order());            // every row, exactly once
        Assert.NotEqual(Enumerable.Range(0, rows), first);                 // ...not in file order
        Assert.Equal(first, Order(stream, 64, new Random(5)));             // the same seed, the same order (second pass)
        Assert.Equal(first, Order(stream, 100, new Random(5)));            // whatever the batch size
        var other = Order(stream, 64, new Random(6));
        Assert.Equal(Enumerable.Range(0, rows), other.Order());
        Assert.NotEqual(first, other);
        // The first rows of a pass come from all over the data (cache), or from as far as the buffer reaches: the 200th row out
        // of a 100-row buffer has been drawn among the first 300 rows read, not only the first 200.
        int reach = first.Take(200).Max();
        if (mode == "cache")
            Assert.True(reach > 600, $"The first 200 rows of a cached pass reach only row {reach}.");
        else
            Assert.InRange(reach, 200, 299);

        // A row-id selection (the validation split) keeps exactly its rows; no shuffle keeps the data's order.
        Func<DataViewRowId, bool> include = id => id.Low % 4 != 0;
        var selected = Order(stream, 64, new Random(5), include);
        Assert.Equal(Enumerable.Range(0, rows).Where(i => i % 4 != 0), selected.Order());
        Assert.Equal(Enumerable.Range(0, rows), Order(stream, 64, null));
        Assert.Equal(RowOrder.DataOrder, stream.LastOrder);
    }

    [Fact]
    public void ShuffledReadsSkipAndCountRowsWithNonFiniteFeatures()
    {
        var ml = new MLContext(seed: 1);
        var data = Indexed(ml, 500, i => i % 100 == 7 ? float.NaN : i == 250 ? float.PositiveInfinity : 0f);
        foreach (long limit in new long[] { 1 << 20, 0 })
        {
            var stream = new BatchStream(data, "Label", "Features", 2) { ShuffleCacheLimitBytes = limit, ShuffleBufferRows = 64 };
            for (int pass = 0; pass < 2; pass++)
            {
                var order = Order(stream, 32, new Random(pass));
                Assert.Equal(Enumerable.Range(0, 500).Where(i => i % 100 != 7 && i != 250), order.Order());
                Assert.Equal(6, stream.LastSkippedNonFinite);
                Assert.Equal(500, stream.LastRowsRead);
            }
            Order(stream, 32, null);
            Assert.Equal(6, stream.LastSkippedNonFinite);
        }
    }

    /// <summary>
    /// The case: a CSV sorted by label, read with <c>LoadFromTextFile</c> (which cannot shuffle), trained at batch 128.
    /// Mean test accuracy over several seeds is within 0.5 point of the same rows in shuffled order, while reading the sorted file
    /// in its own order (Shuffle = false) is clearly worse, so the comparison can fail.
    /// </summary>
    [Fact]
    public void ALabelSortedCsvTrainsAsWellAsTheSameRowsShuffled()
    {
        var rows = GaussianClasses.Generate(3000, 5, problemSeed: 3, rowSeed: 4);
        var testRows = GaussianClasses.Generate(2000, 5, problemSeed: 3, rowSeed: 5);
        var dir = Directory.CreateTempSubdirectory("mlnet-shuffle-");
        try
        {
            var order = new Random(7);
            string sorted = Path.Combine(dir.FullName, "sorted.csv"), shuffled = Path.Combine(dir.FullName, "shuffled.csv");
            GaussianClasses.WriteCsv(sorted, rows.OrderBy(r => r.Label));
            GaussianClasses.WriteCsv(shuffled, rows.OrderBy(_ => order.Next()));

            double Accuracy(string path, int seed, bool shuffle)
            {
                var ml = new MLContext(seed: seed);
                var train = GaussianClasses.LoadCsv(ml, path);
                Assert.False(train.CanShuffle);
                var pipeline = ml.Transforms.Conversion.MapValueToKey("Label")
                    .Append(ml.Compression().NeuralNetwork(new NeuralNetworkOptions
                    {
                        Architecture = NetworkArchitecture.Mlp(32), Epochs = 4, BatchSize = 128, LearningRate = 3e-3,
                        Device = TrainingDevice.Cpu, Shuffle = shuffle,
                    }));
                var model = pipeline.Fit(train);
                try
                {
                    var test = ml.Data.LoadFromEnumerable(testRows);
                    return ml.MulticlassClassification.Evaluate(model.Transform(test)).MicroAccuracy;
                }
                finally
                {
                    model.LastTransformer.Dispose();
                }
            }

            int[] seeds = [1, 2, 3, 4, 5];
            double fromSorted = seeds.Average(s => Accuracy(sorted, s, shuffle: true));
            double fromShuffled = seeds.Average(s => Accuracy(shuffled, s, shuffle: true));
            double inFileOrder = seeds.Average(s => Accuracy(sorted, s, shuffle: false));
            output.WriteLine($"Mean test accuracy over {seeds.Length} seeds: sorted CSV {fromSorted:P2}, shuffled CSV {fromShuffled:P2}, sorted CSV without shuffling {inFileOrder:P2}.");
            Assert.True(Math.Abs(fromSorted - fromShuffled) <= 0.005, $"Sorted {fromSorted:P2} vs shuffled {fromShuffled:P2}: more than 0.5 point apart.");
            Assert.True(inFileOrder < fromShuffled - 0.02, $"Reading the sorted file in order gave {inFileOrder:P2}, not clearly below shuffled {fromShuffled:P2}.");
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void TheTrainerReportsHowItOrderedTheRows()
    {
        var ml = new MLContext(seed: 1);
        var messages = new List<string>();
        ml.Log += (_, e) =>
        {
            lock (messages)
                messages.Add(e.Message);
        };
        var data = ml.Data.LoadFromEnumerable(GaussianClasses.Generate(600, 3, 1, 2));
        var pipeline = ml.Transforms.Conversion.MapValueToKey("Label");
        var keyed = pipeline.Fit(data).Transform(data);
        NeuralNetworkOptions Options(long cacheLimit) => new()
        {
            Architecture = NetworkArchitecture.Mlp(8), Epochs = 2, Device = TrainingDevice.Cpu, ShuffleCacheLimitBytes = cacheLimit, ShuffleBufferRows = 64,
        };
        using (var cached = ml.Compression().NeuralNetwork(Options(1 << 20)).Fit(keyed))
            Assert.All(cached.TrainingHistory, e => Assert.Equal(RowOrder.ShuffledInMemory, e.RowOrder));
        Assert.Contains(messages, m => m.Contains("cached in memory", StringComparison.Ordinal));
        using (var buffered = ml.Compression().NeuralNetwork(Options(1000)).Fit(keyed))
            Assert.All(buffered.TrainingHistory, e => Assert.Equal(RowOrder.ShuffleBuffer, e.RowOrder));
        Assert.Contains(messages, m => m.Contains("shuffle buffer of 64 rows", StringComparison.Ordinal));
        var inOrder = Options(1 << 20);
        inOrder.Shuffle = false;
        using (var ordered = ml.Compression().NeuralNetwork(inOrder).Fit(keyed))
            Assert.All(ordered.TrainingHistory, e => Assert.Equal(RowOrder.DataOrder, e.RowOrder));
    }
}
