using System.Globalization;
using Microsoft.ML;
using MLNet.Compression.Data;
using MLNet.Compression.Native;
using MLNet.Compression.Networks;

namespace MLNet.Compression.Benchmarks;

/// <summary>
/// Benchmark mode <c>--thread-scaling</c> (not a BenchmarkDotNet class): one training at a time, LeNet-5 (or LeNet-300-100) on cached
/// MNIST training rows, one epoch per run (batch 128, Adam, CPU), alternating the intra-op thread settings round by round
/// (1, 2, 1, 2, ...) so that drifting load on the machine hits every setting alike. Prints each run's training rows/s and the
/// median per setting: the basis for the main job's <c>Threads = Environment.ProcessorCount</c> and its stage-time estimates.
/// </summary>
public static class ThreadScalingBenchmark
{
    /// <summary>
    /// Runs the mode. Options: <c>--arch lenet5|mlp</c> (default lenet5), <c>--rows N</c> (default 10,000), <c>--threads 1,2</c>
    /// (default 1 and the logical core count), <c>--rounds R</c> (default 3).
    /// </summary>
    /// <param name="args">The command line.</param>
    public static void Run(string[] args)
    {
        TorchNative.EnsureLoaded();
        string arch = Value(args, "--arch") ?? "lenet5";
        var architecture = arch switch
        {
            "lenet5" => NetworkArchitecture.LeNet5(),
            "mlp" => NetworkArchitecture.Mlp(300, 100),
            _ => throw new ArgumentException($"--arch must be lenet5 or mlp; got '{arch}'.", nameof(args)),
        };
        int rows = int.Parse(Value(args, "--rows") ?? "10000", CultureInfo.InvariantCulture);
        int rounds = int.Parse(Value(args, "--rounds") ?? "3", CultureInfo.InvariantCulture);
        var settings = (Value(args, "--threads") ?? $"1,{Environment.ProcessorCount}").Split(',')
            .Select(s => int.Parse(s, CultureInfo.InvariantCulture)).Distinct().ToArray();
        Console.WriteLine($"Thread scaling: {architecture.Name}, {rows:N0} cached MNIST rows, 1 epoch per run, batch 128, CPU, one training at a time; " +
                          $"{Environment.ProcessorCount} logical cores; threads {string.Join(", ", settings)} alternated over {rounds} round(s). " +
                          $"Load average {BenchmarkSettings.LoadAverage()}.");
        var ml = new MLContext(seed: 1);
        var cached = ml.Data.Cache(ml.Data.TakeRows(BenchmarkSettings.LoadMnist(ml, MnistSplit.Train), rows));
        Train(ml, cached, architecture, settings[0], rows: 1); // warm-up: JIT, libtorch, the cache
        var measured = settings.ToDictionary(t => t, _ => new List<double>());
        for (int round = 1; round <= rounds; round++)
        {
            foreach (int threads in round % 2 == 1 ? settings : settings.Reverse())
            {
                double rate = Train(ml, cached, architecture, threads, rows);
                measured[threads].Add(rate);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"round {round}: {threads} thread(s): {rate:N0} rows/s"));
            }
        }
        Console.WriteLine("| threads | median rows/s | runs | vs first setting |");
        Console.WriteLine("| ---: | ---: | --- | ---: |");
        double first = Median(measured[settings[0]]);
        foreach (int threads in settings)
        {
            double median = Median(measured[threads]);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {threads} | {median:N0} | {string.Join(" / ", measured[threads].Select(r => r.ToString("N0", CultureInfo.InvariantCulture)))} | {median / first:F2}x |"));
        }
        Console.WriteLine($"Load average after: {BenchmarkSettings.LoadAverage()}");
    }

    /// <summary>Trains one epoch and returns the training rows per second (epoch time only, ONNX export excluded).</summary>
    private static double Train(MLContext ml, IDataView data, NetworkArchitecture architecture, int threads, int rows)
    {
        var options = new NeuralNetworkOptions
        {
            Architecture = architecture, Epochs = 1, BatchSize = 128, Device = TrainingDevice.Cpu, Seed = 1, Threads = threads,
        };
        using var model = ml.Compression().NeuralNetwork(options).Fit(rows < 128 ? ml.Data.TakeRows(data, 256) : data);
        return model.TrainingHistory.Sum(e => e.Rows) / model.TrainingHistory.Sum(e => e.Seconds);
    }

    private static double Median(List<double> values) => values.Order().ElementAt(values.Count / 2);

    private static string? Value(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
