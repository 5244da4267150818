using System.Buffers.Binary;
using System.IO.Compression;
using System.Text.Json;
using Xunit;

namespace MLNet.Compression.SampleTests;

/// <summary>Runs <c>MnistCompression --quick</c> once into a temporary folder and reads what it wrote.</summary>
public sealed class QuickRunFixture : IDisposable
{
    public QuickRunFixture()
    {
        OutputDirectory = MainJobProcess.NewTempDirectory();
        // One TorchSharp thread: the job's default (one per core) collapses when other test assemblies share the cores.
        Run = MainJobProcess.Run(OutputDirectory, "--quick", "--device", "cpu", "--threads", "1", "--out", OutputDirectory);
    }

    public string OutputDirectory { get; }

    public MainJobRun Run { get; }

    public void Dispose() => MainJobProcess.DeleteDirectory(OutputDirectory);
}

/// <summary>The main job's quick configuration, end to end: exit code, results.json, the zips and the PNG charts.</summary>
public sealed class MainJobSmokeTests(QuickRunFixture quick) : IClassFixture<QuickRunFixture>
{
    /// <summary>Every row the registered stages produce, in order.</summary>
    private static readonly string[] ExpectedRows =
    [
        "baseline", "lenet5-baseline",
        "pruned", "pruned-quantized-int8-static", "pruned-structured",
        "quantized-float16", "quantized-int8-dynamic", "quantized-int8-static", "quantized-int4", "quantized-int8-qat",
        "lenet5-quantized-float16", "lenet5-quantized-int8-dynamic", "lenet5-quantized-int8-static", "lenet5-quantized-int4",
        "clustered", "distilled-student-alone", "distilled", "deep-compression",
        "incremental-initial", "incremental-increment", "incremental-joint",
        "split-mnist-finetune", "split-mnist-lwf", "split-mnist-ewc", "split-mnist-replay",
        "lenet5-augmented", "lenet5-6k-augmented", "lenet5-6k", "pca-32-mlp", "pca-64-mlp", "pca-128-mlp", "memory-budget", "bfloat16",
    ];

    [Fact]
    public void QuickRun_ExitsWithZero_AndPrintsBothTables()
    {
        Assert.True(quick.Run.ExitCode == 0, $"exit code {quick.Run.ExitCode}{Environment.NewLine}{quick.Run.Output}");
        Assert.Contains("Results (test split)", quick.Run.Output);
        // Table cells wrap, so only the titles are looked for; results.json is checked in detail below.
        Assert.Contains("Beside the published figures (MNIST)", quick.Run.Output);
        Assert.Contains("Wrote " + Path.Combine(quick.OutputDirectory, "results.json"), quick.Run.Output);
    }

    [Fact]
    public void QuickRun_WritesResultsJson_WithEveryRow()
    {
        using var json = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(quick.OutputDirectory, "results.json")));
        var root = json.RootElement;
        Assert.Equal(2, root.GetProperty("schemaVersion").GetInt32());
        Assert.True(root.GetProperty("quick").GetBoolean());
        Assert.True(root.GetProperty("seconds").GetDouble() > 0);
        Assert.True(root.GetProperty("machine").GetProperty("processorCount").GetInt32() > 0);
        Assert.Equal(10_000, root.GetProperty("trainRows").GetInt64());
        Assert.Equal(new[] { "train", "prune", "quantize", "cluster", "distill", "deep-compression", "incremental", "memory-levers" }, root.GetProperty("selectedStages").EnumerateArray().Select(e => e.GetString() ?? "").ToArray());
        Assert.Empty(root.GetProperty("failedStages").EnumerateObject());

        var rows = root.GetProperty("stages").EnumerateArray().ToDictionary(r => r.GetProperty("name").GetString()!);
        Assert.Equal(ExpectedRows, root.GetProperty("stages").EnumerateArray().Select(r => r.GetProperty("name").GetString() ?? "").ToArray());
        foreach (var (name, row) in rows)
        {
            // 10,000 rows and 1-3 epochs: far from the full run's 98-99 %, far above chance. Deep compression prunes 95 % of
            // the weights with one epoch of fine-tuning here (ten in the full run), so it gets a lower floor.
            // Class-incremental fine-tuning, LwF and EWC forget the earlier tasks (about 20 % over ten classes, as published);
            // the incremental scenarios train on 1,000 rows per step.
            var (low, high) = name switch
            {
                "split-mnist-finetune" or "split-mnist-lwf" or "split-mnist-ewc" => (0.10, 0.45),
                "split-mnist-replay" or "deep-compression" => (0.60, 1.0),
                _ when name.StartsWith("incremental-", StringComparison.Ordinal) => (0.70, 1.0),
                _ => (0.80, 1.0),
            };
            Assert.InRange(row.GetProperty("accuracy").GetDouble(), low, high);
            Assert.Equal(2_000, row.GetProperty("testRows").GetInt64());
            Assert.True(row.GetProperty("reloadedLabelsIdentical").GetBoolean(), name);
            long zipBytes = row.GetProperty("zipBytes").GetInt64();
            var zip = new FileInfo(Path.Combine(quick.OutputDirectory, name + ".zip"));
            Assert.True(zip.Exists, $"{zip.FullName} is missing.");
            Assert.Equal(zip.Length, zipBytes);
            using (var archive = ZipFile.OpenRead(zip.FullName))
                Assert.NotEmpty(archive.Entries);
            long artifact = row.GetProperty("artifactBytes").GetInt64();
            long referenceArtifact = row.GetProperty("referenceArtifactBytes").GetInt64();
            Assert.Equal((double)referenceArtifact / artifact, row.GetProperty("compressionRatio").GetDouble(), 6);
            bool incremental = name.StartsWith("incremental-", StringComparison.Ordinal) || name.StartsWith("split-mnist-", StringComparison.Ordinal);
            Assert.Equal(incremental ? name : name.StartsWith("lenet5-", StringComparison.Ordinal) || name == "bfloat16" ? "lenet5-baseline" : "baseline",
                row.GetProperty("compressionReference").GetString());
        }

        Assert.Equal(266_610, rows["baseline"].GetProperty("parameters").GetInt64());
        Assert.Equal(3, rows["baseline"].GetProperty("history").GetArrayLength());
        Assert.Equal(0, rows["quantized-int8-static"].GetProperty("history").GetArrayLength());
        // Han et al.'s per-layer targets leave about 8 % of the weights.
        Assert.InRange(rows["pruned"].GetProperty("nonZeroParameters").GetInt64(), 20_000, 25_000);
        Assert.InRange(rows["quantized-int8-static"].GetProperty("compressionRatio").GetDouble(), 3.5, 4.1);
        Assert.InRange(rows["quantized-int4"].GetProperty("compressionRatio").GetDouble(), 6.5, 8.0);
        Assert.True(rows["pruned-quantized-int8-static"].GetProperty("zipBytes").GetInt64() * 10 < rows["baseline"].GetProperty("zipBytes").GetInt64());
        // Weight sharing: one byte per weight plus a codebook; deep compression: about 2 bytes per surviving weight.
        Assert.InRange(rows["clustered"].GetProperty("compressionRatio").GetDouble(), 3.8, 4.1);
        Assert.InRange(rows["distilled"].GetProperty("parameters").GetInt64(), 1, 266_610 / 5);
        Assert.True(rows["deep-compression"].GetProperty("compressionRatio").GetDouble() > 25);
        Assert.True(rows["deep-compression"].GetProperty("zipBytes").GetInt64() * 30 < rows["baseline"].GetProperty("zipBytes").GetInt64());
        // Incremental rows carry the scenario's figures; replay beats plain fine-tuning and carries its bounded memory.
        var replay = rows["split-mnist-replay"].GetProperty("details");
        Assert.Equal(5, replay.GetProperty("accuracyAfterStep").GetArrayLength());
        Assert.Equal(4, replay.GetProperty("forgetting").GetArrayLength());
        Assert.InRange(replay.GetProperty("replayBytes").GetInt64(), 1, 1000 * (784 + 4));
        Assert.True(rows["split-mnist-replay"].GetProperty("accuracy").GetDouble() > rows["split-mnist-finetune"].GetProperty("accuracy").GetDouble() + 0.2);
        Assert.Equal(2, rows["incremental-increment"].GetProperty("details").GetProperty("accuracyAfterStep").GetArrayLength());
    }

    [Fact]
    public void QuickRun_MeasuresTheMemoryBudgetRowInAFreshProcess_AndFlagsAMiss()
    {
        using var json = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(quick.OutputDirectory, "results.json")));
        var row = json.RootElement.GetProperty("stages").EnumerateArray().Single(r => r.GetProperty("name").GetString() == "memory-budget");
        var details = row.GetProperty("details");
        Assert.StartsWith("fresh child process", details.GetProperty("measuredIn").GetString());
        long estimate = details.GetProperty("estimateBytes").GetInt64();
        long measured = details.GetProperty("measuredPeakGrowthBytes").GetInt64();
        // LeNet-300-100 at batch 103 holds 1 MiB of parameters alone: a child that measured nothing would read near 0.
        Assert.True(measured > 4L << 20, $"measured peak growth {measured:N0} bytes in the child: too small to be a training's");
        Assert.True(details.GetProperty("chosenBatchSize").GetInt32() < details.GetProperty("requestedBatchSize").GetInt32(), "a 14 MiB budget must lower the batch");
        double ratio = details.GetProperty("estimateOverMeasured").GetDouble();
        Assert.Equal((double)estimate / measured, ratio, 9);
        Assert.Equal(ratio is >= 0.8 and <= 1.2, details.GetProperty("estimateWithin20Percent").GetBoolean());
    }

    [Theory]
    [InlineData("accuracy-vs-size.png", 1400, 900)]
    [InlineData("training-curves.png", 1000, 1100)]
    public void QuickRun_WritesValidPngCharts(string fileName, int width, int height)
    {
        string path = Path.Combine(quick.OutputDirectory, fileName);
        Assert.True(File.Exists(path), $"{path} is missing.{Environment.NewLine}{quick.Run.Output}");
        byte[] png = File.ReadAllBytes(path);
        var (w, h) = PngChecks.ReadValidated(png, path);
        Assert.Equal(width, w);
        Assert.Equal(height, h);
        Assert.True(png.Length > 20_000, $"{path} is only {png.Length} bytes: a blank image?");
        Assert.Empty(Directory.GetFiles(quick.OutputDirectory, "*.tmp"));
    }
}

/// <summary>Runs of the main job that select stages.</summary>
public sealed class MainJobStageSelectionTests
{
    [Fact]
    public void ThreadsBelowOne_IsRefusedBeforeAnyWork()
    {
        string dir = MainJobProcess.NewTempDirectory();
        try
        {
            var run = MainJobProcess.Run(dir, "--threads", "0", "--out", dir);
            Assert.Equal(2, run.ExitCode);
            Assert.Contains("--threads must be 1 or more; got 0.", run.Output);
            Assert.False(File.Exists(Path.Combine(dir, "results.json")));
        }
        finally
        {
            MainJobProcess.DeleteDirectory(dir);
        }
    }

    [Fact]
    public void UnregisteredStage_FailsWithTheListOfAvailableStages()
    {
        string dir = MainJobProcess.NewTempDirectory();
        try
        {
            var run = MainJobProcess.Run(dir, "--stages", "clusters", "--out", dir);
            Assert.Equal(2, run.ExitCode);
            Assert.Contains("'clusters' is not a stage", run.Output);
            Assert.Contains("Available stages: train, prune, quantize, cluster, distill, deep-compression, incremental, memory-levers", run.Output);
            Assert.False(File.Exists(Path.Combine(dir, "results.json")));
        }
        finally
        {
            MainJobProcess.DeleteDirectory(dir);
        }
    }

    [Fact]
    public void PruneAlone_TrainsTheBaselineOnDemand_AndReportsOnlyItsRows()
    {
        string dir = MainJobProcess.NewTempDirectory();
        try
        {
            var run = MainJobProcess.Run(dir, "--quick", "--device", "cpu", "--threads", "1", "--stages", "prune", "--epochs", "1", "--out", dir);
            Assert.True(run.ExitCode == 0, $"exit code {run.ExitCode}{Environment.NewLine}{run.Output}");
            using var json = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir, "results.json")));
            var rows = json.RootElement.GetProperty("stages").EnumerateArray().ToList();
            Assert.Equal(new[] { "pruned", "pruned-quantized-int8-static", "pruned-structured" }, rows.Select(r => r.GetProperty("name").GetString() ?? "").ToArray());
            Assert.All(rows, r => Assert.Equal("baseline", r.GetProperty("compressionReference").GetString()));
            // The baseline was trained (its float32 ONNX size is the reference) but is not a row of this run.
            Assert.All(rows, r => Assert.InRange(r.GetProperty("referenceArtifactBytes").GetInt64(), 1_000_000, 1_100_000));
            Assert.False(File.Exists(Path.Combine(dir, "baseline.zip")));
        }
        finally
        {
            MainJobProcess.DeleteDirectory(dir);
        }
    }
}

/// <summary>Checks a PNG's structure: signature, IHDR first, every chunk's CRC, IDAT present, IEND last.</summary>
internal static class PngChecks
{
    private static readonly byte[] Signature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

    public static (int Width, int Height) ReadValidated(byte[] png, string path)
    {
        Assert.True(png.AsSpan().StartsWith(Signature), $"{path} does not start with the PNG signature.");
        int offset = Signature.Length, width = 0, height = 0, chunks = 0;
        bool idat = false, iend = false;
        while (offset + 12 <= png.Length && !iend)
        {
            int length = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(offset));
            Assert.InRange(length, 0, png.Length - offset - 12);
            string type = System.Text.Encoding.ASCII.GetString(png, offset + 4, 4);
            uint crc = BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(offset + 8 + length));
            Assert.True(Crc32(png.AsSpan(offset + 4, 4 + length)) == crc, $"{path}: bad CRC in chunk {type}.");
            if (chunks == 0)
            {
                Assert.Equal("IHDR", type);
                width = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(offset + 8));
                height = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(offset + 12));
            }
            idat |= type == "IDAT";
            iend = type == "IEND";
            offset += 12 + length;
            chunks++;
        }
        Assert.True(idat, $"{path} has no image data (IDAT).");
        Assert.True(iend && offset == png.Length, $"{path} does not end with IEND.");
        return (width, height);
    }

    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++)
                crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
        }
        return ~crc;
    }
}
