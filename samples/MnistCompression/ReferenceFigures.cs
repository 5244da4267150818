using System.Globalization;
using Spectre.Console;

namespace MnistCompression;

/// <summary>What a published figure measures, and so how our row is described beside it.</summary>
internal enum ReferenceMeasure
{
    /// <summary>Error and parameter count (non-zero weights) before and after.</summary>
    Parameters,

    /// <summary>Error and stored model size before and after.</summary>
    StoredBytes,

    /// <summary>Test errors out of the 10,000 MNIST test images.</summary>
    TestErrors,
}

/// <summary>One published result, and the names of our rows that correspond to it (the first present is shown).</summary>
/// <param name="Source">Authors, year and title.</param>
/// <param name="Network">The network the figure is for.</param>
/// <param name="Published">The figure as published.</param>
/// <param name="Measure">How our row is described.</param>
/// <param name="OurRows">Our row names, in order of preference.</param>
internal sealed record ReferenceFigure(string Source, string Network, string Published, ReferenceMeasure Measure, string[] OurRows);

/// <summary>
/// Published MNIST compression results, shown beside ours. A figure whose rows are absent from a run is left out; a new
/// stage that reproduces one of these papers only has to use the row name listed here.
/// </summary>
internal static class ReferenceFigures
{
    private const string Han2015 = "Han, Pool, Tran, Dally 2015, \"Learning both Weights and Connections for Efficient Neural Networks\" (NIPS), Table 1";
    private const string DeepCompression = "Han, Mao, Dally 2016, \"Deep Compression\" (ICLR), Table 1";
    private const string Hinton2015 = "Hinton, Vinyals, Dean 2015, \"Distilling the Knowledge in a Neural Network\", section 3";

    public static IReadOnlyList<ReferenceFigure> All { get; } =
    [
        new(Han2015, "LeNet-300-100", "error 1.64% -> 1.59%; 267K -> 22K parameters (12x)", ReferenceMeasure.Parameters, ["pruned"]),
        new(Han2015, "LeNet-5", "error 0.80% -> 0.77%; 431K -> 36K parameters (12x)", ReferenceMeasure.Parameters, ["lenet5-pruned"]),
        // Until a deep-compression row exists, pruning + int8 is the nearest we have (no weight sharing, no Huffman coding).
        new(DeepCompression, "LeNet-300-100", "error 1.64% -> 1.58%; 1070 KB -> 27 KB (40x)", ReferenceMeasure.StoredBytes,
            ["deep-compression", "pruned-quantized-int8-static"]),
        new(DeepCompression, "LeNet-5", "error 0.80% -> 0.74%; 1720 KB -> 44 KB (39x)", ReferenceMeasure.StoredBytes, ["lenet5-deep-compression"]),
        new(Hinton2015, "784-800-800-10 student, 784-1200-1200-10 teacher",
            "teacher 67 errors; student trained alone 146 errors; student distilled 74 errors", ReferenceMeasure.TestErrors, ["distilled"]),
    ];

    /// <summary>The figures that have a row in <paramref name="rows"/>, each with that row and its float32 reference row (when present).</summary>
    public static IEnumerable<(ReferenceFigure Figure, StageResult Ours, StageResult? Reference)> Matches(IReadOnlyList<StageResult> rows)
    {
        foreach (var figure in All)
        {
            var ours = figure.OurRows.Select(n => rows.FirstOrDefault(r => r.Name == n)).FirstOrDefault(r => r is not null);
            if (ours is null)
                continue;
            var reference = rows.FirstOrDefault(r => r.Name == ours.CompressionReference && r.Name != ours.Name);
            yield return (figure, ours, reference);
        }
    }

    /// <summary>Describes our row the way the figure is measured.</summary>
    public static string DescribeOurs(ReferenceFigure figure, StageResult ours, StageResult? reference)
    {
        var c = CultureInfo.InvariantCulture;
        string Error(StageResult r) => (1 - r.Accuracy).ToString("P2", c);
        string errors = reference is null ? $"error {Error(ours)}" : $"error {Error(reference)} -> {Error(ours)}";
        switch (figure.Measure)
        {
            case ReferenceMeasure.Parameters:
                long before = reference?.Parameters ?? ours.Parameters;
                return string.Create(c, $"{errors}; {before / 1000.0:F0}K -> {ours.NonZeroParameters / 1000.0:F0}K non-zero parameters ({(double)before / ours.NonZeroParameters:F1}x)");
            case ReferenceMeasure.StoredBytes:
                return reference is null
                    ? string.Create(c, $"{errors}; zip {ours.ZipBytes / 1024.0:F0} KB")
                    : string.Create(c, $"{errors}; zip {reference.ZipBytes / 1024.0:F0} KB -> {ours.ZipBytes / 1024.0:F0} KB ({(double)reference.ZipBytes / ours.ZipBytes:F1}x)");
            default:
                string scale = ours.TestRows == 10_000 ? "" : string.Create(c, $" of {ours.TestRows:N0} test rows");
                return reference is null
                    ? string.Create(c, $"{ours.TestErrors} errors{scale}")
                    : string.Create(c, $"{reference.Name} {reference.TestErrors} errors; {ours.Name} {ours.TestErrors} errors{scale}");
        }
    }

    /// <summary>The comparison table, or null when no row of this run corresponds to a published figure.</summary>
    public static Table? Table(IReadOnlyList<StageResult> rows)
    {
        var matches = Matches(rows).ToList();
        if (matches.Count == 0)
            return null;
        var table = new Table { Border = TableBorder.Rounded, Title = new TableTitle("Beside the published figures (MNIST)") };
        table.AddColumn("source");
        table.AddColumn("network");
        table.AddColumn("published");
        table.AddColumn("our row");
        table.AddColumn("ours");
        foreach (var (figure, ours, reference) in matches)
            table.AddRow(Markup.Escape(figure.Source), Markup.Escape(figure.Network), Markup.Escape(figure.Published),
                Markup.Escape(reference is null ? ours.Name : $"{reference.Name} -> {ours.Name}"), Markup.Escape(DescribeOurs(figure, ours, reference)));
        table.Caption = new TableTitle("Published sizes are the weights as stored by each paper's method; ours are the saved ML.NET zip (ONNX inside, deflated). " +
            "Our training recipe differs from the papers' (Adam, 10 epochs, no dropout or jitter), so the float32 starting points differ too.");
        return table;
    }
}
