using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using MLNet.Compression.Data;
using MLNet.Compression.Incremental;
using MLNet.Compression.Native;
using MLNet.Compression.Networks;
using MLNet.Compression.Training;
using static TorchSharp.torch;

namespace MLNet.Compression.Benchmarks;

/// <summary>
/// Benchmark mode <c>--ewc-fisher</c> (not a BenchmarkDotNet run): EWC's diagonal Fisher information on MNIST test rows,
/// one backward pass per row (<see cref="EwcState.EstimatePerRow"/>) against the batched form
/// (<see cref="EwcState.EstimateBatched"/>, batches of 256), interleaved round by round in one process so that load from
/// other work falls on both alike; LeNet-5 and the depthwise-separable CNN with TorchSharp's seeded initial weights, CPU,
/// one intra-op thread. Prints the median seconds of each and the largest relative difference of their values (of a value,
/// against the larger of it and a thousandth of its tensor's largest value; and of a tensor, in L1). The forward pass of a
/// batch rounds differently from one row's, which flips a few near-zero ReLU or near-tied max-pool decisions: with
/// <c>--batch 1</c> the two agree to about 1e-6.
/// </summary>
public static class EwcFisherBenchmark
{
    /// <summary>
    /// Runs the mode. Options: <c>--rows N</c> (default 1000), <c>--rounds N</c> (default 3, after one warm-up round),
    /// <c>--conv-math</c> (only <see cref="ConvMath"/>), <c>--head multiclass|binary|regression</c> (default multiclass), <c>--batch N</c> (rows per batch of the batched form,
    /// default 256; 1 runs the batched math on the same one-row forward as the per-row pass), <c>--arch lenet5|depthwise</c> (default both).
    /// </summary>
    public static int Run(string[] args)
    {
        if (args.Contains("--conv-math", StringComparer.Ordinal))
            return ConvMath(Option(args, "--rounds", 3));
        int rows = Option(args, "--rows", 1000);
        int rounds = Option(args, "--rounds", 3);
        int batch = Option(args, "--batch", 256);
        int archIndex = Array.IndexOf(args, "--arch");
        string? only = archIndex >= 0 && archIndex + 1 < args.Length ? args[archIndex + 1].ToLowerInvariant() : null;
        int h = Array.IndexOf(args, "--head");
        var head = h >= 0 && h + 1 < args.Length ? Enum.Parse<Networks.Heads.OutputHeadKind>(args[h + 1], ignoreCase: true) : Networks.Heads.OutputHeadKind.Multiclass;
        TorchNative.EnsureLoaded();
        set_num_threads(1);
        var ml = new MLContext(seed: 1);
        var data = ml.Data.Cache(ml.Data.TakeRows(BenchmarkSettings.LoadMnist(ml, MnistSplit.Test), rows));
        var column = data.Schema["Features"];
        Console.WriteLine($"EWC Fisher, {head} head: {rows} MNIST rows, batches of {batch}, CPU, 1 intra-op thread, {rounds} rounds after a warm-up. " +
                          $"Load average before: {BenchmarkSettings.LoadAverage()} ({Environment.ProcessorCount} cores).");
        Console.WriteLine("| network | per row: median s | batched: median s | speed-up | largest relative difference (value) | largest relative difference (tensor, L1) |");
        Console.WriteLine("| --- | ---: | ---: | ---: | ---: | ---: |");
        foreach (var architecture in new[] { NetworkArchitecture.LeNet5(), NetworkArchitecture.DepthwiseSeparable() })
        {
            if (only is not null && !architecture.Name.StartsWith(only, StringComparison.OrdinalIgnoreCase)
                && !(only == "lenet5" && architecture.Name == "LeNet-5"))
                continue;
            var model = NetworkModel.Create(architecture, head == Networks.Heads.OutputHeadKind.Regression ? 1 : head == Networks.Heads.OutputHeadKind.Binary ? 2 : 10, head);
            random.manual_seed(7);
            using (var net = new TorchNetwork(model))
                net.StoreWeights(model);
            var perRow = new List<double>();
            var batched = new List<double>();
            EwcState? a = null, b = null;
            for (int round = 0; round <= rounds; round++)
            {
                var sw = Stopwatch.StartNew();
                a = EwcState.EstimatePerRow(model, data, column, rows, 3);
                if (round > 0)
                    perRow.Add(sw.Elapsed.TotalSeconds);
                sw.Restart();
                b = EwcState.EstimateBatched(model, data, column, rows, 3, null, out var unsupported, batch)
                    ?? throw new InvalidOperationException(unsupported);
                if (round > 0)
                    batched.Add(sw.Elapsed.TotalSeconds);
            }
            double worst = 0, worstL1 = 0;
            for (int i = 0; i < a!.Fisher.Length; i++)
            {
                double scale = a.Fisher[i].Max();
                worstL1 = Math.Max(worstL1, a.Fisher[i].Zip(b!.Fisher[i]).Sum(p => Math.Abs((double)p.First - p.Second)) / a.Fisher[i].Sum(v => (double)v));
                for (int j = 0; j < a.Fisher[i].Length; j++)
                    worst = Math.Max(worst, Math.Abs(a.Fisher[i][j] - b!.Fisher[i][j]) / Math.Max(Math.Abs(a.Fisher[i][j]), 1e-3 * scale));
            }
            double p = Median(perRow), q = Median(batched);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {architecture.Name} | {p:F2} | {q:F2} | {p / q:F1}x | {worst:E1} | {worstL1:E1} |"));
        }
        Console.WriteLine($"Load average after: {BenchmarkSettings.LoadAverage()}");
        return 0;
    }

    /// <summary>
    /// <c>--conv-math</c>: the per-row squared weight gradients of LeNet-5's second convolution (20 → 50 channels, 5×5, on
    /// 12×12 inputs) for one batch of 256 random rows, as <see cref="ConvModelLayer.SquaredGradientSums"/> computes them
    /// (im2col + batched matrix product) against a convolution with the batch as groups (input [1, N·C, H, W], the output
    /// gradients as N·C·O filters), interleaved; checks the two agree.
    /// </summary>
    private static int ConvMath(int rounds)
    {
        TorchNative.EnsureLoaded();
        set_num_threads(1);
        const int n = 256, c = 20, o = 50;
        var conv = NetworkModel.Create(NetworkArchitecture.LeNet5(), 10).ParameterizedLayers.OfType<ConvModelLayer>().ElementAt(1);
        random.manual_seed(1);
        using var x = randn(n, c, 12, 12);
        using var g = randn(n, o, 8, 8);
        var unfold = new List<double>();
        var groups = new List<double>();
        double difference = 0;
        for (int round = 0; round <= rounds; round++)
        {
            using var scope = NewDisposeScope();
            var sw = Stopwatch.StartNew();
            var a = conv.SquaredGradientSums(x, g)!.Value.Weight;
            double ta = sw.Elapsed.TotalSeconds;
            sw.Restart();
            var filters = g.reshape(n, 1, o, 8, 8).expand(n, c, o, 8, 8).reshape(n * c * o, 1, 8, 8);
            var perRow = nn.functional.conv2d(x.reshape(1, n * c, 12, 12), filters, groups: n * c); // [1, N·C·O, 5, 5]
            var b = perRow.view(n, c, o, 25).pow(2).sum(0L).transpose(0, 1).reshape(o, c, 5, 5);
            double tb = sw.Elapsed.TotalSeconds;
            if (round > 0)
            {
                unfold.Add(ta);
                groups.Add(tb);
            }
            difference = a.sub(b).abs().max().item<float>() / (double)a.abs().max().item<float>();
        }
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"LeNet-5 conv2, 256 rows, 1 thread: im2col + matmul {Median(unfold) * 1000:F1} ms, conv with the batch as groups {Median(groups) * 1000:F1} ms (median of {rounds}); largest difference {difference:E1} of the largest value"));
        return 0;
    }

    private static int Option(string[] args, string name, int fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
    }

    private static double Median(List<double> values)
    {
        var s = values.OrderBy(v => v).ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }
}
