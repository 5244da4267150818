using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using MLNet.Compression.Tooling;
using Xunit;

namespace MLNet.Compression.DeploymentTests;

/// <summary>
/// Runs the model factory once with <c>--pca</c>: ML.NET's ProjectToPrincipalComponents (rank 32) before a network trained by
/// MLNet.Compression, the whole chain saved as one ordinary ML.NET zip, and what the chain computed in that process.
/// </summary>
public sealed class PcaFactoryFixture : IDisposable
{
    public PcaFactoryFixture()
    {
        OutputDirectory = Path.Combine(Path.GetTempPath(), "mlnet-compression-pca-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(OutputDirectory);
        string factory = typeof(ModelFactoryFixture).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyMetadataAttribute), false)
            .Cast<System.Reflection.AssemblyMetadataAttribute>().First(a => a.Key == ModelFactoryFixture.FactoryPathMetadataKey).Value!;
        ChildProcessResult run = ChildProcess.Run(ChildProcess.DotnetHost(), [factory, "--pca", "--out", OutputDirectory], OutputDirectory, TimeSpan.FromMinutes(5));
        if (run.ExitCode != 0)
            throw new InvalidOperationException($"The model factory (--pca) failed with exit code {run.ExitCode}.{Environment.NewLine}{run.Transcript}");
        ModelPath = Path.Combine(OutputDirectory, "pca-model.zip");
        using var document = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(OutputDirectory, "pca-expected.json")));
        var root = document.RootElement;
        Rank = root.GetProperty("rank").GetInt32();
        Accuracy = BitConverter.Int64BitsToDouble(root.GetProperty("accuracyBits").GetInt64());
        Rows = root.GetProperty("rows").EnumerateArray()
            .Select(r => (r.GetProperty("scoreBits").EnumerateArray().Select(e => BitConverter.UInt32BitsToSingle(e.GetUInt32())).ToArray(),
                r.GetProperty("predictedLabel").GetUInt32()))
            .ToList();
        TestSet = MnistTestSet.Load(root.GetProperty("mnistTestImages").GetString(), root.GetProperty("mnistTestLabels").GetString());
    }

    public string OutputDirectory { get; }

    public string ModelPath { get; }

    public int Rank { get; }

    public double Accuracy { get; }

    public IReadOnlyList<(float[] Score, uint PredictedLabel)> Rows { get; }

    public MnistTestSet TestSet { get; }

    public void Dispose()
    {
        try
        {
            Directory.Delete(OutputDirectory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>PCA + network saved as one zip loads and scores, bit for bit as in the training process, without TorchSharp.</summary>
public sealed class PcaDeploymentTests(PcaFactoryFixture factory) : IClassFixture<PcaFactoryFixture>
{
    [Fact]
    public void PcaChain_LoadsWithMLNetsOwnPcaTransformer_AndScoresBitForBit_WithoutTorchSharp()
    {
        var ml = new MLContext(seed: 1);
        ITransformer model = ml.Model.Load(factory.ModelPath, out _);
        using var lifetime = model as IDisposable;
        var chain = Assert.IsAssignableFrom<IEnumerable<ITransformer>>(model);
        var pca = Assert.Single(Flatten(chain).OfType<PrincipalComponentAnalysisTransformer>());
        Assert.Equal(factory.Rank, Assert.IsType<VectorDataViewType>(pca.GetOutputSchema(Input(ml, 1).Schema)["Features"].Type).Size);

        var scored = model.Transform(Input(ml, factory.Rows.Count));
        var actual = Read(scored);
        Assert.Equal(factory.Rows.Count, actual.Count);
        for (int i = 0; i < actual.Count; i++)
        {
            Assert.Equal(factory.Rows[i].PredictedLabel, actual[i].Label);
            Assert.True(factory.Rows[i].Score.Select(BitConverter.SingleToUInt32Bits).SequenceEqual(actual[i].Score.Select(BitConverter.SingleToUInt32Bits)),
                $"Row {i}: scores differ from the training process's.");
        }
        // Over the whole test split, the accuracy the training process measured.
        var all = Read(model.Transform(Input(ml, factory.TestSet.Count)));
        double accuracy = all.Select((r, i) => r.Label == factory.TestSet.Labels[i] + 1u ? 1 : 0).Average();
        Assert.Equal(factory.Accuracy, accuracy, 12);
        Assert.True(accuracy > 0.85, $"PCA-{factory.Rank} + MLP on 3,000 rows reached only {accuracy:P2}.");
        Assert.DoesNotContain(AppDomain.CurrentDomain.GetAssemblies(), a => a.GetName().Name!.StartsWith("TorchSharp", StringComparison.OrdinalIgnoreCase));
    }

    private static IEnumerable<ITransformer> Flatten(IEnumerable<ITransformer> chain) =>
        chain.SelectMany(t => t is IEnumerable<ITransformer> inner ? Flatten(inner) : [t]);

    private IDataView Input(MLContext ml, int rows) =>
        ml.Data.LoadFromEnumerable(factory.TestSet.Features.Take(rows).Select(f => new ModelInput { Features = f }));

    private static List<(float[] Score, uint Label)> Read(IDataView scored)
    {
        var rows = new List<(float[], uint)>();
        using var cursor = scored.GetRowCursor([scored.Schema["Score"], scored.Schema["PredictedLabel"]]);
        var getScore = cursor.GetGetter<VBuffer<float>>(scored.Schema["Score"]);
        var getLabel = cursor.GetGetter<uint>(scored.Schema["PredictedLabel"]);
        VBuffer<float> s = default;
        uint l = 0;
        while (cursor.MoveNext())
        {
            getScore(ref s);
            getLabel(ref l);
            rows.Add((s.DenseValues().ToArray(), l));
        }
        return rows;
    }
}
