using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression;
using MLNet.Compression.Distributed;
using MLNet.Compression.Networks;
using MLNet.Compression.Pruning;

// Test host for the distributed tests: see the project file. Arguments (all optional except --out):
//   --out FILE            JSON result written by rank 0
//   --distributed         NeuralNetworkOptions.Distributed = DistributedOptions.Mpi()
//   --batch N             per-rank batch (default 64)      --epochs N (default 2)     --rows N (default 2048)
//   --rank1-extra-rows N  rank 1 reads N more rows (ranks disagree)
//   --enumerable          an in-memory view whose row count is unknown (instead of a binary IDataView that shuffles)
//   --fault throw|kill|hang   rank 1 fails at step 3     --timeout SECONDS   DistributedOptions.CollectiveTimeout
//   --validation F --patience N   ValidationFraction and EarlyStoppingPatience
//   --checkpoint DIR      every rank saves model-rank<r>.zip/.ckpt/.onnx in DIR (only rank 0's may appear), then every
//                         rank loads rank 0's checkpoint and prunes it across the ranks with PruningOptions.Distributed
//   --prune               then prunes to 50% sparsity with one epoch of fine-tuning across the ranks
var arguments = ParseArguments(args);
string output = arguments.TryGetValue("out", out var o) ? o : throw new ArgumentException("--out FILE is required.");
int batch = Int(arguments, "batch", 64), epochs = Int(arguments, "epochs", 2), rows = Int(arguments, "rows", 2048);
bool distributed = arguments.ContainsKey("distributed");

var ml = new MLContext(seed: 1);
DistributedOptions? mpi = null;
if (distributed)
{
    mpi = DistributedOptions.Mpi();
    if (arguments.TryGetValue("timeout", out var t))
        mpi.CollectiveTimeout = TimeSpan.FromSeconds(double.Parse(t, CultureInfo.InvariantCulture));
    MpiRuntime.Initialize(mpi); // to know the rank before training (the data of --rank1-extra-rows)
}
int rank = MpiRuntime.Rank;
if (rank == 1 && arguments.TryGetValue("rank1-extra-rows", out var extra))
    rows += int.Parse(extra, CultureInfo.InvariantCulture);

IDataView data = ml.Data.LoadFromEnumerable(Synthetic(rows));
string? binary = null;
if (!arguments.ContainsKey("enumerable"))
{
    // A binary IDataView: a known row count, and it shuffles (the same order on every rank from the shared seed).
    binary = Path.Combine(Path.GetTempPath(), $"mlnet-distributed-host-{Environment.ProcessId}.idv");
    using (var stream = File.Create(binary))
        ml.Data.SaveAsBinary(data, stream, keepHidden: false);
    data = ml.Data.LoadFromBinary(binary);
}

string? fault = arguments.TryGetValue("fault", out var f) ? f : null;
var progress = new Action<TrainingProgress>(p =>
{
    if (rank != 1 || fault is null || p.Step != 3 || p.EndOfEpoch)
        return;
    Console.Error.WriteLine($"rank 1: injecting fault '{fault}' at step 3");
    Console.Error.Flush();
    switch (fault)
    {
        case "throw":
            throw new InvalidOperationException("Injected failure on rank 1 at step 3.");
        case "kill":
            Process.GetCurrentProcess().Kill();
            break;
        case "hang":
            Thread.Sleep(Timeout.Infinite);
            break;
    }
});
var options = new NeuralNetworkOptions
{
    Architecture = NetworkArchitecture.Mlp([32], 16),
    Epochs = epochs,
    BatchSize = batch,
    Optimizer = OptimizerKind.Adam,
    LearningRate = 0.01,
    Seed = 5,
    Device = TrainingDevice.Cpu,
    ProgressInterval = 1,
    Progress = new SynchronousProgress(progress),
    Distributed = mpi,
    ValidationFraction = arguments.TryGetValue("validation", out var vf) ? double.Parse(vf, CultureInfo.InvariantCulture) : 0,
    EarlyStoppingPatience = Int(arguments, "patience", 0),
};
try
{
    var watch = Stopwatch.StartNew();
    using var model = ml.Compression().NeuralNetwork(options).Fit(data);
    double seconds = watch.Elapsed.TotalSeconds;
    var stats = MpiRuntime.LastRun;
    var final = model;
    JsonObject? pruning = null;
    JsonArray? written = null;
    if (arguments.TryGetValue("checkpoint", out var checkpointDir))
    {
        model.SaveCheckpoint(Path.Combine(checkpointDir, $"model-rank{rank}.ckpt"));
        ml.Model.SaveAtomically(model, data.Schema, Path.Combine(checkpointDir, $"model-rank{rank}.zip"));
        model.SaveOnnx(Path.Combine(checkpointDir, $"model-rank{rank}.onnx"));
        if (distributed)
            MpiRuntime.Barrier(); // rank 0's files are complete before anyone reads them
        written = new JsonArray(Directory.GetFiles(checkpointDir).Select(Path.GetFileName).Order(StringComparer.Ordinal).Select(n => (JsonNode?)n).ToArray());
        using var loaded = NeuralNetworkTransformer.LoadCheckpoint(ml, Path.Combine(checkpointDir, "model-rank0.ckpt"));
        var pruned = ml.Compression().Prune(loaded, new PruningOptions { Schedule = PruningSchedule.ConstantSparsity(0.5), Epochs = 1, Distributed = mpi }).Fit(data);
        final = pruned;
        pruning = new JsonObject { ["sparsity"] = 1.0 - (double)pruned.Network.NonZeroParameterCount / pruned.Network.ParameterCount, ["steps"] = MpiRuntime.LastRun?.Steps };
    }
    else if (arguments.ContainsKey("prune"))
    {
        var pruned = ml.Compression().Prune(model, new PruningOptions { Schedule = PruningSchedule.ConstantSparsity(0.5), Epochs = 1 }).Fit(data);
        final = pruned;
        pruning = new JsonObject { ["sparsity"] = 1.0 - (double)pruned.Network.NonZeroParameterCount / pruned.Network.ParameterCount };
    }
    var metrics = ml.MulticlassClassification.Evaluate(final.Transform(data));
    double checksum = Checksum(final.Network);
    double checksumMin = distributed ? MpiRuntime.Min(checksum) : checksum, checksumMax = distributed ? MpiRuntime.Max(checksum) : checksum;
    var weights = new JsonArray();
    foreach (var layer in final.Network.ParameterizedLayers)
    {
        foreach (var w in layer.Weight)
            weights.Add(w);
        foreach (var b in layer.Bias)
            weights.Add(b);
    }
    var result = new JsonObject
    {
        ["ranks"] = MpiRuntime.Size,
        ["accuracy"] = metrics.MicroAccuracy,
        ["steps"] = stats?.Steps,
        ["allreduceMillisecondsPerStep"] = stats?.AllreduceMillisecondsPerStep,
        ["weightsMatched"] = stats?.WeightsMatched,
        ["checksumMin"] = checksumMin,
        ["checksumMax"] = checksumMax,
        ["seconds"] = seconds,
        ["pruning"] = pruning,
        ["filesWritten"] = written,
        ["epochsRun"] = model.TrainingHistory.Count,
        ["validationAccuracy"] = new JsonArray(model.TrainingHistory.Select(e => (JsonNode?)JsonValue.Create(e.ValidationAccuracy)).ToArray()),
        ["trainingRows"] = new JsonArray(model.TrainingHistory.Select(e => (JsonNode?)JsonValue.Create(e.Rows)).ToArray()),
        ["weights"] = weights,
    };
    if (MpiRuntime.IsRoot)
        File.WriteAllText(output, result.ToJsonString(new JsonSerializerOptions { WriteIndented = false }));
    if (!ReferenceEquals(final, model))
        final.Dispose();
    Console.WriteLine($"rank {rank}: done, accuracy {metrics.MicroAccuracy:F4}");
    return 0;
}
catch (DistributedTrainingException e)
{
    Console.Error.WriteLine($"rank {rank}: {e.GetType().Name}: {e.Message}");
    return 3;
}
finally
{
    if (binary is not null)
        File.Delete(binary);
}

static IEnumerable<Row> Synthetic(int count)
{
    var random = new Random(7);
    var w = new float[3, 16];
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 16; j++)
            w[k, j] = (float)(random.NextDouble() * 2 - 1);
    for (int i = 0; i < count; i++)
    {
        var x = new float[16];
        for (int j = 0; j < 16; j++)
            x[j] = (float)(random.NextDouble() * 2 - 1);
        int best = 0;
        double bestScore = double.NegativeInfinity;
        for (int k = 0; k < 3; k++)
        {
            double s = 0;
            for (int j = 0; j < 16; j++)
                s += w[k, j] * x[j];
            if (s > bestScore)
                (best, bestScore) = (k, s);
        }
        yield return new Row { Features = x, Label = (uint)best + 1 };
    }
}

static double Checksum(NetworkModel model)
{
    double sum = 0;
    long i = 0;
    foreach (var layer in model.ParameterizedLayers)
    {
        foreach (var v in layer.Weight)
            sum += v * (1 + (i++ % 7));
        foreach (var v in layer.Bias)
            sum += v * (1 + (i++ % 7));
    }
    return sum;
}

static Dictionary<string, string> ParseArguments(string[] args)
{
    var result = new Dictionary<string, string>(StringComparer.Ordinal);
    for (int i = 0; i < args.Length; i++)
    {
        if (!args[i].StartsWith("--", StringComparison.Ordinal))
            throw new ArgumentException($"Unexpected argument '{args[i]}'.");
        string key = args[i][2..];
        result[key] = i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[++i] : "true";
    }
    return result;
}

static int Int(Dictionary<string, string> arguments, string name, int fallback) =>
    arguments.TryGetValue(name, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;

/// <summary>A synthetic row: 16 features, a label key of 3 classes.</summary>
internal sealed class Row
{
    [VectorType(16)]
    public float[] Features { get; set; } = [];

    [KeyType(3)]
    public uint Label { get; set; }
}

/// <summary>Calls the handler on the training thread (Progress&lt;T&gt; would post to the thread pool).</summary>
internal sealed class SynchronousProgress(Action<TrainingProgress> handler) : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress value) => handler(value);
}
