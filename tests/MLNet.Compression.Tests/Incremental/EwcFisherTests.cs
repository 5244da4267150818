using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Incremental;
using MLNet.Compression.Networks;
using MLNet.Compression.Networks.Heads;
using MLNet.Compression.Onnx;
using MLNet.Compression.Training;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MLNet.Compression.Tests.Incremental;

/// <summary>
/// EWC's batched Fisher information (each weighted layer's <see cref="ParameterizedLayer.SquaredGradientSums"/> on autograd's
/// per-row output gradients) against one backward pass per row, for dense, convolutional and depthwise networks and every head.
/// </summary>
public sealed class EwcFisherTests
{
    private static readonly MLContext Ml = new(seed: 1);
    private static readonly Lazy<IDataView> Rows = new(() => Ml.Data.TakeRows(TestMnist.LoadTest(Ml), 300));
    private readonly ITestOutputHelper output;

    public EwcFisherTests(ITestOutputHelper output) => this.output = output;

    /// <summary>A model of <paramref name="architecture"/> for <paramref name="head"/> with TorchSharp's seeded initial weights.</summary>
    private static NetworkModel RandomModel(string architecture, OutputHeadKind head)
    {
        var arch = architecture switch
        {
            "Mlp" => NetworkArchitecture.Mlp(64, 32).WithInput(784),
            "LeNet5" => NetworkArchitecture.LeNet5(),
            "DepthwiseSeparable" => NetworkArchitecture.DepthwiseSeparable(),
            // Batch normalization between a layer and its activation: the Fisher of the weights sees the normalization's
            // running statistics (evaluation mode) in both passes.
            "ConvBatchNorm" => new NetworkArchitecture("conv-bn", [1, 28, 28],
            [
                new Conv2dLayer(6, 5, Activation: Activation.None), new BatchNormLayer(Activation.Relu), new MaxPool2dLayer(2),
                new FlattenLayer(), new DenseLayer(32, Activation.None), new BatchNormLayer(Activation.Relu),
            ]),
            _ => throw new ArgumentOutOfRangeException(nameof(architecture)),
        };
        var model = NetworkModel.Create(arch, head == OutputHeadKind.Multiclass ? 10 : head == OutputHeadKind.Binary ? 2 : 1, head);
        random.manual_seed(7);
        using var net = new TorchNetwork(model);
        net.StoreWeights(model);
        return model;
    }

    [Theory]
    [InlineData("Mlp", 0)]
    [InlineData("Mlp", 1)]
    [InlineData("Mlp", 2)]
    [InlineData("LeNet5", 0)]
    [InlineData("LeNet5", 1)]
    [InlineData("LeNet5", 2)]
    [InlineData("DepthwiseSeparable", 0)]
    [InlineData("DepthwiseSeparable", 1)]
    [InlineData("DepthwiseSeparable", 2)]
    [InlineData("ConvBatchNorm", 0)]
    [InlineData("ConvBatchNorm", 2)]
    public void TheBatchedFisherEqualsOneBackwardPassPerRow(string architecture, int headKind)
    {
        var head = (OutputHeadKind)headKind;
        var model = RandomModel(architecture, head);
        var data = Rows.Value;
        var column = data.Schema["Features"];
        // 40 rows in batches of 16: two full batches and a partial one.
        var batched = EwcState.EstimateBatched(model, data, column, 40, 3, null, out var unsupported, batch: 16);
        Assert.Null(unsupported);
        Assert.NotNull(batched);
        var perRow = EwcState.EstimatePerRow(model, data, column, 40, 3);
        AssertClose(perRow, batched!, 1e-4, $"{architecture} {head}");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void TheBatchedFisherOfADenseNetworkIsTheFormerHandWrittenPass(int headKind)
    {
        var head = (OutputHeadKind)headKind;
        var model = RandomModel("Mlp", head);
        var data = Rows.Value;
        var column = data.Schema["Features"];
        var batched = EwcState.EstimateBatched(model, data, column, 300, 3, null, out _)!;
        // The former pass computed the forward as matmul + add; the Linear module computes it fused (addmm), which rounds
        // differently in the last bit. With the module's forward, the rest of the former pass gives the same bits.
        var sameForward = FormerDenseFisher(model, data, column, 300, 3, fusedForward: true);
        for (int i = 0; i < sameForward.Length; i++)
            Assert.Equal(sameForward[i], batched.Fisher[i]);
        var former = FormerDenseFisher(model, data, column, 300, 3, fusedForward: false);
        int differing = 0;
        for (int i = 0; i < former.Length; i++)
            for (int j = 0; j < former[i].Length; j++)
                if (former[i][j] != batched.Fisher[i][j])
                    differing++;
        output.WriteLine($"{head}: {differing} of {former.Sum(f => f.Length)} values differ from the former hand-written pass");
        AssertClose(new EwcState(former, batched.Anchor, 1), batched, 1e-6, $"Mlp {head} against the former pass");
    }

    [Fact]
    public void ALayerTypeWithoutABatchedFormMakesTheWholeNetworkTakeOneBackwardPerRowAndSaysWhy()
    {
        var model = RandomModel("Mlp", OutputHeadKind.Multiclass);
        var layers = model.Layers.Select(l => l is DenseModelLayer { Name: "fc1" } d ? new PlainDenseLayer(d) : l).ToArray();
        var plain = model.WithLayers(layers);
        var data = Rows.Value;
        var column = data.Schema["Features"];
        Assert.Null(EwcState.EstimateBatched(plain, data, column, 20, 3, null, out var unsupported));
        Assert.Contains("'fc1'", unsupported);
        Assert.Contains(nameof(PlainDenseLayer), unsupported);

        var messages = new List<string>();
        var estimated = EwcState.Estimate(plain, data, "Features", 20, 3, null, messages.Add);
        var message = Assert.Single(messages);
        Assert.Contains("one backward pass per row", message);
        Assert.Contains("'fc1'", message);
        var perRow = EwcState.EstimatePerRow(plain, data, column, 20, 3);
        for (int i = 0; i < perRow.Fisher.Length; i++)
            Assert.Equal(perRow.Fisher[i], estimated.Fisher[i]);
        // The same network of ordinary dense layers takes the batched path, with no message, and the same values within rounding.
        var quiet = new List<string>();
        var dense = EwcState.Estimate(model, data, "Features", 20, 3, null, quiet.Add);
        Assert.Empty(quiet);
        AssertClose(perRow, dense, 1e-4, "dense against the plain layer's per-row pass");
    }

    [Fact]
    public void TheBatchedFisherLeavesNoTensorBehind()
    {
        var model = RandomModel("DepthwiseSeparable", OutputHeadKind.Multiclass);
        var data = Rows.Value;
        var column = data.Schema["Features"];
        static long LiveAfter(Action action)
        {
            long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
            action();
            return DisposeScopeManager.Statistics.ThreadTotalLiveCount - before;
        }
        EwcState.EstimateBatched(model, data, column, 16, 3, null, out _, batch: 16);
        // What building and disposing the network alone leaves in the count (its activation modules), then: nothing per batch.
        long network = LiveAfter(() =>
        {
            using var net = new TorchNetwork(model);
            net.LoadWeights(model);
        });
        Assert.Equal(network, LiveAfter(() => EwcState.EstimateBatched(model, data, column, 16, 3, null, out _, batch: 16)));
        Assert.Equal(network, LiveAfter(() => EwcState.EstimateBatched(model, data, column, 300, 3, null, out _, batch: 16)));
        output.WriteLine($"live-count change of one network: {network}; of a 1-batch and a 19-batch estimate: the same");
    }

    [Fact]
    public void TheBatchedFisherRejectsDataWithoutRows()
    {
        var model = RandomModel("LeNet5", OutputHeadKind.Multiclass);
        var empty = Ml.Data.SkipRows(Rows.Value, 1000);
        var e = Assert.Throws<ArgumentException>(() => EwcState.Estimate(model, empty, "Features", 10, 3));
        Assert.Contains("no rows", e.Message);
    }

    /// <summary>
    /// Every value within <paramref name="relative"/> of the reference value, or of the tensor's largest value for values
    /// a thousand times smaller than it (where rounding of a near-cancelling sum dominates); every tensor carries information.
    /// </summary>
    private void AssertClose(EwcState expected, EwcState actual, double relative, string what)
    {
        Assert.Equal(expected.Fisher.Length, actual.Fisher.Length);
        double worst = 0;
        for (int i = 0; i < expected.Fisher.Length; i++)
        {
            Assert.Equal(expected.Fisher[i].Length, actual.Fisher[i].Length);
            Assert.Equal(expected.Anchor[i], actual.Anchor[i]);
            double scale = expected.Fisher[i].Max();
            Assert.True(scale > 0, $"{what}: tensor {i} has no Fisher information");
            for (int j = 0; j < expected.Fisher[i].Length; j++)
            {
                double e = expected.Fisher[i][j], a = actual.Fisher[i][j];
                double error = Math.Abs(a - e) / Math.Max(Math.Abs(e), 1e-3 * scale);
                worst = Math.Max(worst, error);
                Assert.True(error <= relative, $"{what}: tensor {i}[{j}]: expected {e}, got {a} (relative error {error:E2})");
            }
        }
        output.WriteLine($"{what}: largest relative difference {worst:E2}");
    }

    /// <summary>
    /// The dense-only batched pass EwcState had before each layer owned its Fisher math (hand-written forward and backward,
    /// batches of 256), kept here as the reference that dense results did not change; <paramref name="fusedForward"/> computes
    /// its forward as the Linear module does.
    /// </summary>
    private static float[][] FormerDenseFisher(NetworkModel model, IDataView data, DataViewSchema.Column featureColumn, int maxRows, int seed, bool fusedForward)
    {
        var head = model.Head;
        const int batch = 256;
        var layers = model.ParameterizedLayers.Cast<DenseModelLayer>().ToArray();
        using var cursor = data.GetRowCursor([featureColumn], data.CanShuffle ? new Random(seed) : null);
        var getter = cursor.GetGetter<VBuffer<float>>(featureColumn);
        VBuffer<float> features = default;
        var buffer = new float[batch * model.InputLength];
        int rows = 0;
        using var scopeAll = NewDisposeScope();
        var weights = layers.Select(l => tensor(l.Weight, [l.OutFeatures, l.InFeatures])).ToArray();
        var biases = layers.Select(l => tensor(l.Bias, [l.OutFeatures])).ToArray();
        var sumW = layers.Select(l => zeros(l.OutFeatures, l.InFeatures)).ToArray();
        var sumB = layers.Select(l => zeros(l.OutFeatures)).ToArray();
        while (rows < maxRows)
        {
            int n = 0;
            while (n < batch && rows + n < maxRows && cursor.MoveNext())
            {
                getter(ref features);
                features.CopyTo(buffer.AsSpan(n * model.InputLength, model.InputLength));
                n++;
            }
            if (n == 0)
                break;
            using (var scope = NewDisposeScope())
            using (no_grad())
            {
                var h = tensor(buffer, [batch, model.InputLength]).narrow(0, 0, n);
                var inputs = new Tensor[layers.Length];
                var outputs = new Tensor[layers.Length];
                for (int i = 0; i < layers.Length; i++)
                {
                    inputs[i] = h;
                    outputs[i] = fusedForward ? nn.functional.linear(h, weights[i], biases[i]) : h.matmul(weights[i].t()).add(biases[i]);
                    h = layers[i].Activation == Activation.Relu ? nn.functional.relu(outputs[i]) : outputs[i];
                }
                var grad = head.FisherOutputGradient(outputs[^1], null);
                for (int i = layers.Length - 1; i >= 0; i--)
                {
                    var g2 = grad.square();
                    sumW[i].add_(g2.t().matmul(inputs[i].square()));
                    sumB[i].add_(g2.sum(0L));
                    if (i == 0)
                        break;
                    var upstream = grad.matmul(weights[i]);
                    grad = layers[i - 1].Activation == Activation.Relu ? upstream.mul(outputs[i - 1].gt(0).to(ScalarType.Float32)) : upstream;
                }
            }
            rows += n;
        }
        var fisher = new float[2 * layers.Length][];
        for (int i = 0; i < layers.Length; i++)
        {
            fisher[2 * i] = TorchNetwork.ToArray(sumW[i].mul(1.0 / rows));
            fisher[2 * i + 1] = TorchNetwork.ToArray(sumB[i].mul(1.0 / rows));
        }
        return fisher;
    }

    /// <summary>A dense layer type that does not override <see cref="ParameterizedLayer.SquaredGradientSums"/>, as a new layer type would start.</summary>
    private sealed class PlainDenseLayer : ParameterizedLayer
    {
        private readonly DenseModelLayer dense;

        public PlainDenseLayer(DenseModelLayer dense)
            : base(dense.Name, dense.InputShape, dense.OutputShape, dense.WeightShape, dense.Activation)
        {
            this.dense = dense;
            CopyParametersFrom(dense);
        }

        public override string OnnxOperator => dense.OnnxOperator;

        public override string QuantizedOperator => dense.QuantizedOperator;

        public override ModelLayer Clone() => new PlainDenseLayer(dense);

        public override IEnumerable<(string Name, nn.Module<Tensor, Tensor> Module)> CreateModules() => dense.CreateModules();

        public override Tensor Forward(Tensor input, Tensor weight, Tensor bias) => dense.Forward(input, weight, bias);

        public override string EmitOnnx(OnnxGraphBuilder graph, OnnxLayerEmitter encoding, string input) => throw new NotSupportedException();

        public override ModelLayer Shrink(int[]? keptIn, int[]? keepOwn, out int[]? keptOut) => throw new NotSupportedException();
    }
}
