using System.Diagnostics;
using Microsoft.ML;
using MLNet.Compression.Data;
using MLNet.Compression.Native;
using MLNet.Compression.Networks;

namespace MLNet.Compression.Benchmarks;

/// <summary>
/// Benchmark mode <c>--concurrent-training</c> (not a BenchmarkDotNet class: it needs two trainings running at once): for each
/// intra-op thread setting, one LeNet-300-100 training alone versus two at once on two threads of this process, on MNIST
/// training rows (batch 128, Adam, CPU). Prints the training rows/s of one alone, the summed rows/s of the two together and their
/// ratio (target: two together ≥ 0.8 × one alone, i.e. sharing the cores costs at most 20 % of the throughput).
/// Alone is measured before and after the pair, back to back, and averaged, because other work on the machine drifts.
/// </summary>
public static class ConcurrentTrainingBenchmark
{
    /// <summary>Runs the mode. Options: <c>--rows N</c> (default 20,000), <c>--threads 1,2,default</c> (default: 1, 2 and libtorch's default).</summary>
    public static void Run(string[] args)
    {
        TorchNative.EnsureLoaded();
        int libtorchDefault = TorchSharp.torch.get_num_threads();
        int rows = int.Parse(Value(args, "--rows") ?? "20000", System.Globalization.CultureInfo.InvariantCulture);
        var settings = (Value(args, "--threads") ?? "1,2,default").Split(',')
            .Select(s => s == "default" ? libtorchDefault : int.Parse(s, System.Globalization.CultureInfo.InvariantCulture)).Distinct().ToArray();
        Console.WriteLine($"Concurrent training: LeNet-300-100, {rows:N0} MNIST rows, 2 epochs, batch 128, CPU. {Environment.ProcessorCount} logical cores visible, " +
                          $"libtorch default intra-op threads {libtorchDefault}. Load average {BenchmarkSettings.LoadAverage()}.");
        var ml = new MLContext(seed: 1);
        var train = ml.Data.TakeRows(BenchmarkSettings.LoadMnist(ml, MnistSplit.Train), rows);
        var cached = ml.Data.Cache(train); // both trainings read the same rows from memory, so the file system is not measured
        Train(ml, cached, 1, seed: 0); // warm-up: JIT, libtorch, the cache

        Console.WriteLine("| threads | one alone (rows/s) | two together, sum (rows/s) | together / alone |");
        Console.WriteLine("| ---: | ---: | ---: | ---: |");
        foreach (var threads in settings)
        {
            double before = Train(ml, cached, threads, seed: 1);
            var pair = new double[2];
            var start = new Barrier(2);
            var workers = Enumerable.Range(0, 2).Select(i => new Thread(() =>
            {
                start.SignalAndWait();
                pair[i] = Train(new MLContext(seed: 10 + i), cached, threads, seed: 10 + i);
            })).ToArray();
            foreach (var w in workers)
                w.Start();
            foreach (var w in workers)
                w.Join();
            double after = Train(ml, cached, threads, seed: 2);
            double alone = (before + after) / 2, together = pair.Sum();
            Console.WriteLine($"| {threads}{(threads == libtorchDefault ? " (libtorch default)" : string.Empty)} | {alone:N0} ({before:N0}, {after:N0}) | " +
                              $"{together:N0} ({pair[0]:N0} + {pair[1]:N0}) | {together / alone:F2} |");
        }
        Console.WriteLine($"Load average after: {BenchmarkSettings.LoadAverage()}");
    }

    /// <summary>Trains two epochs and returns the training rows per second (epoch time only, ONNX export excluded).</summary>
    private static double Train(MLContext ml, IDataView data, int threads, int seed)
    {
        var options = new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp(300, 100), Epochs = 2, BatchSize = 128, Device = TrainingDevice.Cpu, Seed = seed, Threads = threads,
        };
        var sw = Stopwatch.StartNew();
        using var model = ml.Compression().NeuralNetwork(options).Fit(data);
        return model.TrainingHistory.Sum(e => e.Rows) / model.TrainingHistory.Sum(e => e.Seconds);
    }

    private static string? Value(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
