using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using MLNet.Compression.Tooling;
using Spectre.Console;
using TabularClassification;

// Tabular data as ML.NET users meet it: three public data sets (npm vega-datasets@3.2.1), each written as CSV with a fixed
// 80/20 split, read with LoadFromTextFile<ModelInput>, prepared with ML.NET transforms and trained with MLNet.Compression's
// neural network beside ML.NET's SDCA and LightGBM; each model is evaluated, saved, loaded back and used through a
// PredictionEngine, as Model Builder's generated code does. Prints one table and writes results.json.
var outOption = new Option<string>("--out")
{
    Description = "Folder for the model zips and results.json.",
    DefaultValueFactory = _ => "tabular-results",
};
var tasksOption = new Option<string[]>("--tasks")
{
    Description = "Tasks to run, any of binary, multiclass, regression (space or comma separated). Default: all three.",
    AllowMultipleArgumentsPerToken = true,
};
var seedOption = new Option<int>("--seed")
{
    Description = "Seed of the train/test split and of every trainer.",
    DefaultValueFactory = _ => 1,
};
var epochsOption = new Option<int?>("--epochs")
{
    Description = "Epochs of the neural networks (default per task: binary 60, multiclass 60, regression 100).",
};
var root = new RootCommand(
    "Binary, multiclass and regression on public tabular data (vega-datasets): MLNet.Compression's neural network beside ML.NET's SDCA and " +
    "LightGBM on the same split; accuracy / AUC / R², zip size and training time in a table and in results.json.")
{
    outOption, tasksOption, seedOption, epochsOption,
};
root.SetAction(parse =>
{
    string[] tasks;
    try
    {
        tasks = SampleSettings.ParseTasks(parse.GetValue(tasksOption));
        if (parse.GetValue(epochsOption) is int e && e < 1)
            throw new ArgumentException($"--epochs must be 1 or more; got {e}.");
    }
    catch (ArgumentException ex)
    {
        Console.Error.WriteLine(ex.Message);
        return 2;
    }
    var settings = new SampleSettings(Path.GetFullPath(parse.GetValue(outOption)!), parse.GetValue(seedOption), parse.GetValue(epochsOption), tasks);
    return Run(settings);
});
return root.Parse(args).Invoke();

static int Run(SampleSettings settings)
{
    var clock = Stopwatch.StartNew();
    // In a log file or CI there is no terminal width to fit: lay the table out wide, as the main job does.
    if (!AnsiConsole.Profile.Capabilities.Interactive || Console.IsOutputRedirected)
        AnsiConsole.Profile.Width = Math.Max(AnsiConsole.Profile.Width, 200);
    Directory.CreateDirectory(settings.OutputDirectory);
    var results = new List<TaskResult>();
    foreach (string task in settings.Tasks)
    {
        var vegaTask = task switch
        {
            "binary" => VegaTask.SeattleRain,
            "multiclass" => VegaTask.PenguinSpecies,
            _ => VegaTask.CarMilesPerGallon,
        };
        VegaTaskFiles files;
        try
        {
            files = VegaDatasets.WriteCsv(vegaTask, settings.Seed, log: line => AnsiConsole.MarkupLine("[grey]{0}[/]", Markup.Escape(line)));
        }
        catch (InvalidOperationException e)
        {
            Console.Error.WriteLine(e.Message);
            return 3;
        }
        AnsiConsole.MarkupLine("[bold]{0}[/]: {1} ({2:N0} training and {3:N0} test rows in {4})", task, Markup.Escape(VegaDatasets.SourceFile(vegaTask)),
            files.TrainRows, files.TestRows, Markup.Escape(Path.GetDirectoryName(files.TrainPath)!));
        var result = task switch
        {
            "binary" => SeattleRainTask.Run(files, settings),
            "multiclass" => PenguinSpeciesTask.Run(files, settings),
            _ => CarMpgTask.Run(files, settings),
        };
        results.Add(result);
        foreach (var row in result.Rows)
        {
            foreach (string p in row.Predictions)
                Console.WriteLine($"  {row.Trainer,-13} {p}");
        }
    }

    AnsiConsole.Write(ResultsTable(results));
    var document = new ResultsDocument(1, VegaDatasets.Package, settings.Seed, Environment.ProcessorCount,
        clock.Elapsed.TotalSeconds, results);
    string json = Path.Combine(settings.OutputDirectory, "results.json");
    document.Write(json);
    AnsiConsole.MarkupLine("Wrote {0}", Markup.Escape(json));
    return 0;
}

static Table ResultsTable(IReadOnlyList<TaskResult> results)
{
    var table = new Table { Border = TableBorder.Rounded, Title = new TableTitle("Test split: ours (NeuralNetwork) beside ML.NET's SDCA and LightGBM") };
    table.AddColumn("Task (data, train/test rows)");
    table.AddColumn("Trainer");
    foreach (string h in new[] { "Metric", "Zip KB", "Train s" })
        table.AddColumn(new TableColumn(h).RightAligned());
    foreach (var task in results)
    {
        string label = $"{task.Task} ({Path.GetFileNameWithoutExtension(task.Dataset)}, {task.TrainRows}/{task.TestRows})";
        string metric = task.MetricName switch
        {
            "MicroAccuracy" => "accuracy",
            "AreaUnderRocCurve" => "AUC",
            "RSquared" => "R²",
            _ => task.MetricName,
        };
        foreach (var row in task.Rows)
        {
            if (row.Status != "ok")
            {
                table.AddRow(Markup.Escape(label), row.Trainer, $"{metric} [yellow]pending[/]", "", "");
                continue;
            }
            table.AddRow(Markup.Escape(label), row.Trainer,
                metric + " " + row.Metric!.Value.ToString("0.000", CultureInfo.InvariantCulture),
                (row.ZipBytes!.Value / 1024.0).ToString("0.0", CultureInfo.InvariantCulture),
                row.TrainSeconds!.Value.ToString("0.00", CultureInfo.InvariantCulture));
        }
    }
    table.Caption = new TableTitle("accuracy = MicroAccuracy, AUC = AreaUnderRocCurve, R² = RSquared, on the test rows; Zip = the saved model; " +
                                   "Train = Fit of transforms and trainer, wall clock.");
    return table;
}

namespace TabularClassification
{
    /// <summary>The command line, parsed.</summary>
    /// <param name="OutputDirectory">Where the zips and results.json go.</param>
    /// <param name="Seed">The split's and the trainers' seed.</param>
    /// <param name="Epochs">Epochs of the networks, or null for each task's own.</param>
    /// <param name="Tasks">binary, multiclass, regression (a subset, in that order).</param>
    public sealed record SampleSettings(string OutputDirectory, int Seed, int? Epochs, IReadOnlyList<string> Tasks)
    {
        /// <summary>The three tasks, in the order they run.</summary>
        public static readonly string[] AllTasks = ["binary", "multiclass", "regression"];

        /// <summary>A task's network settings with <see cref="Epochs"/> applied.</summary>
        /// <param name="network">The task's own settings.</param>
        public NetworkSettings Adjust(NetworkSettings network) => Epochs is int e ? network with { Epochs = e } : network;

        /// <summary>Reads --tasks: names separated by spaces or commas; none means all.</summary>
        /// <param name="values">The option's values.</param>
        /// <exception cref="ArgumentException">An unknown name.</exception>
        public static string[] ParseTasks(string[]? values)
        {
            var names = (values ?? []).SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                .Select(v => v.ToLowerInvariant()).ToHashSet();
            if (names.Count == 0)
                return AllTasks;
            var unknown = names.Except(AllTasks).ToArray();
            if (unknown.Length > 0)
                throw new ArgumentException($"--tasks: unknown task '{string.Join("', '", unknown)}'; choose from {string.Join(", ", AllTasks)}.");
            return AllTasks.Where(names.Contains).ToArray();
        }
    }

    /// <summary>results.json.</summary>
    /// <param name="SchemaVersion">1.</param>
    /// <param name="Package">Where the data came from.</param>
    /// <param name="Seed">The split's and the trainers' seed.</param>
    /// <param name="ProcessorCount">Logical processors of the machine.</param>
    /// <param name="Seconds">Wall-clock seconds of the run.</param>
    /// <param name="Tasks">One per task.</param>
    public sealed record ResultsDocument(int SchemaVersion, string Package, int Seed, int ProcessorCount, double Seconds,
        IReadOnlyList<TaskResult> Tasks)
    {
        private static readonly JsonSerializerOptions JsonOptions = new()
        {
            WriteIndented = true,
            PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
            Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping, // "°C" and ">" as they are
        };

        /// <summary>Writes the document to a temporary file beside <paramref name="path"/>, then moves it into place.</summary>
        /// <param name="path">results.json.</param>
        public void Write(string path)
        {
            string temp = path + "." + Guid.NewGuid().ToString("N") + ".tmp";
            try
            {
                File.WriteAllBytes(temp, JsonSerializer.SerializeToUtf8Bytes(this, JsonOptions));
                File.Move(temp, path, overwrite: true);
            }
            finally
            {
                File.Delete(temp);
            }
        }
    }
}
