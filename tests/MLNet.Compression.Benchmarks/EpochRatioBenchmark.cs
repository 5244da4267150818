using System.Diagnostics;
using MLNet.Compression.Training;

namespace MLNet.Compression.Benchmarks;

/// <summary>
/// Benchmark mode <c>--epoch-ratio</c> (not a BenchmarkDotNet run): the methods of <see cref="TrainingEpochBenchmarks"/>
/// called in one process, interleaved round by round (hand-written loop, trainer, trainer without the background batch reader, trainer as before, data passes), so that load from
/// other work on the machine falls on all of them alike. Prints each one's median seconds per epoch and the ratios to the
/// hand-written loop (target for the trainer: ≤ 1.1).
/// </summary>
public static class EpochRatioBenchmark
{
    /// <summary>Runs the mode. Option: <c>--rounds N</c> (default 7; one unmeasured warm-up round comes first).</summary>
    public static int Run(string[] args)
    {
        int i = Array.IndexOf(args, "--rounds");
        int rounds = i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture) : 7;
        var bench = new TrainingEpochBenchmarks();
        var epochOnly = new List<double>(); // the trainer's own epoch seconds (TrainingHistory), per Fit
        bench.Setup();
        var cases = new (string Name, Func<object> Run)[]
        {
            ("hand-written loop, preloaded tensors (baseline)", () => bench.HandWrittenPreloaded()),
            ("NeuralNetworkTrainer.Fit, IdxDataView (ONNX export included)", () => { var r = bench.TrainerFit(); epochOnly.Add(bench.LastTrainerEpochSeconds); return r; }),
            ("NeuralNetworkTrainer.Fit, batches read on the training thread (BenchmarkHooks.PrefetchBatches false)", () => Switched(bench.TrainerFit, prefetch: false, share: true)),
            ("NeuralNetworkTrainer.Fit as before: read on the training thread, torch.tensor clones per batch", () => Switched(bench.TrainerFit, prefetch: false, share: false)),
            ("data only: BatchStream pass + batch tensors sharing the arrays (now), no training", () => bench.DataPass(cloneArrays: false)),
            ("data only: BatchStream pass + torch.tensor(float[]) clones (before), no training", () => bench.DataPass(cloneArrays: true)),
        };
        var times = cases.Select(_ => new List<double>()).ToArray();
        var cpu = cases.Select(_ => new List<double>()).ToArray(); // process CPU seconds (all threads): the work, less sensitive to load
        var gen2 = new int[cases.Length]; // gen-2 collections during the measured rounds
        Console.WriteLine($"Epoch ratio: LeNet-300-100, 60,000 MNIST rows, batch 128, Adam, CPU, {TrainingEpochBenchmarks.Threads} intra-op thread(s) for every case; " +
                          $"{rounds} rounds after a warm-up. Load average before: {BenchmarkSettings.LoadAverage()} ({Environment.ProcessorCount} cores).");
        for (int round = 0; round <= rounds; round++)
        {
            for (int c = 0; c < cases.Length; c++)
            {
                var process = Process.GetCurrentProcess();
                var cpuBefore = process.TotalProcessorTime;
                int gen2Before = GC.CollectionCount(2);
                var sw = Stopwatch.StartNew();
                cases[c].Run();
                sw.Stop();
                process.Refresh();
                if (round > 0)
                {
                    times[c].Add(sw.Elapsed.TotalSeconds);
                    cpu[c].Add((process.TotalProcessorTime - cpuBefore).TotalSeconds);
                    gen2[c] += GC.CollectionCount(2) - gen2Before;
                }
            }
            if (round > 0)
                Console.WriteLine($"round {round}: " + string.Join(" / ", times.Select(t => t[^1].ToString("F3", System.Globalization.CultureInfo.InvariantCulture))) + " s");
        }
        double hand = Median(times[0]);
        double handCpu = Median(cpu[0]);
        Console.WriteLine("| case | median s/epoch | min s/epoch | vs hand-written (median) | median CPU s (all threads) | CPU vs hand-written | gen-2 GCs per epoch |");
        Console.WriteLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for (int c = 0; c < cases.Length; c++)
            Console.WriteLine($"| {cases[c].Name} | {Median(times[c]):F3} | {times[c].Min():F3} | {Median(times[c]) / hand:F3} | {Median(cpu[c]):F3} | {Median(cpu[c]) / handCpu:F3} | {(double)gen2[c] / rounds:F1} |");
        Console.WriteLine($"Of NeuralNetworkTrainer.Fit, the epoch itself (TrainingHistory) took {Median(epochOnly.Skip(1).ToList()):F3} s median; " +
                          "the rest is label checks, weight init, ONNX export and the transformer.");
        var ratios = times[1].Zip(times[0], (t, h) => t / h).ToList();
        Console.WriteLine($"Trainer / hand-written: {Median(times[1]) / hand:F3} (ratio of medians); per-round ratios median {Median(ratios):F3}, " +
                          $"min {ratios.Min():F3}, max {ratios.Max():F3}. Target ≤ 1.1.");
        // Where the bare loop's time goes (BenchmarkHooks.Profile), with and without the background reader, interleaved.
        var profiles = new[] { new StepProfile(), new StepProfile() };
        for (int round = 0; round < 3; round++)
            for (int p = 0; p < 2; p++)
            {
                using (BenchmarkHooks.Set(prefetchBatches: p == 0, profile: profiles[p]))
                    bench.SessionRun();
            }
        for (int p = 0; p < 2; p++)
            Console.WriteLine($"TrainingSession.Run breakdown over 3 epochs, {(p == 0 ? "background reader" : "reading on the training thread")}: " +
                              $"waiting for batches {profiles[p].WaitSeconds / 3:F3} s/epoch, steps {profiles[p].StepSeconds / 3:F3} s/epoch " +
                              $"({profiles[p].StepSeconds / profiles[p].Steps * 1e3:F2} ms/step).");
        Console.WriteLine($"Load average after: {BenchmarkSettings.LoadAverage()}");
        return 0;
    }

    private static object Switched(Func<float> run, bool prefetch, bool share)
    {
        using (BenchmarkHooks.Set(prefetchBatches: prefetch, shareBatchArrays: share))
            return run();
    }

    private static double Median(List<double> values)
    {
        var sorted = values.OrderBy(v => v).ToArray();
        int n = sorted.Length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }
}
