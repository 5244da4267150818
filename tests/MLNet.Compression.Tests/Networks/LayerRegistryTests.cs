using System.Text.Json.Nodes;
using MLNet.Compression.Networks;
using Xunit;

namespace MLNet.Compression.Tests.Networks;

public class LayerRegistryTests
{
    [Fact]
    public void EveryBuiltInArchitectureRoundTripsThroughJsonWithTheSameFieldNames()
    {
        foreach (var a in new[] { NetworkArchitecture.Mlp(300, 100), NetworkArchitecture.LeNet5(), NetworkArchitecture.DepthwiseSeparable() })
        {
            var json = ArchitectureJson.ToJson(a).ToJsonString();
            var back = ArchitectureJson.FromJson(JsonNode.Parse(json)!);
            Assert.Equal(a.Layers, back.Layers);
            Assert.Equal(json, ArchitectureJson.ToJson(back).ToJsonString());
        }
        // The field names checkpoints have always used.
        Assert.Equal(
            """{"name":"t","inputShape":[1,8,8],"layers":[{"type":"conv2d","outChannels":4,"kernel":3,"stride":1,"padding":0,"activation":"Relu","depthwise":false},{"type":"maxpool2d","kernel":2,"stride":0},{"type":"flatten"},{"type":"dense","units":5,"activation":"None"}]}""",
            ArchitectureJson.ToJson(new NetworkArchitecture("t", [1, 8, 8], [new Conv2dLayer(4, 3), new MaxPool2dLayer(2), new FlattenLayer(), new DenseLayer(5, Activation.None)])).ToJsonString());
        var unknown = Assert.Throws<FormatException>(() => ArchitectureJson.FromJson(JsonNode.Parse("""{"name":"t","inputShape":[4],"layers":[{"type":"lstm"}]}""")!));
        Assert.Contains("'lstm'", unknown.Message);
    }

    [Fact]
    public void SizesThatOverflowGiveAnArgumentExceptionNamingTheLayer()
    {
        var weights = Assert.Throws<ArgumentException>(() => NetworkModel.Create(NetworkArchitecture.Mlp([100_000, 100_000], 784), 10));
        Assert.Contains("'fc2'", weights.Message);
        Assert.Equal("architecture", weights.ParamName);

        var flatten = Assert.Throws<ArgumentException>(() => NetworkModel.Create(
            new NetworkArchitecture("wide", [1, 1000, 1000], [new Conv2dLayer(4000, 1), new DenseLayer(10)]), 10));
        Assert.Contains("layer 1 (DenseLayer", flatten.Message);
        Assert.Equal("architecture", flatten.ParamName);

        var input = Assert.Throws<ArgumentException>(() => new NetworkArchitecture("huge", [50_000, 50_000, 50_000], [new FlattenLayer()]));
        Assert.Equal("inputShape", input.ParamName);
    }
}
