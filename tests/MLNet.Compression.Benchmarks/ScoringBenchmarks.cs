using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Engines;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Onnx;
using MLNet.Compression.Data;
using MLNet.Compression.Networks;

namespace MLNet.Compression.Benchmarks;

/// <summary>
/// Scoring the 10,000 MNIST test rows with a LeNet-300-100 trained for one epoch: the library's batched
/// <c>model.Transform</c> versus ML.NET's <c>ApplyOnnxModel</c> (one ONNX Runtime call per row) on the same ONNX bytes.
/// Both scoring sessions are created in the setup; each invocation is one full cursor pass. Target: ours ≥ 5× the rows/s.
/// </summary>
[Config(typeof(Config))]
public class ScoringBenchmarks
{
    private const int Rows = 10_000;

    private sealed class Config : ManualConfig
    {
        public Config() => AddJob(BenchmarkSettings.ShortJob(RunStrategy.Throughput, warmup: 2, iterations: 5));
    }

    private MLContext ml = null!;
    private IDataView test = null!;
    private NeuralNetworkTransformer model = null!;
    private OnnxTransformer onnx = null!;

    [GlobalSetup]
    public void Setup()
    {
        ml = new MLContext(seed: 1);
        var train = BenchmarkSettings.LoadMnist(ml, MnistSplit.Train);
        test = BenchmarkSettings.LoadMnist(ml, MnistSplit.Test);
        model = ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp(300, 100),
            Epochs = 1,
            BatchSize = 128,
            Device = TrainingDevice.Cpu,
            Seed = 1,
        }).Fit(train);
        onnx = ml.Transforms.ApplyOnnxModel(["Score"], ["Features"], new MemoryStream(model.GetOnnxModel())).Fit(test);
        // Create the library's scoring session now, as the ApplyOnnxModel session is created by Fit above.
        ScoreWithTransform();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        onnx.Dispose();
        model.Dispose();
    }

    /// <summary>The library: <c>model.Transform(test)</c> read to the end, Score and PredictedLabel getters touched.</summary>
    [Benchmark, Rows(Rows)]
    public float ScoreWithTransform()
    {
        var scored = model.Transform(test);
        return ScoredRows.Read(scored, Rows);
    }

    /// <summary>ML.NET's built-in OnnxTransformer (ApplyOnnxModel) on the same ONNX bytes, Score getter touched.</summary>
    [Benchmark(Baseline = true), Rows(Rows)]
    public float ScoreWithApplyOnnxModel()
    {
        var scored = onnx.Transform(test);
        var score = scored.Schema["Score"];
        using var cursor = scored.GetRowCursor([score]);
        var getScore = cursor.GetGetter<VBuffer<float>>(score);
        VBuffer<float> s = default;
        float sum = 0;
        long rows = 0;
        while (cursor.MoveNext())
        {
            getScore(ref s);
            sum += s.GetValues()[0];
            rows++;
        }
        return rows == Rows ? sum : throw new InvalidOperationException($"Scored {rows} rows.");
    }
}
