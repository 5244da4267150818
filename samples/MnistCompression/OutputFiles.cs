using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Serialization;
using ScottPlot;

namespace MnistCompression;

/// <summary>Writes a file through a temporary name in the same folder, then moves it into place.</summary>
internal static class AtomicFile
{
    public static void WriteAllBytes(string path, byte[] bytes)
    {
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Environment.ProcessId}.tmp");
        try
        {
            File.WriteAllBytes(temp, bytes);
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }
}

/// <summary>The machine a run happened on, as written to results.json.</summary>
internal sealed record MachineInfo(string Os, string Architecture, int ProcessorCount, string Runtime, string Device)
{
    public static MachineInfo Current(string device) => new(RuntimeInformation.OSDescription, RuntimeInformation.ProcessArchitecture.ToString(),
        Environment.ProcessorCount, RuntimeInformation.FrameworkDescription, device);
}

/// <summary>The whole of results.json.</summary>
/// <param name="SchemaVersion">2: this object (version 1 was a bare array of rows).</param>
/// <param name="Machine">Where it ran.</param>
/// <param name="StartedAt">When the run started (UTC, ISO 8601).</param>
/// <param name="Seconds">Wall-clock seconds of the whole run.</param>
/// <param name="Quick">Whether --quick was given.</param>
/// <param name="TrainRows">Training rows used.</param>
/// <param name="TestRows">Test rows evaluated.</param>
/// <param name="SelectedStages">The stages that ran, in order.</param>
/// <param name="FailedStages">Stages that threw, with the message.</param>
/// <param name="PeakProcessBytes">Peak resident memory of the whole process.</param>
/// <param name="Stages">One object per result row.</param>
internal sealed record ResultsDocument(int SchemaVersion, MachineInfo Machine, DateTimeOffset StartedAt, double Seconds, bool Quick,
    long TrainRows, long TestRows, IReadOnlyList<string> SelectedStages, IReadOnlyDictionary<string, string> FailedStages,
    long PeakProcessBytes, IReadOnlyList<StageResult> Stages)
{
    public static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public void Write(string path) => AtomicFile.WriteAllBytes(path, JsonSerializer.SerializeToUtf8Bytes(this, JsonOptions));
}

/// <summary>The PNG charts, drawn with ScottPlot (SkiaSharp, no display needed).</summary>
internal static class Charts
{
    /// <summary>Test accuracy against ONNX artifact bytes (log scale), one labelled point per row, one colour per architecture family.</summary>
    public static void AccuracyVsSize(IReadOnlyList<StageResult> rows, string path)
    {
        const int Width = 1400, Height = 900;
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        double xMin = rows.Min(r => Math.Log10(r.ArtifactBytes)) - 0.15, xMax = rows.Max(r => Math.Log10(r.ArtifactBytes)) + 0.45;
        double yLow = rows.Min(r => 100 * r.Accuracy), yHigh = rows.Max(r => 100 * r.Accuracy);
        double yPad = Math.Max(0.05, (yHigh - yLow) * 0.12);
        double yMin = yLow - yPad, yMax = yHigh + yPad;
        // Approximate pixel positions (the data area is most of the image) so labels of nearby points can be kept apart.
        double PixelX(double x) => (x - xMin) / (xMax - xMin) * (Width - 120);
        double PixelY(double y) => (yMax - y) / (yMax - yMin) * (Height - 130);
        var boxes = new List<(double Left, double Top, double Right, double Bottom)>();
        int colour = 0;
        foreach (var family in rows.GroupBy(r => r.CompressionReference))
        {
            var color = palette.GetColor(colour++);
            var points = family.ToList();
            double[] xs = points.Select(r => Math.Log10(r.ArtifactBytes)).ToArray();
            double[] ys = points.Select(r => 100 * r.Accuracy).ToArray();
            var scatter = plot.Add.ScatterPoints(xs, ys, color);
            scatter.MarkerSize = 9;
            scatter.LegendText = $"{points[0].Architecture} family (vs {family.Key})";
            for (int i = 0; i < points.Count; i++)
            {
                // First free slot above, below, then further out: rows at (nearly) one point, e.g. int8 static and int8 QAT
                // with the same ONNX size, get stacked labels.
                double left = PixelX(xs[i]) + 6, right = left + 6.6 * points[i].Name.Length, anchor = PixelY(ys[i]);
                int offset = -14;
                foreach (int candidate in new[] { -14, 2, -28, 16, -42, 30, -56, 44 })
                {
                    offset = candidate;
                    double top = anchor + candidate, bottom = top + 12;
                    if (!boxes.Any(b => b.Left < right && left < b.Right && b.Top < bottom && top < b.Bottom))
                        break;
                }
                boxes.Add((left, anchor + offset, right, anchor + offset + 12));
                var label = plot.Add.Text(points[i].Name, xs[i], ys[i]);
                label.LabelFontSize = 11;
                label.LabelFontColor = color;
                label.LabelOffsetX = 6;
                label.LabelOffsetY = offset;
            }
        }
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
            IntegerTicksOnly = true,
            LabelFormatter = x => FormatBytes(Math.Pow(10, x)),
        };
        plot.Axes.Bottom.Label.Text = "ONNX artifact size (log scale; 1 kB = 1000 bytes)";
        plot.Axes.Left.Label.Text = "test accuracy (%)";
        plot.Title("MNIST: accuracy vs artifact size, every row of this run");
        plot.Grid.MajorLineColor = Colors.Black.WithOpacity(0.12);
        // Lower left: compressed rows sit at high accuracy and small sizes, forgetting rows at low accuracy and large sizes.
        plot.ShowLegend(Alignment.LowerLeft);
        plot.Axes.SetLimits(xMin, xMax, yMin, yMax);
        AtomicFile.WriteAllBytes(path, plot.GetImageBytes(Width, Height, ImageFormat.Png));
    }

    /// <summary>Training loss and training accuracy per epoch, one line per training or fine-tuning run.</summary>
    public static void TrainingCurves(IReadOnlyList<StageResult> rows, string path)
    {
        var trained = rows.Where(r => r.History.Count > 0).ToList();
        var multiplot = new Multiplot();
        multiplot.AddPlots(2);
        var loss = multiplot.GetPlot(0);
        var accuracy = multiplot.GetPlot(1);
        var palette = new ScottPlot.Palettes.Category10();
        for (int i = 0; i < trained.Count; i++)
        {
            var r = trained[i];
            double[] epochs = r.History.Select(e => (double)e.Epoch).ToArray();
            var color = palette.GetColor(i);
            var l = loss.Add.Scatter(epochs, r.History.Select(e => e.Loss).ToArray(), color);
            l.LegendText = r.Name;
            l.MarkerSize = 6;
            var a = accuracy.Add.Scatter(epochs, r.History.Select(e => 100 * e.Accuracy).ToArray(), color);
            a.LegendText = r.Name;
            a.MarkerSize = 6;
        }
        loss.Title("Training loss per epoch");
        loss.Axes.Bottom.Label.Text = "epoch";
        loss.Axes.Left.Label.Text = "mean cross-entropy (training rows)";
        accuracy.Title("Training accuracy per epoch");
        accuracy.Axes.Bottom.Label.Text = "epoch";
        accuracy.Axes.Left.Label.Text = "training accuracy (%)";
        foreach (var p in new[] { loss, accuracy })
        {
            p.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
            if (trained.Count > 0)
                p.ShowLegend(p == loss ? Alignment.UpperRight : Alignment.LowerRight);
        }
        if (trained.Count == 0)
            loss.Add.Annotation("no training run in this selection of stages");
        AtomicFile.WriteAllBytes(path, multiplot.Render(1000, 1100).GetImageBytes(ImageFormat.Png, 100));
    }

    /// <summary>Decimal units, so the powers of ten on the log axis read as 10 kB, 100 kB, 1 MB.</summary>
    private static string FormatBytes(double bytes) =>
        bytes >= 1e6 ? (bytes / 1e6).ToString("0.#", CultureInfo.InvariantCulture) + " MB"
        : bytes >= 1e3 ? (bytes / 1e3).ToString("0.#", CultureInfo.InvariantCulture) + " kB"
        : bytes.ToString("0", CultureInfo.InvariantCulture) + " B";
}
