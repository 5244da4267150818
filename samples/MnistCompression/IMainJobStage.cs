namespace MnistCompression;

/// <summary>
/// One stage of the main job (a group of result rows: "train", "prune", "quantize", ...). A stage takes what it needs
/// from the <see cref="MainJobContext"/> (data, options, the cached float32 baselines, the console) and yields one
/// <see cref="StageResult"/> per model it produced, each made by <see cref="StageEvaluator.Evaluate"/>.
/// </summary>
internal interface IMainJobStage
{
    /// <summary>The name used with <c>--stages</c> (lower case, no spaces).</summary>
    string Name { get; }

    /// <summary>One line for <c>--help</c>: what the stage trains and which rows it reports.</summary>
    string Description { get; }

    /// <summary>Runs the stage; rows are yielded as each model is evaluated, so the console shows them as they come.</summary>
    IEnumerable<StageResult> Run(MainJobContext context);
}

/// <summary>The stages the main job knows, in the order they run. Adding a stage is one line in <see cref="All"/>.</summary>
internal static class StageRegistry
{
    /// <summary>Every registered stage, in run order.</summary>
    public static IReadOnlyList<IMainJobStage> All { get; } =
    [
        new TrainStage(),
        new PruneStage(),
        new QuantizeStage(),
        new ClusterStage(),
        new DistillStage(),
        new DeepCompressionStage(),
        new IncrementalStage(),
        new MemoryLeversStage(),
    ];

    /// <summary>The registered stage names, in run order.</summary>
    public static IEnumerable<string> Names => All.Select(s => s.Name);

    /// <summary>
    /// Resolves the names given to <c>--stages</c> (each may hold several, comma separated; case-insensitive) to the
    /// registered stages, in run order. Empty means all. Throws <see cref="ArgumentException"/> naming every unknown name
    /// and listing what is available.
    /// </summary>
    public static IReadOnlyList<IMainJobStage> Select(IEnumerable<string>? requested)
    {
        var names = (requested ?? [])
            .SelectMany(r => r.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            .Select(n => n.ToLowerInvariant())
            .Distinct()
            .ToList();
        if (names.Count == 0)
            return All;
        var unknown = names.Where(n => All.All(s => s.Name != n)).ToList();
        if (unknown.Count > 0)
        {
            var lines = unknown.Select(n => $"'{n}' is not a stage of the main job.");
            throw new ArgumentException(string.Join(Environment.NewLine, lines) + Environment.NewLine +
                $"Available stages: {string.Join(", ", Names)}. Pass any of them to --stages (for example --stages {All[0].Name},{All[^1].Name}), or leave --stages out to run them all.",
                "--stages");
        }
        return All.Where(s => names.Contains(s.Name)).ToList();
    }
}
