using Xunit;

namespace MLNet.Compression.DistributedTests;

/// <summary>
/// Data-parallel training across two MPI ranks (<c>mpiexec -n 2</c>) of a 16-32-3 network on 2048 synthetic rows read from
/// a binary IDataView that shuffles: the result equals one process's, every rank holds the same weights, stages fine-tune
/// across the ranks, and ranks that read different data fail together.
/// </summary>
public sealed class DataParallelTrainingTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromMinutes(3);

    [MpiFact]
    public void TwoRanksWithBatch64EndWithTheWeightsOfOneProcessWithBatch128()
    {
        using var dir = new TempFolder();
        var single = MpiJob.ReadResult(dir["single.json"], MpiJob.Run(0, Limit, "--out", dir["single.json"], "--batch", "128"));
        var run = MpiJob.Run(2, Limit, "--out", dir["two.json"], "--batch", "64", "--distributed");
        var two = MpiJob.ReadResult(dir["two.json"], run);

        Assert.Equal(2, (int)two["ranks"]!);
        Assert.True((long)two["steps"]! >= 20, $"Expected at least 20 optimizer steps (2 epochs of global batches of 128), got {two["steps"]}.");
        Assert.True((bool)two["weightsMatched"]!, "The ranks' weights diverged during training.\n" + run.Transcript);
        Assert.Equal((double)two["checksumMin"]!, (double)two["checksumMax"]!);
        var expected = MpiJob.Weights(single);
        var actual = MpiJob.Weights(two);
        Assert.Equal(expected.Length, actual.Length);
        double worst = 0;
        int worstIndex = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            // Relative tolerance 1e-4 (with a 1e-6 floor for weights near zero): summation order is all that differs.
            double excess = Math.Abs(actual[i] - expected[i]) - (1e-4 * Math.Abs(expected[i]) + 1e-6);
            if (excess > worst)
                (worst, worstIndex) = (excess, i);
        }
        Assert.True(worstIndex < 0, worstIndex < 0 ? string.Empty
            : $"Weight {worstIndex}: 2 ranks gave {actual[worstIndex]:R}, one process {expected[worstIndex]:R} (beyond relative 1e-4).");
        Assert.Equal((double)single["accuracy"]!, (double)two["accuracy"]!, 3);
        Assert.True((double)two["accuracy"]! > 0.85, $"Accuracy {two["accuracy"]} on the training rows; the network did not learn.");
    }

    [MpiFact]
    public void ValidationAndEarlyStoppingTakeTheDecisionsOfOneProcess()
    {
        using var dir = new TempFolder();
        string[] common = ["--validation", "0.25", "--patience", "1", "--epochs", "8"];
        var single = MpiJob.ReadResult(dir["single.json"], MpiJob.Run(0, Limit, ["--out", dir["single.json"], "--batch", "128", .. common]));
        var two = MpiJob.ReadResult(dir["two.json"], MpiJob.Run(2, Limit, ["--out", dir["two.json"], "--batch", "64", "--distributed", .. common]));

        // Epoch history: rows and validation accuracy are sums over the ranks, so they equal one process's figures.
        Assert.Equal(single["trainingRows"]!.ToJsonString(), two["trainingRows"]!.ToJsonString());
        var expected = single["validationAccuracy"]!.AsArray().Select(v => (double)v!).ToArray();
        var actual = two["validationAccuracy"]!.AsArray().Select(v => (double)v!).ToArray();
        Assert.Equal(expected.Length, actual.Length); // early stopping stopped after the same epoch
        for (int i = 0; i < expected.Length; i++)
            Assert.Equal(expected[i], actual[i], 3);
        Assert.Equal((double)two["checksumMin"]!, (double)two["checksumMax"]!);
        var w1 = MpiJob.Weights(single);
        var w2 = MpiJob.Weights(two);
        for (int i = 0; i < w1.Length; i++)
            Assert.True(Math.Abs(w1[i] - w2[i]) <= 1e-4 * Math.Abs(w1[i]) + 1e-6, $"Weight {i}: {w2[i]:R} across 2 ranks, {w1[i]:R} in one process.");
    }

    [MpiFact]
    public void PruningFineTunesAcrossTheRanksAndEveryRankEndsWithTheSameSparseWeights()
    {
        using var dir = new TempFolder();
        var run = MpiJob.Run(2, Limit, "--out", dir["pruned.json"], "--distributed", "--prune", "--epochs", "1");
        var result = MpiJob.ReadResult(dir["pruned.json"], run);
        Assert.Equal((double)result["checksumMin"]!, (double)result["checksumMax"]!);
        double sparsity = (double)result["pruning"]!["sparsity"]!;
        Assert.InRange(sparsity, 0.45, 0.55);
        Assert.True((double)result["accuracy"]! > 0.7, $"Accuracy {result["accuracy"]} after pruning.");
    }

    [MpiFact]
    public void OnlyRankZeroWritesFilesAndAModelLoadedFromItsCheckpointFineTunesAcrossTheRanks()
    {
        using var dir = new TempFolder();
        string shared = Directory.CreateDirectory(dir["shared"]).FullName;
        var run = MpiJob.Run(2, Limit, "--out", dir["r.json"], "--distributed", "--epochs", "1", "--checkpoint", shared);
        var result = MpiJob.ReadResult(dir["r.json"], run);
        // Every rank called SaveCheckpoint, SaveAtomically and SaveOnnx with its own file name: only rank 0's exist.
        Assert.Equal("[\"model-rank0.ckpt\",\"model-rank0.onnx\",\"model-rank0.zip\"]", result["filesWritten"]!.ToJsonString());
        Assert.Equal(["model-rank0.ckpt", "model-rank0.onnx", "model-rank0.zip"], Directory.GetFiles(shared).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        // The checkpoint does not carry Distributed; PruningOptions.Distributed made the fine-tuning data-parallel anyway.
        Assert.True((long)result["pruning"]!["steps"]! > 0, "The pruning fine-tuning did not run across the ranks.\n" + run.Transcript);
        Assert.InRange((double)result["pruning"]!["sparsity"]!, 0.45, 0.55);
        Assert.Equal((double)result["checksumMin"]!, (double)result["checksumMax"]!);
    }

    [MpiFact]
    public void RanksWithDifferentRowCountsFailTogetherBeforeTheFirstStep()
    {
        using var dir = new TempFolder();
        var run = MpiJob.Run(2, Limit, "--out", dir["r.json"], "--distributed", "--rank1-extra-rows", "300");
        Assert.Equal(3, run.ExitCode);
        string output = run.Stderr;
        Assert.Contains("rank 0: DistributedTrainingException", output);
        Assert.Contains("rank 1: DistributedTrainingException", output);
        Assert.Contains("row count: rank 0 2048, rank 1 2348", output);
        Assert.False(File.Exists(dir["r.json"]));
    }

    [MpiFact]
    public void RanksThatReadDifferentRowsOfAViewWithoutARowCountFailTogether()
    {
        using var dir = new TempFolder();
        var run = MpiJob.Run(2, Limit, "--out", dir["r.json"], "--distributed", "--enumerable", "--rank1-extra-rows", "300");
        Assert.Equal(3, run.ExitCode);
        Assert.Contains("rank 0: DistributedTrainingException", run.Stderr);
        Assert.Contains("rank 1: DistributedTrainingException", run.Stderr);
        Assert.Contains("they read different data", run.Stderr);
    }
}
