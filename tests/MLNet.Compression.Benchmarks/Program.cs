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
//   dotnet run -c Release --project tests/MLNet.Compression.Benchmarks -- --thread-scaling [--arch lenet5|mlp] [--rows 10000] [--threads 1,2] [--rounds 3]
//     (one training at a time, thread settings alternated round by round; the basis of the main job's Threads setting)
if (args.Contains("--thread-scaling", StringComparer.Ordinal))
{
    ThreadScalingBenchmark.Run(args);
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
//   dotnet run -c Release --project tests/MLNet.Compression.Benchmarks -- --scoring-levers [--rounds 15] [--levers] [--profile DIR] [--save DIR] [--compare DIR] [--wide]
//     (issue 19: ours per quantization mode, bare ONNX Runtime session and Transform, interleaved; --levers adds the session
//     options and graph variants measured; see ScoringLevers)
if (args.Length > 0 && args[0] == "--scoring-levers")
    return ScoringLevers.Run(args);
if (args.Length > 0 && args[0] == "--memory-estimate")
    return MLNet.Compression.Benchmarks.MemoryEstimateMeasurement.Run(args);
//   dotnet run -c Release --project tests/MLNet.Compression.Benchmarks -- --finetune-sweep [--mnist 1000,6000,60000] [--tabular] [--rules default,today,steps900-lr1]
//   (accuracy of 90 % pruning with fine-tuning rules across data sizes; see FineTuneSweep)
if (args.Length > 0 && args[0] == "--finetune-sweep")
    return MLNet.Compression.Benchmarks.FineTuneSweep.Run(args);
//   dotnet run -c Release --project tests/MLNet.Compression.Benchmarks -- --ewc-fisher [--rows 1000] [--rounds 3] [--head regression] [--batch 1] [--arch lenet5] [--conv-math]
//   (EWC's Fisher information: one backward pass per row vs the batched form, interleaved; see EwcFisherBenchmark)
if (args.Length > 0 && args[0] == "--ewc-fisher")
    return EwcFisherBenchmark.Run(args);
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
