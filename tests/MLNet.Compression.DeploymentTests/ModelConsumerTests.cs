using System.Globalization;
using System.Reflection;
using System.Text.Json;
using MLNet.Compression.Tooling;
using Xunit;

namespace MLNet.Compression.DeploymentTests;

/// <summary>
/// samples/ModelConsumer (the Model Builder-style application) run as its own process on the zip the factory saved:
/// it predicts what the trained model predicted in-process, and its process never loads TorchSharp or libtorch.
/// </summary>
public sealed class ModelConsumerTests(ModelFactoryFixture factory) : IClassFixture<ModelFactoryFixture>
{
    /// <summary>The AssemblyMetadata key the project file writes the consumer's output path under.</summary>
    public const string ConsumerPathMetadataKey = "ModelConsumerPath";

    private static readonly int[] Rows = [0, 1, 2, 42, 117, 199];
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(3);

    [Fact]
    public void ModelConsumer_PredictsTheInProcessScores_WithoutTorchSharp()
    {
        string consumer = FindConsumer();
        int poolRows = factory.ExpectedRows.Count;
        string dataDir = Path.GetDirectoryName(factory.TestSet.ImagesPath)!;
        var (exitCode, stdout, stderr) = Run(consumer,
            [factory.ModelPath, "--data-dir", dataDir, "--rows", string.Join(',', Rows), "--pool-rows", poolRows.ToString(CultureInfo.InvariantCulture)]);
        string transcript = $"exit code {exitCode}{Environment.NewLine}--- stdout ---{Environment.NewLine}{stdout}--- stderr ---{Environment.NewLine}{stderr}";
        Assert.True(exitCode == 0, transcript);

        // One PREDICTION line per requested row, with exactly the key and the probabilities the trained model gave.
        var predictions = Lines(stdout, "PREDICTION").Select(Fields).ToList();
        Assert.Equal(Rows, predictions.Select(p => int.Parse(p["row"], CultureInfo.InvariantCulture)));
        foreach (var p in predictions)
        {
            int row = int.Parse(p["row"], CultureInfo.InvariantCulture);
            ExpectedRow expected = factory.ExpectedRows[row];
            Assert.Equal(row, expected.Index);
            Assert.Equal(factory.TestSet.Labels[row].ToString(CultureInfo.InvariantCulture), p["label"]);
            Assert.Equal(expected.PredictedLabel, uint.Parse(p["key"], CultureInfo.InvariantCulture));
            Assert.Equal(factory.ClassNames[expected.PredictedLabel - 1], p["predicted"]);
            float[] scores = p["scores"].Split(';').Select(s => float.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture)).ToArray();
            Assert.True(expected.Score.Select(BitConverter.SingleToUInt32Bits).SequenceEqual(scores.Select(BitConverter.SingleToUInt32Bits)),
                $"row {row}: consumer scores [{p["scores"]}], in-process [{string.Join(';', expected.Score.Select(s => s.ToString("R", CultureInfo.InvariantCulture)))}]");
        }
        // The ASCII drawing of each digit is there (the 7 of row 0 has ink on several lines).
        Assert.Contains("Test row 0: label 7", stdout);
        Assert.True(stdout.Split('\n').Count(l => l.StartsWith("    |", StringComparison.Ordinal) && l.Trim('|', ' ', '\r').Length > 0) >= Rows.Length * 5, transcript);

        // The pool scored the same rows from several threads: no row differs from the single engine, and as many are
        // right as the in-process predictions of those rows.
        var pool = Fields(Assert.Single(Lines(stdout, "POOL")));
        Assert.Equal(poolRows, int.Parse(pool["rows"], CultureInfo.InvariantCulture));
        Assert.Equal("0", pool["differ"]);
        int expectedCorrect = factory.ExpectedRows.Count(r => factory.ClassNames[r.PredictedLabel - 1] == factory.TestSet.Labels[r.Index].ToString(CultureInfo.InvariantCulture));
        Assert.Equal(expectedCorrect, int.Parse(pool["correct"], CultureInfo.InvariantCulture));
        Assert.InRange(int.Parse(pool["engines"], CultureInfo.InvariantCulture), 1, 64);

        // Nothing of TorchSharp in the process, managed or native; the peak memory was measured.
        Assert.Equal("false", Value(stdout, "LOADED_TORCHSHARP"));
        if (OperatingSystem.IsLinux())
            Assert.Equal("false", Value(stdout, "LOADED_LIBTORCH"));
        long peak = long.Parse(Value(stdout, "PEAK_MEMORY_BYTES"), CultureInfo.InvariantCulture);
        Assert.InRange(peak, 16L << 20, 4L << 30);

        // ... and nothing of it in the consumer's build output or its dependency list either.
        string outputDirectory = Path.GetDirectoryName(consumer)!;
        string[] forbidden = Directory.EnumerateFiles(outputDirectory, "*", SearchOption.AllDirectories)
            .Select(Path.GetFileName)
            .Where(n => n!.StartsWith("TorchSharp", StringComparison.OrdinalIgnoreCase)
                        || n.Contains("LibTorchSharp", StringComparison.OrdinalIgnoreCase)
                        || n.StartsWith("libtorch", StringComparison.OrdinalIgnoreCase)
                        || n.StartsWith("MLNet.Compression", StringComparison.OrdinalIgnoreCase))
            .Select(n => n!)
            .ToArray();
        Assert.True(forbidden.Length == 0, $"In '{outputDirectory}': {string.Join(", ", forbidden)}");
        using var deps = JsonDocument.Parse(File.ReadAllBytes(Path.ChangeExtension(consumer, ".deps.json")));
        string[] libraries = deps.RootElement.GetProperty("libraries").EnumerateObject().Select(l => l.Name).ToArray();
        Assert.Contains(libraries, l => l.StartsWith("Microsoft.ML.OnnxTransformer/", StringComparison.Ordinal));
        Assert.DoesNotContain(libraries, l => l.StartsWith("TorchSharp", StringComparison.OrdinalIgnoreCase) || l.StartsWith("libtorch", StringComparison.OrdinalIgnoreCase)
                                              || l.StartsWith("MLNet.Compression", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public void ModelConsumer_MissingModel_ExitsWithOneAndSaysWhatToRun()
    {
        string missing = Path.Combine(factory.OutputDirectory, "no-such-model.zip");
        var (exitCode, _, stderr) = Run(FindConsumer(), [missing, "--pool-rows", "0"]);
        Assert.Equal(1, exitCode);
        Assert.Contains(missing, stderr);
        Assert.Contains("samples/MnistCompression", stderr);
    }

    private static string FindConsumer()
    {
        string? path = typeof(ModelConsumerTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == ConsumerPathMetadataKey)?.Value;
        if (string.IsNullOrEmpty(path))
            throw new InvalidOperationException($"The test assembly has no [AssemblyMetadata(\"{ConsumerPathMetadataKey}\")]; the project file should generate it.");
        if (!File.Exists(path))
            throw new FileNotFoundException($"The consumer sample '{path}' does not exist; build samples/ModelConsumer (building this project should).", path);
        return path;
    }

    private (int ExitCode, string Stdout, string Stderr) Run(string consumer, string[] arguments)
    {
        ChildProcessResult run = ChildProcess.Run(ChildProcess.DotnetHost(), [consumer, .. arguments], factory.OutputDirectory, Timeout);
        return (run.ExitCode, run.Stdout, run.Stderr);
    }

    private static IEnumerable<string> Lines(string output, string tag)
        => output.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.StartsWith(tag + " ", StringComparison.Ordinal));

    private static Dictionary<string, string> Fields(string line)
        => line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1)
            .Select(f => f.Split('=', 2))
            .ToDictionary(kv => kv[0], kv => kv.Length == 2 ? kv[1] : "");

    private static string Value(string output, string key)
    {
        string[] values = output.Split('\n').Select(l => l.TrimEnd('\r'))
            .Where(l => l.StartsWith(key + "=", StringComparison.Ordinal))
            .Select(l => l[(key.Length + 1)..])
            .ToArray();
        Assert.True(values.Length == 1, $"expected one {key}= line, found {values.Length}:{Environment.NewLine}{output}");
        return values[0];
    }
}
