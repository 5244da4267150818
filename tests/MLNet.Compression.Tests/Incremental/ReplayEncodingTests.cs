using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Incremental;
using MLNet.Compression.Networks;
using MLNet.Compression.Training;
using Xunit;
using Xunit.Abstractions;
using static MLNet.Compression.Tests.Incremental.IncrementalData;

namespace MLNet.Compression.Tests.Incremental;

/// <summary>The replay memory's encodings, ranges and byte budget, on the memory itself (no training).</summary>
public sealed class ReplayMemoryEncodingTests
{
    private readonly ITestOutputHelper output;

    public ReplayMemoryEncodingTests(ITestOutputHelper output) => this.output = output;

    [Theory]
    [InlineData(8)]
    [InlineData(4)]
    [InlineData(2)]
    [InlineData(1)]
    public void EachEncodingRoundTripsWithinHalfAStepOfItsGrid(int bits)
    {
        const int features = 37; // not a multiple of 8: the last byte is partly used at every width
        var rand = new Random(bits);
        var lo = Enumerable.Range(0, features).Select(i => -5f + i).ToArray();
        var hi = Enumerable.Range(0, features).Select(i => lo[i] + 0.5f + i * 3).ToArray();
        var memory = new ReplayMemory(features, 200, 7, bits);
        Assert.True(memory.Widen(lo, hi));
        var rows = Enumerable.Range(0, 200).Select(_ => Enumerable.Range(0, features).Select(i => lo[i] + (float)rand.NextDouble() * (hi[i] - lo[i])).ToArray()).ToArray();
        for (int r = 0; r < rows.Length; r++)
            Assert.Equal(r, memory.Offer(rows[r], r % 3, () => "row"));
        Assert.Equal(0, memory.ClampedValues);
        Assert.Equal((features * bits + 7) / 8, memory.CodeBytes);
        Assert.Equal(200L * ((features * bits + 7) / 8 + 4) + 8L * features, memory.Bytes); // ranges are not [0, 1]: 8 B per feature
        int levels = (1 << bits) - 1;
        var decoded = new float[features];
        double worst = 0;
        for (int r = 0; r < rows.Length; r++)
        {
            memory.CopyFeatures(r, decoded);
            for (int i = 0; i < features; i++)
            {
                float step = (hi[i] - lo[i]) / levels;
                double error = Math.Abs(decoded[i] - rows[r][i]);
                worst = Math.Max(worst, error / step);
                Assert.True(error <= step / 2 * 1.0001 + 1e-5, $"{bits}-bit feature {i}: {rows[r][i]} decoded as {decoded[i]} (step {step})");
                if (bits == 1)
                {
                    // One bit: which side of the range's midpoint, decoded as the range's end on that side.
                    float mid = (lo[i] + hi[i]) / 2;
                    if (Math.Abs(rows[r][i] - mid) > 1e-4 * (hi[i] - lo[i]))
                        Assert.Equal(rows[r][i] > mid ? hi[i] : lo[i], decoded[i], 1e-4);
                }
            }
        }
        output.WriteLine($"{bits}-bit: worst error {worst:F3} steps");
    }

    [Fact]
    public void PixelsInZeroOneAreStoredExactlyAsVersionOneDidAndWrittenInVersionOne()
    {
        var memory = new ReplayMemory(784, 10, 3);
        var row = Enumerable.Range(0, 784).Select(i => (i * 7 % 256) / 255f).ToArray();
        memory.Offer(row, 0, () => "row");
        Assert.Equal((0f, 1f), memory.RangeOf(5));
        Assert.True(memory.UnitRanges);
        Assert.Equal(788, memory.Bytes);
        var decoded = new float[784];
        memory.CopyFeatures(0, decoded);
        Assert.Equal(row, decoded); // bit for bit: pixel / 255f
        Assert.True(memory.CodesAt(0).SequenceEqual(row.Select(v => (byte)MathF.Round(v * 255f)).ToArray()));
        using var stream = new MemoryStream();
        memory.Write(stream);
        Assert.Equal(1, BitConverter.ToInt32(stream.ToArray(), 12)); // version 1: older libraries read it
    }

    [Theory]
    [InlineData(8, 1000)]
    [InlineData(4, 1989)]
    [InlineData(2, 3940)]
    [InlineData(1, 7725)]
    public void AByteBudgetHoldsAsManyExemplarsAsFitAndNeverMore(int bits, int expected)
    {
        var budget = ReplayBudget.Bytes(788_000);
        var encoding = ExemplarEncoding.Bits(bits);
        int capacity = budget.CapacityFor(784, encoding, 0, 0);
        Assert.Equal(expected, capacity);
        long perExemplar = encoding.BytesFor(784) + 4;
        Assert.True(capacity * perExemplar <= 788_000 && (capacity + 1) * perExemplar > 788_000);
        var memory = new ReplayMemory(784, capacity, 1, bits);
        var rand = new Random(1);
        var row = new float[784];
        for (int r = 0; r < capacity + 500; r++)
        {
            for (int i = 0; i < row.Length; i++)
                row[i] = (float)rand.NextDouble();
            memory.Offer(row, r % 10, () => "row");
        }
        Assert.Equal(capacity, memory.Count);
        Assert.Equal(capacity * perExemplar, memory.Bytes);
        Assert.True(memory.Bytes <= 788_000);
        // Stored outputs (10 classes, float16) and a range table are counted too.
        int withLogits = budget.CapacityFor(784, encoding, 10, 8 * 784);
        Assert.Equal((788_000 - 8 * 784) / (perExemplar + 20), withLogits);
    }

    [Fact]
    public void ValuesOutsideTheRangeAreClampedAndCountedAndRangesWidenWithReencoding()
    {
        var memory = new ReplayMemory(3, 10, 5, 8);
        memory.Offer([2f, 10f, -1f], 0, () => "row 0"); // sets the ranges: each feature's own value
        memory.Offer([3f, 20f, 0.5f], 1, () => "row 1"); // no widening on offer: clamped into [2, 2], [10, 10], [-1, -1]
        Assert.Equal(3, memory.ClampedValues);
        var decoded = new float[3];
        memory.CopyFeatures(1, decoded);
        Assert.Equal([2f, 10f, -1f], decoded);
        memory.Offer([float.PositiveInfinity, float.NegativeInfinity, -1f], 0, () => "row 2");
        Assert.Equal(5, memory.ClampedValues);

        // Widening covers new data; stored exemplars are re-encoded on the new grid, within half a step of what they held.
        Assert.True(memory.Widen([0f, 0f, -4f], [4f, 30f, 4f]));
        Assert.Equal((0f, 4f), memory.RangeOf(0));
        Assert.Equal((-4f, 4f), memory.RangeOf(2));
        memory.CopyFeatures(0, decoded);
        Assert.Equal(2f, decoded[0], 4f / 255 / 2 + 1e-5);
        Assert.Equal(10f, decoded[1], 30f / 255 / 2 + 1e-5);
        Assert.Equal(-1f, decoded[2], 8f / 255 / 2 + 1e-5);
        Assert.False(memory.Widen([1f, 1f, 1f], [2f, 2f, 2f])); // inside: nothing changes
        memory.Offer([3.5f, 25f, 3f], 1, () => "row 3");
        Assert.Equal(5, memory.ClampedValues);

        // A range inside [0, 1] is [0, 1] (pixel grid); leaving it keeps [0, 1] inside the widened range.
        var unit = new ReplayMemory(1, 4, 5, 8);
        unit.Offer([0.3f], 0, () => "row");
        Assert.Equal((0f, 1f), unit.RangeOf(0));
        unit.Widen([0.5f], [1.07f]);
        Assert.Equal((0f, 1.07f), unit.RangeOf(0));

        // NaN cannot be stored.
        var nan = Assert.Throws<InvalidDataException>(() => memory.Offer([float.NaN, 1f, 1f], 0, () => "Row 9 of the new data"));
        Assert.Contains("Row 9 of the new data", nan.Message);
        Assert.Contains("NaN", nan.Message);
    }

    [Fact]
    public void AVersionTwoMemoryRoundTripsThroughItsBinaryForm()
    {
        var memory = new ReplayMemory(11, 30, 9, 2, logitLength: 4, ordered: true);
        var rand = new Random(3);
        for (int r = 0; r < 40; r++)
        {
            var row = Enumerable.Range(0, 11).Select(i => (float)(rand.NextDouble() * 20 - 10)).ToArray();
            int slot = memory.Offer(row, r % 4, () => "row");
            if (slot >= 0 && r % 2 == 0)
                memory.SetLogits(slot, [1.5f, -2.25f, 3f]);
        }
        memory.Offer([float.PositiveInfinity, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 1, () => "row");
        using var stream = new MemoryStream();
        memory.Write(stream);
        Assert.Equal(2, BitConverter.ToInt32(stream.ToArray(), 12));
        stream.Position = 0;
        var back = ReplayMemory.Read(stream, stream.Length, 11, 4);
        Assert.Equal(memory.Bits, back.Bits);
        Assert.Equal(memory.LogitLength, back.LogitLength);
        Assert.Equal(memory.Ordered, back.Ordered);
        Assert.Equal(memory.ClampedValues, back.ClampedValues);
        Assert.Equal(memory.Bytes, back.Bytes);
        Assert.Equal(memory.SeenPerClass(), back.SeenPerClass());
        for (int i = 0; i < 11; i++)
            Assert.Equal(memory.RangeOf(i), back.RangeOf(i));
        var order = Enumerable.Range(0, 4).SelectMany(c => memory.SlotsOf(c)).ToArray(); // an ordered memory is written class by class
        for (int s = 0; s < memory.Count; s++)
        {
            Assert.Equal(memory.LabelAt(order[s]), back.LabelAt(s));
            Assert.True(memory.CodesAt(order[s]).SequenceEqual(back.CodesAt(s)));
            Assert.True(memory.LogitsAt(order[s]).SequenceEqual(back.LogitsAt(s)));
            Assert.Equal(memory.HasLogits(order[s]), back.HasLogits(s));
        }
        // An ordered memory keeps each class's priority order (its exemplars' codes in the same sequence).
        for (int c = 0; c < 4; c++)
        {
            Assert.Equal(memory.SlotsOf(c).Count, back.SlotsOf(c).Count);
            for (int k = 0; k < memory.SlotsOf(c).Count; k++)
                Assert.True(memory.CodesAt(memory.SlotsOf(c)[k]).SequenceEqual(back.CodesAt(back.SlotsOf(c)[k])), $"class {c}, exemplar {k}");
        }

        // A damaged field is named.
        var bytes = stream.ToArray();
        int bitsAt = 40 + 8 * 4 + 4 * memory.Count;
        bytes[bitsAt] = 3;
        var e = Assert.Throws<CheckpointFormatException>(() => ReplayMemory.Read(new MemoryStream(bytes), bytes.Length, 11, 4));
        Assert.Contains("bits", e.Message);
    }

    [Fact]
    public void AMemoryOfRegressionTargets_IsOneUniformReservoir_InTheSameBytes_AndRoundTrips()
    {
        var memory = new ReplayMemory(3, 50, 5, 8, targets: true);
        memory.Widen([0f, -999f, 0.5f], [999f, 0f, 0.5f]);
        for (int i = 0; i < 1000; i++)
            memory.OfferTarget([i, -i, 0.5f], i + 0.25f, () => $"row {i}");
        Assert.Equal(50, memory.Count);
        Assert.Equal(50 * (3 + 4) + 8 * 3, memory.Bytes); // features, the 4-byte target in the label's place, the range table
        Assert.Equal([1000L], memory.SeenPerClass());
        var decoded = new float[3];
        var targets = new float[memory.Count];
        for (int s = 0; s < memory.Count; s++)
        {
            memory.CopyFeatures(s, decoded);
            targets[s] = memory.TargetAt(s);
            Assert.Equal(0, memory.LabelAt(s));
            Assert.True(Math.Abs(decoded[0] + 0.25f - targets[s]) <= 2, $"exemplar {s}: features of row {decoded[0]}, target {targets[s]}");
        }
        // A uniform sample of the 1,000 rows: its mean index is near 500 (standard error about 41), late rows included.
        Assert.InRange(targets.Average(), 350, 650);
        Assert.Contains(targets, t => t > 900);

        using var stream = new MemoryStream();
        memory.Write(stream);
        var bytes = stream.ToArray();
        Assert.Equal(2, BitConverter.ToInt32(bytes, 12));
        stream.Position = 0;
        var back = ReplayMemory.Read(stream, stream.Length, 3, 1);
        Assert.True(back.HoldsTargets);
        Assert.Equal(memory.Bytes, back.Bytes);
        for (int s = 0; s < memory.Count; s++)
        {
            Assert.Equal(memory.TargetAt(s), back.TargetAt(s));
            Assert.True(memory.CodesAt(s).SequenceEqual(back.CodesAt(s)));
        }

        // A stored target that is not finite is named; targets and classes are not mixed up.
        BitConverter.GetBytes(float.NaN).CopyTo(bytes, 40 + 8 + 4 * 7); // header, one class count, then target 7
        var e = Assert.Throws<CheckpointFormatException>(() => ReplayMemory.Read(new MemoryStream(bytes), bytes.Length, 3, 1));
        Assert.Equal("targets[7]", e.Field);
        Assert.Contains("NaN", e.Message);
        Assert.Throws<InvalidDataException>(() => memory.OfferTarget([1f, -1f, 0.5f], float.NaN, () => "row"));
        Assert.Throws<InvalidOperationException>(() => new ReplayMemory(3, 5, 1).OfferTarget([0f, 0f, 0f], 1f, () => "row"));
        Assert.Throws<InvalidOperationException>(() => new ReplayMemory(3, 5, 1).TargetAt(0));
    }
}

/// <summary>Continued training with the new replay options, on small real data.</summary>
public sealed class ReplayOptionsTests : IClassFixture<IncrementFixture>
{
    private readonly IncrementFixture fixture;
    private readonly ITestOutputHelper output;

    public ReplayOptionsTests(IncrementFixture fixture, ITestOutputHelper output)
    {
        this.fixture = fixture;
        this.output = output;
    }

    [Fact]
    public void HerdingPicksExemplarsWhoseMeanIsCloserToTheClassMeanThanRandomOnes()
    {
        var ml = fixture.Context;
        var network = fixture.Model.Network;
        var rows = ml.Data.TakeRows(Digits(ml, TestMnist.LoadTrain(ml), 3, 3), 400);
        var pool = new ReplayMemory(784, 400, 1, 8);
        foreach (var f in rows.GetColumn<float[]>("Features"))
            pool.Offer(f, 0, () => "row");
        using var net = new TorchNetwork(network);
        net.LoadWeights(network);
        net.eval();
        var picked = ExemplarTools.Select(net, pool, 20);
        Assert.Equal(20, picked.Distinct().Count());
        var phi = Embeddings(net, pool);
        var mean = Mean(phi, Enumerable.Range(0, pool.Count));
        double herded = Distance(Mean(phi, picked), mean);
        var rand = new Random(1);
        var randomDistances = Enumerable.Range(0, 30).Select(_ => Distance(Mean(phi, Enumerable.Range(0, pool.Count).OrderBy(_ => rand.Next()).Take(20)), mean)).ToArray();
        output.WriteLine($"herding {herded:F4}; random subsets: best {randomDistances.Min():F4}, mean {randomDistances.Average():F4}");
        Assert.True(herded < randomDistances.Min(), $"herding {herded:F4} vs best random {randomDistances.Min():F4}");
        Assert.True(herded < randomDistances.Average() / 2, $"herding {herded:F4} vs mean random {randomDistances.Average():F4}");
    }

    [Fact]
    public void LogitReplayChangesTrainingAndItsOutputsSurviveTheCheckpoint()
    {
        var ml = fixture.Context;
        ContinueTrainingOptions Options(double alpha) => new()
        {
            Strategies = ContinualStrategies.Replay,
            PreviousData = fixture.First,
            ReplayBudget = ReplayBudget.Bytes(200 * 808), // 200 exemplars with 10 float16 outputs each
            ReplayLogitWeight = alpha,
            ReplayLabelWeight = 0.5,
            Epochs = 1,
        };
        var der = ml.Compression().ContinueTraining(fixture.Model, Options(1));
        using var withLogits = der.Fit(fixture.Second);
        using var without = ml.Compression().ContinueTraining(fixture.Model, Options(0)).Fit(fixture.Second);
        var memory = withLogits.IncrementalState!.Replay!;
        Assert.Equal(10, memory.LogitLength);
        Assert.Equal(200, memory.Count);
        Assert.Equal(200L * 808, memory.Bytes);
        Assert.Equal(200L * 808, der.Report!.ReplayBytes);
        Assert.All(Enumerable.Range(0, memory.Count), s => Assert.True(memory.HasLogits(s)));
        Assert.Equal(0, without.IncrementalState!.Replay!.LogitLength);
        var a = withLogits.Network.ParameterizedLayers.First().Weight;
        var b = without.Network.ParameterizedLayers.First().Weight;
        double diff = a.Zip(b, (x, y) => Math.Abs(x - y)).Max();
        output.WriteLine($"largest weight difference DER++ vs replay: {diff:G3}; accuracy {Accuracy(withLogits, fixture.Test):F3} vs {Accuracy(without, fixture.Test):F3}");
        Assert.True(diff > 1e-4, $"the logit term changed no weight ({diff})");
        // NaN in the replay targets marks "no stored output" (new rows, uncovered classes): no row may be skipped for it.
        Assert.All(withLogits.TrainingHistory, m => Assert.Equal(0, m.SkippedRows));

        // The stored outputs are the trained network's: for an exemplar, float16 of what the model scores on its decoded features.
        using var dir = TestMnist.NewTempDirectory();
        withLogits.SaveCheckpoint(dir["der.checkpoint"]);
        using var loaded = NeuralNetworkTransformer.LoadCheckpoint(ml, dir["der.checkpoint"]);
        var back = loaded.IncrementalState!.Replay!;
        Assert.Equal(memory.LogitLength, back.LogitLength);
        for (int s = 0; s < memory.Count; s++)
            Assert.True(memory.LogitsAt(s).SequenceEqual(back.LogitsAt(s)), $"exemplar {s}'s outputs differ");
        // checkpoint.json repeats the encoding and the stored outputs; a value that disagrees with replay.bin is named.
        foreach (var (field, value) in new[] { ("bits", 4), ("logitLength", 8), ("clampedValues", 3) })
        {
            string edited = dir[$"der-{field}.checkpoint"];
            File.Copy(dir["der.checkpoint"], edited);
            MLNet.Compression.Tests.Training.CheckpointCorruption.EditJson(edited, j => j["incremental"]!["replay"]![field] = value);
            var e = Assert.Throws<CheckpointException>(() => NeuralNetworkTransformer.LoadCheckpoint(ml, edited));
            Assert.Equal("checkpoint.json", e.EntryName);
            Assert.Equal($"incremental.replay.{field}", e.FieldName);
        }
        // And the next increment from the loaded model trains exactly as from the in-memory one.
        var next = ml.Data.TakeRows(ml.Data.SkipRows(TestMnist.LoadTrain(ml), 2000), 300);
        var chained = Options(1);
        chained.PreviousData = null;
        using var fromLoaded = ml.Compression().ContinueTraining(loaded, chained).Fit(next);
        using var fromMemory = ml.Compression().ContinueTraining(withLogits, chained).Fit(next);
        Assert.Equal(Predictions(fromMemory, fixture.Test), Predictions(fromLoaded, fixture.Test));
    }

    [Fact]
    public void TabularFeaturesOutsideZeroOneContinueWithReplayAndMemoryStaysFixedOverTenIncrements()
    {
        var ml = new MLContext(seed: 2);
        // Three classes, six features on very different scales (a year, a price, a signed score, ...).
        var offsets = new[] { 1990f, 250_000f, -40f, 0f, 3f, -0.5f };
        var scales = new[] { 10f, 50_000f, 20f, 1f, 0.2f, 0.05f };
        IDataView Rows(int count, int seed, float stretch)
        {
            var rand = new Random(seed);
            var data = Enumerable.Range(0, count).Select(_ =>
            {
                int c = rand.Next(3);
                var f = Enumerable.Range(0, 6).Select(i => offsets[i] + scales[i] * stretch * (float)(c - 1 + 0.6 * Gaussian(rand))).ToArray();
                return new TabularRow { Class = $"class{c}", Features = f };
            }).ToArray();
            var schema = SchemaDefinition.Create(typeof(TabularRow));
            schema["Features"].ColumnType = new VectorDataViewType(NumberDataViewType.Single, 6);
            return ml.Data.LoadFromEnumerable(data, schema);
        }
        // Features standardized on the first rows only, as a user's fitted normalizer would be: later rows spread wider.
        var norm = ml.Transforms.Conversion.MapValueToKey("Label", "Class")
            .Append(ml.Transforms.NormalizeMeanVariance("Features")).Fit(Rows(600, 1, 1f));
        var first = norm.Transform(Rows(600, 1, 1f));
        using var model = ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp([16], 6),
            Epochs = 5,
            BatchSize = 32,
            LearningRate = 5e-3,
            Seed = 3,
            Device = TrainingDevice.Cpu,
        }).Fit(first);
        var options = new ContinueTrainingOptions
        {
            Strategies = ContinualStrategies.Replay,
            PreviousData = first,
            ReplayBudget = ReplayBudget.Bytes(4_000),
            ReplayEncoding = ExemplarEncoding.Bits(4),
            ReplayLogitWeight = 0.5,
            Epochs = 1,
        };
        var current = model;
        var test = norm.Transform(Rows(600, 99, 1.5f));
        var totals = new List<long>();
        try
        {
            for (int increment = 1; increment <= 10; increment++)
            {
                var estimator = ml.Compression().ContinueTraining(current, options);
                var next = estimator.Fit(norm.Transform(Rows(200, 100 + increment, 1f + 0.1f * increment)));
                if (current != model)
                    current.Dispose();
                current = next;
                options.PreviousData = null;
                var report = estimator.Report!;
                var memory = current.IncrementalState!.Replay!;
                Assert.False(memory.UnitRanges);
                Assert.True(report.ReplayBytes <= 4_000, $"increment {increment}: {report.ReplayBytes} B");
                Assert.True(4_000 - report.ReplayBytes < memory.ExemplarBytes, $"increment {increment}: {report.ReplayBytes} B leaves room for another exemplar");
                Assert.Equal(0, report.ClampedValues);
                totals.Add(report.TotalBytes);
            }
            output.WriteLine($"bytes carried after each increment: {string.Join(" ", totals)}; accuracy {Accuracy(current, test):F3}");
            Assert.Single(totals.Distinct()); // a fixed class count: the memory carried does not grow with the increments
            Assert.True(Accuracy(current, test) > 0.8, $"accuracy {Accuracy(current, test):F3}");
            // Every stored range covers the data seen, the first rows' and the later, wider ones alike.
            var last = current.IncrementalState!.Replay!;
            foreach (var data in new[] { first, norm.Transform(Rows(200, 110, 2f)) })
                foreach (var row in data.GetColumn<float[]>("Features"))
                    for (int i = 0; i < 6; i++)
                        Assert.InRange(row[i], last.RangeOf(i).Low, last.RangeOf(i).High);
            var firstMax = first.GetColumn<float[]>("Features").Max(r => r[2]);
            Assert.True(last.RangeOf(2).High > firstMax, $"range of feature 2 {last.RangeOf(2)}; the first rows reach {firstMax}");
        }
        finally
        {
            if (current != model)
                current.Dispose();
        }
    }

    private static double Gaussian(Random rand) => Math.Sqrt(-2 * Math.Log(1 - rand.NextDouble())) * Math.Cos(2 * Math.PI * rand.NextDouble());

    private static float[][] Embeddings(TorchNetwork net, ReplayMemory pool)
    {
        var capture = new Capture(net.ParameterizedModules.Count - 1);
        var rows = new float[pool.Count * 784];
        for (int s = 0; s < pool.Count; s++)
            pool.CopyFeatures(s, rows.AsSpan(s * 784, 784));
        using var scope = TorchSharp.torch.NewDisposeScope();
        using var noGrad = TorchSharp.torch.no_grad();
        net.Forward(TorchSharp.torch.tensor(rows, [pool.Count, 784]), capture);
        var phi = capture.Value!;
        phi = phi.div(phi.norm(1, keepdim: true));
        int d = (int)phi.size(1);
        var flat = phi.contiguous().data<float>().ToArray();
        return Enumerable.Range(0, pool.Count).Select(i => flat.AsSpan(i * d, d).ToArray()).ToArray();
    }

    private static double[] Mean(float[][] phi, IEnumerable<int> rows)
    {
        var list = rows.ToArray();
        var mean = new double[phi[0].Length];
        foreach (int r in list)
            for (int i = 0; i < mean.Length; i++)
                mean[i] += phi[r][i] / list.Length;
        return mean;
    }

    private static double Distance(double[] a, double[] b) => Math.Sqrt(a.Zip(b, (x, y) => (x - y) * (x - y)).Sum());

    private sealed class Capture(int index) : ILayerInterceptor
    {
        public TorchSharp.torch.Tensor? Value { get; private set; }

        public TorchSharp.torch.Tensor Input(int i, ParameterizedLayer layer, TorchSharp.torch.Tensor value)
        {
            if (i == index)
                Value = value;
            return value;
        }

        public TorchSharp.torch.Tensor Weight(int i, ParameterizedLayer layer, TorchSharp.torch.Tensor value) => value;
    }

    private sealed class TabularRow
    {
        public string Class { get; set; } = "";

        public float[] Features { get; set; } = [];
    }
}
