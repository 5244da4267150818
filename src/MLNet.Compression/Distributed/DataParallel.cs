using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using MLNet.Compression.Networks;
using MLNet.Compression.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.Compression.Distributed;

/// <summary>
/// One training run's part in a data-parallel MPI job, called from a few places of the shared training loop: the start
/// (agreement check, broadcast of rank 0's weights), the batches (this rank's share of each global batch), the gradients
/// (one all-reduce of a flat host buffer per step), the metrics (sums over ranks) and the end (a weight checksum).
/// Every rank makes the same collective calls in the same order; each all-reduce inside an epoch carries a trailer
/// (active flag, rows, global rows) so that ranks that read different data fail together instead of hanging.
/// </summary>
internal sealed class DataParallel
{
    private const int Trailer = 3;
    private static int warnedUnset;

    private readonly DistributedOptions options;
    private readonly ContextLog log;
    private readonly int rank;
    private readonly int size;
    private readonly Stopwatch reduceWatch = new();
    private float[]? flat;
    private Tensor? flatTensor;
    private long parameterCount = -1;
    private int localRows;
    private int globalRows;
    private long skippedRows;
    private long steps;

    private DataParallel(DistributedOptions options, ContextLog log)
    {
        this.options = options;
        this.log = log;
        rank = MpiRuntime.Rank;
        size = MpiRuntime.Size;
    }

    public int Rank => rank;

    public int Size => size;

    /// <summary>
    /// Joins the job named by <paramref name="options"/>' <see cref="NeuralNetworkOptions.Distributed"/>; null when it is not
    /// set or the job has one process (then training is exactly the single-process path).
    /// </summary>
    public static DataParallel? Join(NeuralNetworkOptions options, MLContext ml, string stage)
    {
        var log = new ContextLog(ml, stage == "train" ? nameof(NeuralNetworkTrainer) : stage);
        MpiRuntime.LastRun = null; // describes this run once it ends, or stays null if it is not data-parallel
        if (options.Distributed is null)
        {
            int launched = MpiRuntime.LauncherSize(System.Environment.GetEnvironmentVariable);
            if (launched > 1 && Interlocked.Exchange(ref warnedUnset, 1) == 0)
                log.Warning($"This process is one of {launched} started by an MPI launcher, but NeuralNetworkOptions.Distributed is not set: " +
                            "every process trains its own model on all the data. Set Distributed = DistributedOptions.Mpi() for data-parallel training.");
            return null;
        }
        options.Distributed.Validate();
        MpiRuntime.Initialize(options.Distributed);
        MpiRuntime.SetTimeout(options.Distributed.CollectiveTimeout);
        if (MpiRuntime.Size == 1)
        {
            log.Info("Distributed training requested, but this MPI job has one process: training as usual.");
            return null;
        }
        return new DataParallel(options.Distributed, log);
    }

    /// <summary>
    /// Runs the training; an exception on this rank alone would leave the others waiting in a collective, so it ends the
    /// job (<see cref="DistributedOptions.AbortOnError"/>) unless every rank raised it together.
    /// </summary>
    public T Guard<T>(Func<T> run)
    {
        try
        {
            return run();
        }
        catch (DistributedTrainingException)
        {
            throw; // raised on every rank together
        }
        catch (Exception e) when (options.AbortOnError)
        {
            MpiRuntime.Abort($"Distributed training failed on this rank: {e}");
            throw; // not reached
        }
    }

    /// <summary>The device of this rank: one CUDA device per rank, by local rank (see <see cref="LocalRanks.DeviceFor"/>).</summary>
    public TrainingDevice Device(TrainingDevice requested, ICudaInfo cuda, int? gpuDeviceId)
    {
        if (requested.Kind == TrainingDeviceKind.Cpu)
            return requested;
        int count = cuda.IsAvailable ? cuda.DeviceCount : 0;
        var (device, warning) = LocalRanks.DeviceFor(requested, gpuDeviceId, MpiRuntime.LocalRank,
            LocalRanks.LocalSizeFromEnvironment(System.Environment.GetEnvironmentVariable), count);
        if (warning is not null)
            log.Warning(warning);
        return device;
    }

    /// <summary>Global batch rows read per step on every rank: the per-rank batch times the ranks.</summary>
    public int GlobalBatchSize(int perRank) => checked(perRank * size);

    /// <summary>
    /// Checks with one collective that every rank has the same data shape, row count and options; throws the same
    /// <see cref="DistributedTrainingException"/> on every rank otherwise. Then gives every rank rank 0's weights and
    /// optimizer state.
    /// </summary>
    public void Start(IDataView data, BatchStream stream, NetworkModel model, NeuralNetworkOptions training, int seed, ref byte[]? optimizerState)
    {
        parameterCount = model.ParameterCount;
        var fields = new (string Name, double Value)[]
        {
            ("row count", data.GetRowCount() is long n ? n : -1),
            ("feature length", stream.FeatureLength),
            ("class count", stream.ClassCount),
            ("target length", stream.TargetLength),
            ("parameter count", model.ParameterCount),
            ("batch size", training.BatchSize),
            ("epochs", training.Epochs),
            ("seed", seed),
            ("shuffle", training.Shuffle ? 1 : 0),
            ("progress interval", training.ProgressInterval),
            ("validation fraction", training.ValidationFraction),
            ("early stopping patience", training.EarlyStoppingPatience),
            ("learning rate", training.LearningRate),
            ("optimizer", (int)training.Optimizer),
            ("precision", (int)training.Precision),
            ("optimizer state bytes", optimizerState?.Length ?? -1),
        };
        var all = MpiRuntime.AllGather(fields.Select(f => f.Value).ToArray(), "MPI_Allgather(training setup)");
        var problems = new List<string>();
        for (int i = 0; i < fields.Length; i++)
        {
            var values = Enumerable.Range(0, size).Select(r => all[r * fields.Length + i]).ToArray();
            if (values.Distinct().Count() > 1)
                problems.Add($"{fields[i].Name}: " + string.Join(", ", values.Select((v, r) => $"rank {r} {(v == -1 && i == 0 ? "unknown" : v.ToString(CultureInfo.InvariantCulture))}")));
        }
        if (problems.Count > 0)
            throw new DistributedTrainingException(
                $"The {size} ranks of the distributed training job disagree before the first step ({string.Join("; ", problems)}). " +
                "Every rank must read the same IDataView (same rows, same columns) with the same options; rank r takes its own share of each batch itself.");

        // Rank 0's weights everywhere: the ranks start identical even if their initialisation differed.
        double before = Checksum(model);
        foreach (var layer in model.ParameterizedLayers)
        {
            MpiRuntime.Broadcast(layer.Weight, "MPI_Bcast(initial weights)");
            MpiRuntime.Broadcast(layer.Bias, "MPI_Bcast(initial weights)");
        }
        if (Checksum(model) != before)
            log.Warning($"Rank {rank} started from weights that differ from rank 0's; it now uses rank 0's.");
        if (optimizerState is not null)
        {
            var copy = (byte[])optimizerState.Clone();
            MpiRuntime.Broadcast(copy, "MPI_Bcast(optimizer state)");
            optimizerState = copy;
        }
        log.Info($"Data-parallel training on rank {rank} of {size} ({MpiRuntime.LibraryDescription}, local rank {MpiRuntime.LocalRank}): " +
                 $"global batch {training.BatchSize} x {size} = {training.BatchSize * size} rows, gradients averaged by MPI_Allreduce.");
    }

    /// <summary>
    /// This rank's share of each global batch: rows [r·c/p, (r+1)·c/p) of a global batch of c rows, copied into a batch of
    /// its own. A global batch with fewer rows than ranks (the last of an epoch, at most p − 1 rows) is skipped on every rank.
    /// </summary>
    public IEnumerable<BatchStream.Batch> Shard(IEnumerable<BatchStream.Batch> globalBatches, int perRank, int featureLength, int targetLength)
    {
        var local = new BatchStream.Batch(perRank, featureLength, targetLength);
        foreach (var global in globalBatches)
        {
            int c = global.Count;
            if (c < size)
            {
                skippedRows += c;
                continue;
            }
            int start = (int)((long)rank * c / size), end = (int)((long)(rank + 1) * c / size), n = end - start;
            Array.Copy(global.Features, start * featureLength, local.Features, 0, n * featureLength);
            Array.Copy(global.Labels, start, local.Labels, 0, n);
            if (targetLength > 0)
                Array.Copy(global.Targets, start * targetLength, local.Targets, 0, n * targetLength);
            local.Count = n;
            localRows = n;
            globalRows = c;
            yield return local;
        }
    }

    /// <summary>
    /// Replaces each parameter's gradient by the row-weighted mean over all ranks (this rank's gradient of its mean loss,
    /// scaled by its share of the global batch, then summed): the gradient one process would get on the whole global batch.
    /// Gradients go through one float32 host buffer (copied from the GPU for CUDA ranks).
    /// </summary>
    public void AverageGradients(Parameter[] parameters)
    {
        EnsureBuffer(parameters);
        using var noGrad = no_grad();
        using var share = ((float)localRows / globalRows).ToScalar();
        long offset = 0;
        foreach (var p in parameters)
        {
            long n = p.numel();
            var slot = flatTensor!.narrow(0, offset, n);
            if (p.grad is { } g)
            {
                slot.copy_(g.reshape(-1));
                slot.mul_(share);
            }
            else
                slot.zero_();
            offset += n;
        }
        flat![offset] = 1;
        flat[offset + 1] = localRows;
        flat[offset + 2] = globalRows;
        Reduce("MPI_Allreduce(gradients)");
        CheckTrailer(offset, inEpoch: true);
        offset = 0;
        foreach (var p in parameters)
        {
            long n = p.numel();
            if (p.grad is { } g)
                g.copy_(flatTensor!.narrow(0, offset, n).view(g.shape));
            offset += n;
        }
        steps++;
    }

    /// <summary>
    /// Closes an epoch with an all-reduce of the same size as a step's: if any rank still had batches, every rank learns it
    /// here (in its step or in this call) and throws.
    /// </summary>
    public void EndOfEpoch()
    {
        EnsureBuffer(null);
        Array.Clear(flat!);
        Reduce("MPI_Allreduce(end of epoch)");
        CheckTrailer(parameterCount, inEpoch: false);
        if (skippedRows > 0)
        {
            log.Info($"Skipped the last {skippedRows} row(s) of the epoch: fewer than one per rank ({size} ranks).");
            skippedRows = 0;
        }
    }

    /// <summary>Sums of the epoch's (or evaluation's) loss, correct predictions and rows over all ranks.</summary>
    public (double LossSum, long Correct, long Rows) Totals(double lossSum, long correct, long rows)
    {
        var values = new[] { lossSum, correct, rows };
        MpiRuntime.SumInPlace(values, "MPI_Allreduce(metrics)");
        return (values[0], (long)values[1], (long)values[2]);
    }

    /// <summary>Whether this rank evaluates validation batch <paramref name="index"/> (round robin over the ranks).</summary>
    public bool Owns(int index) => index % size == rank;

    /// <summary>
    /// Compares a checksum of the final weights over all ranks; should they differ (the reduction summed in different
    /// orders on different ranks), rank 0's are broadcast and a warning says so. Every rank then returns the same model.
    /// </summary>
    public void Finish(NetworkModel model)
    {
        double mine = Checksum(model);
        var range = new[] { mine, -mine };
        MpiRuntime.MaxInPlace(range, "MPI_Allreduce(weight checksum)");
        bool equal = range[0] == -range[1];
        if (!equal)
        {
            log.Warning($"The final weights differ across ranks (checksums {-range[1]:R} to {range[0]:R}); every rank now takes rank 0's.");
            foreach (var layer in model.ParameterizedLayers)
            {
                var w = layer.Weight;
                var b = layer.Bias;
                MpiRuntime.Broadcast(w, "MPI_Bcast(final weights)");
                MpiRuntime.Broadcast(b, "MPI_Bcast(final weights)");
                layer.Weight = w;
                layer.Bias = b;
            }
        }
        flatTensor?.Dispose();
        flatTensor = null;
        MpiRuntime.LastRun = new DistributedRunStatistics(size, steps, reduceWatch.Elapsed.TotalSeconds, (parameterCount + Trailer) * sizeof(float), equal);
    }

    /// <summary>An order-sensitive checksum of every weight and bias (the same on two ranks only if their weights match).</summary>
    internal static double Checksum(NetworkModel model)
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

    private void EnsureBuffer(Parameter[]? parameters)
    {
        if (parameters is not null)
        {
            long total = parameters.Sum(p => p.numel());
            if (total != parameterCount)
                throw new InvalidOperationException($"The network being trained has {total} parameters but the model describes {parameterCount}; distributed training cannot map its gradients.");
        }
        if (flat is not null)
            return;
        flat = new float[checked((int)(parameterCount + Trailer))];
        flatTensor = from_array(flat).DetachFromDisposeScope(); // lives for the run (the first call is inside a batch's scope); shares flat's memory
    }

    private void Reduce(string operation)
    {
        reduceWatch.Start();
        MpiRuntime.SumInPlace(flat!, operation);
        reduceWatch.Stop();
    }

    private void CheckTrailer(long offset, bool inEpoch)
    {
        float active = flat![offset], rows = flat[offset + 1], global = flat[offset + 2];
        if (inEpoch ? active != size : active != 0)
            throw new DistributedTrainingException(
                $"The ranks ran out of training batches at different steps (step {steps + 1}: {active} of {size} ranks still had a batch): " +
                "they read different numbers of rows. Every rank must read the same IDataView with the same options.");
        if (inEpoch && global != rows * size)
            throw new DistributedTrainingException(
                $"The ranks read global batches of different sizes at step {steps + 1} (rows over all ranks {rows}, global batch sizes summing to {global}): " +
                "they read different data. Every rank must read the same IDataView with the same options.");
    }
}

/// <summary>Figures of the last distributed training run in this process (<see cref="MpiRuntime.LastRun"/>).</summary>
/// <param name="Ranks">Processes in the job.</param>
/// <param name="Steps">Optimizer steps, each with one all-reduce of the gradients.</param>
/// <param name="AllreduceSeconds">Wall-clock seconds spent in the gradient all-reduces (including waiting for slower ranks).</param>
/// <param name="AllreduceBytes">Bytes each gradient all-reduce sums (float32 gradients and a small trailer).</param>
/// <param name="WeightsMatched">Whether the final weights had the same checksum on every rank before any re-synchronisation.</param>
public sealed record DistributedRunStatistics(int Ranks, long Steps, double AllreduceSeconds, long AllreduceBytes, bool WeightsMatched)
{
    /// <summary>Mean milliseconds per gradient all-reduce.</summary>
    public double AllreduceMillisecondsPerStep => Steps == 0 ? 0 : AllreduceSeconds * 1000 / Steps;
}
