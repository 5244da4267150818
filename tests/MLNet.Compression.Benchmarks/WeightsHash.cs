using System.Security.Cryptography;
using Microsoft.ML;
using MLNet.Compression.Data;
using MLNet.Compression.Networks;

namespace MLNet.Compression.Benchmarks;

/// <summary>
/// Benchmark mode <c>--weights-hash</c>: trains LeNet-300-100 for one epoch on the 60,000 MNIST training rows (batch 128, Adam,
/// seed 1, CPU) and prints a SHA-256 of every weight and bias as bytes, so two builds (before and after a change to the training
/// loop) can be compared for bit-identical results. Also prints the Fit and epoch seconds (of a fresh process: JIT included).
/// </summary>
public static class WeightsHash
{
    /// <summary>Runs the mode.</summary>
    public static int Run()
    {
        var ml = new MLContext(seed: 1);
        var train = BenchmarkSettings.LoadMnist(ml, MnistSplit.Train);
        var options = new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp(300, 100), Epochs = 1, BatchSize = 128, LearningRate = 1e-3, Optimizer = OptimizerKind.Adam,
            Device = TrainingDevice.Cpu, Seed = 1,
        };
        var watch = System.Diagnostics.Stopwatch.StartNew();
        using var model = ml.Compression().NeuralNetwork(options).Fit(train);
        double fitSeconds = watch.Elapsed.TotalSeconds;
        using var sha = SHA256.Create();
        foreach (var layer in model.Network.ParameterizedLayers)
        {
            var bytes = new byte[(layer.Weight.Length + layer.Bias.Length) * sizeof(float)];
            Buffer.BlockCopy(layer.Weight, 0, bytes, 0, layer.Weight.Length * sizeof(float));
            Buffer.BlockCopy(layer.Bias, 0, bytes, layer.Weight.Length * sizeof(float), layer.Bias.Length * sizeof(float));
            sha.TransformBlock(bytes, 0, bytes.Length, null, 0);
        }
        sha.TransformFinalBlock([], 0, 0);
        var h = model.TrainingHistory[0];
        Console.WriteLine($"weights SHA-256 {Convert.ToHexString(sha.Hash!)}; epoch loss {h.Loss:R}, accuracy {h.Accuracy:R}, {h.Rows} rows; " +
                          $"Fit {fitSeconds:F3} s, epoch {h.Seconds:F3} s (first Fit of the process: JIT and libtorch start included in Fit)");
        return 0;
    }
}
