using BenchmarkDotNet.Running;
using MLNet.Compression.Benchmarks;

// Usage (always Release):
//   dotnet run -c Release --project tests/MLNet.Compression.Benchmarks -- --filter '*'
//   dotnet run -c Release --project tests/MLNet.Compression.Benchmarks -- --filter '*Scoring*'
//   dotnet run -c Release --project tests/MLNet.Compression.Benchmarks -- --filter '*' --quick   (one iteration each, smoke test)
//   add --in-process to skip BenchmarkDotNet's child-project build (InProcessEmitToolchain)
// Results: BenchmarkDotNet.Artifacts/results/*-report-github.md in the working directory.
//   dotnet run -c Release --project tests/MLNet.Compression.Benchmarks -- --concurrent-training [--rows 20000] [--threads 1,2,default]
//     (a benchmark mode, not BenchmarkDotNet: one training alone vs two at once, per TorchSharp thread setting; see ConcurrentTrainingBenchmark)
if (args.Contains("--concurrent-training", StringComparer.Ordinal))
{
    ConcurrentTrainingBenchmark.Run(args);
    return 0;
}
//   dotnet run -c Release --project tests/MLNet.Compression.Benchmarks -- --epoch-ratio [--rounds 7]
//     (trainer epoch vs the hand-written TorchSharp loop, interleaved in one process; prints medians and the ratio; see EpochRatioBenchmark)
if (args.Length > 0 && args[0] == "--epoch-ratio")
    return EpochRatioBenchmark.Run(args);
//   dotnet run -c Release --project tests/MLNet.Compression.Benchmarks -- --weights-hash
//     (one seeded epoch; prints a SHA-256 of the weights, to compare two builds for bit-identical training)
if (args.Length > 0 && args[0] == "--weights-hash")
    return WeightsHash.Run();
//   dotnet run -c Release --project tests/MLNet.Compression.Benchmarks -- --memory-estimate [--repeats N]
//     (training memory estimate vs measured, one fresh process per configuration; prints a markdown table)
if (args.Length > 0 && args[0] == "--memory-estimate")
    return MLNet.Compression.Benchmarks.MemoryEstimateMeasurement.Run(args);
if (args.Length > 0 && args[0] == "--memory-probe")
    return MLNet.Compression.Benchmarks.MemoryEstimateMeasurement.Probe(args);
var quick = args.Contains("--quick", StringComparer.Ordinal);
BenchmarkSettings.Quick = quick;
BenchmarkSettings.InProcess = args.Contains("--in-process", StringComparer.Ordinal);
var rest = args.Where(a => a is not ("--quick" or "--in-process")).ToArray();
Console.WriteLine($"Load average before: {BenchmarkSettings.LoadAverage()} ({Environment.ProcessorCount} cores){(quick ? ", quick mode" : string.Empty)}");
BenchmarkSwitcher.FromAssembly(typeof(BenchmarkSettings).Assembly).Run(rest, BenchmarkSettings.CreateConfig());
Console.WriteLine($"Load average after: {BenchmarkSettings.LoadAverage()}");
return 0;
