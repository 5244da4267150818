using System.Diagnostics;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using MLNet.Compression.Data;
using MLNet.Compression.Networks;
using MLNet.Compression.Onnx;
using MLNet.Compression.Onnx.Proto;
using MLNet.Compression.Quantization;

namespace MLNet.Compression.Benchmarks;

/// <summary>
/// Issue 19's scoring measurements outside BenchmarkDotNet, interleaved in one process so that a loaded machine slows every
/// variant alike: LeNet-300-100 (one epoch) as float32 and quantized (int8 dynamic, int8 static, int4), the 10,000 MNIST
/// test rows. For each model it times (a) one bare ONNX Runtime <see cref="InferenceSession"/> on the exported bytes, blocks
/// of 1,024 rows, under several session options and graph variants (the levers), and (b) the whole batched
/// <c>model.Transform</c> cursor pass (what a user gets), then prints medians, ratios and the accuracy of every mode, and
/// <c>ApplyOnnxModel</c> on the float32 bytes for the batched-vs-ML.NET ratio.
/// </summary>
/// <remarks>
/// <c>--scoring-levers [--rounds N] [--passes N] [--settle-ms MS] [--levers] [--profile DIR] [--save DIR] [--compare DIR] [--wide]</c>: without <c>--levers</c> only the table of the
/// side-by-side script (ours per mode, bare session and Transform, ApplyOnnxModel); <c>--profile</c> writes ONNX Runtime
/// profiles (per-node times) of each model (ONNX Runtime names the files itself, in the working directory);
/// <c>--save</c>/<c>--compare</c> write the exported models / time another build's beside these (same seed, same weights);
/// <c>--wide</c> runs <see cref="Wide"/> instead; <c>--pytorch SCRIPT</c> runs pytorch_scoring.py once per round (interleaved).
/// </remarks>
public static class ScoringLevers
{
    private const int Rows = 10_000;
    private const int Block = 1024;

    /// <summary>Runs the measurement; returns the process exit code.</summary>
    public static int Run(string[] args)
    {
        int rounds = IntArg(args, "--rounds", 15);
        if (args.Contains("--wide", StringComparer.Ordinal))
            return Wide(rounds);
        bool levers = args.Contains("--levers", StringComparer.Ordinal);
        string? profileDir = StringArg(args, "--profile");
        Console.WriteLine($"// load average before: {BenchmarkSettings.LoadAverage()} ({Environment.ProcessorCount} cores)");

        var ml = new MLContext(seed: 1);
        var train = BenchmarkSettings.LoadMnist(ml, MnistSplit.Train);
        var test = ml.Data.Cache(BenchmarkSettings.LoadMnist(ml, MnistSplit.Test));
        var sw = Stopwatch.StartNew();
        using var float32 = ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp(300, 100),
            Epochs = 1,
            BatchSize = 128,
            Device = TrainingDevice.Cpu,
            Seed = 1,
        }).Fit(train);
        Console.WriteLine($"// trained LeNet-300-100 (1 epoch) in {sw.Elapsed.TotalSeconds:F1} s");
        var models = new List<(string Name, NeuralNetworkTransformer Model)> { ("float32", float32) };
        foreach (var mode in new[] { QuantizationMode.Int8Dynamic, QuantizationMode.Int8Static, QuantizationMode.Int4WeightOnly })
            models.Add((ModeName(mode), ml.Compression().Quantize(float32, new QuantizationOptions { Mode = mode }).Fit(train)));
        // Int8Dynamic with the opt-in per-batch activation scales (ActivationScaleScope.PerBatch: DynamicQuantizeMatMul).
        models.Insert(2, ("int8-dynamic-per-batch", ml.Compression().Quantize(float32,
            new QuantizationOptions { Mode = QuantizationMode.Int8Dynamic, ActivationScales = ActivationScaleScope.PerBatch }).Fit(train)));

        // Accuracy of every mode on the 10,000 test rows (the batched path) and agreement with the bare session.
        var features = ReadFeatures(test);
        double floatAccuracy = 0;
        foreach (var (name, model) in models)
        {
            var m = ml.MulticlassClassification.Evaluate(model.Transform(test));
            if (name == "float32")
                floatAccuracy = m.MicroAccuracy;
            Console.WriteLine($"// accuracy {name}: {m.MicroAccuracy:F4} ({(m.MicroAccuracy - floatAccuracy) * 100:+0.00;-0.00;0.00} points vs float32), ONNX {model.GetOnnxModel().Length:N0} B");
            Console.WriteLine("#accuracy " + JsonSerializer.Serialize(new { mode = name, accuracy = m.MicroAccuracy, onnxBytes = model.GetOnnxModel().Length }));
        }

        var variants = new List<Variant>();
        string? save = StringArg(args, "--save"), compare = StringArg(args, "--compare"), pytorchScript = StringArg(args, "--pytorch");
        foreach (var (name, model) in models)
        {
            var onnx = model.GetOnnxModel();
            variants.Add(new Variant($"{name} session", onnx, DefaultOptions));
            // --save DIR writes the exported models; --compare DIR times the ones saved by another build beside these.
            if (save is not null)
            {
                Directory.CreateDirectory(save);
                File.WriteAllBytes(Path.Combine(save, name + ".onnx"), onnx);
            }
            if (compare is not null && File.Exists(Path.Combine(compare, name + ".onnx")))
                variants.Add(new Variant($"{name} session, saved build", File.ReadAllBytes(Path.Combine(compare, name + ".onnx")), DefaultOptions));
            if (levers)
            {
                variants.Add(new Variant($"{name} session, 1 thread", onnx, () => WithThreads(DefaultOptions(), 1)));
                variants.Add(new Variant($"{name} session, no spinning", onnx, () => NoSpin(DefaultOptions())));
                variants.Add(new Variant($"{name} session, ORT_ENABLE_EXTENDED", onnx, () => Level(GraphOptimizationLevel.ORT_ENABLE_EXTENDED)));
                variants.Add(new Variant($"{name} session, ORT_ENABLE_BASIC", onnx, () => Level(GraphOptimizationLevel.ORT_ENABLE_BASIC)));
                variants.Add(new Variant($"{name} session, no mem pattern/arena", onnx, () => NoArena(DefaultOptions())));
                variants.Add(new Variant($"{name} session, no prepacking", onnx, () => NoPrepack(DefaultOptions())));
                if (name == "int4")
                    foreach (var level in new[] { 0, 1, 2, 4 })
                        variants.Add(new Variant($"{name} session, MatMulNBits accuracy_level {level}", onnx, () => AccuracyLevel(DefaultOptions(), level)));
                variants.Add(new Variant($"{name} session, block 256", onnx, DefaultOptions, 256));
                variants.Add(new Variant($"{name} session, block 4096", onnx, DefaultOptions, 4096));
                variants.Add(new Variant($"{name} session, block 10000", onnx, DefaultOptions, Rows));
                variants.Add(new Variant($"{name} session, no NaN guard", GraphVariants.WithoutNanGuard(onnx), DefaultOptions));
                variants.Add(new Variant($"{name} session, Einsum NaN guard (before)", GraphVariants.WithEinsumGuard(onnx), DefaultOptions));
                variants.Add(new Variant($"{name} session, Transpose-Einsum NaN guard (before)", GraphVariants.WithTransposedEinsumGuard(onnx), DefaultOptions));
                variants.Add(new Variant($"{name} session, MatMul-zeros NaN guard", GraphVariants.WithMatMulGuard(onnx), DefaultOptions));
                variants.Add(new Variant($"{name} session, host checks", onnx, DefaultOptions, host: true));
                if (name is "int8-static" or "int8-dynamic")
                    variants.Add(new Variant($"{name} session, host checks (float features)", onnx, DefaultOptions, host: true, codes: false));
                variants.Add(new Variant($"{name} session, host checks (all outputs)", onnx, DefaultOptions, host: true, prune: false));
                // What the probe's Add on the outputs costs once the probe itself comes from the host (not shippable: NaN rows score finite).
                variants.Add(new Variant($"{name} session, host checks (no guard Add)", GraphVariants.WithoutNanGuard(onnx), DefaultOptions, host: true));
                variants.Add(new Variant($"{name} session, host checks overlapped", onnx, DefaultOptions, host: true, overlap: true));
                variants.Add(new Variant($"{name} session, 2 streams x 1 thread", onnx, () => WithThreads(DefaultOptions(), 1), streams: 2));
                variants.Add(new Variant($"{name} session, 2 streams x 1 thread block 512", onnx, () => WithThreads(DefaultOptions(), 1), 512, streams: 2));
                variants.Add(new Variant($"{name} session, 2 streams x 2 threads", onnx, DefaultOptions, streams: 2));
                variants.Add(new Variant($"{name} session, Gemm-row NaN guard", GraphVariants.WithGemmRowGuard(onnx), DefaultOptions));
                if (name != "int4") // opset 21: ReduceMax's axes are an input there
                    variants.Add(new Variant($"{name} session, max-min NaN guard", GraphVariants.WithMaxMinGuard(onnx), DefaultOptions));
                if (name == "int8-dynamic")
                    variants.Add(new Variant($"{name} session, per-batch scales", GraphVariants.WithPerBatchScales(onnx), DefaultOptions));
                if (name == "int8-dynamic-per-batch")
                {
                    // The cost of the non-finite clamp (Abs/Less/Where before each DynamicQuantizeLinear): without it, and only
                    // before the first layer (the raw features; what a NaN/inf row needs, not what a 1e38 row needs).
                    variants.Add(new Variant($"{name} session, no input clamp", GraphVariants.WithoutPerBatchClamp(onnx, keepFirst: false), DefaultOptions));
                    variants.Add(new Variant($"{name} session, first-layer clamp only", GraphVariants.WithoutPerBatchClamp(onnx, keepFirst: true), DefaultOptions));
                }
            }
        }
        if (StringArg(args, "--only") is { } only)
            variants.RemoveAll(v => !only.Split(',').Any(o => v.Name.EndsWith(" session" + (o.Length > 0 ? ", " + o : ""), StringComparison.Ordinal)));
        foreach (var v in variants)
            v.Open(features);
        // Every variant must give the outputs of its model's default session (graph variants: same values; a NaN row stays NaN).
        var withNaN = (float[])features.Clone();
        withNaN[5 * 784 + 300] = float.NaN;
        withNaN[7 * 784 + 10] = float.PositiveInfinity;
        var reference = new Dictionary<string, (float[] Plain, float[] Nan)>();
        foreach (var v in variants)
        {
            string model = v.Name[..v.Name.IndexOf(" session", StringComparison.Ordinal)];
            var plain = v.ScoreAll(features);
            var nan = v.ScoreAll(withNaN);
            if (!reference.TryGetValue(model, out var r))
                reference[model] = r = (plain, nan);
            double maxDiff = plain.Zip(r.Plain).Max(p => Math.Abs(p.First - p.Second));
            bool nanRows = float.IsNaN(nan[5 * 10]) && float.IsNaN(nan[7 * 10]) && !float.IsNaN(nan[6 * 10]);
            int agree = 0;
            for (int row = 0; row < Rows; row++)
                agree += ArgMax(plain.AsSpan(row * 10, 10)) == ArgMax(r.Plain.AsSpan(row * 10, 10)) ? 1 : 0;
            Console.WriteLine($"// {v.Name}: max |difference| to the default session {maxDiff:G3}, same arg-max on {agree:N0} of {Rows:N0} rows; NaN/inf rows scored NaN: {nanRows}");
            if (model == "int8-dynamic-per-batch" && reference.TryGetValue("int8-dynamic", out var perRowReference))
            {
                // Against per-row int8 dynamic, and whether the NaN/inf rows left the other rows of their block unchanged.
                var perRow = perRowReference.Plain;
                double toPerRow = plain.Zip(perRow).Max(p => Math.Abs(p.First - p.Second));
                int sameLabel = 0;
                for (int row = 0; row < Rows; row++)
                    sameLabel += ArgMax(plain.AsSpan(row * 10, 10)) == ArgMax(perRow.AsSpan(row * 10, 10)) ? 1 : 0;
                int changed = 0;
                for (int row = 0; row < Rows; row++)
                    if (row is not (5 or 7) && !nan.AsSpan(row * 10, 10).SequenceEqual(plain.AsSpan(row * 10, 10)))
                        changed++;
                Console.WriteLine($"//   vs per-row int8 dynamic: max |difference| {toPerRow:G3}, same arg-max on {sameLabel:N0} of {Rows:N0} rows; " +
                                  $"rows changed by the NaN/inf rows in their block: {changed}");
            }
        }
        if (profileDir is not null)
        {
            Directory.CreateDirectory(profileDir);
            foreach (var (name, model) in models)
                Profile(model.GetOnnxModel(), features, Path.Combine(profileDir, name));
            // With --levers, the per-batch int8 graph variants too (what each part of the input clean costs, per node).
            foreach (var v in variants.Where(v => v.Name.StartsWith("int8-dynamic-per-batch session, ", StringComparison.Ordinal)))
                Profile(v.Onnx, features, Path.Combine(profileDir, v.Name.Replace(' ', '_').Replace(",", "", StringComparison.Ordinal)));
        }

        // Transform passes (the user's path) and ApplyOnnxModel on the float32 bytes.
        var transforms = models.Select(m => (Name: $"{m.Name} Transform", Run: (Func<double>)(() => TimeTransform(m.Model, test)))).ToList();
        if (levers && StringArg(args, "--only") is { } onlyViews && onlyViews.Split(',').Contains("host checks (float features)"))
        {
            // The batched view as Transform builds it, over a scorer whose host checks keep the float features (no input codes).
            // Both built the same way (the view alone, without the transformer's wrapping), with and without the input codes.
            foreach (var (name, model) in models.Where(m => m.Name is "int8-static" or "int8-dynamic"))
                foreach (bool codes in new[] { true, false })
                {
                    var scorer = new BatchedOnnxScorer(model.GetOnnxModel(), hostQuantizedInput: codes);
                    transforms.Add(($"{name} view ({(codes ? "input codes" : "float features")})", () =>
                    {
                        var sw = Stopwatch.StartNew();
                        ScoredRows.Read(new BatchedScoringDataView(test, scorer, "Features", [.. Enumerable.Range(0, 10).Select(i => i.ToString())]), Rows);
                        return sw.Elapsed.TotalSeconds;
                    }));
                }
        }
        var applyOnnx = ml.Transforms.ApplyOnnxModel(["Score"], ["Features"], new MemoryStream(float32.GetOnnxModel())).Fit(test);

        var timings = new Dictionary<string, List<double>>();
        void Add(string name, double seconds)
        {
            if (!timings.TryGetValue(name, out var list))
                timings[name] = list = [];
            list.Add(Rows / seconds);
        }
        // Warm-up round, then rounds of A, B, C, ... so that load changes hit every variant alike. Fairness (issue 19): each
        // path gets a settle pause first (--settle-ms, default 200: the previous path's worker threads, ONNX Runtime's spinning
        // intra-op pool or PyTorch's OpenMP team, go to sleep instead of competing for the 2 cores), then a block of --passes
        // consecutive passes (default 3) of which the fastest counts, so a path is not timed on the pass right after a switch.
        // PyTorch gets the same: the same pause, the same number of passes per round, its fastest pass.
        int passes = IntArg(args, "--passes", 3), settleMs = IntArg(args, "--settle-ms", 200);
        double Block(Func<double> pass)
        {
            Thread.Sleep(settleMs);
            double best = double.MaxValue;
            for (int p = 0; p < passes; p++)
                best = Math.Min(best, pass());
            return best;
        }
        for (int r = -1; r < rounds; r++)
        {
            foreach (var v in variants)
            {
                double s = Block(() => v.Time(features));
                if (r >= 0) Add(v.Name, s);
            }
            foreach (var (name, run) in transforms)
            {
                double s = Block(run);
                if (r >= 0) Add(name, s);
            }
            if (pytorchScript is not null)
            {
                // PyTorch in the same rounds (after its own warm-up pass, a settle pause and the same number of passes), so that
                // it sees the same load as ours: a separate PyTorch run before or after ours was off by 5x on the loaded machine.
                Thread.Sleep(settleMs);
                foreach (var (path, rowsPerSecond) in RunPyTorch(pytorchScript, passes, settleMs))
                    if (r >= 0)
                    {
                        if (!timings.TryGetValue(path, out var list))
                            timings[path] = list = [];
                        list.Add(rowsPerSecond);
                    }
            }
            {
                // ApplyOnnxModel (one ONNX Runtime call per row) in every round too: the ratio needs both under the same load.
                // One pass: it is 10x slower than the others and its figure is only the batched-scoring ratio's denominator.
                Thread.Sleep(settleMs);
                double s = TimeApplyOnnx(applyOnnx, test);
                if (r >= 0) Add("float32 ApplyOnnxModel", s);
            }
        }

        double Median(string name) { var l = timings[name].OrderBy(x => x).ToList(); return l.Count % 2 == 1 ? l[l.Count / 2] : (l[l.Count / 2 - 1] + l[l.Count / 2]) / 2; }
        Console.WriteLine($"// load average after: {BenchmarkSettings.LoadAverage()}");
        Console.WriteLine();
        Console.WriteLine($"| path (medians of {rounds} interleaved rounds) | rows/s | vs same-path float32 |");
        Console.WriteLine("| --- | ---: | ---: |");
        foreach (var name in timings.Keys)
        {
            string baseline = name.StartsWith("pytorch", StringComparison.Ordinal) ? "pytorch-float32"
                : name.EndsWith(" Transform", StringComparison.Ordinal) ? "float32 Transform"
                : name.Contains(" session", StringComparison.Ordinal) ? "float32 session" + name[(name.IndexOf(" session", StringComparison.Ordinal) + 8)..] : name;
            string ratio = timings.ContainsKey(baseline) ? (Median(name) / Median(baseline)).ToString("F2") : "–";
            Console.WriteLine($"| {name} | {Median(name):N0} | {ratio} |");
        }
        Console.WriteLine();
        Console.WriteLine($"// batched Transform vs ApplyOnnxModel (float32): {Median("float32 Transform") / Median("float32 ApplyOnnxModel"):F2}x");
        // Machine-readable lines for side-by-side.sh.
        foreach (var name in timings.Keys)
            Console.WriteLine("#json " + JsonSerializer.Serialize(new { path = name.StartsWith("pytorch", StringComparison.Ordinal) ? name : "ours " + name, rowsPerSecond = Median(name) }));
        foreach (var v in variants)
            v.Dispose();
        foreach (var (name, model) in models)
            if (model != float32)
                model.Dispose();
        return 0;
    }

    /// <summary>
    /// <c>--wide</c>: where memory bandwidth dominates. A 784-4096-4096-10 network (20 million weights: 80 MB as float32, far
    /// beyond the caches; trained one epoch on 512 rows, as scoring time does not depend on the weights' values) scored one row
    /// per call (a matrix-vector product: every weight read once per row) and in blocks of 1,024 (2,048 rows per pass), float32 against int4
    /// (MatMulNBits, 10 MB) and int8 dynamic, interleaved.
    /// </summary>
    private static int Wide(int rounds)
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.TakeRows(BenchmarkSettings.LoadMnist(ml, MnistSplit.Train), 512);
        var test = BenchmarkSettings.LoadMnist(ml, MnistSplit.Test);
        using var float32 = ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp(4096, 4096),
            Epochs = 1,
            BatchSize = 128,
            Device = TrainingDevice.Cpu,
            Seed = 1,
        }).Fit(train);
        using var int4 = ml.Compression().Quantize(float32, new QuantizationOptions { Mode = QuantizationMode.Int4WeightOnly }).Fit(train);
        using var int8 = ml.Compression().Quantize(float32, new QuantizationOptions { Mode = QuantizationMode.Int8Dynamic }).Fit(train);
        var features = ReadFeatures(test);
        const int singleRows = 200;
        var variants = new List<Variant>();
        foreach (var (name, model) in new[] { ("float32", float32), ("int4", int4), ("int8-dynamic", int8) })
        {
            Console.WriteLine($"// {name}: ONNX {model.GetOnnxModel().Length:N0} B, resident weights {model.Memory.ResidentWeightBytes:N0} B");
            variants.Add(new Variant($"{name} session, one row per call", model.GetOnnxModel(), DefaultOptions, block: 1, rows: singleRows));
            variants.Add(new Variant($"{name} session, blocks of 1,024", model.GetOnnxModel(), DefaultOptions, rows: 2048));
        }
        foreach (var v in variants)
            v.Open(features);
        var timings = variants.ToDictionary(v => v.Name, _ => new List<double>());
        for (int r = -1; r < rounds; r++)
            foreach (var v in variants)
            {
                double s = v.Time(features);
                if (r >= 0)
                    timings[v.Name].Add(v.Rows / s);
            }
        Console.WriteLine($"// load average after: {BenchmarkSettings.LoadAverage()}");
        Console.WriteLine();
        Console.WriteLine($"| 784-4096-4096-10 (medians of {rounds} interleaved rounds) | rows/s | vs float32 |");
        Console.WriteLine("| --- | ---: | ---: |");
        double Median(List<double> l) => l.OrderBy(x => x).ElementAt(l.Count / 2);
        foreach (var v in variants)
        {
            string baseline = "float32" + v.Name[v.Name.IndexOf(" session", StringComparison.Ordinal)..];
            Console.WriteLine($"| {v.Name} | {Median(timings[v.Name]):N0} | {Median(timings[v.Name]) / Median(timings[baseline]):F2} |");
        }
        foreach (var v in variants)
            v.Dispose();
        return 0;
    }

    /// <summary>
    /// Runs <c>/usr/bin/python3 script --repeats PASSES --warmup 1 --settle-ms MS --float-repeats 1</c> (pytorch_scoring.py) and reads
    /// its JSON lines: path and the fastest pass's rows/s (PyTorch's float32, 40-70x slower than its int8 in Debian's build,
    /// gets one pass per round so that a round stays short).
    /// </summary>
    private static List<(string Path, double RowsPerSecond)> RunPyTorch(string script, int passes, int settleMs)
    {
        var start = new ProcessStartInfo("/usr/bin/python3") { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in new[] { script, "--repeats", passes.ToString(System.Globalization.CultureInfo.InvariantCulture), "--warmup", "1",
                     "--float-repeats", "1", "--settle-ms", settleMs.ToString(System.Globalization.CultureInfo.InvariantCulture),
                     "--batch", Block.ToString(System.Globalization.CultureInfo.InvariantCulture),
                     "--threads", Environment.ProcessorCount.ToString(System.Globalization.CultureInfo.InvariantCulture) })
            start.ArgumentList.Add(a);
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start /usr/bin/python3 {script}.");
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"/usr/bin/python3 {script} exited with code {process.ExitCode}; is python3-torch installed (apt-get install python3-torch)?");
        var result = new List<(string, double)>();
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            using var json = JsonDocument.Parse(line);
            result.Add((json.RootElement.GetProperty("path").GetString()!, json.RootElement.GetProperty("best").GetDouble()));
        }
        return result;
    }

    private static int ArgMax(ReadOnlySpan<float> values) => MLNet.Compression.Networks.Heads.SoftmaxMulticlassHead.ArgMax(values);

    private static string ModeName(QuantizationMode mode) => mode switch
    {
        QuantizationMode.Int8Dynamic => "int8-dynamic",
        QuantizationMode.Int8Static => "int8-static",
        QuantizationMode.Int4WeightOnly => "int4",
        _ => mode.ToString(),
    };

    /// <summary>What <c>BatchedOnnxScorer</c> uses today.</summary>
    private static SessionOptions DefaultOptions() => new() { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };

    private static SessionOptions Level(GraphOptimizationLevel level) => new() { GraphOptimizationLevel = level };

    private static SessionOptions WithThreads(SessionOptions o, int threads)
    {
        o.IntraOpNumThreads = threads;
        return o;
    }

    private static SessionOptions NoSpin(SessionOptions o)
    {
        o.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        return o;
    }

    private static SessionOptions NoArena(SessionOptions o)
    {
        o.EnableMemoryPattern = false;
        o.EnableCpuMemArena = false;
        return o;
    }

    private static SessionOptions AccuracyLevel(SessionOptions o, int level)
    {
        // The accuracy_level ONNX Runtime gives the MatMulNBits it makes from DequantizeLinear + MatMul (4: int8 compute).
        o.AddSessionConfigEntry("session.qdq_matmulnbits_accuracy_level", level.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return o;
    }

    private static SessionOptions NoPrepack(SessionOptions o)
    {
        o.AddSessionConfigEntry("session.disable_prepacking", "1");
        return o;
    }

    private static float[] ReadFeatures(IDataView test)
    {
        var column = test.Schema["Features"];
        var result = new float[Rows * 784];
        using var cursor = test.GetRowCursor([column]);
        var getter = cursor.GetGetter<VBuffer<float>>(column);
        VBuffer<float> row = default;
        int n = 0;
        while (cursor.MoveNext())
        {
            getter(ref row);
            row.CopyTo(result.AsSpan(n * 784, 784));
            n++;
        }
        return n == Rows ? result : throw new InvalidOperationException($"Read {n} test rows.");
    }

    private static double TimeTransform(NeuralNetworkTransformer model, IDataView test)
    {
        var sw = Stopwatch.StartNew();
        ScoredRows.Read(model.Transform(test), Rows);
        return sw.Elapsed.TotalSeconds;
    }

    private static double TimeApplyOnnx(ITransformer applyOnnx, IDataView test)
    {
        var sw = Stopwatch.StartNew();
        var scored = applyOnnx.Transform(test);
        var score = scored.Schema["Score"];
        using var cursor = scored.GetRowCursor([score]);
        var getScore = cursor.GetGetter<VBuffer<float>>(score);
        VBuffer<float> s = default;
        long rows = 0;
        while (cursor.MoveNext())
        {
            getScore(ref s);
            rows++;
        }
        return rows == Rows ? sw.Elapsed.TotalSeconds : throw new InvalidOperationException($"Scored {rows} rows.");
    }

    private static void Profile(byte[] onnx, float[] features, string prefix)
    {
        using var options = DefaultOptions();
        options.EnableProfiling = true;
        options.ProfileOutputPathPrefix = prefix;
        // The graph the batched Transform runs: the row checks on the host (HostRowChecks), as BatchedOnnxScorer does.
        using var v = new Variant("profile", onnx, () => options, host: true);
        v.Open(features);
        for (int i = 0; i < 5; i++)
            v.Time(features);
        var file = v.EndProfiling();
        Console.WriteLine($"// profile: {file}");
    }

    private static int IntArg(string[] args, string name, int fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture) : fallback;
    }

    private static string? StringArg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    /// <summary>One session over one graph with one set of options, scoring the rows in blocks with pinned buffers.</summary>
    private sealed class Variant(string name, byte[] onnx, Func<SessionOptions> options, int block = Block, int rows = Rows, int streams = 1, bool host = false, bool overlap = false, bool codes = true, bool prune = true) : IDisposable
    {
        private InferenceSession? session;
        private HostRowChecks? checks;
        private HostRowValues values = new(1);
        private float[] input = [];

        public byte[] Onnx => onnx;
        private float[] output = [];
        private string inputName = "";
        private string outputName = "";

        public string Name { get; } = name;

        /// <summary>Rows one <see cref="Time"/> pass scores (the first ones of the test set).</summary>
        public int Rows { get; } = rows;

        public void Open(float[] features)
        {
            using var o = options();
            var signature = OnnxExporter.ReadSignature(onnx);
            inputName = signature.InputName;
            outputName = signature.OutputHead.BatchedOutputs(signature)[0].Name;
            checks = host ? HostRowChecks.Rewrite(onnx, quantizeInput: codes, outputs: prune ? [outputName] : null) : null;
            session = new InferenceSession(checks?.Onnx ?? onnx, o);
            values = checks?.NewValues(block) ?? new HostRowValues(block);
            input = GC.AllocateUninitializedArray<float>(block * 784, pinned: true);
            output = GC.AllocateUninitializedArray<float>(block * 10, pinned: true);
        }

        public double Time(float[] features)
        {
            if (streams > 1)
                return TimeStreams(features);
            if (overlap)
                return TimeOverlapped(features);
            var sw = Stopwatch.StartNew();
            using var runOptions = new RunOptions();
            for (int start = 0; start < Rows; start += block)
            {
                int n = Math.Min(block, Rows - start);
                Fill(features, start, n);
                RunBlock(runOptions, n);
            }
            return sw.Elapsed.TotalSeconds;
        }

        /// <summary>
        /// The next block is copied (with the host checks) on another thread while ONNX Runtime scores this one: what a view that
        /// fills its next block ahead would gain.
        /// </summary>
        private double TimeOverlapped(float[] features)
        {
            var sw = Stopwatch.StartNew();
            var buffers = new[] { input, GC.AllocateUninitializedArray<float>(block * 784, pinned: true) };
            var valueSets = new[] { values, checks?.NewValues(block) ?? new HostRowValues(block) };
            void FillInto(int b, int start, int n) => Fill(features, start, n, buffers[b], valueSets[b]);
            using var runOptions = new RunOptions();
            int first = Math.Min(block, Rows);
            FillInto(0, 0, first);
            int current = 0;
            for (int start = 0; start < Rows; start += block)
            {
                int n = Math.Min(block, Rows - start), next = start + block;
                Task? ahead = next < Rows ? Task.Run(() => FillInto(1 - current, next, Math.Min(block, Rows - next))) : null;
                var saved = (input, values);
                (input, values) = (buffers[current], valueSets[current]);
                RunBlock(runOptions, n);
                (input, values) = saved;
                ahead?.Wait();
                current = 1 - current;
            }
            return sw.Elapsed.TotalSeconds;
        }

        /// <summary>Blocks scored by <c>streams</c> threads at once on the one session (each its own buffers).</summary>
        private double TimeStreams(float[] features)
        {
            var sw = Stopwatch.StartNew();
            var threads = Enumerable.Range(0, streams).Select(t => new Thread(() =>
            {
                var inBuf = GC.AllocateUninitializedArray<float>(block * 784, pinned: true);
                var outBuf = GC.AllocateUninitializedArray<float>(block * 10, pinned: true);
                using var runOptions = new RunOptions();
                for (int start = t * block; start < Rows; start += streams * block)
                {
                    int n = Math.Min(block, Rows - start);
                    features.AsSpan(start * 784, n * 784).CopyTo(inBuf);
                    using var x = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, inBuf.AsMemory(0, n * 784), [n, 784]);
                    using var y = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, outBuf.AsMemory(0, n * 10), [n, 10]);
                    session!.Run(runOptions, [inputName], [x], [outputName], [y]);
                }
            })).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
            return sw.Elapsed.TotalSeconds;
        }

        public float[] ScoreAll(float[] features)
        {
            var all = new float[Rows * 10];
            using var runOptions = new RunOptions();
            for (int start = 0; start < Rows; start += block)
            {
                int n = Math.Min(block, Rows - start);
                Fill(features, start, n);
                RunBlock(runOptions, n);
                output.AsSpan(0, n * 10).CopyTo(all.AsSpan(start * 10));
            }
            return all;
        }

        /// <summary>Copies rows [start, start + n) into <c>input</c>; with --host through the scorer's checked copy (probes per row).</summary>
        private void Fill(float[] features, int start, int n) => Fill(features, start, n, input, values);

        private void Fill(float[] features, int start, int n, float[] into, HostRowValues intoValues)
        {
            if (checks is not { Any: true })
            {
                features.AsSpan(start * 784, n * 784).CopyTo(into);
                return;
            }
            for (int r = 0; r < n; r++)
                checks.CopyRow(features.AsSpan((start + r) * 784, 784), into.AsSpan(r * 784, 784), intoValues, r);
        }

        /// <summary>One block of <paramref name="n"/> rows from <c>input</c> into <c>output</c> (with --host: the scorer's host checks first).</summary>
        private void RunBlock(RunOptions runOptions, int n)
        {
            using var y = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, output.AsMemory(0, n * 10), [n, 10]);
            if (checks is not { Any: true })
            {
                using var x = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, input.AsMemory(0, n * 784), [n, 784]);
                session!.Run(runOptions, [inputName], [x], [outputName], [y]);
                return;
            }
            var inputs = checks.CreateInputs(input, values, n, 784);
            try
            {
                session!.Run(runOptions, checks.InputNames(inputName), inputs, [outputName], [y]);
            }
            finally
            {
                foreach (var v in inputs)
                    v.Dispose();
            }
        }

        public string EndProfiling() => session!.EndProfiling();

        public void Dispose() => session?.Dispose();
    }
}

/// <summary>Rewrites of an exported graph, to measure what a part of it costs.</summary>
internal static class GraphVariants
{
    private static readonly string[] GuardOutputs = ["input_zero", "input_row_zero", "outputs_t", "outputs_nan_checked"];

    /// <summary>The graph without the non-finite guard: the last layer's outputs go straight to the head (an Identity).</summary>
    public static byte[] WithoutNanGuard(byte[] onnx) => ReplaceGuard(onnx, (outputs, x) => [Node("Identity", [outputs], "outputs_nan_checked")]);

    /// <summary>The guard as it was before issue 19: outputs + Einsum("ij,ik->ik", x, outputs − outputs).</summary>
    public static byte[] WithEinsumGuard(byte[] onnx) => ReplaceGuard(onnx, (outputs, x) =>
    [
        Node("Sub", [outputs, outputs], "outputs_zero"),
        Node("Einsum", [x, "outputs_zero"], "nan_probe", ("equation", "ij,ik->ik")),
        Node("Add", [outputs, "nan_probe"], "outputs_nan_checked"),
    ]);

    /// <summary>
    /// The guard as it was from the first issue-19 change until the ReduceMean form (still the form from opset 18): Transpose(Transpose(outputs) +
    /// Einsum("ij->i", x − x)).
    /// </summary>
    public static byte[] WithTransposedEinsumGuard(byte[] onnx) => ReplaceGuard(onnx, (outputs, x) =>
    [
        Node("Sub", [x, x], "input_zero"),
        Node("Einsum", ["input_zero"], "input_row_zero", ("equation", "ij->i")),
        Node("Transpose", [outputs], "outputs_t"),
        Node("Add", ["outputs_t", "input_row_zero"], "outputs_t_checked"),
        Node("Transpose", ["outputs_t_checked"], "outputs_nan_checked"),
    ]);

    /// <summary>outputs + MatMul(x, zeros [D, 1]): one read of x, no [N, D] temporary (x·0 is 0 for finite x, NaN for NaN or ±inf).</summary>
    public static byte[] WithMatMulGuard(byte[] onnx) => ReplaceGuard(onnx, (outputs, x) =>
    [
        Node("MatMul", [x, "guard_zeros"], "input_row_zero"),
        Node("Add", [outputs, "input_row_zero"], "outputs_nan_checked"),
    ], model =>
    {
        var input = model.Graph.Input[0].Type.TensorType.Shape.Dim[1].DimValue;
        var zeros = new TensorProto { Name = "guard_zeros", DataType = (int)TensorProto.Types.DataType.Float, Dims = { input, 1 } };
        zeros.FloatData.AddRange(new float[input]);
        model.Graph.Initializer.Add(zeros);
    });

    /// <summary>outputs + Transpose(Gemm(zeros [1, D], x, transB)): one [1, N] product (MLAS's M = 1 transposed-B path), one read of x.</summary>
    public static byte[] WithGemmRowGuard(byte[] onnx) => ReplaceGuard(onnx, (outputs, x) =>
    [
        WithInt(Node("Gemm", ["guard_zeros_row", x], "input_row_zero_t"), "transB", 1),
        Node("Transpose", ["input_row_zero_t"], "input_row_zero"),
        Node("Add", [outputs, "input_row_zero"], "outputs_nan_checked"),
    ], model =>
    {
        var input = model.Graph.Input[0].Type.TensorType.Shape.Dim[1].DimValue;
        var zeros = new TensorProto { Name = "guard_zeros_row", DataType = (int)TensorProto.Types.DataType.Float, Dims = { 1, input } };
        zeros.FloatData.AddRange(new float[input]);
        model.Graph.Initializer.Add(zeros);
    });

    /// <summary>outputs + (max − max) + (min − min) per row: two read-only reductions (relies on ReduceMax/Min propagating NaN).</summary>
    public static byte[] WithMaxMinGuard(byte[] onnx) => ReplaceGuard(onnx, (outputs, x) =>
    [
        WithInt(WithInts(Node("ReduceMax", [x], "input_row_max"), "axes", 1), "keepdims", 1),
        WithInt(WithInts(Node("ReduceMin", [x], "input_row_min"), "axes", 1), "keepdims", 1),
        Node("Sub", ["input_row_max", "input_row_max"], "input_max_zero"),
        Node("Sub", ["input_row_min", "input_row_min"], "input_min_zero"),
        Node("Add", ["input_max_zero", "input_min_zero"], "input_row_zero"),
        Node("Add", [outputs, "input_row_zero"], "outputs_nan_checked"),
    ]);

    private static NodeProto WithInts(NodeProto node, string name, params long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        node.Attribute.Add(a);
        return node;
    }

    /// <summary>
    /// Int8 dynamic with one activation scale per batch (what PyTorch's quantize_dynamic does) instead of per row, to measure
    /// what an opt-in per-batch mode would buy: each layer's per-row QuantizeLinear becomes DynamicQuantizeLinear, whose zero
    /// point MatMulInteger takes out, and the output scale is that one scale times the weight scales; the per-row nodes left
    /// without consumers are removed. A row's result then depends on the rows scored with it.
    /// </summary>
    /// <summary>
    /// The per-batch int8 dynamic export without its non-finite clamp (Abs → Less → Where before each DynamicQuantizeLinear),
    /// or with it before the first layer only (<paramref name="keepFirst"/>): for measuring what the clamp costs.
    /// </summary>
    public static byte[] WithoutPerBatchClamp(byte[] onnx, bool keepFirst)
    {
        var model = ModelProto.Parser.ParseFrom(onnx);
        var nodes = model.Graph.Node;
        bool first = true;
        foreach (var dql in nodes.Where(n => n.OpType == "DynamicQuantizeLinear").ToList())
        {
            // The model's input: If(any row bad, Where(row bad, 0, x) → Clip, Clip(x)) (before: Where → Clip); a hidden layer's: Where(in range, x, 0).
            var producer = nodes.SingleOrDefault(n => n.Output[0] == dql.Input[0]);
            string? raw = producer?.OpType switch
            {
                "If" => producer.Attribute.Single(a => a.Name == "else_branch").G.Node[0].Input[0],
                "Clip" => nodes.Single(n => n.Output[0] == producer.Input[0]).Input[2],
                "Where" => producer.Input[1],
                _ => null,
            };
            if (raw is null)
                continue;
            if (first && keepFirst)
            {
                first = false;
                continue;
            }
            first = false;
            dql.Input[0] = raw;
        }
        RemoveDeadNodes(model);
        return Google.Protobuf.MessageExtensions.ToByteArray(model);
    }

    private static void RemoveDeadNodes(ModelProto model)
    {
        // Inputs read by a node or by a node of its branch graphs (If reads outer values by name).
        static IEnumerable<string> Reads(NodeProto n) =>
            n.Input.Concat(n.Attribute.Where(a => a.G is not null).SelectMany(a => a.G.Node.SelectMany(Reads)));
        var nodes = model.Graph.Node;
        while (true)
        {
            var used = nodes.SelectMany(Reads).Concat(model.Graph.Output.Select(o => o.Name)).ToHashSet(StringComparer.Ordinal);
            var dead = nodes.Where(n => !n.Output.Any(used.Contains)).ToList();
            if (dead.Count == 0)
                break;
            foreach (var d in dead)
                nodes.Remove(d);
        }
        var stillUsed = nodes.SelectMany(Reads).ToHashSet(StringComparer.Ordinal);
        foreach (var t in model.Graph.Initializer.Where(t => !stillUsed.Contains(t.Name)).ToList())
            model.Graph.Initializer.Remove(t);
    }

    public static byte[] WithPerBatchScales(byte[] onnx)
    {
        var model = ModelProto.Parser.ParseFrom(onnx);
        var nodes = model.Graph.Node;
        foreach (var q in nodes.Where(n => n.OpType == "QuantizeLinear" && n.Output[0].EndsWith(".input_q", StringComparison.Ordinal)).ToList())
        {
            var mm = nodes.SingleOrDefault(n => n.OpType == "MatMulInteger" && n.Input[0] == q.Output[0]);
            if (mm is null)
                continue;
            string layer = q.Output[0][..^".input_q".Length];
            var dql = new NodeProto { OpType = "DynamicQuantizeLinear", Name = "node_DynamicQuantizeLinear_" + layer };
            dql.Input.Add(q.Input[0]);
            dql.Output.Add(q.Output[0]);
            dql.Output.Add(layer + ".batch_scale");
            dql.Output.Add(layer + ".batch_zero_point");
            nodes[nodes.IndexOf(q)] = dql;
            string w = mm.Input[1];
            mm.Input.Clear();
            mm.Input.Add(q.Output[0]);
            mm.Input.Add(w);
            mm.Input.Add(layer + ".batch_zero_point");
            var outScale = nodes.Single(n => n.Output[0] == layer + ".output_scale");
            nodes[nodes.IndexOf(outScale)] = Node("Mul", [layer + ".batch_scale", outScale.Input[1]], layer + ".output_scale");
            nodes.Single(n => n.Output[0] == layer + ".matmul").Input[0] = layer + ".matmul_float";
        }
        while (true)
        {
            var used = nodes.SelectMany(n => n.Input).Concat(model.Graph.Output.Select(o => o.Name)).ToHashSet(StringComparer.Ordinal);
            var dead = nodes.Where(n => !n.Output.Any(used.Contains)).ToList();
            if (dead.Count == 0)
                break;
            foreach (var d in dead)
                nodes.Remove(d);
        }
        var stillUsed = nodes.SelectMany(n => n.Input).ToHashSet(StringComparer.Ordinal);
        foreach (var t in model.Graph.Initializer.Where(t => !stillUsed.Contains(t.Name)).ToList())
            model.Graph.Initializer.Remove(t);
        return Google.Protobuf.MessageExtensions.ToByteArray(model);
    }

    private static byte[] ReplaceGuard(byte[] onnx, Func<string, string, NodeProto[]> guard, Action<ModelProto>? addInitializers = null)
    {
        var model = ModelProto.Parser.ParseFrom(onnx);
        addInitializers?.Invoke(model);
        var nodes = model.Graph.Node;
        string x = nodes.Single(n => n.Output[0] == "input_zero").Input[0];
        string outputs = (nodes.SingleOrDefault(n => n.Output[0] == "outputs_t") ?? nodes.Single(n => n.Output[0] == "outputs_nan_checked")).Input[0];
        int at = nodes.IndexOf(nodes.Single(n => n.Output[0] == "input_zero"));
        foreach (var dead in nodes.Where(n => GuardOutputs.Any(g => n.Output[0].StartsWith(g, StringComparison.Ordinal))).ToList())
            nodes.Remove(dead);
        var added = guard(outputs, x);
        for (int i = 0; i < added.Length; i++)
            nodes.Insert(at + i, added[i]);
        return Google.Protobuf.MessageExtensions.ToByteArray(model);
    }

    private static NodeProto Node(string op, string[] inputs, string output, (string Name, string Value)? attribute = null, (string Name, long Value)? intAttribute = null)
    {
        if (intAttribute is { } ia)
            return WithInt(Node(op, inputs, output, attribute), ia.Name, ia.Value);
        var node = new NodeProto { OpType = op, Name = "node_" + op + "_" + output };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        if (attribute is { } a)
            node.Attribute.Add(new AttributeProto { Name = a.Name, Type = AttributeProto.Types.AttributeType.String, S = Google.Protobuf.ByteString.CopyFromUtf8(a.Value) });
        return node;
    }

    private static NodeProto WithInt(NodeProto node, string name, long value)
    {
        node.Attribute.Add(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value });
        return node;
    }
}
