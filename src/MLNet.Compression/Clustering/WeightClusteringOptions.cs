namespace MLNet.Compression.Clustering;

/// <summary>How the k-means centroids of a layer start (Han et al., Deep Compression, found <see cref="Linear"/> best).</summary>
public enum CentroidInitialization
{
    /// <summary>Evenly spaced between the layer's smallest and largest non-zero weight: keeps the rare large weights represented.</summary>
    Linear,

    /// <summary>At evenly spaced quantiles of the non-zero weights (dense around the peaks of the distribution).</summary>
    Density,

    /// <summary>k distinct non-zero weights drawn at random (seeded by the model's seed).</summary>
    Random,
}

/// <summary>
/// Options for <see cref="WeightClusteringEstimator"/>. The fine-tuning settings come from <see cref="TeacherGuidedFineTuningOptions"/>:
/// <see cref="FineTuningOptions.Epochs"/> of fine-tuning with tied weights (every centroid moves by the summed gradient of its
/// members, so each layer keeps at most k distinct non-zero values; 0 clusters without fine-tuning; default 2, or more on small
/// data, see <see cref="FineTuningOptions.Epochs"/>), the learning rate (default: the model's own), batch size, teacher,
/// progress (stage <c>"cluster"</c>) and cancellation.
/// </summary>
public sealed class WeightClusteringOptions : TeacherGuidedFineTuningOptions
{
    /// <summary>Creates the default options: 32 shared values per layer, two fine-tuning epochs.</summary>
    public WeightClusteringOptions()
        : base(defaultEpochs: 2)
    {
    }

    private protected override string OptionsName => nameof(WeightClusteringOptions);

    /// <summary>Smallest accepted number of clusters.</summary>
    public const int MinClusters = 4;

    /// <summary>Largest accepted number of clusters (an index must fit in one byte).</summary>
    public const int MaxClusters = 256;

    /// <summary>Shared values per layer, k, from 4 to 256 (log2(k) bits per weight). Default 32 (5 bits).</summary>
    public int ClusterCount { get; set; } = 32;

    /// <summary>Per-layer k by layer name ("fc1", "conv2", "output"), overriding <see cref="ClusterCount"/>.</summary>
    public IDictionary<string, int> LayerClusterCount { get; set; } = new Dictionary<string, int>(StringComparer.Ordinal);

    /// <summary>Names of layers whose weights stay unshared float32. Default: none.</summary>
    public ICollection<string> KeepFloat { get; set; } = new List<string>();

    /// <summary>How centroids start. Default <see cref="CentroidInitialization.Linear"/>.</summary>
    public CentroidInitialization Initialization { get; set; } = CentroidInitialization.Linear;

    /// <summary>Most k-means (Lloyd) iterations per layer; it stops earlier when no weight changes cluster. Default 50.</summary>
    public int MaxIterations { get; set; } = 50;

    /// <summary>The k used for <paramref name="layerName"/>.</summary>
    /// <param name="layerName">A weighted layer's name.</param>
    public int ClustersFor(string layerName) => LayerClusterCount.TryGetValue(layerName, out var k) ? k : ClusterCount;

    /// <summary>Returns a copy (collections copied too).</summary>
    public WeightClusteringOptions Clone() => CopyGuidedTo(new WeightClusteringOptions
    {
        ClusterCount = ClusterCount,
        LayerClusterCount = new Dictionary<string, int>(LayerClusterCount, StringComparer.Ordinal),
        KeepFloat = KeepFloat.ToList(),
        Initialization = Initialization,
        MaxIterations = MaxIterations,
    });

    /// <summary>Checks every setting; throws naming the bad one.</summary>
    internal void Validate()
    {
        if (ClusterCount is < MinClusters or > MaxClusters)
            throw new ArgumentOutOfRangeException(nameof(ClusterCount), ClusterCount,
                $"WeightClusteringOptions.ClusterCount must be between {MinClusters} and {MaxClusters} (one byte per index).");
        ArgumentNullException.ThrowIfNull(LayerClusterCount, nameof(LayerClusterCount));
        ArgumentNullException.ThrowIfNull(KeepFloat, nameof(KeepFloat));
        foreach (var (name, k) in LayerClusterCount)
            if (k is < MinClusters or > MaxClusters)
                throw new ArgumentOutOfRangeException(nameof(LayerClusterCount), k,
                    $"WeightClusteringOptions.LayerClusterCount['{name}'] is {k}; it must be between {MinClusters} and {MaxClusters}.");
        if (!Enum.IsDefined(Initialization))
            throw new ArgumentOutOfRangeException(nameof(Initialization), Initialization, "Unknown centroid initialization.");
        if (MaxIterations < 1)
            throw new ArgumentOutOfRangeException(nameof(MaxIterations), MaxIterations, "WeightClusteringOptions.MaxIterations must be at least 1.");
        ValidateFineTuning();
    }
}
