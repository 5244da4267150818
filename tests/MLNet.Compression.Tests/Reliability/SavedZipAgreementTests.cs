using Microsoft.ML;
using MLNet.Compression.Networks;
using MLNet.Compression.Quantization;
using MLNet.Compression.Tests.Training;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Reliability;

/// <summary>
/// What the README promises about a saved zip against the in-process model, tested exactly as stated, in every quantization
/// mode, over several seeds (different weights, different rows), for a dense network and a convolutional one:
/// <list type="bullet">
/// <item>float32, float16, int8 dynamic and int8 static dense networks: bit-identical scores and labels;</item>
/// <item>otherwise (int4's MatMulNBits and the int8 convolutions run another ONNX Runtime kernel for one row than for a batch):
/// every score within <see cref="ScoreBound"/>, and a label may differ only on a near-tie, where the in-process model's two
/// best scores are closer than twice that row's largest score difference.</item>
/// </list>
/// </summary>
public sealed class SavedZipAgreementTests
{
    /// <summary>The bound the README states for scores of the saved zip against the in-process model.</summary>
    private const float ScoreBound = 1e-2f;

    private readonly ITestOutputHelper output;

    public SavedZipAgreementTests(ITestOutputHelper output) => this.output = output;

    public static TheoryData<string, int> Networks() => new()
    {
        { "mlp", 1 }, { "mlp", 2 }, { "mlp", 3 }, { "lenet5", 4 },
    };

    [Theory]
    [MemberData(nameof(Networks))]
    public void TheSavedZipScoresAsThePromiseSaysInEveryMode(string network, int seed)
    {
        var ml = new MLContext(seed: seed);
        // A different slice of MNIST for each seed, so the rows near a tie differ too.
        var train = ml.Data.TakeRows(ml.Data.SkipRows(TestMnist.LoadTrain(ml), seed * 3000), 2000);
        var test = ml.Data.TakeRows(ml.Data.SkipRows(TestMnist.LoadTest(ml), seed * 1000), 1000);
        using var model = ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = network == "mlp" ? NetworkArchitecture.Mlp(64) : NetworkArchitecture.LeNet5(),
            Epochs = 1,
            BatchSize = 64,
            Seed = seed,
            Device = TrainingDevice.Cpu,
        }).Fit(train);

        foreach (var mode in new QuantizationMode?[] { null, QuantizationMode.Float16, QuantizationMode.Int8Dynamic, QuantizationMode.Int8Static, QuantizationMode.Int4WeightOnly })
        {
            using var quantized = mode is { } m
                ? ml.Compression().Quantize(model, new QuantizationOptions { Mode = m, CalibrationRows = 500 }).Fit(train)
                : null;
            var scored = quantized ?? model;
            var inProcess = Scoring.Read(scored.Transform(test));
            using var dir = TestMnist.NewTempDirectory();
            ml.Model.SaveAtomically(scored, train.Schema, dir["model.zip"]);
            var loaded = new MLContext(seed: 99).Model.Load(dir["model.zip"], out _);
            var reloaded = Scoring.Read(loaded.Transform(test));

            string what = $"{network} seed {seed} {mode?.ToString() ?? "float32"}";
            bool exact = network == "mlp" && mode is not QuantizationMode.Int4WeightOnly;
            if (exact)
            {
                Scoring.AssertIdentical(inProcess, reloaded);
                output.WriteLine($"{what}: bit-identical");
                continue;
            }
            float maxDiff = 0;
            int flipped = 0;
            for (int row = 0; row < inProcess.Labels.Length; row++)
            {
                float rowDiff = inProcess.Scores[row].Zip(reloaded.Scores[row]).Max(p => Math.Abs(p.First - p.Second));
                maxDiff = Math.Max(maxDiff, rowDiff);
                Assert.True(rowDiff <= ScoreBound, $"{what}: row {row}'s scores differ by {rowDiff:G3}, more than the stated {ScoreBound}.");
                if (inProcess.Labels[row] == reloaded.Labels[row])
                    continue;
                flipped++;
                var top = inProcess.Scores[row].OrderByDescending(s => s).Take(2).ToArray();
                Assert.True(top[0] - top[1] < 2 * rowDiff,
                    $"{what}: row {row} is labelled {inProcess.Labels[row]} in process and {reloaded.Labels[row]} after reload, but its two best scores " +
                    $"{top[0]:G5} and {top[1]:G5} are further apart than twice the score difference {rowDiff:G3}: not a near-tie.");
            }
            output.WriteLine($"{what}: largest score difference {maxDiff:G3}, {flipped} near-tie label(s) of {inProcess.Labels.Length} differ");
        }
    }
}
