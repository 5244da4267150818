using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using MLNet.Compression;
using MLNet.Compression.Data;
using MLNet.Compression.Distributed;
using MLNet.Compression.Networks;

// LeNet-300-100 on MNIST, trained data-parallel across the MPI ranks this program is started with:
//   dotnet build samples/DistributedTraining -c Release
//   mpiexec -n 2 dotnet samples/DistributedTraining/bin/Release/net10.0/DistributedTraining.dll --out distributed-out
// Started without mpiexec it trains in one process (a job of one rank). Options:
//   --out DIR        where rank 0 writes model.zip and results.json (default distributed-out)
//   --epochs N       default 3            --global-batch N   rows per step over all ranks (default 128; per rank: N / ranks)
//   --lr X           Adam learning rate (default 0.001)      --threads N   libtorch threads per rank (default: libtorch's choice)
//   --data DIR       MNIST folder (default: the cache, MNIST_DIR, then download)   --train-rows N   the first N training rows only
//   --bench-allreduce    also time MPI_Allreduce of 8 bytes .. 16 MB (the figures behind the README's scaling table)
var arguments = ParseArguments(args);
string outDir = Path.GetFullPath(arguments.GetValueOrDefault("out", "distributed-out"));
int epochs = Int("epochs", 3), globalBatch = Int("global-batch", 128);
double learningRate = double.Parse(arguments.GetValueOrDefault("lr", "0.001"), CultureInfo.InvariantCulture);

var mpi = DistributedOptions.Mpi();
MpiRuntime.Initialize(mpi); // a job of one without mpiexec
int rank = MpiRuntime.Rank, ranks = MpiRuntime.Size;
if (globalBatch % ranks != 0)
{
    if (rank == 0)
        Console.Error.WriteLine($"--global-batch {globalBatch} is not a multiple of the {ranks} ranks.");
    return 2;
}
if (arguments.TryGetValue("threads", out var threads))
    TorchSharp.torch.set_num_threads(int.Parse(threads, CultureInfo.InvariantCulture));
void Say(string message)
{
    if (rank == 0)
        Console.WriteLine(message);
}

Say($"{ranks} rank(s), {MpiRuntime.LibraryDescription}; threads per rank {TorchSharp.torch.get_num_threads()}; global batch {globalBatch} " +
    $"({globalBatch / ranks} per rank), {epochs} epoch(s).");
var ml = new MLContext(seed: 1);
var mnist = new MnistOptions { DataDirectory = arguments.GetValueOrDefault("data") };
IDataView train, test;
try
{
    train = ml.Data.LoadMnist(MnistSplit.Train, mnist);
    test = ml.Data.LoadMnist(MnistSplit.Test, mnist);
    if (arguments.TryGetValue("train-rows", out var trainRows))
        train = ml.Data.TakeRows(train, long.Parse(trainRows, CultureInfo.InvariantCulture));
}
catch (MnistAcquisitionException e)
{
    MpiRuntime.Abort($"MNIST could not be loaded: {e.Message}", 3);
    return 3;
}

var options = new NeuralNetworkOptions
{
    Architecture = NetworkArchitecture.Mlp(300, 100),
    Epochs = epochs,
    BatchSize = globalBatch / ranks, // per rank
    LearningRate = learningRate,
    Seed = 42,
    Device = TrainingDevice.Auto, // CUDA ranks each take one GPU, by local rank
    Distributed = mpi,
};
var clock = Stopwatch.StartNew();
using var model = ml.Compression().NeuralNetwork(options).Fit(train);
double trainSeconds = clock.Elapsed.TotalSeconds;
var run = MpiRuntime.LastRun;
var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));

// Every rank hashes its own exported model; equal minimum and maximum over the ranks mean identical weights everywhere.
double checksum = Hash(model.GetOnnxModel());
bool weightsEqual = MpiRuntime.Min(checksum) == MpiRuntime.Max(checksum);
long rows = model.TrainingHistory.Sum(e => e.Rows);
double epochSeconds = model.TrainingHistory.Sum(e => e.Seconds);
double allreduceSeconds = run?.AllreduceSeconds ?? 0;
long steps = run?.Steps ?? (long)Math.Ceiling(rows / (double)globalBatch);
JsonObject? bench = arguments.ContainsKey("bench-allreduce") && ranks > 1 ? BenchAllreduce() : null;

Directory.CreateDirectory(outDir);
ml.Model.SaveAtomically(model, train.Schema, Path.Combine(outDir, "model.zip")); // rank 0 only; the other ranks return at once
var results = new JsonObject
{
    ["ranks"] = ranks,
    ["threadsPerRank"] = TorchSharp.torch.get_num_threads(),
    ["epochs"] = epochs,
    ["globalBatch"] = globalBatch,
    ["perRankBatch"] = globalBatch / ranks,
    ["accuracy"] = metrics.MicroAccuracy,
    ["weightsEqualAcrossRanks"] = weightsEqual,
    ["rowsPerSecond"] = rows / epochSeconds,
    ["allreduceMillisecondsPerStep"] = run?.AllreduceMillisecondsPerStep ?? 0,
    ["computeMillisecondsPerStep"] = (epochSeconds - allreduceSeconds) * 1000 / Math.Max(steps, 1),
    ["steps"] = steps,
    ["gradientBytesPerStep"] = run?.AllreduceBytes ?? model.ParameterCount * sizeof(float),
    ["trainSeconds"] = trainSeconds,
    ["mpiLibrary"] = MpiRuntime.LibraryDescription,
    ["allreduceBenchmark"] = bench,
};
if (MpiRuntime.IsRoot)
{
    string path = Path.Combine(outDir, "results.json"), temp = path + ".tmp";
    File.WriteAllText(temp, results.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    File.Move(temp, path, overwrite: true);
}
Say($"accuracy {metrics.MicroAccuracy:P2}, weights equal across ranks: {weightsEqual}, {rows / epochSeconds:N0} rows/s, " +
    $"all-reduce {run?.AllreduceMillisecondsPerStep ?? 0:F2} ms/step; wrote {Path.Combine(outDir, "model.zip")} and results.json.");
return weightsEqual ? 0 : 1;

// MPI_Allreduce (sum, float32) time by message size, after a barrier, median of repeats: latency and time per megabyte.
static JsonObject BenchAllreduce()
{
    var sizes = new JsonArray();
    double small = 0, large = 0;
    foreach (int floats in new[] { 2, 1 << 10, 1 << 16, 266_610, 1 << 20, 1 << 22 })
    {
        var buffer = new float[floats];
        int repeats = floats >= 1 << 20 ? 10 : 50;
        var times = new double[repeats];
        MpiRuntime.SumInPlace(buffer); // warm-up
        for (int i = 0; i < repeats; i++)
        {
            MpiRuntime.Barrier();
            long start = Stopwatch.GetTimestamp();
            MpiRuntime.SumInPlace(buffer);
            times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        Array.Sort(times);
        double median = MpiRuntime.Max(times[repeats / 2]); // the slowest rank's median
        if (floats == 2)
            small = median;
        if (floats == 1 << 22)
            large = median;
        sizes.Add(new JsonObject { ["bytes"] = floats * 4L, ["milliseconds"] = median });
    }
    return new JsonObject
    {
        ["sizes"] = sizes,
        ["latencyMilliseconds"] = small,
        ["millisecondsPerMegabyte"] = (large - small) / (4.0 * (1 << 22) / 1e6),
    };
}

static double Hash(byte[] bytes)
{
    ulong h = 1469598103934665603UL;
    foreach (byte b in bytes)
        h = (h ^ b) * 1099511628211UL;
    return h >> 12; // 52 bits: exact in a double
}

static Dictionary<string, string> ParseArguments(string[] args)
{
    var result = new Dictionary<string, string>(StringComparer.Ordinal);
    for (int i = 0; i < args.Length; i++)
    {
        if (!args[i].StartsWith("--", StringComparison.Ordinal))
            throw new ArgumentException($"Unexpected argument '{args[i]}'. See the comment at the top of Program.cs.");
        result[args[i][2..]] = i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[++i] : "true";
    }
    return result;
}

int Int(string name, int fallback) => arguments.TryGetValue(name, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
