using System.Reflection;
using System.Text.Json;
using MLNet.Compression.Tooling;

namespace MLNet.Compression.DeploymentTests;

/// <summary>What the factory computed in-process for one test row.</summary>
/// <param name="Index">Row index in the MNIST test split.</param>
/// <param name="PredictedLabel">The raw key (1-based index into the class names).</param>
/// <param name="Score">The probabilities, exactly (decoded from their IEEE-754 bit patterns).</param>
public sealed record ExpectedRow(int Index, uint PredictedLabel, float[] Score);

/// <summary>
/// Runs MLNet.Compression.ModelFactory once (as <c>dotnet &lt;factory.dll&gt; --out &lt;temp dir&gt;</c>), so the
/// training, TorchSharp and the library stay in that child process, and reads what it wrote: model.zip and expected.json.
/// Also loads the MNIST test split (the factory run guarantees the files exist).
/// </summary>
public sealed class ModelFactoryFixture : IDisposable
{
    /// <summary>The AssemblyMetadata key the project file writes the factory's output path under.</summary>
    public const string FactoryPathMetadataKey = "ModelFactoryPath";

    private static readonly TimeSpan FactoryTimeout = TimeSpan.FromMinutes(5);

    public ModelFactoryFixture()
    {
        FactoryPath = FindFactory();
        OutputDirectory = Path.Combine(Path.GetTempPath(), "mlnet-compression-deploy-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(OutputDirectory);
        try
        {
            FactoryOutput = RunFactory(FactoryPath, OutputDirectory);
            ModelPath = Path.Combine(OutputDirectory, "model.zip");
            string expectedPath = Path.Combine(OutputDirectory, "expected.json");
            if (!File.Exists(ModelPath) || !File.Exists(expectedPath))
                throw new InvalidOperationException($"The model factory exited with 0 but did not write model.zip and expected.json.{Environment.NewLine}{FactoryOutput}");
            ReadExpected(expectedPath);
            TestSet = MnistTestSet.Load(factoryImagesPath, factoryLabelsPath);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The factory dll this fixture ran.</summary>
    public string FactoryPath { get; }

    /// <summary>Temporary directory with the factory's files; deleted on dispose.</summary>
    public string OutputDirectory { get; }

    /// <summary>Everything the factory printed (stdout, then stderr).</summary>
    public string FactoryOutput { get; } = "";

    /// <summary>The saved ML.NET zip.</summary>
    public string ModelPath { get; } = "";

    /// <summary>MicroAccuracy over the test split, from Evaluate on the in-process model.</summary>
    public double ExpectedAccuracy { get; private set; }

    /// <summary>The number of test rows the factory evaluated.</summary>
    public long ExpectedTestRowCount { get; private set; }

    /// <summary>The PredictedLabel key values the in-process model reported.</summary>
    public string[] ClassNames { get; private set; } = [];

    /// <summary>In-process results for the first test rows, in order.</summary>
    public IReadOnlyList<ExpectedRow> ExpectedRows { get; private set; } = [];

    /// <summary>The MNIST test split, read by this project.</summary>
    public MnistTestSet TestSet { get; } = null!;

    private string? factoryImagesPath;
    private string? factoryLabelsPath;

    public void Dispose()
    {
        try
        {
            if (Directory.Exists(OutputDirectory))
                Directory.Delete(OutputDirectory, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    internal static string FindFactory()
    {
        string? path = typeof(ModelFactoryFixture).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == FactoryPathMetadataKey)?.Value;
        if (string.IsNullOrEmpty(path))
            throw new InvalidOperationException($"The test assembly has no [AssemblyMetadata(\"{FactoryPathMetadataKey}\")]; the project file should generate it.");
        if (!File.Exists(path))
            throw new FileNotFoundException($"The model factory '{path}' does not exist; build MLNet.Compression.ModelFactory (building this project should).", path);
        return path;
    }

    private static string RunFactory(string factoryPath, string outputDirectory)
    {
        ChildProcessResult run = ChildProcess.Run(ChildProcess.DotnetHost(), [factoryPath, "--out", outputDirectory], outputDirectory, FactoryTimeout);
        if (run.ExitCode != 0)
            throw new InvalidOperationException($"The model factory failed with exit code {run.ExitCode} after {run.Seconds:F1} s.{Environment.NewLine}{run.Transcript}");
        return run.Transcript;
    }

    private void ReadExpected(string path)
    {
        using var document = JsonDocument.Parse(File.ReadAllBytes(path));
        JsonElement root = document.RootElement;
        if (root.GetProperty("format").GetInt32() != 1)
            throw new InvalidDataException($"'{path}': unknown format {root.GetProperty("format")}.");

        ExpectedAccuracy = BitConverter.Int64BitsToDouble(root.GetProperty("accuracyBits").GetInt64());
        if (ExpectedAccuracy != root.GetProperty("accuracy").GetDouble())
            throw new InvalidDataException($"'{path}': accuracy and accuracyBits disagree.");
        ExpectedTestRowCount = root.GetProperty("testRowCount").GetInt64();
        ClassNames = root.GetProperty("classNames").EnumerateArray().Select(e => e.GetString() ?? "").ToArray();
        factoryImagesPath = root.GetProperty("mnistTestImages").GetString();
        factoryLabelsPath = root.GetProperty("mnistTestLabels").GetString();

        var rows = new List<ExpectedRow>();
        foreach (JsonElement row in root.GetProperty("rows").EnumerateArray())
        {
            float[] score = row.GetProperty("scoreBits").EnumerateArray().Select(e => BitConverter.UInt32BitsToSingle(e.GetUInt32())).ToArray();
            float[] decimalScore = row.GetProperty("score").EnumerateArray().Select(e => e.GetSingle()).ToArray();
            if (!score.SequenceEqual(decimalScore))
                throw new InvalidDataException($"'{path}': score and scoreBits disagree in row {row.GetProperty("index")}.");
            rows.Add(new ExpectedRow(row.GetProperty("index").GetInt32(), row.GetProperty("predictedLabel").GetUInt32(), score));
        }
        ExpectedRows = rows;
    }
}
