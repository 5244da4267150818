using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using MLNet.Compression;
using MLNet.Compression.Data;
using MLNet.Compression.Networks;

namespace MnistCompression;

/// <summary>What the command line chose.</summary>
/// <param name="OutputDirectory">Folder for the zips, checkpoints, results.json and the charts.</param>
/// <param name="DataDirectory">Folder with the MNIST files, or null for MNIST_DIR / the cache / a download.</param>
/// <param name="Device">Where TorchSharp trains.</param>
/// <param name="Epochs">Epochs of the LeNet-300-100 baseline (LeNet-5 gets half); null for the default (10, or 3 with --quick).</param>
/// <param name="Quick">The small configuration used by the CI smoke test.</param>
/// <param name="Seeds">Seeds of the Split-MNIST rows that repeat over seeds.</param>
/// <param name="Threads">TorchSharp intra-op threads of every training; null for the logical core count (the job trains one model at a time).</param>
/// <param name="AugmentedEpochs">Epochs of the <c>lenet5-augmented</c> row alone; null for twice LeNet-5's (1 with <see cref="Quick"/>).</param>
internal sealed record MainJobSettings(string OutputDirectory, string? DataDirectory, TrainingDevice Device, int? Epochs, bool Quick, int Seeds = 1, int? Threads = null,
    int? AugmentedEpochs = null)
{
    /// <summary>Training rows with <see cref="Quick"/> (the first rows of the training split).</summary>
    public const int QuickTrainRows = 10_000;

    /// <summary>Test rows with <see cref="Quick"/> (the first rows of the test split).</summary>
    public const int QuickTestRows = 2_000;

    /// <summary>Baseline epochs: <see cref="Epochs"/> when given, else 10 (3 with <see cref="Quick"/>).</summary>
    public int BaselineEpochs => Epochs ?? (Quick ? 3 : 10);
}

/// <summary>A float32 model trained once per run and shared by the stages that compress it.</summary>
/// <param name="Name">Its row name ("baseline", "lenet5-baseline").</param>
/// <param name="Model">The fitted model; owned by the context.</param>
/// <param name="TrainSeconds">Wall-clock training time.</param>
internal sealed record TrainedModel(string Name, NeuralNetworkTransformer Model, double TrainSeconds);

/// <summary>
/// Everything a stage needs: the MLContext, the train and test views, the training options of the baselines, the output
/// folder, the quick flag, the console, and the float32 baselines, each trained on first use and then cached so any subset
/// of stages runs on its own (<c>--stages quantize</c> trains the baselines it compresses without reporting them).
/// </summary>
internal sealed class MainJobContext : IDisposable
{
    private TrainedModel? baseline;
    private TrainedModel? lenet5Baseline;

    public MainJobContext(MainJobSettings settings, ConsoleUi ui)
    {
        Settings = settings;
        Ui = ui;
        Directory.CreateDirectory(settings.OutputDirectory);
        Ml = new MLContext(seed: 1);
        var mnist = new MnistOptions { DataDirectory = settings.DataDirectory };
        (Train, Test) = ui.AcquireData(mnist, () =>
        {
            IDataView train = Ml.Data.LoadMnist(MnistSplit.Train, mnist);
            IDataView test = Ml.Data.LoadMnist(MnistSplit.Test, mnist);
            if (settings.Quick)
            {
                train = Ml.Data.TakeRows(train, MainJobSettings.QuickTrainRows);
                test = Ml.Data.TakeRows(test, MainJobSettings.QuickTestRows);
            }
            return (train, test);
        });
        TrainRows = settings.Quick ? MainJobSettings.QuickTrainRows : Train.GetRowCount() ?? 60_000;
        TestRows = settings.Quick ? MainJobSettings.QuickTestRows : Test.GetRowCount() ?? 10_000;

        // Seeds drawn up front, in a fixed order, the way the trainer would draw them: the baselines are the same whichever
        // stages run and in whatever order they ask for them.
        int baselineSeed = DrawSeed(Ml);
        int lenet5Seed = DrawSeed(Ml);
        BaselineOptions = new NeuralNetworkOptions
        {
            Architecture = NetworkArchitecture.Mlp(300, 100),
            Epochs = settings.BaselineEpochs,
            BatchSize = 128,
            LearningRate = 1e-3,
            LearningRateSchedule = LearningRateSchedule.Cosine,
            Device = settings.Device,
            Threads = Threads,
            Seed = baselineSeed,
        };
        LeNet5Options = BaselineOptions.Clone();
        LeNet5Options.Architecture = NetworkArchitecture.LeNet5();
        LeNet5Options.Epochs = Math.Max(1, settings.BaselineEpochs / 2);
        LeNet5Options.Seed = lenet5Seed;
    }

    public MainJobSettings Settings { get; }

    public ConsoleUi Ui { get; }

    public MLContext Ml { get; }

    /// <summary>The training rows (all 60,000, or the first 10,000 with --quick), streamed from the IDX files.</summary>
    public IDataView Train { get; }

    /// <summary>The test rows (all 10,000, or the first 2,000 with --quick).</summary>
    public IDataView Test { get; }

    public long TrainRows { get; }

    public long TestRows { get; }

    public string OutputDirectory => Settings.OutputDirectory;

    public bool Quick => Settings.Quick;

    /// <summary>
    /// TorchSharp intra-op threads of every training in the job: <c>--threads</c>, else the logical core count. The library's
    /// default is 1 (right for several trainings at once); the main job trains one model at a time, so it uses every core.
    /// </summary>
    public int Threads => Settings.Threads ?? Environment.ProcessorCount;

    /// <summary>Options of the LeNet-300-100 baseline; stages derive their fine-tuning settings from them.</summary>
    public NeuralNetworkOptions BaselineOptions { get; }

    /// <summary>Options of the LeNet-5 baseline.</summary>
    public NeuralNetworkOptions LeNet5Options { get; }

    /// <summary>False once a reloaded zip predicted a label differently from the in-process model (exit code 1).</summary>
    public bool AllReloadsIdentical { get; set; } = true;

    /// <summary>LeNet-300-100 in float32, trained on first use.</summary>
    public TrainedModel Baseline => baseline ??= TrainBaseline("baseline", BaselineOptions);

    /// <summary>LeNet-5 in float32, trained on first use.</summary>
    public TrainedModel LeNet5Baseline => lenet5Baseline ??= TrainBaseline("lenet5-baseline", LeNet5Options);

    /// <summary>Fine-tuning epochs for a stage: <paramref name="full"/>, or 1 with --quick.</summary>
    public int FineTuneEpochs(int full) => Quick ? 1 : full;

    /// <summary>The path of an output file.</summary>
    public string OutputPath(string fileName) => Path.Combine(OutputDirectory, fileName);

    private TrainedModel TrainBaseline(string name, NeuralNetworkOptions options)
    {
        var sw = Stopwatch.StartNew();
        var model = Ui.Train($"{name}: training {options.Architecture.Name}", options.Epochs, TrainRows, progress =>
        {
            var o = options.Clone();
            o.Progress = progress;
            return Ml.Compression().NeuralNetwork(o).Fit(Train);
        });
        return new TrainedModel(name, model, sw.Elapsed.TotalSeconds);
    }

    /// <summary>Draws a seed from the context exactly as <c>NeuralNetworkTrainer</c> does when no seed is set.</summary>
    private static int DrawSeed(MLContext ml) => ((IHostEnvironment)ml).Register("NeuralNetworkTrainer").Rand.Next();

    public void Dispose()
    {
        baseline?.Model.Dispose();
        lenet5Baseline?.Model.Dispose();
    }
}
