using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.ML;
using MLNet.Compression.Data;
using MLNet.Compression.Networks;

namespace MLNet.Compression.Benchmarks;

/// <summary>
/// <c>--memory-estimate</c>: <see cref="MemoryReport.Estimate(NeuralNetworkOptions, int)"/> against the measured training memory
/// over the model zoo (MLP-300-100, LeNet-5, the depthwise CNN) at batch 32, 128 and 512. Each configuration runs in a fresh
/// child process (<c>--memory-probe &lt;architecture&gt; &lt;batch&gt;</c>), so no run inherits another's free lists: the child
/// warms up with a tiny run, returns freed memory to the system (GC, <c>malloc_trim</c>), reads its resident bytes, trains four
/// batches, and reports the training session's peak resident bytes (the high-water mark, reset when training starts) minus them.
/// </summary>
internal static class MemoryEstimateMeasurement
{
    private static readonly string[] Architectures = ["mlp", "lenet5", "depthwise"];
    private static readonly int[] Batches = [32, 128, 512];

    public static int Run(string[] args)
    {
        int repeats = args.SkipWhile(a => a != "--repeats").Skip(1).Select(a => int.Parse(a, CultureInfo.InvariantCulture)).FirstOrDefault(1);
        string self = Environment.ProcessPath!;
        string? dll = Environment.ProcessPath!.EndsWith("dotnet", StringComparison.Ordinal) ? typeof(MemoryEstimateMeasurement).Assembly.Location : null;
        Console.WriteLine($"Load average: {BenchmarkSettings.LoadAverage()} ({Environment.ProcessorCount} cores); {repeats} fresh process(es) per configuration, median reported.");
        Console.WriteLine("| network | batch | estimate | measured (median) | runs | estimate / measured |");
        Console.WriteLine("| --- | ---: | ---: | ---: | --- | ---: |");
        foreach (var name in Architectures)
            foreach (int batch in Batches)
            {
                var runs = new List<long>();
                long estimate = 0;
                for (int r = 0; r < repeats; r++)
                {
                    var start = new ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
                    if (dll is not null)
                        start.ArgumentList.Add(dll);
                    foreach (var a in new[] { "--memory-probe", name, batch.ToString(CultureInfo.InvariantCulture) })
                        start.ArgumentList.Add(a);
                    using var child = Process.Start(start)!;
                    string output = child.StandardOutput.ReadToEnd();
                    child.WaitForExit();
                    var line = output.Split('\n').LastOrDefault(l => l.StartsWith("probe ", StringComparison.Ordinal))
                        ?? throw new InvalidOperationException($"The probe for {name} batch {batch} printed no result (exit {child.ExitCode}):\n{output}");
                    var parts = line.Split(' ');
                    estimate = long.Parse(parts[1], CultureInfo.InvariantCulture);
                    runs.Add(long.Parse(parts[2], CultureInfo.InvariantCulture));
                }
                long measured = runs.Order().ElementAt(runs.Count / 2);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {Architecture(name).Name} | {batch} | {Mb(estimate)} | {Mb(measured)} | {string.Join(" / ", runs.Select(Mb))} | {(double)estimate / measured:F2} |"));
            }
        return 0;
    }

    /// <summary>The child: one measured training run of four batches; prints "probe &lt;estimate&gt; &lt;measured&gt;".</summary>
    public static int Probe(string[] args)
    {
        var architecture = Architecture(args[1]);
        int batch = int.Parse(args[2], CultureInfo.InvariantCulture);
        var ml = new MLContext(seed: 1);
        var train = BenchmarkSettings.LoadMnist(ml, MnistSplit.Train);
        NeuralNetworkOptions Options(int b) => new() { Architecture = architecture, BatchSize = b, Epochs = 1, Seed = 1, Device = TrainingDevice.Cpu, Shuffle = false };
        using (ml.Compression().NeuralNetwork(Options(8)).Fit(ml.Data.TakeRows(train, 16)))
        {
        }
        var estimate = MemoryReport.Estimate(Options(batch), 10);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        MallocTrim(0);
        long before;
        using (var process = Process.GetCurrentProcess())
            before = process.WorkingSet64;
        using var model = ml.Compression().NeuralNetwork(Options(batch)).Fit(ml.Data.TakeRows(train, 4L * batch));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"probe {estimate.TotalBytes} {(model.Memory.PeakTrainingBytes ?? 0) - before}"));
        return 0;
    }

    private static NetworkArchitecture Architecture(string name) => name switch
    {
        "mlp" => NetworkArchitecture.Mlp(300, 100),
        "lenet5" => NetworkArchitecture.LeNet5(),
        "depthwise" => NetworkArchitecture.DepthwiseSeparable(),
        _ => throw new ArgumentException($"Unknown architecture '{name}': mlp, lenet5 or depthwise.", nameof(name)),
    };

    private static string Mb(long bytes) => (bytes / 1048576.0).ToString("F1", CultureInfo.InvariantCulture) + " MiB";

#pragma warning disable SYSLIB1054 // one call; LibraryImport would need unsafe code in this project
    [DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int MallocTrim(nuint pad);
#pragma warning restore SYSLIB1054
}
