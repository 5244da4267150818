using System.IO.Compression;
using Microsoft.ML;
using MLNet.Compression.Clustering;
using MLNet.Compression.Onnx.Proto;
using MLNet.Compression.Pruning;
using MLNet.Compression.Quantization;
using MLNet.Compression.Tests.Quantization;
using MLNet.Compression.Tests.Training;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Clustering;

public sealed class WeightClusteringEstimatorTests : IClassFixture<QuantizableMlpFixture>
{
    private readonly QuantizableMlpFixture fixture;
    private readonly ITestOutputHelper output;

    public WeightClusteringEstimatorTests(QuantizableMlpFixture fixture, ITestOutputHelper output)
    {
        this.fixture = fixture;
        this.output = output;
    }

    private MLContext Ml => fixture.Context;

    private double Accuracy(ITransformer model) => Ml.MulticlassClassification.Evaluate(model.Transform(fixture.Test)).MicroAccuracy;

    [Theory]
    [InlineData(16, CentroidInitialization.Linear, 1)]
    [InlineData(8, CentroidInitialization.Density, 0)]
    [InlineData(32, CentroidInitialization.Random, 1)]
    public void EveryLayerKeepsAtMostKValuesAfterFineTuningAndAfterSaveAndLoad(int k, CentroidInitialization init, int epochs)
    {
        var original = fixture.Model.Network.ParameterizedLayers.Select(l => (float[])l.Weight.Clone()).ToArray();
        var estimator = Ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { ClusterCount = k, Initialization = init, Epochs = epochs });
        using var clustered = estimator.Fit(fixture.Train);
        var report = estimator.Report!;
        output.WriteLine(report.ToString());
        // The source model is untouched.
        Assert.Equal(original, fixture.Model.Network.ParameterizedLayers.Select(l => l.Weight));

        foreach (var (layer, distinct) in clustered.CountDistinctWeights())
            Assert.InRange(distinct, 2, k);
        Assert.All(report.Layers, l => Assert.InRange(l.DistinctValues, 1, k));
        Assert.All(report.Layers, l => Assert.True(l.DistinctValuesBefore > 1000 || l.Name == "output", $"{l.Name} had {l.DistinctValuesBefore} values"));
        Assert.Equal(epochs, report.FineTuningEpochs);
        Assert.Equal(epochs > 0, report.FineTuningSteps > 0);

        double accuracy = Accuracy(clustered);
        output.WriteLine($"float {fixture.BaseAccuracy:F4}, clustered k={k} {accuracy:F4}");
        Assert.True(accuracy >= fixture.BaseAccuracy - (k >= 16 ? 0.01 : 0.03), $"accuracy {accuracy:F4} vs float {fixture.BaseAccuracy:F4}");

        // The artifact: codebook + uint8 index per weight, about a quarter of the float32 model.
        Assert.True(clustered.Memory.ArtifactBytes < fixture.Model.Memory.ArtifactBytes / 3.5,
            $"ONNX {clustered.Memory.ArtifactBytes:N0} vs float {fixture.Model.Memory.ArtifactBytes:N0}");
        var onnx = ModelProto.Parser.ParseFrom(clustered.GetOnnxModel());
        foreach (var layer in new[] { "fc1", "output" })
        {
            var codebook = onnx.Graph.Initializer.Single(i => i.Name == layer + ".weight.codebook");
            var indices = onnx.Graph.Initializer.Single(i => i.Name == layer + ".weight.indices");
            Assert.Equal((int)TensorProto.Types.DataType.Uint8, indices.DataType);
            Assert.True(codebook.Dims[0] <= k + 1);
            Assert.All(indices.RawData.ToByteArray(), b => Assert.True(b < codebook.Dims[0]));
        }

        // Checkpoint round trip: same weights, same bound.
        using var temp = TestMnist.NewTempDirectory();
        var dir = temp.Path;
        {
            var checkpoint = Path.Combine(dir, "clustered.ckpt");
            clustered.SaveCheckpoint(checkpoint);
            using var restored = NeuralNetworkTransformer.LoadCheckpoint(Ml, checkpoint);
            Assert.Equal(clustered.Network.ParameterizedLayers.Select(l => l.Weight), restored.Network.ParameterizedLayers.Select(l => l.Weight));
            Assert.All(restored.CountDistinctWeights().Values, d => Assert.InRange(d, 1, k));

            // ML.NET zip round trip: the saved ONNX still holds the codebooks, and every prediction is identical.
            var zip = Path.Combine(dir, "clustered.zip");
            Ml.Model.Save(clustered, fixture.Train.Schema, zip);
            using (var archive = ZipFile.OpenRead(zip))
            {
                var saved = archive.Entries.Select(e => { using var s = e.Open(); using var ms = new MemoryStream(); s.CopyTo(ms); return ms.ToArray(); })
                    .Single(b => b.AsSpan().IndexOf("fc1.weight.codebook"u8) >= 0);
                Assert.True(saved.AsSpan().IndexOf(clustered.GetOnnxModel()) >= 0, "the zip carries the clustered ONNX model");
            }
            var loaded = new MLContext().Model.Load(zip, out _);
            var (s1, l1) = Scoring.Read(clustered.Transform(fixture.Test));
            var (s2, l2) = Scoring.Read(loaded.Transform(fixture.Test));
            Assert.Equal(l1, l2);
            Assert.Equal(s1, s2);
        }
    }

    [Fact]
    public void PrunedZerosStayZeroAndArePackedSparsely()
    {
        var pruning = new PruningOptions { Schedule = PruningSchedule.ConstantSparsity(0.9), Epochs = 1 };
        using var pruned = Ml.Compression().Prune(fixture.Model, pruning).Fit(fixture.Train);
        var zeros = pruned.Network.ParameterizedLayers.Select(l => l.Weight.Select(w => w == 0f).ToArray()).ToArray();
        var estimator = Ml.Compression().ClusterWeights(pruned, new WeightClusteringOptions { ClusterCount = 16, Epochs = 1 });
        using var clustered = estimator.Fit(fixture.Train);
        output.WriteLine(estimator.Report!.ToString());
        var layers = clustered.Network.ParameterizedLayers.ToArray();
        for (int i = 0; i < layers.Length; i++)
            for (int j = 0; j < layers[i].Weight.Length; j++)
                Assert.Equal(zeros[i][j], layers[i].Weight[j] == 0f);
        Assert.All(estimator.Report!.Layers, l => Assert.Equal("SparseIndices", l.Encoding));
        // Two bytes per non-zero (index + gap) instead of four: smaller than the pruned float model's compact storage.
        Assert.True(clustered.Memory.ArtifactBytes < pruned.Memory.ArtifactBytes * 0.6,
            $"clustered {clustered.Memory.ArtifactBytes:N0} vs pruned {pruned.Memory.ArtifactBytes:N0}");
        Assert.True(Accuracy(clustered) >= Accuracy(pruned) - 0.01);
        var (s1, l1) = Scoring.Read(clustered.Transform(fixture.Test));
        using var temp = TestMnist.NewTempDirectory();
        var dir = temp.Path;
        {
            var zip = Path.Combine(dir, "m.zip");
            Ml.Model.Save(clustered, fixture.Train.Schema, zip);
            var (s2, l2) = Scoring.Read(new MLContext().Model.Load(zip, out _).Transform(fixture.Test));
            Assert.Equal(l1, l2);
            Assert.Equal(s1, s2);
        }
    }

    [Fact]
    public void ChainedAfterTrainingAndPruningAsOneDeepCompressionPipeline()
    {
        var pipeline = Ml.Compression().NeuralNetwork(QuantizableMlpFixture.Options(epochs: 1))
            .Prune(new PruningOptions { Schedule = PruningSchedule.ConstantSparsity(0.8), Epochs = 1 })
            .ClusterWeights(new WeightClusteringOptions { ClusterCount = 8, Epochs = 1, KeepFloat = { "output" } });
        using var model = pipeline.Fit(fixture.Train);
        var report = pipeline.Report!;
        Assert.Equal("Float", report.Layers.Single(l => l.Name == "output").Encoding);
        Assert.Equal(0, report.Layers.Single(l => l.Name == "output").RequestedClusters);
        Assert.InRange(model.CountDistinctWeights()["fc1"], 2, 8);
        Assert.True(model.CountDistinctWeights()["output"] > 8);
        output.WriteLine(model.GetSparsity().ToString());
        Assert.True(model.GetSparsity().Layers.Single(l => l.Name == "fc1").Sparsity >= 0.79);
        double accuracy = Accuracy(model);
        output.WriteLine($"accuracy {accuracy:F4}");
        // One epoch each of training, pruning and clustering on 6,000 rows: well short of converged (the main job measures full runs).
        Assert.True(accuracy > 0.80, $"accuracy {accuracy:F4}");
    }

    [Fact]
    public void TheReportedResidentBytesAreWhatOnnxRuntimeKeepsAfterOptimizingTheGraph()
    {
        // ONNX Runtime has no codebook-lookup GEMM: at load it folds Cast + Gather into a float32 weight, so the clustered
        // artifact is small but the resident weights are float32, and the memory report says so.
        using var clustered = Ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { ClusterCount = 16, Epochs = 0 }).Fit(fixture.Train);
        using var temp = TestMnist.NewTempDirectory();
        using (var so = new Microsoft.ML.OnnxRuntime.SessionOptions { OptimizedModelFilePath = temp["optimized.onnx"] })
        using (new Microsoft.ML.OnnxRuntime.InferenceSession(clustered.GetOnnxModel(), so))
        {
        }
        var optimized = ModelProto.Parser.ParseFrom(File.ReadAllBytes(temp["optimized.onnx"]));
        long resident = optimized.Graph.Initializer.Sum(i => (long)i.RawData.Length);
        Assert.Equal(clustered.Memory.ResidentWeightBytes, resident);
        Assert.Equal(clustered.ParameterCount * sizeof(float), resident);
        Assert.True(clustered.Memory.ArtifactBytes < resident / 3.5);
    }

    [Fact]
    public void QuantizingAClusteredModelKeepsItsSharedValuesAsInt8()
    {
        using var clustered = Ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { ClusterCount = 16, Epochs = 0 }).Fit(fixture.Train);
        using var quantized = Ml.Compression().Quantize(clustered, new QuantizationOptions { Mode = QuantizationMode.Int8Static }).Fit(fixture.Train);
        Assert.True(Accuracy(quantized) >= Accuracy(clustered) - 0.01);
        Assert.NotNull(quantized.Recipe.Quantization);
    }

    [Fact]
    public void ContinuingAClusteredModelClustersItAgain()
    {
        using var clustered = Ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { ClusterCount = 8, Epochs = 0 }).Fit(fixture.Train);
        var next = Ml.Data.TakeRows(Ml.Data.SkipRows(fixture.Train, 3000), 1000);
        using var continued = Ml.Compression().ContinueTraining(clustered, new MLNet.Compression.Incremental.ContinueTrainingOptions
        {
            Strategies = MLNet.Compression.Incremental.ContinualStrategies.None,
            Epochs = 1,
        }).Fit(next);
        Assert.NotEqual(clustered.Network.ParameterizedLayers.First().Weight, continued.Network.ParameterizedLayers.First().Weight);
        Assert.All(continued.CountDistinctWeights().Values, d => Assert.InRange(d, 2, 8));
        Assert.NotNull(continued.Recipe.Clustering);
        Assert.True(Accuracy(continued) >= Accuracy(clustered) - 0.03);
    }

    [Fact]
    public void BadOptionsThrowNamingTheOption()
    {
        Assert.Equal("ClusterCount", Assert.Throws<ArgumentOutOfRangeException>(() =>
            Ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { ClusterCount = 3 })).ParamName);
        Assert.Equal("ClusterCount", Assert.Throws<ArgumentOutOfRangeException>(() =>
            Ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { ClusterCount = 257 })).ParamName);
        var perLayer = Assert.Throws<ArgumentOutOfRangeException>(() =>
            Ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { LayerClusterCount = { ["fc1"] = 1000 } }));
        Assert.Contains("fc1", perLayer.Message);
        Assert.Equal("Epochs", Assert.Throws<ArgumentOutOfRangeException>(() =>
            Ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { Epochs = -1 })).ParamName);
        Assert.Equal("LearningRate", Assert.Throws<ArgumentOutOfRangeException>(() =>
            Ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { LearningRate = 0 })).ParamName);
        var unknown = Assert.Throws<ArgumentException>(() =>
            Ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { KeepFloat = { "fc9" } }));
        Assert.Contains("fc9", unknown.Message);
        Assert.Contains("fc1, output", unknown.Message);
        var nothing = Assert.Throws<ArgumentException>(() =>
            Ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions { KeepFloat = { "fc1", "output" } }));
        Assert.Contains("Nothing to cluster", nothing.Message);
        Assert.Throws<ArgumentNullException>(() => Ml.Compression().ClusterWeights(null!, new WeightClusteringOptions()));
        // Wrong data at Fit: feature size differs.
        var wrong = Ml.Data.LoadFromEnumerable(new[] { new SmallRow { Label = 1, Features = new float[10] } });
        var bad = Assert.Throws<ArgumentOutOfRangeException>(() =>
            Ml.Compression().ClusterWeights(fixture.Model, new WeightClusteringOptions()).Fit(wrong));
        Assert.Contains("784", bad.Message);
    }

    private sealed class SmallRow
    {
        [Microsoft.ML.Data.KeyType(10)]
        public uint Label { get; set; }

        [Microsoft.ML.Data.VectorType(10)]
        public float[] Features { get; set; } = [];
    }
}
