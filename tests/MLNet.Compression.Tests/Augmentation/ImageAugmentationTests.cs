using Google.Protobuf;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Augmentation;
using MLNet.Compression.Native;
using MLNet.Compression.Networks;
using MLNet.Compression.Onnx.Proto;
using MLNet.Compression.Pruning;
using MLNet.Compression.Tests.TestData;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MLNet.Compression.Tests.Augmentation;

public sealed class ImageAugmentationTests
{
    private static readonly ImageAugmentation Distortions = ImageAugmentation.Affine(maxShiftPixels: 2, maxRotationDegrees: 10, scale: (0.9, 1.1)).WithElastic();

    private readonly ITestOutputHelper output;

    public ImageAugmentationTests(ITestOutputHelper output) => this.output = output;

    /// <summary>The first <paramref name="count"/> MNIST test images (pixels in [0, 1]) and their labels (0-9).</summary>
    private static (float[] Pixels, int[] Labels) TestImages(int count)
    {
        var ml = new MLContext(seed: 1);
        var view = ml.Data.TakeRows(TestMnist.LoadTest(ml), count);
        var pixels = new List<float>();
        var labels = new List<int>();
        using var cursor = view.GetRowCursor(view.Schema);
        var getFeatures = cursor.GetGetter<VBuffer<float>>(view.Schema["Features"]);
        var getLabel = cursor.GetGetter<uint>(view.Schema["Label"]);
        VBuffer<float> f = default;
        uint l = 0;
        while (cursor.MoveNext())
        {
            getFeatures(ref f);
            getLabel(ref l);
            pixels.AddRange(f.DenseValues());
            labels.Add((int)l - 1);
        }
        return (pixels.ToArray(), labels.ToArray());
    }

    private static float[] Augment(ImageAugmentation augmentation, float[] pixels, int seed, int epoch, long step)
    {
        TorchNative.EnsureLoaded();
        var augmenter = ImageAugmenter.Create(augmentation, NetworkArchitecture.LeNet5(), seed)!;
        using var scope = NewDisposeScope();
        var x = tensor(pixels, [pixels.Length / 784, 784]);
        return augmenter.Apply(x, epoch, step).data<float>().ToArray();
    }

    [Fact]
    public void SameSeedEpochAndStepGiveTheSameDistortionsAndAnyChangeGivesNewOnes()
    {
        var (pixels, _) = TestImages(16);
        var a = Augment(Distortions, pixels, seed: 7, epoch: 1, step: 3);
        var b = Augment(Distortions, pixels, seed: 7, epoch: 1, step: 3);
        Assert.Equal(a, b);
        Assert.NotEqual(a, Augment(Distortions, pixels, seed: 7, epoch: 2, step: 3));
        Assert.NotEqual(a, Augment(Distortions, pixels, seed: 8, epoch: 1, step: 3));
        Assert.NotEqual(a, Augment(Distortions, pixels, seed: 7, epoch: 1, step: 4));
    }

    [Fact]
    public void NoDistortionGivesTheImagesBackUnchanged()
    {
        var (pixels, _) = TestImages(8);
        var same = Augment(ImageAugmentation.Affine(0, 0), pixels, seed: 1, epoch: 1, step: 0);
        Assert.Equal(pixels.Length, same.Length);
        Assert.True(pixels.Zip(same).All(p => Math.Abs(p.First - p.Second) < 1e-5f), "An identity grid must sample every pixel back exactly.");
    }

    [Fact]
    public void EveryAugmentedRowDiffersFromItsOriginalAndStaysTheSameDigitInTheSameRow()
    {
        var (pixels, labels) = TestImages(300);
        // Milder than the training distortions, so that plain pixel similarity (which a 2-pixel shift already defeats) can tell the rows apart.
        var distorted = Augment(ImageAugmentation.Affine(1, 5, (0.95, 1.05)).WithElastic(15, 4), pixels, seed: 11, epoch: 1, step: 0);
        int n = labels.Length;
        double meanAbsChange = pixels.Zip(distorted).Average(p => Math.Abs(p.First - p.Second));
        int changed = Enumerable.Range(0, n).Count(i => !pixels.AsSpan(i * 784, 784).SequenceEqual(distorted.AsSpan(i * 784, 784)));
        // Row i of the batch is still image i: among all originals, the one it resembles most is mostly its own (73 % measured; a
        // mix-up of rows would give 0.3 %), and nearly always one of the
        // same digit (the label that travels with row i stays right).
        int ownBest = 0, sameDigitBest = 0;
        for (int i = 0; i < n; i++)
        {
            int best = Enumerable.Range(0, n).MaxBy(j => Cosine(distorted.AsSpan(i * 784, 784), pixels.AsSpan(j * 784, 784)));
            ownBest += best == i ? 1 : 0;
            sameDigitBest += labels[best] == labels[i] ? 1 : 0;
        }
        output.WriteLine($"mean |change| per pixel {meanAbsChange:F4}; {changed} of {n} images changed; most similar original: own {ownBest}, same digit {sameDigitBest}");
        Assert.Equal(n, changed);
        Assert.True(meanAbsChange > 0.02, $"Mean absolute pixel change {meanAbsChange:F4}: the distortion barely changed the images.");
        Assert.True(sameDigitBest >= 0.9 * n, $"Only {sameDigitBest} of {n} distorted rows still look most like an image of their own digit.");
        Assert.True(ownBest >= 0.6 * n, $"Only {ownBest} of {n} distorted rows look most like their own original: rows and labels may have been mixed up.");
    }

    private static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += a[i] * b[i];
            na += a[i] * a[i];
            nb += b[i] * b[i];
        }
        return dot / Math.Sqrt(na * nb + 1e-12);
    }

    [Fact]
    public void TheExportedOnnxHasTheSameStructureWithAndWithoutAugmentation()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.TakeRows(TestMnist.LoadTrain(ml), 600);
        NeuralNetworkOptions Options(ImageAugmentation? a) => new()
        {
            Architecture = NetworkArchitecture.LeNet5(), Epochs = 3, BatchSize = 50, Seed = 5, Device = TrainingDevice.Cpu, Augmentation = a,
        };
        using var plain = ml.Compression().NeuralNetwork(Options(null)).Fit(train);
        using var augmented = ml.Compression().NeuralNetwork(Options(Distortions)).Fit(train);
        var a = plain.GetOnnxModel();
        var b = augmented.GetOnnxModel();
        Assert.Equal(a.Length, b.Length);
        Assert.False(a.AsSpan().SequenceEqual(b), "The augmented run must have learned different weights.");
        // Without the weight values the two models are byte for byte the same graph.
        Assert.Equal(WithoutWeightValues(a), WithoutWeightValues(b));
        Assert.Equal(Distortions, augmented.TrainingOptions.Augmentation);
        // Trained on distorted batches, the model still learned the labels (scrambled labels would give about 10 %).
        var test = ml.Data.TakeRows(TestMnist.LoadTest(ml), 1000);
        double plainAccuracy = ml.MulticlassClassification.Evaluate(plain.Transform(test)).MicroAccuracy;
        double augmentedAccuracy = ml.MulticlassClassification.Evaluate(augmented.Transform(test)).MicroAccuracy;
        output.WriteLine($"3 epochs on 600 rows: accuracy {plainAccuracy:F3} without, {augmentedAccuracy:F3} with augmentation");
        Assert.True(augmentedAccuracy >= 0.5, $"Accuracy {augmentedAccuracy:F3} after training on augmented batches: the labels did not survive.");
    }

    [Fact]
    public void APruningStageInheritsTheModelsAugmentationOrSetsItsOwnAndExportsTheSameGraph()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.TakeRows(TestMnist.LoadTrain(ml), 400);
        using var model = ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.LeNet5(), Epochs = 1, BatchSize = 50, Seed = 5, Device = TrainingDevice.Cpu, Augmentation = Distortions,
        }).Fit(train);
        byte[] Pruned(ImageAugmentation? stage)
        {
            using var pruned = ml.Compression().Prune(model, new PruningOptions
            {
                Schedule = PruningSchedule.ConstantSparsity(0.5, frequency: 4), Epochs = 1, Augmentation = stage,
            }).Fit(train);
            return pruned.GetOnnxModel();
        }
        var inherited = Pruned(null);
        var explicitSame = Pruned(Distortions);
        var off = Pruned(ImageAugmentation.None);
        var milder = Pruned(ImageAugmentation.Affine(1, 3));
        // Null takes the model's distortions: the same draws from the same seed, so the same weights to the byte.
        Assert.True(inherited.AsSpan().SequenceEqual(explicitSame), "A stage left at null must fine-tune with the model's own augmentation.");
        Assert.False(off.AsSpan().SequenceEqual(inherited), "ImageAugmentation.None must turn the model's augmentation off for the stage.");
        Assert.False(milder.AsSpan().SequenceEqual(inherited), "A stage's own augmentation must replace the model's.");
        Assert.False(milder.AsSpan().SequenceEqual(off), "A stage's own augmentation must distort the batches.");
        // Only the weight values differ: the same graph, the same sizes.
        Assert.Equal(WithoutWeightValues(inherited), WithoutWeightValues(off));
        Assert.Equal(WithoutWeightValues(inherited), WithoutWeightValues(milder));
    }

    [Fact]
    public void NoneNeedsNoImageShapeAndAStageAugmentationOnFlatFeaturesIsRefused()
    {
        Assert.True(ImageAugmentation.None.IsNone);
        Assert.Equal(ImageAugmentation.Affine(0, 0), ImageAugmentation.None);
        Assert.False(Distortions.IsNone);
        var ml = new MLContext(seed: 1);
        var train = ml.Data.TakeRows(TestMnist.LoadTrain(ml), 200);
        using var mlp = ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp(16), Epochs = 1, BatchSize = 50, Seed = 3, Device = TrainingDevice.Cpu, Augmentation = ImageAugmentation.None,
        }).Fit(train);
        using (ml.Compression().Prune(mlp, new PruningOptions { Epochs = 1, Augmentation = ImageAugmentation.None }).Fit(train))
        {
        }
        var e = Assert.ThrowsAny<ArgumentException>(() =>
            ml.Compression().Prune(mlp, new PruningOptions { Epochs = 1, Augmentation = ImageAugmentation.Affine() }).Fit(train).Dispose());
        Assert.Contains("WithImageShape", e.Message);
    }

    private static byte[] WithoutWeightValues(byte[] onnx)
    {
        var proto = ModelProto.Parser.ParseFrom(onnx);
        foreach (var init in proto.Graph.Initializer)
        {
            init.RawData = ByteString.Empty;
            init.FloatData.Clear();
        }
        return proto.ToByteArray();
    }

    [Fact]
    public void AFlatFeatureVectorWithoutAnImageShapeIsRefusedAtOnce()
    {
        var ml = new MLContext(seed: 1);
        var e = Assert.ThrowsAny<ArgumentException>(() => ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp(32), Augmentation = ImageAugmentation.Affine(),
        }));
        Assert.Equal("Augmentation", e.ParamName);
        Assert.Contains("WithImageShape", e.Message);
        var wrong = Assert.ThrowsAny<ArgumentException>(() => ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp(32), Augmentation = ImageAugmentation.Affine().WithImageShape(1, 20, 20),
        }));
        Assert.Contains("784", wrong.Message);
        // Given the shape, an MLP on MNIST pixels is fine.
        ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp(32), Augmentation = ImageAugmentation.Affine().WithImageShape(1, 28, 28),
        });
    }

    [Fact]
    public void BadSettingsAreRefusedNamingTheArgument()
    {
        Assert.Equal("maxRotationDegrees", Assert.Throws<ArgumentOutOfRangeException>(() => ImageAugmentation.Affine(2, 200)).ParamName);
        Assert.Equal("maxShiftPixels", Assert.Throws<ArgumentOutOfRangeException>(() => ImageAugmentation.Affine(-1)).ParamName);
        Assert.Equal("scale", Assert.Throws<ArgumentOutOfRangeException>(() => ImageAugmentation.Affine(scale: (1.1, 0.9))).ParamName);
        Assert.Equal("sigma", Assert.Throws<ArgumentOutOfRangeException>(() => ImageAugmentation.Elastic(34, 0)).ParamName);
        Assert.Equal("height", Assert.Throws<ArgumentOutOfRangeException>(() => ImageAugmentation.Affine().WithImageShape(1, 1, 28)).ParamName);
    }
}
