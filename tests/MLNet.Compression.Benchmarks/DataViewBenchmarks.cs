using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Engines;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Data;

namespace MLNet.Compression.Benchmarks;

/// <summary>
/// A full cursor pass over the 60,000 MNIST training rows (Features getter on every row): the lazy IdxDataView
/// sequential and shuffled, versus the same rows in memory (<c>LoadFromEnumerable</c>, and <c>ml.Data.Cache</c> over the
/// IdxDataView, filled in the setup).
/// </summary>
[Config(typeof(Config))]
public class DataViewBenchmarks
{
    private const int Rows = 60_000;

    private sealed class Config : ManualConfig
    {
        public Config() => AddJob(BenchmarkSettings.ShortJob(RunStrategy.Throughput, warmup: 3, iterations: 10));
    }

    /// <summary>A row for LoadFromEnumerable with the same schema as the IdxDataView.</summary>
    public sealed class MnistRow
    {
        [KeyType(10)]
        public uint Label { get; set; }

        [VectorType(784)]
        public float[] Features { get; set; } = [];
    }

    private IDataView idx = null!;
    private IDataView enumerable = null!;
    private IDataView cached = null!;

    [GlobalSetup]
    public void Setup()
    {
        var ml = new MLContext(seed: 1);
        idx = BenchmarkSettings.LoadMnist(ml, MnistSplit.Train);
        var rows = new List<MnistRow>(Rows);
        using (var cursor = idx.GetRowCursor(idx.Schema))
        {
            var getFeatures = cursor.GetGetter<VBuffer<float>>(idx.Schema["Features"]);
            var getLabel = cursor.GetGetter<uint>(idx.Schema["Label"]);
            VBuffer<float> f = default;
            uint l = 0;
            while (cursor.MoveNext())
            {
                getFeatures(ref f);
                getLabel(ref l);
                rows.Add(new MnistRow { Label = l, Features = f.DenseValues().ToArray() });
            }
        }
        enumerable = ml.Data.LoadFromEnumerable(rows);
        cached = ml.Data.Cache(idx);
        Pass(cached, null); // fill the cache
    }

    [Benchmark(Baseline = true), Rows(Rows)]
    public double LoadFromEnumerableSequential() => Pass(enumerable, null);

    [Benchmark, Rows(Rows)]
    public double CacheSequential() => Pass(cached, null);

    [Benchmark, Rows(Rows)]
    public double CacheShuffled() => Pass(cached, new Random(1));

    [Benchmark, Rows(Rows)]
    public double IdxDataViewSequential() => Pass(idx, null);

    [Benchmark, Rows(Rows)]
    public double IdxDataViewShuffled() => Pass(idx, new Random(1));

    private static double Pass(IDataView view, Random? rand)
    {
        var column = view.Schema["Features"];
        using var cursor = view.GetRowCursor([column], rand);
        var getter = cursor.GetGetter<VBuffer<float>>(column);
        VBuffer<float> buffer = default;
        double sum = 0;
        long rows = 0;
        while (cursor.MoveNext())
        {
            getter(ref buffer);
            sum += buffer.GetValues().Length;
            rows++;
        }
        return rows == Rows ? sum : throw new InvalidOperationException($"Read {rows} rows.");
    }
}
