using System.Diagnostics;
using System.IO.Compression;
using Microsoft.ML;
using MLNet.Compression.Networks;
using MLNet.Compression.Onnx;
using MLNet.Compression.Tests.Onnx;
using Xunit;

namespace MLNet.Compression.Tests.Reliability;

/// <summary>ml.Model.SaveAtomically: the same zip as ml.Model.Save, written crash-safely; stale temporaries swept; swapped ONNX caught.</summary>
public sealed class AtomicSaveTests : IDisposable
{
    private readonly TestMnist.TempDirectory _dir = TestMnist.NewTempDirectory();

    public void Dispose() => _dir.Dispose();

    private static (MLContext Ml, IDataView Data, ITransformer Chain) Chain(int classes = 10)
    {
        var ml = new MLContext(seed: 1);
        var data = OnnxTestModels.Data(ml, 50, seed: 3);
        var onnx = OnnxExporter.Export(OnnxTestModels.Mlp());
        return (ml, data, OnnxScoringChain.Build(ml, onnx, data.Schema, "Features", OnnxTestModels.Digits));
    }

    private static Dictionary<string, byte[]> Entries(string zipPath)
    {
        using var zip = ZipFile.OpenRead(zipPath);
        return zip.Entries.ToDictionary(e => e.FullName, e =>
        {
            using var s = e.Open();
            using var m = new MemoryStream();
            s.CopyTo(m);
            return m.ToArray();
        });
    }

    [Fact]
    public void SaveAtomically_WritesTheZipThatSaveWrites_AndItLoadsAndScoresTheSame()
    {
        var (ml, data, chain) = Chain();
        string viaSave = _dir["save.zip"], atomic = _dir["sub/atomic.zip"];
        ml.Model.Save(chain, data.Schema, viaSave);
        ml.Model.SaveAtomically(chain, data.Schema, atomic);

        var expected = Entries(viaSave);
        var actual = Entries(atomic);
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, bytes) in expected)
            Assert.True(bytes.AsSpan().SequenceEqual(actual[name]), $"zip entry '{name}' differs from ml.Model.Save's");

        var loaded = new MLContext(seed: 2).Model.Load(atomic, out var schema);
        Assert.NotNull(schema.GetColumnOrNull("Features"));
        var (s1, l1) = OnnxTestModels.ReadOutputs(chain.Transform(data));
        var (s2, l2) = OnnxTestModels.ReadOutputs(loaded.Transform(data));
        Assert.Equal(l1, l2);
        for (int r = 0; r < s1.Length; r++)
            Assert.Equal(s1[r], s2[r]);
        Assert.Equal(["atomic.zip"], Directory.GetFiles(_dir["sub"]).Select(Path.GetFileName));
    }

    [Fact]
    public void SaveAtomically_ChecksItsArguments_NamingTheBadOne()
    {
        var (ml, data, chain) = Chain();
        Assert.Equal("catalog", Assert.Throws<ArgumentNullException>(() => ModelSavingExtensions.SaveAtomically(null!, chain, data.Schema, _dir["m.zip"])).ParamName);
        Assert.Equal("model", Assert.Throws<ArgumentNullException>(() => ml.Model.SaveAtomically(null!, data.Schema, _dir["m.zip"])).ParamName);
        Assert.Equal("filePath", Assert.Throws<ArgumentNullException>(() => ml.Model.SaveAtomically(chain, data.Schema, null!)).ParamName);
        Assert.Equal("filePath", Assert.Throws<ArgumentException>(() => ml.Model.SaveAtomically(chain, data.Schema, "  ")).ParamName);
        var folder = Assert.Throws<ArgumentException>(() => ml.Model.SaveAtomically(chain, data.Schema, _dir.Path));
        Assert.Equal("filePath", folder.ParamName);
        Assert.Contains("is a folder", folder.Message);
        Assert.False(File.Exists(_dir["m.zip"]));
    }

    [Fact]
    public void AFailedWrite_LeavesThePreviousFile_AndNoTemporary()
    {
        string path = _dir["model.zip"];
        File.WriteAllBytes(path, [1, 2, 3]);
        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(path, s =>
        {
            s.Write(new byte[100_000]);
            throw new InvalidOperationException("simulated failure halfway through");
        }));
        Assert.Equal([1, 2, 3], File.ReadAllBytes(path));
        Assert.Equal(["model.zip"], Directory.GetFiles(_dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void TheNextSave_RemovesTemporariesOfDeadProcesses_AndKeepsThoseOfLiveOnes()
    {
        var (ml, data, chain) = Chain();
        string path = _dir["model.zip"];
        int dead = DeadProcessId();
        int live;
        using (var self = Process.GetCurrentProcess())
            live = self.Id;
        string deadTemp = _dir[$".model.zip.{dead}.{Guid.NewGuid():N}.tmp"];
        string liveTemp = _dir[$".model.zip.{live}.{Guid.NewGuid():N}.tmp"];
        string otherTarget = _dir[$".other.zip.{dead}.{Guid.NewGuid():N}.tmp"];
        string notOurs = _dir[".model.zip.notes.tmp"];
        foreach (string f in new[] { deadTemp, liveTemp, otherTarget, notOurs })
            File.WriteAllBytes(f, new byte[1000]);

        ml.Model.SaveAtomically(chain, data.Schema, path);

        Assert.False(File.Exists(deadTemp), "the temporary of a dead process next to the target is removed");
        Assert.True(File.Exists(liveTemp), "a running process's temporary is kept (it may still be writing)");
        Assert.True(File.Exists(otherTarget), "temporaries of other targets are left to their own next save");
        Assert.True(File.Exists(notOurs), "files not named like the library's temporaries are never touched");
        Assert.NotNull(ml.Model.Load(path, out _));
    }

    [Fact]
    public void ACheckpointSave_SweepsItsStaleTemporariesToo()
    {
        string path = _dir["model.ckpt"];
        string deadTemp = _dir[$".model.ckpt.{DeadProcessId()}.{Guid.NewGuid():N}.tmp"];
        File.WriteAllBytes(deadTemp, new byte[1000]);
        using var model = NeuralNetworkTransformerFactory();
        model.SaveCheckpoint(path);
        Assert.False(File.Exists(deadTemp));
        Assert.Equal(["model.ckpt"], Directory.GetFiles(_dir.Path).Select(Path.GetFileName));
        using var loaded = NeuralNetworkTransformer.LoadCheckpoint(new MLContext(1), path);
        Assert.Equal(model.ClassNames, loaded.ClassNames);
    }

    [Fact]
    public void ASavedZipWhoseOnnxWasSwappedForAFiveClassModel_FailsAtFirstUseWithAClearError()
    {
        var (ml, data, chain) = Chain();
        string path = _dir["model.zip"];
        ml.Model.SaveAtomically(chain, data.Schema, path);
        byte[] ten = OnnxExporter.Export(OnnxTestModels.Mlp());
        byte[] five = OnnxExporter.Export(OnnxTestModels.Fill(NetworkModel.Create(NetworkArchitecture.Mlp(inputLength: 784, hiddenUnits: [32, 16]), 5), 1));
        int swapped = 0;
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Update))
        {
            foreach (var entry in zip.Entries.ToArray())
            {
                byte[] bytes;
                using (var s = entry.Open())
                using (var m = new MemoryStream())
                {
                    s.CopyTo(m);
                    bytes = m.ToArray();
                }
                if (bytes.AsSpan().IndexOf(ten) < 0)
                    continue;
                string name = entry.FullName;
                int at = bytes.AsSpan().IndexOf(ten);
                byte[] replaced = [.. bytes.AsSpan(0, at - 4), .. BitConverter.GetBytes((int)five.Length), .. five, .. bytes.AsSpan(at + ten.Length)];
                Assert.Equal(ten.Length, BitConverter.ToInt32(bytes, at - 4)); // OnnxTransformer stores the model as a length-prefixed byte array
                entry.Delete();
                using var w = zip.CreateEntry(name).Open();
                w.Write(replaced);
                swapped++;
            }
        }
        Assert.Equal(1, swapped);

        var e = Record.Exception(() =>
        {
            var loaded = new MLContext(seed: 2).Model.Load(path, out _);
            OnnxTestModels.ReadOutputs(loaded.Transform(data));
        });
        Assert.NotNull(e);
        Assert.Contains("Score", e.Message);
        Assert.Contains("Vector<Single, 10>", e.Message);
        Assert.Contains("Vector<Single, 5>", e.Message);
    }

    internal static NeuralNetworkTransformer NeuralNetworkTransformerFactory()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.TakeRows(OnnxTestModels.Data(ml, 64, seed: 5), 64);
        return ml.Compression().NeuralNetwork(new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp(8),
            Epochs = 1,
            Device = TrainingDevice.Cpu,
        }).Fit(data);
    }

    /// <summary>The id of a process that has exited (started and waited for here).</summary>
    internal static int DeadProcessId()
    {
        using var p = Process.Start(new ProcessStartInfo("true") { UseShellExecute = false })!;
        p.WaitForExit();
        return p.Id;
    }
}
