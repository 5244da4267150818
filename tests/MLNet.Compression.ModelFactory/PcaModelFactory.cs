using System.Globalization;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression;
using MLNet.Compression.Data;
using MLNet.Compression.Networks;
using MLNet.Compression.Tooling;

/// <summary>
/// <c>--pca --out &lt;dir&gt; [--rank N]</c>: ML.NET's own ProjectToPrincipalComponents (centred, rank N, default 32) followed by
/// an MLP on the N components, trained on the first 3,000 MNIST training rows; the whole chain is saved to
/// <c>&lt;dir&gt;/pca-model.zip</c> with ml.Model.Save, and <c>&lt;dir&gt;/pca-expected.json</c> gets what the chain computes in
/// this process: Score (IEEE-754 bits) and PredictedLabel of the first 200 test rows and the accuracy over all test rows.
/// </summary>
internal static class PcaModelFactory
{
    private const int ExpectedRows = 200;

    public static int Run(string[] args)
    {
        string? outDir = null;
        int rank = 32;
        for (int i = 1; i < args.Length; i++)
        {
            if (args[i] == "--out" && i + 1 < args.Length)
                outDir = args[++i];
            else if (args[i] == "--rank" && i + 1 < args.Length && int.TryParse(args[++i], NumberStyles.Integer, CultureInfo.InvariantCulture, out int r) && r > 0)
                rank = r;
            else
            {
                Console.Error.WriteLine($"Unknown or incomplete argument '{args[i]}'. usage: MLNet.Compression.ModelFactory --pca --out <dir> [--rank N]");
                return 2;
            }
        }
        if (string.IsNullOrWhiteSpace(outDir))
        {
            Console.Error.WriteLine("--out <dir> is required. usage: MLNet.Compression.ModelFactory --pca --out <dir> [--rank N]");
            return 2;
        }
        try
        {
            outDir = Path.GetFullPath(outDir);
            Directory.CreateDirectory(outDir);
            var ml = new MLContext(seed: 1);
            var (files, trainAll, test) = FactoryMnist.Load(ml);
            var chain = ml.Transforms.ProjectToPrincipalComponents("Features", rank: rank, ensureZeroMean: true, seed: 1)
                .Append(ml.Compression().NeuralNetwork(new NeuralNetworkOptions
                {
                    Architecture = NetworkArchitecture.Mlp([64], rank), Epochs = 10, Seed = 1, Device = TrainingDevice.Cpu,
                }))
                .Fit(ml.Data.TakeRows(trainAll, 3000));
            string modelPath = Path.Combine(outDir, "pca-model.zip");
            ml.Model.SaveAtomically(chain, trainAll.Schema, modelPath);

            var scored = chain.Transform(test);
            var rows = new List<(float[] Score, uint Label)>();
            using (var cursor = scored.GetRowCursor([scored.Schema["Score"], scored.Schema["PredictedLabel"]]))
            {
                var getScore = cursor.GetGetter<VBuffer<float>>(scored.Schema["Score"]);
                var getLabel = cursor.GetGetter<uint>(scored.Schema["PredictedLabel"]);
                VBuffer<float> s = default;
                uint l = 0;
                while (rows.Count < ExpectedRows && cursor.MoveNext())
                {
                    getScore(ref s);
                    getLabel(ref l);
                    rows.Add((s.DenseValues().ToArray(), l));
                }
            }
            double accuracy = ml.MulticlassClassification.Evaluate(chain.Transform(test)).MicroAccuracy;
            Console.WriteLine($"PCA-{rank} + MLP: test accuracy {accuracy.ToString("R", CultureInfo.InvariantCulture)}");

            string expectedPath = Path.Combine(outDir, "pca-expected.json");
            string temp = expectedPath + ".tmp";
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
            using (var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
            {
                json.WriteStartObject();
                json.WriteNumber("rank", rank);
                json.WriteString("mnistTestImages", files.TestImages);
                json.WriteString("mnistTestLabels", files.TestLabels);
                json.WriteNumber("accuracyBits", BitConverter.DoubleToInt64Bits(accuracy));
                json.WriteStartArray("rows");
                foreach (var (score, label) in rows)
                {
                    json.WriteStartObject();
                    json.WriteNumber("predictedLabel", label);
                    json.WriteStartArray("scoreBits");
                    foreach (float v in score)
                        json.WriteNumberValue(BitConverter.SingleToUInt32Bits(v));
                    json.WriteEndArray();
                    json.WriteEndObject();
                }
                json.WriteEndArray();
                json.WriteEndObject();
            }
            File.Move(temp, expectedPath, overwrite: true);
            Console.WriteLine($"wrote {modelPath} and {expectedPath}");
            return 0;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"PCA model factory failed: {e}");
            return 1;
        }
    }
}
