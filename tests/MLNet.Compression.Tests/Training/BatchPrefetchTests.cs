using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Networks;
using MLNet.Compression.Training;
using Xunit;

namespace MLNet.Compression.Tests.Training;

/// <summary>
/// The background batch reader (<see cref="BatchStream.Prefetch"/>, on for training): the same batches in the same order, the
/// same skip counters, the reader's exceptions rethrown after the batches read before them, the cursor closed when the caller
/// stops early, and training weights bit-identical to reading on the training thread. Also the vectorized non-finite check
/// over rows wider than one SIMD vector.
/// </summary>
public sealed class BatchPrefetchTests
{
    private const int Width = 37; // two 16-float vectors (AVX-512) or four 8-float ones, and a scalar tail

    private sealed class WideRow
    {
        [KeyType(3)]
        public uint Label { get; set; }

        [VectorType(Width)]
        public float[] Features { get; set; } = [];
    }

    /// <summary>Row i has features i, i + 1/1000, ...; some rows hold one NaN or infinity at a position that moves over the row.</summary>
    private static IDataView Wide(MLContext ml, int rows, out int badRows)
    {
        int bad = 0;
        var list = Enumerable.Range(0, rows).Select(i =>
        {
            var f = Enumerable.Range(0, Width).Select(j => i + j / 1000f).ToArray();
            if (i % 23 == 5)
            {
                f[(i / 23) % Width] = (i / 23 % 3) switch { 0 => float.NaN, 1 => float.PositiveInfinity, _ => float.NegativeInfinity };
                bad++;
            }
            return new WideRow { Label = (uint)(i % 2) + 1, Features = f };
        }).ToList();
        badRows = bad;
        return ml.Data.LoadFromEnumerable(list);
    }

    private static List<(int Count, float[] Features, long[] Labels)> ReadAll(BatchStream stream, int batchSize, Random? rand)
    {
        var batches = new List<(int, float[], long[])>();
        foreach (var b in stream.Read(batchSize, rand, null))
            batches.Add((b.Count, b.Features.AsSpan(0, b.Count * Width).ToArray(), b.Labels.AsSpan(0, b.Count).ToArray()));
        return batches;
    }

    [Theory]
    [InlineData("cursor, data order")]
    [InlineData("cursor, shuffled")]
    [InlineData("cache")]
    [InlineData("buffer")]
    public void PrefetchedReadsGiveTheSameBatchesAndCounters(string mode)
    {
        var ml = new MLContext(seed: 1);
        const int rows = 1000;
        var data = Wide(ml, rows, out int badRows);
        Assert.True(badRows > 40);
        if (mode.StartsWith("cursor", StringComparison.Ordinal))
            data = ml.Data.Cache(data); // a view that can shuffle: rows come through the cursor
        long limit = mode == "buffer" ? 0 : 1 << 20;
        BatchStream Stream(bool prefetch) => new(data, "Label", "Features", Width) { ShuffleCacheLimitBytes = limit, ShuffleBufferRows = 100, Prefetch = prefetch };
        var plain = Stream(false);
        var prefetched = Stream(true);
        for (int pass = 0; pass < 2; pass++)
        {
            Random? Rand() => mode == "cursor, data order" ? null : new Random(7 + pass);
            var expected = ReadAll(plain, 64, Rand());
            var actual = ReadAll(prefetched, 64, Rand());
            Assert.Equal(expected.Count, actual.Count);
            for (int i = 0; i < expected.Count; i++)
            {
                Assert.Equal(expected[i].Count, actual[i].Count);
                Assert.Equal(expected[i].Features, actual[i].Features);
                Assert.Equal(expected[i].Labels, actual[i].Labels);
            }
            Assert.Equal(rows - badRows, actual.Sum(b => b.Count));
            Assert.Equal(badRows, prefetched.LastSkippedNonFinite); // the vectorized check finds NaN and ±infinity anywhere in the row
            Assert.Equal(rows, prefetched.LastRowsRead);
            Assert.Equal(plain.LastOrder, prefetched.LastOrder);
            // Every usable row once, none of the bad ones.
            var firstFeatures = actual.SelectMany(b => Enumerable.Range(0, b.Count).Select(r => (int)b.Features[r * Width])).Order();
            Assert.Equal(Enumerable.Range(0, rows).Where(i => i % 23 != 5), firstFeatures);
        }
    }

    [Fact]
    public void APrefetchedReadRethrowsTheReadersExceptionAfterTheBatchesBeforeIt()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.Cache(Wide(ml, 3000, out _));
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        int Batches(bool prefetch, out Exception? error)
        {
            var stream = new BatchStream(data, "Label", "Features", Width) { Cancellation = cancelled.Token, Prefetch = prefetch };
            int n = 0;
            error = null;
            try
            {
                foreach (var b in stream.Read(64, new Random(3), null))
                    n++;
            }
            catch (Exception e)
            {
                error = e;
            }
            return n;
        }
        int plain = Batches(false, out var plainError);
        int prefetched = Batches(true, out var prefetchedError);
        Assert.IsAssignableFrom<OperationCanceledException>(plainError); // the reader checks the token every 1,024 rows
        Assert.IsAssignableFrom<OperationCanceledException>(prefetchedError);
        Assert.True(plain > 0);
        Assert.Equal(plain, prefetched);
    }

    [Fact]
    public void StoppingAPrefetchedReadEarlyClosesItsCursor()
    {
        var ml = new MLContext(seed: 1);
        var data = new CursorCounting(ml.Data.Cache(Wide(ml, 2000, out _)));
        var stream = new BatchStream(data, "Label", "Features", Width) { Prefetch = true };
        for (int attempt = 0; attempt < 3; attempt++)
        {
            int n = 0;
            foreach (var b in stream.Read(16, new Random(attempt), null))
                if (++n == 2)
                    break;
            Assert.Equal(0, data.Open); // the reader thread was stopped and its cursor disposed before the loop returned
        }
        Assert.Equal(3, data.Opened);
        Assert.Throws<InvalidOperationException>(() =>
        {
            foreach (var b in stream.Read(16, null, null))
                throw new InvalidOperationException("the caller fails mid-pass");
        });
        Assert.Equal(0, data.Open);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TrainingWithTheBackgroundReaderGivesBitIdenticalWeights(bool viewCanShuffle)
    {
        var ml = new MLContext(seed: 1);
        var rows = GaussianClasses.Generate(1500, 3, problemSeed: 4, rowSeed: 5);
        var raw = ml.Data.LoadFromEnumerable(rows);
        var data = ml.Transforms.Conversion.MapValueToKey("Label").Fit(raw).Transform(raw);
        if (viewCanShuffle)
            data = ml.Data.Cache(data);
        Assert.Equal(viewCanShuffle, data.CanShuffle);
        var options = new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp(16), Epochs = 2, BatchSize = 32, Seed = 9, Device = TrainingDevice.Cpu, ValidationFraction = 0.2,
        };
        NetworkModel Train(bool prefetch)
        {
            var model = NetworkModel.Create(NetworkArchitecture.Mlp(16).ForFeatures(data.Schema, "Features"), 3);
            NeuralNetworkTrainer.InitializeWeights(model, 9);
            var session = new TrainingSession(ml, options);
            using (BenchmarkHooks.Set(prefetchBatches: prefetch))
                return session.Run(data, model, 9).Model;
        }
        var plain = Train(false);
        var prefetched = Train(true);
        var a = plain.ParameterizedLayers.ToList();
        var b = prefetched.ParameterizedLayers.ToList();
        Assert.Equal(a.Count, b.Count);
        for (int i = 0; i < a.Count; i++)
        {
            Assert.Equal(a[i].Weight, b[i].Weight); // exact float equality, element by element
            Assert.Equal(a[i].Bias, b[i].Bias);
        }
        Assert.NotEqual(0f, a[0].Weight.Sum(v => MathF.Abs(v)));
    }

    [Fact]
    public void BatchTensorsHoldExactlyTheBatchRowsWithoutCopying()
    {
        var ml = new MLContext(seed: 1);
        var stream = new BatchStream(ml.Data.Cache(Wide(ml, 100, out int badRows)), "Label", "Features", Width);
        var counts = new List<int>();
        foreach (var batch in stream.Read(40, null, null))
        {
            using var scope = TorchSharp.torch.NewDisposeScope();
            var x = batch.FeaturesTensor();
            var y = batch.LabelsTensor();
            Assert.Equal(new long[] { batch.Count, Width }, x.shape);
            Assert.Equal(new long[] { batch.Count }, y.shape);
            Assert.Equal(TorchSharp.torch.ScalarType.Float32, x.dtype);
            Assert.Equal(TorchSharp.torch.ScalarType.Int64, y.dtype);
            // The same values as the old copy (torch.tensor of the whole array, narrowed to Count rows)...
            var copied = TorchSharp.torch.tensor(batch.Features, [batch.Capacity, Width]).narrow(0, 0, batch.Count);
            Assert.True(x.eq(copied).all().item<bool>());
            Assert.Equal(batch.Labels.Take(batch.Count), y.data<long>().ToArray());
            // ...in the batch's own memory: a write to the array shows in the tensor.
            batch.Features[Width + 3] = -42f;
            Assert.Equal(-42f, x[1, 3].item<float>());
            counts.Add(batch.Count);
        }
        Assert.Equal(new[] { 40, 40, 100 - badRows - 80 }, counts); // the last, partial batch has Count rows, not Capacity
    }

    /// <summary>A view that counts the cursors it opened and how many are still open.</summary>
    private sealed class CursorCounting(IDataView inner) : IDataView
    {
        private int open;

        public int Open => Volatile.Read(ref open);

        public int Opened { get; private set; }

        public bool CanShuffle => inner.CanShuffle;

        public DataViewSchema Schema => inner.Schema;

        public long? GetRowCount() => inner.GetRowCount();

        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
        {
            Opened++;
            Interlocked.Increment(ref open);
            return new Counted(inner.GetRowCursor(columnsNeeded, rand), this);
        }

        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
            [GetRowCursor(columnsNeeded, rand)];

        private sealed class Counted(DataViewRowCursor cursor, CursorCounting owner) : DataViewRowCursor
        {
            private bool disposed;

            public override DataViewSchema Schema => cursor.Schema;

            public override long Position => cursor.Position;

            public override long Batch => cursor.Batch;

            public override bool MoveNext() => cursor.MoveNext();

            public override bool IsColumnActive(DataViewSchema.Column column) => cursor.IsColumnActive(column);

            public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column) => cursor.GetGetter<TValue>(column);

            public override ValueGetter<DataViewRowId> GetIdGetter() => cursor.GetIdGetter();

            protected override void Dispose(bool disposing)
            {
                if (disposing && !disposed)
                {
                    disposed = true;
                    cursor.Dispose();
                    Interlocked.Decrement(ref owner.open);
                }
                base.Dispose(disposing);
            }
        }
    }
}
