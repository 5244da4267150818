using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Networks;
using MLNet.Compression.Networks.Heads;
using MLNet.Compression.Onnx;
using MLNet.Compression.Pruning;
using MLNet.Compression.Tests.Onnx;
using Xunit;

namespace MLNet.Compression.Tests.Networks;

/// <summary>
/// Rules that belong to a layer type or an output head and are applied by code outside Networks/: structured pruning asks
/// the layer whether its units can go, and the scoring chain asks the head whether (and how) its columns are guarded.
/// </summary>
public sealed class LayerAndHeadRulesTests
{
    [Fact]
    public void StructuredPruningRefusesADepthwiseLayerWithTheLayersOwnReason()
    {
        var ml = new MLContext(seed: 1);
        using var model = Wrap(ml, OnnxTestModels.DepthwiseSeparable(), OnnxTestModels.Digits);
        var depthwise = model.Network.ParameterizedLayers.Single(l => l.Name == "conv2");
        Assert.NotNull(depthwise.UnitsNotRemovable);

        var options = new PruningOptions { Granularity = PruningGranularity.StructuredNeurons };
        options.LayerSparsity["conv2"] = 0.5;
        var e = Assert.Throws<ArgumentException>(() => ml.Compression().Prune(model, options));
        Assert.Contains("'conv2'", e.Message, StringComparison.Ordinal);
        Assert.Contains(depthwise.UnitsNotRemovable!.TrimEnd('.'), e.Message, StringComparison.Ordinal);

        // A layer whose units can go is accepted with the same options.
        options.LayerSparsity.Clear();
        options.LayerSparsity["conv3"] = 0.5;
        Assert.Null(model.Network.ParameterizedLayers.Single(l => l.Name == "conv3").UnitsNotRemovable);
        Assert.NotNull(ml.Compression().Prune(model, options));
    }

    [Fact]
    public void TheMulticlassHeadGuardsTheScoreLengthInTheSavedChain()
    {
        var ml = new MLContext(seed: 1);
        var data = OnnxTestModels.Data(ml, 4, seed: 1);
        var chain = OnnxScoringChain.Build(ml, OnnxExporter.Export(OnnxTestModels.Mlp()), data.Schema, "Features", OnnxTestModels.Digits);
        var parts = Assert.IsType<TransformerChain<ITransformer>>(chain).ToArray();
        Assert.Equal(3, parts.Length); // the scoring chain, the head's guard, the drop of the guard's column
        var guard = parts[1];

        Assert.NotNull(guard.GetOutputSchema(ScoreSchema(10)));
        var e = Assert.ThrowsAny<Exception>(() => guard.GetOutputSchema(ScoreSchema(9)));
        Assert.Contains("Score", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("binary")]
    [InlineData("regression")]
    public void ScalarHeadsAddNoGuard(string name)
    {
        var ml = new MLContext(seed: 1);
        var head = OutputHead.ForName(name)!;
        var chain = new TransformerChain<ITransformer>();
        Assert.Same(chain, head.GuardChain(ml, chain, ScoreSchema(1), default!));
    }

    [Theory]
    [InlineData("binary")]
    [InlineData("regression")]
    public void AMissingLabelIsNamedWithTheColumnsPresent(string name)
    {
        var head = OutputHead.ForName(name)!;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => head.ValidateLabel(ScoreSchema(3), "Target", out _));
        Assert.Equal("labelColumnName", e.ParamName);
        Assert.Contains("The input data has no label column 'Target'. Columns present: 'Score' (Vector<Single, 3>). Set labelColumnName", e.Message,
            StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("multiclass")]
    [InlineData("binary")]
    [InlineData("regression")]
    public void AMissingLabelInThePromisedSchemaIsNamed(string name)
    {
        var ml = new MLContext(seed: 1);
        var head = OutputHead.ForName(name)!;
        var shape = new SchemaShape([]); // no columns at all
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => head.GetOutputSchema(ml, shape, "Target", "Features"));
        Assert.Equal("inputSchema", e.ParamName);
        Assert.Contains("The input has no label column 'Target'.", e.Message, StringComparison.Ordinal);
    }

    private static DataViewSchema ScoreSchema(int length)
    {
        var builder = new DataViewSchema.Builder();
        builder.AddColumn(OnnxScoringChain.ScoreColumnName, new VectorDataViewType(NumberDataViewType.Single, length));
        return builder.ToSchema();
    }

    private static NeuralNetworkTransformer Wrap(MLContext ml, NetworkModel network, IReadOnlyList<string> classes)
    {
        var options = new NeuralNetworkOptions { Architecture = network.Architecture };
        var schema = new DataViewSchema.Builder();
        schema.AddColumn("Features", new VectorDataViewType(NumberDataViewType.Single, network.InputLength));
        return NeuralNetworkTransformer.Create(ml, network, classes, options, schema.ToSchema(), null, 1);
    }
}
