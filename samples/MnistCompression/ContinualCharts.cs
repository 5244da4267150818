using ScottPlot;

namespace MnistCompression;

/// <summary>The chart of the continual-learning rows (Split-MNIST), drawn with ScottPlot like <see cref="Charts"/>.</summary>
internal static class ContinualCharts
{
    /// <summary>Whether <paramref name="row"/> is a continual-learning row this chart draws (and the accuracy-vs-size chart leaves out).</summary>
    public static bool IsContinual(StageResult row) => row.Name.StartsWith("split-mnist-", StringComparison.Ordinal);

    /// <summary>
    /// Accuracy on all classes seen so far after each task, one solid line per strategy (seed-1 rows), with the memory carried
    /// besides the model (replay and EWC bytes) as a dashed line of the same colour on the right axis. Returns false when no row has the figures.
    /// </summary>
    public static bool SplitMnist(IReadOnlyList<StageResult> rows, string path)
    {
        var continual = rows.Where(r => IsContinual(r) && r.Details is { } d && d.TryGetValue("seenClassAccuracyAfterStep", out var v) && v is IReadOnlyList<double>
                                        && !(d.TryGetValue("seed", out var s) && s is int seed && seed != 1)).ToList();
        if (continual.Count == 0)
            return false;
        const int Width = 1400, Height = 900;
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int colour = 0;
        double maxKb = 1;
        foreach (var row in continual)
        {
            var color = palette.GetColor(colour++ % 10);
            var accuracy = (IReadOnlyList<double>)row.Details!["seenClassAccuracyAfterStep"]!;
            double[] xs = Enumerable.Range(1, accuracy.Count).Select(t => (double)t).ToArray();
            var line = plot.Add.Scatter(xs, accuracy.Select(a => 100 * a).ToArray(), color);
            line.LineWidth = 2;
            line.MarkerSize = 7;
            string memory = row.Details.TryGetValue("memory", out var m) && m is string text ? $" ({text})" : string.Empty;
            line.LegendText = $"{row.Name}{memory}: {100 * row.Accuracy:F2} %";
            if (row.Details.TryGetValue("memoryBytesAfterStep", out var b) && b is IReadOnlyList<long> bytes && bytes.Any(x => x > 0))
            {
                var kb = bytes.Select(x => x / 1000.0).ToArray();
                maxKb = Math.Max(maxKb, kb.Max());
                var mem = plot.Add.Scatter(xs, kb, color);
                mem.LinePattern = LinePattern.Dashed;
                mem.LineWidth = 1;
                mem.MarkerSize = 3;
                mem.Axes.YAxis = plot.Axes.Right;
            }
        }
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        plot.Axes.Bottom.Label.Text = "after task (1: digits 0-1, ..., 5: digits 8-9)";
        plot.Axes.Left.Label.Text = "test accuracy on all classes seen so far (%), solid";
        plot.Axes.Right.Label.Text = "memory carried besides the model (kB), dashed";
        plot.Axes.SetLimitsY(0, 101, plot.Axes.Left);
        plot.Axes.SetLimitsY(0, maxKb * 1.15, plot.Axes.Right);
        plot.Axes.SetLimitsX(0.8, 5.2);
        plot.Title("Class-incremental Split-MNIST (784-400-400): accuracy after each task, one line per strategy");
        plot.Grid.MajorLineColor = Colors.Black.WithOpacity(0.12);
        plot.ShowLegend(Alignment.LowerLeft);
        AtomicFile.WriteAllBytes(path, plot.GetImageBytes(Width, Height, ImageFormat.Png));
        return true;
    }
}
