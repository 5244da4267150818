using System.Diagnostics;
using Microsoft.ML;
using MLNet.Compression;
using MLNet.Compression.Data;
using MLNet.Compression.Networks;

var ml = new MLContext(seed: 1);
var train = ml.Data.LoadMnist(MnistSplit.Train, new MnistOptions { Log = Console.WriteLine });
var test = ml.Data.LoadMnist(MnistSplit.Test);
var sw = Stopwatch.StartNew();
var model = ml.Compression().NeuralNetwork(new NeuralNetworkOptions
{
    Architecture = NetworkArchitecture.Mlp(300, 100), Epochs = int.Parse(args.Length > 0 ? args[0] : "2"), BatchSize = 128,
    Device = TrainingDevice.Cpu,
}).Fit(train);
Console.WriteLine($"train {sw.Elapsed.TotalSeconds:F1}s");
foreach (var e in model.TrainingHistory) Console.WriteLine(e);
sw.Restart();
var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
Console.WriteLine($"accuracy {metrics.MicroAccuracy:F4} eval {sw.Elapsed.TotalSeconds:F2}s");
Console.WriteLine(model.Memory);
ml.Model.Save(model, train.Schema, "/tmp/smoke.zip");
var loaded = ml.Model.Load("/tmp/smoke.zip", out _);
sw.Restart();
var m2 = ml.MulticlassClassification.Evaluate(loaded.Transform(test));
Console.WriteLine($"loaded accuracy {m2.MicroAccuracy:F4} eval {sw.Elapsed.TotalSeconds:F2}s");
