using System.Globalization;
using Microsoft.ML;
using MLNet.Compression;
using MLNet.Compression.Data;
using MLNet.Compression.Networks;
using MLNet.Compression.Tooling;

namespace MnistCompression;

/// <summary>What the child process of the memory-budget row reported.</summary>
/// <param name="BatchSize">The batch the trainer chose for the budget.</param>
/// <param name="Precision">The precision it chose.</param>
/// <param name="EstimateBytes">The training-memory estimate at that batch.</param>
/// <param name="MeasuredBytes">The measured peak resident growth while training.</param>
internal sealed record MemoryBudgetProbeResult(int BatchSize, string Precision, long EstimateBytes, long MeasuredBytes);

/// <summary>
/// The memory-budget row's measurement in a fresh process: the main job starts itself again with <c>--memory-budget-probe</c>
/// (a hidden mode), and the child warms up with a tiny run, returns freed memory to the system (GC, <c>malloc_trim</c>), reads its
/// resident bytes, trains LeNet-300-100 for four batches of the largest allowed size under <see cref="Budget"/> on the CPU, and prints
/// the chosen batch, the estimate and the training session's peak resident bytes minus the bytes before. Nothing of the other
/// stages is in that process, so the growth is the training's own (as in the benchmark <c>--memory-estimate</c>).
/// </summary>
internal static class MemoryBudgetProbe
{
    /// <summary>The hidden command-line switch of the child.</summary>
    public const string Switch = "--memory-budget-probe";

    /// <summary>The row's budget: 14 MiB.</summary>
    public const long Budget = 14L << 20;

    /// <summary>The largest batch the row allows (the trainer picks the largest that fits <see cref="Budget"/>).</summary>
    public const int MaxBatchSize = 1024;

    private const string ResultPrefix = "memory-budget-probe ";

    /// <summary>The row's options: the LeNet-300-100 baseline's, with the budget and the largest allowed batch.</summary>
    /// <param name="baseline">The main job's baseline options (not changed).</param>
    public static NeuralNetworkOptions Options(NeuralNetworkOptions baseline)
    {
        var options = baseline.Clone();
        options.MemoryBudgetBytes = Budget;
        options.BatchSize = MaxBatchSize;
        return options;
    }

    /// <summary>Starts the child, waits for it (at most 5 minutes) and reads its figures; null (and the transcript printed in red) when it failed.</summary>
    /// <param name="context">The main job's context (data folder, threads, seed).</param>
    public static MemoryBudgetProbeResult? RunChild(MainJobContext context)
    {
        string self = Environment.ProcessPath ?? throw new InvalidOperationException("The main job cannot find its own executable to start the memory probe.");
        var args = new List<string>();
        if (Path.GetFileNameWithoutExtension(self) == "dotnet")
            args.Add(typeof(MemoryBudgetProbe).Assembly.Location);
        args.AddRange([Switch, "--threads", context.Threads.ToString(CultureInfo.InvariantCulture),
            "--seed", context.BaselineOptions.Seed?.ToString(CultureInfo.InvariantCulture) ?? "1"]);
        if (context.Settings.DataDirectory is { } dir)
            args.AddRange(["--data-dir", Path.GetFullPath(dir)]);
        ChildProcessResult run;
        try
        {
            run = ChildProcess.Run(self, args, Environment.CurrentDirectory, TimeSpan.FromMinutes(5));
        }
        catch (Exception e) when (e is TimeoutException or System.ComponentModel.Win32Exception)
        {
            context.Ui.Error($"memory-budget: the fresh-process measurement failed: {e.Message}");
            return null;
        }
        string? line = run.Stdout.Split('\n').LastOrDefault(l => l.StartsWith(ResultPrefix, StringComparison.Ordinal));
        if (run.ExitCode != 0 || line is null)
        {
            context.Ui.Error($"memory-budget: the fresh-process measurement failed (exit code {run.ExitCode}, no result line):{Environment.NewLine}{run.Transcript}");
            return null;
        }
        var parts = line[ResultPrefix.Length..].Trim().Split(' ');
        return new MemoryBudgetProbeResult(int.Parse(parts[0], CultureInfo.InvariantCulture), parts[1],
            long.Parse(parts[2], CultureInfo.InvariantCulture), long.Parse(parts[3], CultureInfo.InvariantCulture));
    }

    /// <summary>The child's side: one measured run; prints <c>memory-budget-probe &lt;batch&gt; &lt;precision&gt; &lt;estimate&gt; &lt;measured&gt;</c>.</summary>
    /// <param name="args">The command line: the switch, then <c>--threads N</c>, <c>--seed N</c> and optionally <c>--data-dir DIR</c>.</param>
    /// <returns>The exit code: 0, or 2 for a bad command line.</returns>
    public static int RunInChild(string[] args)
    {
        string? Value(string name) => Array.IndexOf(args, name) is int i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        if (!int.TryParse(Value("--threads"), NumberStyles.None, CultureInfo.InvariantCulture, out int threads) || threads < 1
            || !int.TryParse(Value("--seed"), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int seed))
        {
            Console.Error.WriteLine($"{Switch} needs --threads N (1 or more) and --seed N; got: {string.Join(' ', args)}");
            return 2;
        }
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadMnist(MnistSplit.Train, new MnistOptions { DataDirectory = Value("--data-dir") });
        NeuralNetworkOptions Run(int batch, long? budget) => new()
        {
            Architecture = NetworkArchitecture.Mlp(300, 100), BatchSize = batch, MemoryBudgetBytes = budget, Epochs = 1, Seed = seed,
            Device = TrainingDevice.Cpu, Threads = threads, Shuffle = false,
        };
        using (ml.Compression().NeuralNetwork(Run(8, null)).Fit(ml.Data.TakeRows(train, 16)))
        {
        }
        long before = MemoryLeversStage.TrimmedResidentBytes();
        var options = Run(MaxBatchSize, Budget);
        using var model = ml.Compression().NeuralNetwork(options).Fit(ml.Data.TakeRows(train, 4L * MaxBatchSize));
        var estimate = MemoryReport.Estimate(options.Architecture, 10, model.Memory.BatchSize, options.Optimizer, model.Memory.Precision, options.Momentum);
        long measured = (model.Memory.PeakTrainingBytes ?? 0) - before;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{ResultPrefix}{model.Memory.BatchSize} {model.Memory.Precision} {estimate.TotalBytes} {measured}"));
        return 0;
    }
}
