// A deployed MNIST classifier, as Model Builder would generate it: loads a zip saved by samples/MnistCompression and
// scores test digits with a PredictionEngine and with a thread-safe engine pool. It references only Microsoft.ML,
// Microsoft.ML.OnnxTransformer and ONNX Runtime, and checks that no TorchSharp assembly and no libtorch was loaded.
//
//   dotnet run --project samples/ModelConsumer -c Release -- [model.zip] [--data-dir DIR] [--rows 0,1,2] [--pool-rows N]
//
// model.zip defaults to artifacts/baseline.zip (what the main job writes when run from the repository root). The MNIST
// test files come from --data-dir, else MNIST_DIR, else the cache the main job fills (~/.cache/mlnet-compression/mnist).
// Exit codes: 0 success; 1 failure (missing files, a pool result that differs from the single engine); 2 bad arguments;
// 3 a TorchSharp assembly or libtorch was loaded into this process.
// Besides the console report it prints KEY=VALUE lines (PREDICTION, POOL, LOADED_TORCHSHARP, LOADED_LIBTORCH,
// PEAK_MEMORY_BYTES) that tests/MLNet.Compression.DeploymentTests reads.

using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using ModelConsumer;

string modelPath = Path.Combine("artifacts", "baseline.zip");
string? dataDir = null;
int[] rows = [0, 1, 2, 3, 4];
int poolRows = 1000;
try
{
    bool modelGiven = false;
    for (int i = 0; i < args.Length; i++)
    {
        string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
        switch (args[i])
        {
            case "--data-dir":
                dataDir = Next();
                break;
            case "--rows":
                rows = Next().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                    .Select(r => int.TryParse(r, NumberStyles.Integer, CultureInfo.InvariantCulture, out int row) && row >= 0
                        ? row
                        : throw new ArgumentException($"--rows takes test row numbers separated by commas; '{r}' is not one."))
                    .ToArray();
                break;
            case "--pool-rows":
                string text = Next();
                if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out poolRows) || poolRows < 0)
                    throw new ArgumentException($"--pool-rows must be 0 or a positive number of rows, got '{text}'.");
                break;
            case "-h" or "--help":
                Console.WriteLine("usage: ModelConsumer [model.zip (default artifacts/baseline.zip)] [--data-dir DIR] [--rows 0,1,2,3,4] [--pool-rows 1000]");
                return 0;
            default:
                if (args[i].StartsWith('-') || modelGiven)
                    throw new ArgumentException($"Unknown argument '{args[i]}'.");
                modelPath = args[i];
                modelGiven = true;
                break;
        }
    }
}
catch (ArgumentException e)
{
    Console.Error.WriteLine(e.Message);
    Console.Error.WriteLine("usage: ModelConsumer [model.zip] [--data-dir DIR] [--rows 0,1,2,3,4] [--pool-rows 1000]");
    return 2;
}

try
{
    modelPath = Path.GetFullPath(modelPath);
    if (!File.Exists(modelPath))
    {
        Console.Error.WriteLine($"Model '{modelPath}' not found. Run the main job first (dotnet run --project samples/MnistCompression -c Release), " +
                                "which writes artifacts/baseline.zip, or pass the path of a zip it saved.");
        return 1;
    }
    IReadOnlyList<DigitImage> test = MnistTestFiles.Load(dataDir);
    foreach (int row in rows)
    {
        if (row >= test.Count)
        {
            Console.Error.WriteLine($"--rows: row {row} is past the end of the test split ({test.Count} rows).");
            return 2;
        }
    }
    poolRows = Math.Min(poolRows, test.Count);

    var ml = new MLContext(seed: 1);
    var clock = Stopwatch.StartNew();
    ITransformer model = ml.Model.Load(modelPath, out DataViewSchema inputSchema);
    Console.WriteLine($"Loaded {modelPath} ({new FileInfo(modelPath).Length:N0} bytes) in {clock.ElapsedMilliseconds} ms.");
    if (inputSchema.GetColumnOrNull("Features") is not { Type: VectorDataViewType { Size: DigitImage.PixelCount } })
    {
        Console.Error.WriteLine($"'{modelPath}' does not read a Features column of {DigitImage.PixelCount} floats; it is not an MNIST model of this project.");
        (model as IDisposable)?.Dispose();
        return 1;
    }

    // The pool owns the model; engines made for it, or by hand below, must not (OwnsTransformer = false).
    using var pool = new EnginePool<ModelInput, ModelOutput>(ml, model, maxIdle: Environment.ProcessorCount);
    string[] digits;
    var single = new Dictionary<int, ModelOutput>();
    using (var engine = ml.Model.CreatePredictionEngine<ModelInput, ModelOutput>(model, new PredictionEngineOptions { OwnsTransformer = false }))
    {
        digits = Digits(engine.OutputSchema["PredictedLabel"]);
        foreach (int row in rows)
        {
            DigitImage image = test[row];
            ModelOutput output = engine.Predict(image.ToInput());
            single[row] = output;
            string digit = DigitOf(output, digits);
            Console.WriteLine();
            Console.WriteLine($"Test row {row}: label {image.Label}, predicted {digit} (probability {output.Score.Max():P1}){(digit == image.Label.ToString(CultureInfo.InvariantCulture) ? "" : "  <- wrong")}");
            foreach (string line in image.ToAscii())
                Console.WriteLine("    |" + line.PadRight(28) + "|");
            Console.WriteLine(FormattableString.Invariant(
                $"PREDICTION row={row} label={image.Label} predicted={digit} key={output.PredictedLabel} scores={string.Join(';', output.Score.Select(s => s.ToString("R", CultureInfo.InvariantCulture)))}"));
        }

        // The same rows through the pool from several threads must give the same answers as the single engine.
        if (poolRows > 0)
        {
            var sequential = new ModelOutput[poolRows];
            for (int i = 0; i < poolRows; i++)
                sequential[i] = engine.Predict(test[i].ToInput());

            var parallel = new ModelOutput[poolRows];
            clock.Restart();
            Parallel.For(0, poolRows, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(2, Environment.ProcessorCount) },
                i => parallel[i] = pool.Predict(test[i].ToInput()));
            double seconds = clock.Elapsed.TotalSeconds;

            int correct = 0, differ = 0;
            for (int i = 0; i < poolRows; i++)
            {
                if (DigitOf(parallel[i], digits) == test[i].Label.ToString(CultureInfo.InvariantCulture))
                    correct++;
                if (parallel[i].PredictedLabel != sequential[i].PredictedLabel || !parallel[i].Score.SequenceEqual(sequential[i].Score))
                    differ++;
            }
            Console.WriteLine();
            Console.WriteLine($"Pool: {poolRows:N0} test rows from {Math.Max(2, Environment.ProcessorCount)} threads on {pool.EnginesCreated} engine(s): " +
                              $"accuracy {(double)correct / poolRows:P2}, {poolRows / seconds:N0} rows/s, {differ} row(s) differ from the single engine.");
            Console.WriteLine(FormattableString.Invariant($"POOL rows={poolRows} correct={correct} differ={differ} engines={pool.EnginesCreated}"));
            if (differ > 0)
            {
                Console.Error.WriteLine($"{differ} row(s) scored through the pool differ from the single engine.");
                return 1;
            }
        }
    }

    string[] torchAssemblies = ProcessReport.TorchAssemblies();
    string[]? torchNative = ProcessReport.TorchNativeLibraries();
    (long peakBytes, string peakSource) = ProcessReport.PeakMemory();
    Console.WriteLine();
    Console.WriteLine($"Peak memory of this process: {peakBytes / (1024.0 * 1024.0):F1} MiB ({peakSource}).");
    Console.WriteLine(torchAssemblies.Length == 0
        ? "No TorchSharp or MLNet.Compression assembly is loaded."
        : "Loaded: " + string.Join(", ", torchAssemblies));
    Console.WriteLine(torchNative is null ? "Native libraries: unknown (no /proc/self/maps)."
        : torchNative.Length == 0 ? "No libtorch is mapped into this process." : "Mapped: " + string.Join(", ", torchNative));
    Console.WriteLine($"LOADED_TORCHSHARP={(torchAssemblies.Length > 0 ? "true" : "false")}");
    Console.WriteLine($"LOADED_LIBTORCH={(torchNative is null ? "unknown" : torchNative.Length > 0 ? "true" : "false")}");
    Console.WriteLine(FormattableString.Invariant($"PEAK_MEMORY_BYTES={peakBytes}"));
    return torchAssemblies.Length > 0 || torchNative is { Length: > 0 } ? 3 : 0;
}
catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException or InvalidOperationException or FormatException)
{
    Console.Error.WriteLine($"ModelConsumer failed: {e.Message}");
    return 1;
}

// The class names of the PredictedLabel key ("0".."9"): key k names digits[k - 1].
static string[] Digits(DataViewSchema.Column predictedLabel)
{
    var names = default(VBuffer<ReadOnlyMemory<char>>);
    predictedLabel.GetKeyValues(ref names);
    return names.DenseValues().Select(n => n.ToString()).ToArray();
}

static string DigitOf(ModelOutput output, string[] digits)
    => output.PredictedLabel >= 1 && output.PredictedLabel <= digits.Length ? digits[output.PredictedLabel - 1] : "?";
