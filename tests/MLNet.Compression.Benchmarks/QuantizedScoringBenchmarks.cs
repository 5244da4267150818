using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Engines;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Data;
using MLNet.Compression.Networks;
using MLNet.Compression.Quantization;

namespace MLNet.Compression.Benchmarks;

/// <summary>
/// Scoring the 10,000 MNIST test rows through the same batched path (<c>model.Transform</c>, Score and PredictedLabel
/// read) with LeNet-300-100 (one epoch) as float32 and after post-training quantization:
/// <c>ml.Compression().Quantize(model, new QuantizationOptions { Mode = ... }).Fit(train)</c> for int8 dynamic, int8
/// static (MinMax calibration on 1,000 training rows) and int4 weight-only (blocks of 128). Every model and its ONNX
/// Runtime session are made in the setup, so an invocation is one full cursor pass.
/// </summary>
[Config(typeof(Config))]
public class QuantizedScoringBenchmarks
{
    private const int Rows = 10_000;

    private sealed class Config : ManualConfig
    {
        public Config() => AddJob(BenchmarkSettings.ShortJob(RunStrategy.Throughput, warmup: 2, iterations: 5));
    }

    private IDataView test = null!;
    private NeuralNetworkTransformer float32 = null!;
    private NeuralNetworkTransformer int8Dynamic = null!;
    private NeuralNetworkTransformer int8Static = null!;
    private NeuralNetworkTransformer int4 = null!;

    [GlobalSetup]
    public void Setup()
    {
        var ml = new MLContext(seed: 1);
        var train = BenchmarkSettings.LoadMnist(ml, MnistSplit.Train);
        test = BenchmarkSettings.LoadMnist(ml, MnistSplit.Test);
        float32 = ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp(300, 100),
            Epochs = 1,
            BatchSize = 128,
            Device = TrainingDevice.Cpu,
            Seed = 1,
        }).Fit(train);
        int8Dynamic = Quantize(ml, train, QuantizationMode.Int8Dynamic);
        int8Static = Quantize(ml, train, QuantizationMode.Int8Static);
        int4 = Quantize(ml, train, QuantizationMode.Int4WeightOnly);

        // Create every scoring session now, and print what is being compared.
        foreach (var (name, model) in new[] { ("float32", float32), ("int8-dynamic", int8Dynamic), ("int8-static", int8Static), ("int4", int4) })
        {
            Score(model);
            var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
            Console.WriteLine($"// {name}: accuracy {metrics.MicroAccuracy:F4}, ONNX {model.Memory.ArtifactBytes:N0} B, resident weights {model.Memory.ResidentWeightBytes:N0} B");
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        int4.Dispose();
        int8Static.Dispose();
        int8Dynamic.Dispose();
        float32.Dispose();
    }

    [Benchmark(Baseline = true), Rows(Rows)]
    public float Float32() => Score(float32);

    [Benchmark, Rows(Rows)]
    public float Int8Dynamic() => Score(int8Dynamic);

    [Benchmark, Rows(Rows)]
    public float Int8Static() => Score(int8Static);

    [Benchmark, Rows(Rows)]
    public float Int4WeightOnly() => Score(int4);

    private NeuralNetworkTransformer Quantize(MLContext ml, IDataView train, QuantizationMode mode)
        => ml.Compression().Quantize(float32, new QuantizationOptions { Mode = mode }).Fit(train);

    private float Score(NeuralNetworkTransformer model)
    {
        var scored = model.Transform(test);
        return ScoredRows.Read(scored, Rows);
    }
}
