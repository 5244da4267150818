using System.Text.Json.Nodes;
using MLNet.Compression.Tooling;
using Xunit;

namespace MLNet.Compression.DistributedTests;

/// <summary>samples/DistributedTraining under <c>mpiexec -n 2</c> on the first 6,000 MNIST training rows, one epoch.</summary>
public sealed class SampleTests
{
    [MpiFact]
    public void TheSampleTrainsLeNetAcrossTwoRanksAndRankZeroWritesTheZipAndResults()
    {
        string mnist = MnistFetch.EnsureInCache();
        using var dir = new TempFolder();
        var run = MpiJob.RunProgram(MpiJob.SamplePath, 2, TimeSpan.FromMinutes(4),
            "--out", dir.Path, "--epochs", "1", "--train-rows", "6000", "--data", mnist, "--threads", "1");
        Assert.True(run.ExitCode == 0, $"The sample failed (exit {run.ExitCode}).\n{run.Transcript}");
        var results = JsonNode.Parse(File.ReadAllText(dir["results.json"]))!.AsObject();
        Assert.Equal(2, (int)results["ranks"]!);
        Assert.True((bool)results["weightsEqualAcrossRanks"]!);
        Assert.InRange((double)results["accuracy"]!, 0.85, 1.0); // LeNet-300-100 after one epoch on 6,000 rows, on the 10,000 test rows
        Assert.True((double)results["rowsPerSecond"]! > 0);
        Assert.True((double)results["allreduceMillisecondsPerStep"]! > 0);
        Assert.Equal(6000 / 128 + 1, (long)results["steps"]!); // 47 global batches of up to 128 rows
        Assert.True(new FileInfo(dir["model.zip"]).Length > 500_000, "model.zip is missing or too small for LeNet-300-100's 266,610 weights.");
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));
    }
}
