using System.Globalization;
using System.Text;
using System.Text.Json.Serialization;
using Microsoft.ML;
using MLNet.Compression.Distillation;
using MLNet.Compression.Networks;
using MLNet.Compression.Onnx;
using static TorchSharp.torch;
using MLNet.Compression.Training;

namespace MLNet.Compression.Clustering;

/// <summary>
/// Weight clustering (parameter sharing, Han et al.'s Deep Compression): per layer, k-means groups the non-zero weights into
/// at most k shared values; pruned zeros stay zero and belong to no cluster. The network is then fine-tuned on the data given
/// to <see cref="CompressionStageEstimator.Fit"/> with tied weights: every centroid moves by the summed gradient of its members, so each layer still
/// has at most k distinct non-zero values afterwards. The exported ONNX model stores each clustered layer as a float
/// codebook plus one uint8 index per weight (per non-zero weight, with a uint8 gap, for pruned layers), rebuilt in the graph
/// with Gather. Two ways in: <c>estimator.ClusterWeights(options)</c> (chained: fits the estimator, then clusters) and
/// <c>mlContext.Compression().ClusterWeights(fittedModel, options)</c> (post-training; the model is not changed).
/// After <see cref="CompressionStageEstimator.Fit"/>, <c>Report</c> gives distinct values, bits per weight and bytes per layer.
/// </summary>
public sealed class WeightClusteringEstimator : CompressionStageEstimator<WeightClusteringOptions, WeightClusteringReport>
{
    private const string Stage = "cluster";

    internal WeightClusteringEstimator(MLContext? ml, IEstimator<NeuralNetworkTransformer>? inner, NeuralNetworkTransformer? fitted, WeightClusteringOptions options)
        : base(ml, inner, fitted, options, o => o.Validate(), o => o.Clone())
    {
        if (fitted is not null)
            CheckLayerNames(fitted.Network, Settings); // fail before any data is read
    }



    /// <summary>Clusters <paramref name="network"/>'s layers in place (weights replaced by their centroids) and returns the clusters by layer.</summary>
    internal static Dictionary<string, LayerClusters> ClusterLayers(NetworkModel network, WeightClusteringOptions options, int seed)
    {
        var random = new Random(seed);
        var result = new Dictionary<string, LayerClusters>(StringComparer.Ordinal);
        foreach (var layer in network.ParameterizedLayers)
        {
            if (options.KeepFloat.Contains(layer.Name))
                continue;
            int k = options.ClustersFor(layer.Name);
            // Pruned weights point at a trailing 0 in the codebook, so with zeros present one index value is taken by it.
            if (layer.Weight.Any(w => w == 0f))
                k = Math.Min(k, WeightClusteringOptions.MaxClusters - 1);
            var clusters = KMeans1D.Fit(layer.Weight, k, options.Initialization, options.MaxIterations, random);
            layer.Weight = clusters.Reconstruct();
            result[layer.Name] = clusters;
        }
        return result;
    }

    /// <inheritdoc />
    private protected override (NeuralNetworkTransformer, CompressionStageReport) Apply(MLContext context, NeuralNetworkTransformer? fittedSource, IDataView input)
    {
        var source = fittedSource!;
        var log = new ContextLog(context, "ClusterWeights");
        var network = source.Network.Clone();
        CheckLayerNames(network, Settings);
        LayerEncodings.EnsureSupported(network, LayerEncoding.Clustered); // before any work: e.g. batch normalization cannot be folded into a codebook
        SchemaValidation.FeatureColumn(input.Schema, source.FeatureColumnName, network.InputLength);
        var distinctBefore = network.ParameterizedLayers.ToDictionary(l => l.Name, l => CountDistinctNonZero(l.Weight), StringComparer.Ordinal);
        var clusters = ClusterLayers(network, Settings, source.Seed);
        log.Info($"Clustered {clusters.Count} layer(s) of {network.Architecture.Name}: " +
                 string.Join(", ", clusters.Select(c => $"{c.Key} {c.Value.Centroids.Length} values ({c.Value.Iterations} iterations)")) + ".");

        TrainingResult? result = null;
        NeuralNetworkOptions? tuning = null;
        if (Settings.Epochs > 0)
        {
            tuning = Settings.Derive(source.TrainingOptions, Settings.RowsFor(input));
            log.Info($"Fine-tuning the shared values with tied gradients: {tuning.Epochs} epoch(s) at lr={tuning.LearningRate}.");
            using var guidance = TeacherGuidance.ForFineTuning(context, Settings.Teacher, Settings.Distillation, input, source, tuning, "WeightClusteringOptions.Teacher", log);
            using var tied = new TiedGradients(network, clusters);
            var hooks = new TrainingHooks { BeforeStep = tied.Apply, TargetColumnName = guidance?.TargetColumnName, Loss = guidance is null ? null : guidance.Loss };
            result = new TrainingSession(context, tuning, Stage, Settings.CancellationToken).Run(guidance?.Data ?? input, network, source.Seed, null, hooks);
            network = result.Model;
            clusters = Snap(network, clusters);
        }

        var emitter = new ClusteredEmitter(clusters);
        var resultOptions = source.TrainingOptions.Clone();
        resultOptions.Architecture = network.Architecture;
        var model = NeuralNetworkTransformer.Create(context, network, source.ClassNames, resultOptions, input.Schema, result, source.Seed,
            new OnnxExportOptions { LayerEmitter = emitter }, null, source.Recipe.Then(new ClusterStep(Settings.Clone())));
        string? collapse = tuning is null ? null : FineTuningCheck.CollapseWarning(context, source, model, input,
            $"Clustering to {Settings.ClusterCount} shared values per layer", tuning, result!.Steps, "WeightClusteringOptions",
            "more shared values (WeightClusteringOptions.ClusterCount)", log);
        if (collapse is not null)
            log.Warning(collapse);
        var report = new WeightClusteringReport(network.ParameterizedLayers.Select(l =>
        {
            var info = emitter.Describe(l);
            int requested = clusters.ContainsKey(l.Name) ? Settings.ClustersFor(l.Name) : 0;
            return new LayerClusteringStats(l.Name, requested, info.Clusters, distinctBefore[l.Name], CountDistinctNonZero(l.Weight), info.Elements,
                info.NonZeros, info.Encoding.ToString(), info.Elements * sizeof(float), info.StoredBytes);
        }).ToArray(), model.OnnxBytes.LongLength, tuning?.Epochs ?? 0, result?.Steps ?? 0, tuning?.LearningRate, collapse is null ? null : [collapse]);
        log.Info(report.ToString());
        return (model, report);
    }

    /// <summary>
    /// After fine-tuning, every member of a cluster holds the same value (identical gradients, identical optimizer state); this
    /// rebuilds the codebook from the members (their mean, to be robust) and writes it back, so the bound holds exactly.
    /// </summary>
    private static Dictionary<string, LayerClusters> Snap(NetworkModel network, Dictionary<string, LayerClusters> clusters)
    {
        var snapped = new Dictionary<string, LayerClusters>(StringComparer.Ordinal);
        foreach (var layer in network.ParameterizedLayers)
        {
            if (!clusters.TryGetValue(layer.Name, out var c))
                continue;
            int k = c.Centroids.Length;
            var sum = new double[k];
            var count = new long[k];
            for (int i = 0; i < c.Assignment.Length; i++)
                if (c.Assignment[i] >= 0)
                {
                    sum[c.Assignment[i]] += layer.Weight[i];
                    count[c.Assignment[i]]++;
                }
            var centroids = new float[k];
            for (int j = 0; j < k; j++)
                centroids[j] = count[j] == 0 ? c.Centroids[j] : (float)(sum[j] / count[j]);
            var updated = new LayerClusters(centroids, c.Assignment, c.Iterations);
            layer.Weight = updated.Reconstruct();
            snapped[layer.Name] = updated;
        }
        return snapped;
    }

    /// <summary>Distinct non-zero values in <paramref name="weights"/>.</summary>
    internal static int CountDistinctNonZero(float[] weights) => weights.Where(w => w != 0f).Distinct().Count();

    private static void CheckLayerNames(NetworkModel network, WeightClusteringOptions o)
    {
        var names = network.ParameterizedLayers.Select(l => l.Name).ToHashSet(StringComparer.Ordinal);
        string known = string.Join(", ", names);
        foreach (var name in o.KeepFloat)
            if (!names.Contains(name))
                throw new ArgumentException($"WeightClusteringOptions.KeepFloat names layer '{name}', which the model does not have; its weighted layers are: {known}.", "options");
        foreach (var name in o.LayerClusterCount.Keys)
            if (!names.Contains(name))
                throw new ArgumentException($"WeightClusteringOptions.LayerClusterCount names layer '{name}', which the model does not have; its weighted layers are: {known}.", "options");
        if (names.All(o.KeepFloat.Contains))
            throw new ArgumentException($"Nothing to cluster: every weighted layer ({known}) is in WeightClusteringOptions.KeepFloat.", "options");
    }

    /// <summary>
    /// Replaces each clustered layer's weight gradient by the summed gradient of its cluster (zero for pruned weights), so
    /// the optimizer moves every member of a cluster identically: the centroid moves by its members' summed gradient.
    /// </summary>
    private sealed class TiedGradients : IDisposable
    {
        private readonly List<(int Module, Tensor Index, Tensor Keep, int Slots)> layers = new();
        private readonly NetworkModel network;
        private readonly Dictionary<string, LayerClusters> clusters;
        private bool placed;

        public TiedGradients(NetworkModel network, Dictionary<string, LayerClusters> clusters)
        {
            this.network = network;
            this.clusters = clusters;
        }

        public void Apply(TorchNetwork net)
        {
            using var noGrad = no_grad();
            if (!placed)
                Place(net);
            foreach (var (module, index, keep, slots) in layers)
            {
                var (w, _) = TorchNetwork.ParametersOf(net.ParameterizedModules[module].Module);
                if (w.grad is not { } g)
                    continue;
                using var scope = NewDisposeScope();
                var flat = g.reshape(-1);
                var sums = zeros(slots, flat.dtype, flat.device).scatter_add_(0, index, flat).mul_(keep);
                g.copy_(sums.gather(0, index).view_as(g));
            }
        }

        /// <summary>Builds the index tensors on the network's device once (the slot after the last centroid collects pruned weights and is zeroed).</summary>
        private void Place(TorchNetwork net)
        {
            var parameterized = network.ParameterizedLayers.ToArray();
            for (int i = 0; i < parameterized.Length; i++)
            {
                if (!clusters.TryGetValue(parameterized[i].Name, out var c))
                    continue;
                var (w, _) = TorchNetwork.ParametersOf(net.ParameterizedModules[i].Module);
                int k = c.Centroids.Length;
                var idx = c.Assignment.Select(a => (long)(a < 0 ? k : a)).ToArray();
                var keepValues = Enumerable.Repeat(1f, k + 1).ToArray();
                keepValues[k] = 0f;
                // Created inside the training step's dispose scope: detach them so they live until this object is disposed.
                var index = tensor(idx).to(w.device).DetachFromDisposeScope();
                var keep = tensor(keepValues).to(w.device).DetachFromDisposeScope();
                layers.Add((i, index, keep, k + 1));
            }
            placed = true;
        }

        public void Dispose()
        {
            foreach (var (_, index, keep, _) in layers)
            {
                index.Dispose();
                keep.Dispose();
            }
        }
    }
}

/// <summary>How one layer was clustered.</summary>
/// <param name="Name">Layer name ("fc1", "conv2", "output").</param>
/// <param name="RequestedClusters">k asked for (0 when the layer was kept in float32).</param>
/// <param name="Clusters">Shared values in the layer's codebook (at most k; fewer when clusters ended up empty or the layer has fewer distinct weights).</param>
/// <param name="DistinctValuesBefore">Distinct non-zero weights before clustering.</param>
/// <param name="DistinctValues">Distinct non-zero weights now (at most <paramref name="Clusters"/> for a clustered layer).</param>
/// <param name="Weights">Weights in the layer.</param>
/// <param name="NonZeroWeights">Weights that are not exactly zero (pruned weights stay zero).</param>
/// <param name="Encoding">How the weights are stored in the ONNX model: DenseIndices, SparseIndices or Float.</param>
/// <param name="FloatBytes">Bytes of the weights as float32.</param>
/// <param name="StoredBytes">Bytes of weight data stored in the ONNX model (codebook, indices, gaps).</param>
public sealed record LayerClusteringStats(string Name, int RequestedClusters, int Clusters, int DistinctValuesBefore, int DistinctValues, long Weights,
    long NonZeroWeights, string Encoding, long FloatBytes, long StoredBytes)
{
    /// <summary>Bits of index per weight: log2 of the codebook size including the zero entry, rounded up (32 for a float32 layer).</summary>
    public int IndexBits => Clusters == 0 ? 32 : (int)Math.Ceiling(Math.Log2(Math.Max(2, Clusters + (NonZeroWeights < Weights ? 1 : 0))));

    /// <summary>Stored bits per weight of the layer (all data bits, divided by the number of weights).</summary>
    public double StoredBitsPerWeight => Weights == 0 ? 0 : StoredBytes * 8.0 / Weights;
}

/// <summary>What weight clustering produced: per layer the shared values and sizes, and the ONNX model size.</summary>
public sealed record WeightClusteringReport : CompressionStageReport
{
    [JsonConstructor]
    internal WeightClusteringReport(IReadOnlyList<LayerClusteringStats> layers, long onnxBytes, int fineTuningEpochs, long fineTuningSteps,
        double? fineTuningLearningRate = null, IReadOnlyList<string>? warnings = null)
    {
        Layers = layers;
        FineTuningLearningRate = fineTuningLearningRate;
        Warnings = warnings ?? [];
        OnnxBytes = onnxBytes;
        FineTuningEpochs = fineTuningEpochs;
        FineTuningSteps = fineTuningSteps;
    }

    /// <summary>Every weighted layer, in order.</summary>
    public IReadOnlyList<LayerClusteringStats> Layers { get; }

    /// <summary>Size of the exported ONNX model.</summary>
    public long OnnxBytes { get; }

    /// <summary>Epochs of tied fine-tuning run.</summary>
    public int FineTuningEpochs { get; }

    /// <summary>Optimizer steps of tied fine-tuning run.</summary>
    public long FineTuningSteps { get; }

    /// <summary>The learning rate of the tied fine-tuning (set, or the default of <see cref="FineTuningOptions.LearningRate"/>); null when none ran.</summary>
    public double? FineTuningLearningRate { get; }

    /// <summary>
    /// What the user should know about the run, e.g. accuracy on the training rows that fell by more than 5 points during
    /// clustering (also logged as warnings, and part of <see cref="ToString"/>). Empty when all went as planned.
    /// </summary>
    public IReadOnlyList<string> Warnings { get; }

    /// <summary>Bytes of all weights as float32.</summary>
    public long FloatBytes => Layers.Sum(l => l.FloatBytes);

    /// <summary>Bytes of all weight data as stored.</summary>
    public long StoredBytes => Layers.Sum(l => l.StoredBytes);

    /// <summary><see cref="FloatBytes"/> / <see cref="StoredBytes"/> (weights only; biases are float32 in both).</summary>
    public double CompressionRatio => StoredBytes == 0 ? 0 : (double)FloatBytes / StoredBytes;

    /// <summary>A table of the layers with totals.</summary>
    public override string ToString()
    {
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        string rate = FineTuningLearningRate is { } lr ? string.Format(c, " at learning rate {0:G3}", lr) : string.Empty;
        sb.AppendLine(c, $"Weight clustering ({FineTuningEpochs} epoch(s) of tied fine-tuning, {FineTuningSteps:N0} steps{rate})");
        sb.AppendLine(c, $"{"layer",-10} {"k",5} {"codebook",9} {"distinct",14} {"weights",10} {"non-zero",10} {"encoding",-14} {"bits/w",7} {"float32",10} {"stored",10}");
        foreach (var l in Layers)
            sb.AppendLine(c, $"{l.Name,-10} {l.RequestedClusters,5} {l.Clusters,9} {l.DistinctValuesBefore + " -> " + l.DistinctValues,14} {l.Weights,10:N0} {l.NonZeroWeights,10:N0} " +
                             $"{l.Encoding,-14} {l.StoredBitsPerWeight,7:F2} {MemoryReport.FormatBytes(l.FloatBytes),10} {MemoryReport.FormatBytes(l.StoredBytes),10}");
        sb.Append(c, $"total weights: {MemoryReport.FormatBytes(FloatBytes)} -> {MemoryReport.FormatBytes(StoredBytes)} ({CompressionRatio:F1}x); ONNX model {MemoryReport.FormatBytes(OnnxBytes)}");
        foreach (var warning in Warnings)
            sb.Append(c, $"{Environment.NewLine}WARNING: {warning}");
        return sb.ToString();
    }
}
