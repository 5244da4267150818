using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Engines;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Microsoft.ML;
using MLNet.Compression.Data;

namespace MLNet.Compression.Benchmarks;

/// <summary>Shared settings: the run configuration, jobs per benchmark class, and MNIST loading.</summary>
public static class BenchmarkSettings
{
    /// <summary>Set by <c>--quick</c>: one measured iteration per benchmark, no warm-up.</summary>
    public static bool Quick { get; set; }

    /// <summary>
    /// Set by <c>--in-process</c>: run in the host process (InProcessEmitToolchain) instead of BenchmarkDotNet's generated
    /// child project. Not needed on this machine: the child build passes its OutDir to this project as a global property,
    /// so MLNet.Compression.targets patches the libLibTorchSharp.so copy the child process loads.
    /// </summary>
    public static bool InProcess { get; set; }

    public static IConfig CreateConfig() => DefaultConfig.Instance
        .AddColumn(new RowsPerSecondColumn())
        .HideColumns(Column.Error, Column.RatioSD)
        .AddColumn(StatisticColumn.Min, StatisticColumn.Median);

    /// <summary>A short job: one launch, a few warm-up and measured iterations (one of each with <c>--quick</c>).</summary>
    public static Job ShortJob(RunStrategy strategy, int warmup, int iterations)
    {
        var job = Job.Default
            .WithStrategy(strategy)
            .WithLaunchCount(1)
            .WithWarmupCount(Quick ? 0 : warmup)
            .WithIterationCount(Quick ? 1 : iterations)
            .WithId(Quick ? "Quick" : strategy.ToString());
        return InProcess ? job.WithToolchain(InProcessEmitToolchain.Instance) : job;
    }

    public static IDataView LoadMnist(MLContext ml, MnistSplit split) =>
        ml.Data.LoadMnist(split, new MnistOptions { AllowHttp = false });

    public static string LoadAverage()
    {
        try
        {
            return File.ReadAllText("/proc/loadavg").Trim();
        }
        catch (IOException)
        {
            return "n/a";
        }
    }
}

/// <summary>Marks a benchmark with the number of rows one invocation processes, for the Rows/s column.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class RowsAttribute(int rows) : Attribute
{
    public int Rows { get; } = rows;
}

/// <summary>Rows per second from the mean time and the benchmark's <see cref="RowsAttribute"/>.</summary>
public sealed class RowsPerSecondColumn : IColumn
{
    public string Id => nameof(RowsPerSecondColumn);
    public string ColumnName => "Rows/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "Rows processed per second (rows per invocation / mean time)";

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public bool IsAvailable(Summary summary) => true;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var rows = benchmarkCase.Descriptor.WorkloadMethod.GetCustomAttributes(typeof(RowsAttribute), false)
            .OfType<RowsAttribute>().FirstOrDefault()?.Rows;
        var mean = summary[benchmarkCase]?.ResultStatistics?.Mean;
        if (rows is null || mean is null or <= 0)
            return "-";
        return (rows.Value / (mean.Value / 1e9)).ToString("N0", System.Globalization.CultureInfo.InvariantCulture);
    }
}
