using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Tooling;
using Xunit;

namespace MLNet.Compression.DeploymentTests;

/// <summary>Runs the model factory's <c>--tasks</c> mode once: binary and regression zips (float32 and int8) with their expected scores.</summary>
public sealed class TaskModelsFactoryFixture : IDisposable
{
    public TaskModelsFactoryFixture()
    {
        OutputDirectory = Path.Combine(Path.GetTempPath(), "mlnet-compression-tasks-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(OutputDirectory);
        try
        {
            var run = ChildProcess.Run(ChildProcess.DotnetHost(), [ModelFactoryFixture.FindFactory(), "--tasks", OutputDirectory], OutputDirectory,
                TimeSpan.FromMinutes(5));
            if (run.ExitCode != 0)
                throw new InvalidOperationException($"The model factory (--tasks) failed with exit code {run.ExitCode}.{Environment.NewLine}{run.Transcript}");
            using var document = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(OutputDirectory, "tasks.json")));
            var root = document.RootElement;
            FeatureCount = root.GetProperty("features").GetInt32();
            Rows = root.GetProperty("rows").EnumerateArray()
                .Select(r => r.EnumerateArray().Select(v => BitConverter.UInt32BitsToSingle(v.GetUInt32())).ToArray()).ToArray();
            Models = root.GetProperty("models").EnumerateArray().Select(m => new ExpectedTaskModel(
                m.GetProperty("name").GetString()!,
                Path.Combine(OutputDirectory, m.GetProperty("zip").GetString()!),
                m.GetProperty("binary").GetBoolean(),
                Floats(m.GetProperty("scoreBits")),
                m.TryGetProperty("probabilityBits", out var p) ? Floats(p) : null,
                m.TryGetProperty("predictedLabel", out var l) ? l.EnumerateArray().Select(b => b.GetBoolean()).ToArray() : null)).ToArray();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public string OutputDirectory { get; }

    public int FeatureCount { get; }

    public float[][] Rows { get; } = [];

    public IReadOnlyList<ExpectedTaskModel> Models { get; } = [];

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
    }

    private static float[] Floats(JsonElement bits) => bits.EnumerateArray().Select(v => BitConverter.UInt32BitsToSingle(v.GetUInt32())).ToArray();
}

/// <summary>One zip of the factory's --tasks mode and what the trained transformer gave in the factory's process.</summary>
public sealed record ExpectedTaskModel(string Name, string ZipPath, bool Binary, float[] Score, float[]? Probability, bool[]? PredictedLabel);

/// <summary>
/// Binary and regression zips (float32 and int8), loaded and scored in this process, which references no TorchSharp and no
/// MLNet.Compression: ML.NET's own columns (scalar Score, Probability, Boolean PredictedLabel) with exactly the values the
/// trained transformer gave in the factory's process, NaN rows included.
/// </summary>
public sealed class TaskModelDeploymentTests(TaskModelsFactoryFixture factory) : IClassFixture<TaskModelsFactoryFixture>
{
    public static TheoryData<string> ModelNames => new() { "binary-float32", "binary-int8", "regression-float32", "regression-int8" };

    [Theory]
    [MemberData(nameof(ModelNames))]
    public void SavedZip_LoadsWithoutTorchSharp_AndScoresExactlyAsInProcess(string name)
    {
        var expected = factory.Models.Single(m => m.Name == name);
        var ml = new MLContext(seed: 1);
        var model = ml.Model.Load(expected.ZipPath, out _);
        var definition = SchemaDefinition.Create(typeof(FeatureRow));
        definition["Features"].ColumnType = new VectorDataViewType(NumberDataViewType.Single, factory.FeatureCount);
        var data = ml.Data.LoadFromEnumerable(factory.Rows.Select(r => new FeatureRow { Features = r }), definition);
        var scored = model.Transform(data);

        Assert.Equal(NumberDataViewType.Single, scored.Schema["Score"].Type);
        Assert.Equal(Bits(expected.Score), Bits(scored.GetColumn<float>("Score").ToArray()));
        Assert.Contains(scored.GetColumn<float>("Score"), float.IsNaN); // the NaN row scores NaN
        if (expected.Binary)
        {
            Assert.Equal(BooleanDataViewType.Instance, scored.Schema["PredictedLabel"].Type);
            Assert.Equal(Bits(expected.Probability!), Bits(scored.GetColumn<float>("Probability").ToArray()));
            Assert.Equal(expected.PredictedLabel, scored.GetColumn<bool>("PredictedLabel").ToArray());
        }
        else
        {
            Assert.Null(scored.Schema.GetColumnOrNull("PredictedLabel"));
        }
        Assert.DoesNotContain(AppDomain.CurrentDomain.GetAssemblies(), a => a.GetName().Name is "TorchSharp" or "MLNet.Compression");
    }

    private static uint[] Bits(float[] values) => values.Select(BitConverter.SingleToUInt32Bits).ToArray();

    private sealed class FeatureRow
    {
        public float[] Features { get; set; } = [];
    }
}
