using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Engines;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Data;
using MLNet.Compression.Networks;
using TorchSharp;
using static TorchSharp.torch;
using MLNet.Compression.Training;
using MLNet.Compression.Native;

namespace MLNet.Compression.Benchmarks;

/// <summary>
/// One epoch of LeNet-300-100 (batch 128, Adam lr 1e-3, CPU, seed 1, <see cref="Threads"/> intra-op thread) over the 60,000
/// MNIST training rows: the library (streaming from the lazy IdxDataView) versus a hand-written TorchSharp loop over the same
/// rows preloaded as one tensor, with the same intra-op threads. Target: <see cref="TrainerFit"/> ≤ 1.1 ×
/// <see cref="HandWrittenPreloaded"/>. <c>--epoch-ratio</c> (<see cref="EpochRatioBenchmark"/>) runs these methods interleaved.
/// </summary>
[Config(typeof(Config))]
public class TrainingEpochBenchmarks
{
    private const int Rows = 60_000;
    private const int Seed = 1;

    /// <summary>The intra-op threads of every case: the trainer's default (<see cref="NeuralNetworkOptions.DefaultThreads"/>).</summary>
    public const int Threads = NeuralNetworkOptions.DefaultThreads;

    private sealed class Config : ManualConfig
    {
        public Config() => AddJob(BenchmarkSettings.ShortJob(RunStrategy.Monitoring, warmup: 1, iterations: 3));
    }

    private MLContext ml = null!;
    private IDataView train = null!;
    private NeuralNetworkOptions options = null!;
    private Tensor features = null!;
    private Tensor labels = null!;
    private NetworkModel initial = null!;
    private int rowCount;

    [GlobalSetup]
    public void Setup()
    {
        TorchNative.EnsureLoaded();
        ml = new MLContext(seed: Seed);
        train = BenchmarkSettings.LoadMnist(ml, MnistSplit.Train);
        options = new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp(300, 100),
            Epochs = 1,
            BatchSize = 128,
            LearningRate = 1e-3,
            Optimizer = OptimizerKind.Adam,
            Device = TrainingDevice.Cpu,
            Seed = Seed,
            Threads = Threads,
        };
        initial = NetworkModel.Create(options.Architecture, 10);
        NeuralNetworkTrainer.InitializeWeights(initial, Seed);

        // Preload every training row once: [60000, 784] float32 and [60000] int64 class indices.
        var featureColumn = train.Schema["Features"];
        var labelColumn = train.Schema["Label"];
        var x = new float[Rows * 784];
        var y = new long[Rows];
        using (var cursor = train.GetRowCursor([featureColumn, labelColumn]))
        {
            var getFeatures = cursor.GetGetter<VBuffer<float>>(featureColumn);
            var getLabel = cursor.GetGetter<uint>(labelColumn);
            VBuffer<float> buffer = default;
            uint label = 0;
            int n = 0;
            while (cursor.MoveNext())
            {
                getFeatures(ref buffer);
                getLabel(ref label);
                buffer.DenseValues().ToArray().CopyTo(x, n * 784);
                y[n++] = label - 1;
            }
            rowCount = n;
        }
        if (rowCount != Rows)
            throw new InvalidOperationException($"Expected {Rows} training rows, read {rowCount}.");
        features = tensor(x, [Rows, 784]).DetachFromDisposeScope();
        labels = tensor(y, [Rows]).DetachFromDisposeScope();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        features.Dispose();
        labels.Dispose();
    }

    /// <summary>The epoch's own seconds (the trainer's <c>TrainingHistory</c>) of the last <see cref="TrainerFit"/>: without weight init and ONNX export.</summary>
    public double LastTrainerEpochSeconds { get; private set; }

    /// <summary>(a) The public path: NeuralNetworkTrainer.Fit with Epochs = 1 from the lazy IdxDataView, ONNX export included.</summary>
    [Benchmark, Rows(Rows)]
    public float TrainerFit()
    {
        using var model = ml.Compression().NeuralNetwork(options).Fit(train);
        LastTrainerEpochSeconds = model.TrainingHistory[0].Seconds;
        return model.GetOnnxModel().Length;
    }

    /// <summary>(a') The bare training loop (TrainingSession.Run) from the lazy IdxDataView: no weight init, no ONNX export.</summary>
    [Benchmark, Rows(Rows)]
    public long SessionRun()
    {
        var model = initial.Clone();
        var result = new TrainingSession(ml, options).Run(train, model, Seed);
        return result.Steps;
    }

    /// <summary>
    /// (b) Hand-written TorchSharp loop over the preloaded tensors: shuffled index_select batches, the same TorchNetwork,
    /// cross-entropy, backward, the library's own Adam; also reads the loss and the correct count per step as the library does.
    /// </summary>
    [Benchmark(Baseline = true), Rows(Rows)]
    public double HandWrittenPreloaded()
    {
        using var threads = TorchThreads.Use(Threads); // the trainer runs with options.Threads; the baseline must too
        using var net = new TorchNetwork(initial);
        net.LoadWeights(initial);
        net.train();
        var parameters = net.parameters().ToArray();
        using var optimizer = new AdamOptimizer(parameters, options.LearningRate, 0);

        var order = new long[Rows];
        for (int i = 0; i < Rows; i++)
            order[i] = i;
        var rand = new Random(Seed * 31 + 1);
        for (int i = Rows - 1; i > 0; i--)
        {
            int j = rand.Next(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        using var permutation = tensor(order, [Rows]);

        double lossSum = 0;
        long correct = 0;
        for (int start = 0; start < Rows; start += options.BatchSize)
        {
            int count = Math.Min(options.BatchSize, Rows - start);
            using var scope = NewDisposeScope();
            var index = permutation.narrow(0, start, count);
            var x = features.index_select(0, index);
            var y = labels.index_select(0, index);
            var logits = net.forward(x);
            var loss = nn.functional.cross_entropy(logits, y);
            optimizer.ZeroGrad();
            loss.backward();
            optimizer.Step();
            lossSum += loss.item<float>() * count;
            correct += logits.argmax(1).eq(y).sum().item<long>();
        }
        return lossSum / Rows + correct;
    }

    /// <summary>
    /// The data side of the trainer alone: one shuffled <see cref="BatchStream"/> pass over the IdxDataView (the trainer's seed
    /// and order) with each batch turned into its feature and label tensors, no training. Not a BenchmarkDotNet case; used by
    /// <c>--epoch-ratio</c> to show how much of the trainer's epoch is reading.
    /// </summary>
    public long DataPass() => DataPass(cloneArrays: false);

    /// <summary>
    /// <see cref="DataPass()"/> with the batch tensors made as the trainer made them before (<c>torch.tensor(float[])</c>, which
    /// clones the whole batch array) when <paramref name="cloneArrays"/> is true, else as it makes them now
    /// (<see cref="BatchStream.Batch.FeaturesTensor"/>, sharing the array).
    /// </summary>
    public long DataPass(bool cloneArrays)
    {
        var stream = new BatchStream(train, options.LabelColumnName, options.FeatureColumnName, 784);
        long rows = 0;
        foreach (var batch in stream.Read(options.BatchSize, new Random(unchecked(Seed * 31 + 1)), null))
        {
            using var scope = NewDisposeScope();
            var x = cloneArrays ? tensor(batch.Features, [batch.Capacity, 784]).narrow(0, 0, batch.Count) : batch.FeaturesTensor();
            var y = cloneArrays ? tensor(batch.Labels, [batch.Capacity]).narrow(0, 0, batch.Count) : batch.LabelsTensor();
            rows += x.shape[0] + y.shape[0] / 2;
        }
        return rows;
    }
}
