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
//   dotnet MLNet.Compression.ModelFactory.dll --tasks <dir>
//
// Binary and regression mode (MLNet.Compression.DeploymentTests/TaskModelDeploymentTests): trains a binary classifier and a
// regression on generated data with ml.BinaryClassification/Regression.Trainers.NeuralNetwork, quantizes each to int8
// (Int8Dynamic), saves the four zips (binary-float32.zip, binary-int8.zip, regression-float32.zip, regression-int8.zip) and
// writes <dir>/tasks.json: per zip, the feature rows of a generated test set (with NaN in one row) and what the trained
// transformer gives for them in this process (Score, Probability, PredictedLabel; floats also as bit patterns).
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
if (args.Length > 0 && args[0] == "--tasks")
    return Tasks(args);

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

    var ml = new MLContext(seed: 1);
    var (files, trainAll, test) = FactoryMnist.Load(ml);
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

static int Tasks(string[] args)
{
    if (args.Length != 2)
    {
        Console.Error.WriteLine("usage: MLNet.Compression.ModelFactory --tasks <dir>");
        return 2;
    }
    try
    {
        string dir = Path.GetFullPath(args[1]);
        Directory.CreateDirectory(dir);
        var ml = new MLContext(seed: 1);
        var rand = new Random(1);
        const int features = 10, trainRows = 800, testRows = 60;
        float[] Row() => Enumerable.Range(0, features).Select(_ => (float)(rand.NextDouble() * 2 - 1)).ToArray();
        var trainX = Enumerable.Range(0, trainRows).Select(_ => Row()).ToArray();
        var testX = Enumerable.Range(0, testRows).Select(_ => Row()).ToArray();
        testX[7][2] = float.NaN; // a NaN row: NaN scores, PredictedLabel false, as ML.NET's own trainers
        static bool Rule(float[] x) => x[0] + x[1] * x[2] - 0.5 * x[3] > 0;
        static float Target(float[] x) => (float)(100 * (3 * Math.Sin(2 * x[0]) + 2 * x[1] * x[1] + x[2] * x[3]) + 500);
        var definition = SchemaDefinition.Create(typeof(TaskRow));
        definition["Features"].ColumnType = new VectorDataViewType(NumberDataViewType.Single, features);
        var binaryDefinition = SchemaDefinition.Create(typeof(BinaryTaskRow));
        binaryDefinition["Features"].ColumnType = new VectorDataViewType(NumberDataViewType.Single, features);
        var binaryTrain = ml.Data.LoadFromEnumerable(trainX.Select(x => new BinaryTaskRow { Features = x, Label = Rule(x) }), binaryDefinition);
        var regressionTrain = ml.Data.LoadFromEnumerable(trainX.Select(x => new TaskRow { Features = x, Label = Target(x) }), definition);
        var binaryTest = ml.Data.LoadFromEnumerable(testX.Select(x => new BinaryTaskRow { Features = x, Label = !float.IsNaN(x[2]) && Rule(x) }), binaryDefinition);
        var regressionTest = ml.Data.LoadFromEnumerable(testX.Select(x => new TaskRow { Features = x, Label = Target(x) }), definition);

        using var binary = ml.BinaryClassification.Trainers.NeuralNetwork(hiddenLayers: [16], epochs: 8, batchSize: 32).Fit(binaryTrain);
        using var regression = ml.Regression.Trainers.NeuralNetwork(hiddenLayers: [16], epochs: 8, batchSize: 32).Fit(regressionTrain);
        var int8 = new MLNet.Compression.Quantization.QuantizationOptions { Mode = MLNet.Compression.Quantization.QuantizationMode.Int8Dynamic };
        using var binaryInt8 = ml.Compression().Quantize(binary, int8).Fit(binaryTrain);
        using var regressionInt8 = ml.Compression().Quantize(regression, int8).Fit(regressionTrain);
        var models = new (string Name, NeuralNetworkTransformer Model, IDataView Train, IDataView Test, bool Binary)[]
        {
            ("binary-float32", binary, binaryTrain, binaryTest, true),
            ("binary-int8", binaryInt8, binaryTrain, binaryTest, true),
            ("regression-float32", regression, regressionTrain, regressionTest, false),
            ("regression-int8", regressionInt8, regressionTrain, regressionTest, false),
        };
        foreach (var m in models)
            WriteAtomically(Path.Combine(dir, m.Name + ".zip"), temp => ml.Model.Save(m.Model, m.Train.Schema, temp));
        WriteAtomically(Path.Combine(dir, "tasks.json"), temp =>
        {
            using var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None);
            using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            json.WriteStartObject();
            json.WriteNumber("format", 1);
            json.WriteNumber("features", features);
            json.WriteStartArray("rows");
            foreach (var x in testX)
            {
                json.WriteStartArray();
                foreach (float v in x)
                    json.WriteNumberValue(BitConverter.SingleToUInt32Bits(v));
                json.WriteEndArray();
            }
            json.WriteEndArray();
            json.WriteStartArray("models");
            foreach (var m in models)
            {
                var scored = m.Model.Transform(m.Test);
                json.WriteStartObject();
                json.WriteString("name", m.Name);
                json.WriteString("zip", m.Name + ".zip");
                json.WriteBoolean("binary", m.Binary);
                WriteBits(json, "scoreBits", scored.GetColumn<float>("Score"));
                if (m.Binary)
                {
                    WriteBits(json, "probabilityBits", scored.GetColumn<float>("Probability"));
                    json.WriteStartArray("predictedLabel");
                    foreach (bool b in scored.GetColumn<bool>("PredictedLabel"))
                        json.WriteBooleanValue(b);
                    json.WriteEndArray();
                    json.WriteNumber("auc", ml.BinaryClassification.Evaluate(scored).AreaUnderRocCurve);
                }
                else
                {
                    json.WriteNumber("rSquared", ml.Regression.Evaluate(ml.Data.FilterRowsByMissingValues(scored, "Score")).RSquared);
                }
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        });
        Console.WriteLine($"wrote the binary and regression zips and tasks.json to {dir}");
        return 0;
    }
    catch (Exception e)
    {
        Console.Error.WriteLine($"model factory (--tasks) failed: {e}");
        return 1;
    }
}

static void WriteBits(Utf8JsonWriter json, string name, IEnumerable<float> values)
{
    json.WriteStartArray(name);
    foreach (float v in values)
        json.WriteNumberValue(BitConverter.SingleToUInt32Bits(v));
    json.WriteEndArray();
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

/// <summary>A generated regression row (--tasks).</summary>
internal sealed class TaskRow
{
    public float[] Features { get; set; } = [];

    public float Label { get; set; }
}

/// <summary>A generated binary row (--tasks).</summary>
internal sealed class BinaryTaskRow
{
    public float[] Features { get; set; } = [];

    public bool Label { get; set; }
}
