using Microsoft.ML;
using MLNet.Compression.Memory;
using MLNet.Compression.Networks;
using MLNet.Compression.Tests.TestData;
using Xunit;

namespace MLNet.Compression.Tests.Memory;

public sealed class MemoryEstimateTests
{
    [Fact]
    public void TheEstimateOfASmallKnownNetworkAddsUpExactly()
    {
        // 3 inputs -> dense 4 (ReLU) -> dense 2 (output), batch 5, Adam, float32: 3*4+4 + 4*2+2 = 26 parameters.
        var e = MemoryReport.Estimate(NetworkArchitecture.Mlp([4], 3), classCount: 2, batchSize: 5);
        Assert.Equal(26, e.Parameters);
        Assert.Equal(104, e.ParameterBytes);
        Assert.Equal(104, e.GradientBytes);
        Assert.Equal(208, e.OptimizerStateBytes); // two Adam moments
        Assert.Equal(0, e.LowPrecisionBytes);
        // dense1 keeps its pre-activation and its ReLU output (2 x 4 values per row), the output layer its 2 logits.
        Assert.Equal([8L, 2L], e.Layers.Select(l => l.ElementsPerRow));
        Assert.Equal([160L, 40L], e.Layers.Select(l => l.Bytes));
        // layers 200 + input batch 5*3*4 = 60 + logits, softmax and its gradient 3*5*2*4 = 120.
        Assert.Equal(380, e.ActivationBytesPerBatch);
        Assert.Equal(2 * 4 * 5 * 4, e.BackwardTransientBytes); // widest layer: 4 units
        Assert.Equal(2 * (5 * 3 * 4 + 5 * 8), e.InputBufferBytes);
        Assert.Equal(104 + 208, e.WriteBackBytes);
        Assert.Equal(0, e.WorkspaceBytes); // no depthwise convolution
        Assert.Equal(5L << 20, e.RuntimeOverheadBytes);
        Assert.Equal(104 + 104 + 208 + 380 + 160 + 200 + 312 + (5L << 20), e.TotalBytes);

        // The depthwise CNN's largest depthwise pair: 32x14x14 in, 32x7x7 out (stride 2) = 7,840 values per row.
        var depthwise = MemoryReport.Estimate(NetworkArchitecture.DepthwiseSeparable(), 10, 8);
        Assert.Equal(7840L * 8 * 4, depthwise.WorkspaceBytes);

        var sgd = MemoryReport.Estimate(NetworkArchitecture.Mlp([4], 3), 2, 5, OptimizerKind.Sgd, TrainingPrecision.BFloat16, momentum: 0);
        Assert.Equal(0, sgd.OptimizerStateBytes);
        Assert.Equal(2 * 26 * 2, sgd.LowPrecisionBytes); // 16-bit weight copy and its gradients
        Assert.Equal([80L, 20L], sgd.Layers.Select(l => l.Bytes)); // 2-byte activations
    }

    [Fact]
    public void BadArgumentsAreRefusedByName()
    {
        Assert.Equal("batchSize", Assert.Throws<ArgumentOutOfRangeException>(() => MemoryReport.Estimate(NetworkArchitecture.Mlp(8), 10, 0)).ParamName);
        Assert.Equal("classCount", Assert.Throws<ArgumentOutOfRangeException>(() => MemoryReport.Estimate(NetworkArchitecture.Mlp(8), 0, 8)).ParamName);
        Assert.Equal("architecture", Assert.Throws<ArgumentNullException>(() => MemoryReport.Estimate(null!, 10, 8)).ParamName);
    }

    [Fact]
    public void TheBudgetPicksTheLargestBatchThatFitsAndTheTrainerUsesIt()
    {
        var architecture = NetworkArchitecture.Mlp(64);
        long budget = MemoryReport.Estimate(architecture, 10, 37).TotalBytes;
        var options = new NeuralNetworkOptions { Architecture = architecture, BatchSize = 128, Epochs = 1, Seed = 2, Device = TrainingDevice.Cpu, MemoryBudgetBytes = budget };
        var choice = MemoryBudget.Choose(options, 10)!;
        Assert.Equal(37, choice.Options.BatchSize);
        Assert.Equal(TrainingPrecision.Float32, choice.Options.Precision);
        Assert.True(MemoryReport.Estimate(architecture, 10, 38).TotalBytes > budget);

        // A budget above what BatchSize needs keeps BatchSize.
        options.MemoryBudgetBytes = 1L << 40;
        Assert.Equal(128, MemoryBudget.Choose(options, 10)!.Options.BatchSize);

        var ml = new MLContext(seed: 1);
        options.MemoryBudgetBytes = budget;
        using var model = ml.Compression().NeuralNetwork(options).Fit(ml.Data.TakeRows(TestMnist.LoadTrain(ml), 370));
        Assert.Equal(37, model.TrainingOptions.BatchSize);
        Assert.Equal(370, model.TrainingHistory.Single().Rows);
    }

    [Fact]
    public void WhenNothingFitsTheTrainerSaysSoAndBFloat16IsChosenWhenAllowedAndItFitsALargerBatch()
    {
        // The depthwise CNN: few parameters, large activations, so halving the activations nearly doubles the batch.
        var architecture = NetworkArchitecture.DepthwiseSeparable();
        long budget = MemoryReport.Estimate(architecture, 10, 20).TotalBytes;
        var options = new NeuralNetworkOptions { Architecture = architecture, BatchSize = 64, MemoryBudgetBytes = budget };
        Assert.Equal((20, TrainingPrecision.Float32), Chosen(options));
        options.AllowLowerPrecisionForBudget = true;
        var (batch, precision) = Chosen(options);
        Assert.Equal(TrainingPrecision.BFloat16, precision);
        Assert.InRange(batch, 30, 64);
        Assert.True(MemoryReport.Estimate(architecture, 10, batch, OptimizerKind.Adam, TrainingPrecision.BFloat16).TotalBytes <= budget);

        options.AllowLowerPrecisionForBudget = false;
        options.MemoryBudgetBytes = MemoryReport.Estimate(architecture, 10, 1).TotalBytes - 1;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => MemoryBudget.Choose(options, 10));
        Assert.Equal(nameof(NeuralNetworkOptions.MemoryBudgetBytes), e.ParamName);
        Assert.Contains("AllowLowerPrecisionForBudget", e.Message);
        Assert.Contains("DepthwiseSeparable", e.Message);

        Assert.Equal(nameof(NeuralNetworkOptions.MemoryBudgetBytes),
            Assert.Throws<ArgumentOutOfRangeException>(() => new MLContext().Compression().NeuralNetwork(new NeuralNetworkOptions { MemoryBudgetBytes = 0 })).ParamName);
    }

    private static (int Batch, TrainingPrecision Precision) Chosen(NeuralNetworkOptions options)
    {
        var c = MemoryBudget.Choose(options, 10)!;
        return (c.Options.BatchSize, c.Options.Precision);
    }
}
