using System.Diagnostics;
using System.Reflection;
using Microsoft.ML;
using MLNet.Compression.Tests.Onnx;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Reliability;

/// <summary>
/// A child process (MLNet.Compression.ModelFactory --save-loop) saves a model zip or a checkpoint over and over and is
/// killed with SIGKILL at a random moment, 20 times per kind. Every time the file must be the previous or the new one,
/// intact and loadable, and the next save must leave no temporary file behind.
/// </summary>
public sealed class FaultInjectionTests(ITestOutputHelper output) : IDisposable
{
    private const int Kills = 20;

    private const int Lanes = 4;

    private readonly TestMnist.TempDirectory _dir = TestMnist.NewTempDirectory();

    public void Dispose() => _dir.Dispose();

    public static TheoryData<string> Kinds => new() { "zip", "checkpoint" };

    [Theory]
    [MemberData(nameof(Kinds))]
    public void KilledWhileSaving_LeavesTheOldOrTheNewFile_AndTheNextSaveLeavesNoTemporary(string kind)
    {
        var ml = new MLContext(seed: 1);
        var data = OnnxTestModels.Data(ml, 20, seed: 7);
        using var model = AtomicSaveTests.NeuralNetworkTransformerFactory();
        var expected = OnnxTestModels.ReadOutputs(model.Transform(data)).Labels;
        var gate = new object();

        // Lanes run side by side (a process start dominates each kill); each lane owns one folder and file.
        int killedMidWrite = 0;
        Parallel.For(0, Lanes, new ParallelOptions { MaxDegreeOfParallelism = Lanes }, lane =>
        {
            string folder = _dir[$"lane{lane}"];
            Directory.CreateDirectory(folder);
            string file = Path.Combine(folder, kind == "zip" ? "model.zip" : "model.ckpt");
            void SaveHere()
            {
                lock (gate)
                {
                    if (kind == "zip")
                        ml.Model.SaveAtomically(model, data.Schema, file);
                    else
                        model.SaveCheckpoint(file);
                }
            }
            SaveHere();
            var random = new Random((kind == "zip" ? 150 : 160) + lane);
            for (int kill = 0; kill < Kills / Lanes; kill++)
            {
                int delayMs = random.Next(0, 120);
                RunAndKill(kind, file, delayMs);
                if (Temporaries(file).Length > 0)
                    Interlocked.Increment(ref killedMidWrite);

                // The file is intact and is the model (every save writes the same model).
                uint[] labels;
                if (kind == "zip")
                {
                    labels = OnnxTestModels.ReadOutputs(new MLContext(seed: 2).Model.Load(file, out _).Transform(data)).Labels;
                }
                else
                {
                    using var loaded = NeuralNetworkTransformer.LoadCheckpoint(new MLContext(seed: 2), file);
                    labels = OnnxTestModels.ReadOutputs(loaded.Transform(data)).Labels;
                }
                Assert.Equal(expected, labels);

                SaveHere();
                Assert.True(Temporaries(file).Length == 0,
                    $"lane {lane}, kill {kill + 1} (after {delayMs} ms): temporaries left after the next save: {string.Join(", ", Temporaries(file))}");
                Assert.Equal([Path.GetFileName(file)], Directory.GetFiles(folder).Select(Path.GetFileName));
            }
        });
        output.WriteLine($"{kind}: {Kills} kills, {killedMidWrite} left a temporary (killed while writing); every file loaded and predicted as before.");
        // The kills must really land while saving, or the test proves nothing.
        Assert.True(killedMidWrite >= Kills / 2, $"only {killedMidWrite} of {Kills} kills interrupted a write");
    }

    private static string[] Temporaries(string file)
        => Directory.GetFiles(Path.GetDirectoryName(file)!, "." + Path.GetFileName(file) + ".*.tmp");

    private static void RunAndKill(string kind, string file, int delayMs)
    {
        var start = new ProcessStartInfo(DotnetHost())
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.ArgumentList.Add(FactoryPath());
        start.ArgumentList.Add("--save-loop");
        start.ArgumentList.Add(kind);
        start.ArgumentList.Add(file);
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            var ready = process.StandardOutput.ReadLineAsync();
            if (!ready.Wait(TimeSpan.FromSeconds(60)) || ready.Result != "ready")
                throw new InvalidOperationException($"the save loop did not start: stdout '{(ready.IsCompleted ? ready.Result : "(nothing)")}', stderr: {(stderr.Wait(5000) ? stderr.Result : "")}");
            Thread.Sleep(delayMs);
            Assert.False(process.HasExited, $"the save loop ended by itself: {(stderr.Wait(5000) ? stderr.Result : "")}");
        }
        finally
        {
            process.Kill(entireProcessTree: true); // SIGKILL on Linux
            process.WaitForExit();
        }
    }

    private static string FactoryPath()
    {
        string? path = typeof(FaultInjectionTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "ModelFactoryPath")?.Value;
        if (string.IsNullOrEmpty(path) || !File.Exists(path))
            throw new FileNotFoundException($"The model factory '{path}' does not exist; build MLNet.Compression.ModelFactory (building this test project should).", path);
        return path;
    }

    private static string DotnetHost()
    {
        string host = OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet";
        string? processPath = Environment.ProcessPath;
        if (processPath is not null && string.Equals(Path.GetFileName(processPath), host, StringComparison.OrdinalIgnoreCase))
            return processPath;
        string? hostPath = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (!string.IsNullOrEmpty(hostPath) && File.Exists(hostPath))
            return hostPath;
        string? root = Environment.GetEnvironmentVariable("DOTNET_ROOT");
        if (!string.IsNullOrEmpty(root) && File.Exists(Path.Combine(root, host)))
            return Path.Combine(root, host);
        return host;
    }
}
