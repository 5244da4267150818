using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Networks;
using MLNet.Compression.Onnx;
using MLNet.Compression.Training;

namespace MLNet.Compression;

/// <summary>
/// A trained network. <see cref="Transform"/> scores in batches through ONNX Runtime; <c>mlContext.Model.Save</c> writes
/// an ordinary ML.NET model zip (ONNX Runtime scoring plus built-in column conversions) that loads and scores in an
/// application referencing only Microsoft.ML, Microsoft.ML.OnnxTransformer and ONNX Runtime, with no TorchSharp.
/// Output columns, by task: multiclass <c>Score</c> (vector of class probabilities) and <c>PredictedLabel</c> (key with the
/// label's key values); binary <c>Score</c> (raw logit), <c>Probability</c> and <c>PredictedLabel</c> (Boolean); regression
/// <c>Score</c> (Single, in the label's units). A row with a NaN or infinite feature scores NaN and never gets a confident label.
/// Training state that ONNX does not carry goes into <see cref="SaveCheckpoint"/>.
/// </summary>
public sealed class NeuralNetworkTransformer : ITransformer, IDisposable
{
    /// <summary>Name of the probabilities column.</summary>
    public const string ScoreColumnName = "Score";

    /// <summary>Name of the predicted label column.</summary>
    public const string PredictedLabelColumnName = "PredictedLabel";

    private readonly MLContext ml;
    private readonly Lazy<ITransformer> chain;
    private readonly Lazy<BatchedOnnxScorer> scorer;
    private readonly int scoringBatchSize;
    private bool disposed;

    private NeuralNetworkTransformer(MLContext ml, NetworkModel network, IReadOnlyList<string> classNames, NeuralNetworkOptions options,
        byte[] onnx, Lazy<ITransformer> chain, TrainingResult? training, byte[]? optimizerState, int seed, MemoryReport memory, CompressionRecipe? recipe,
        Incremental.IncrementalState? incremental = null, IReadOnlyList<EpochMetrics>? history = null)
    {
        Recipe = recipe ?? CompressionRecipe.None;
        IncrementalState = incremental;
        this.ml = ml;
        Network = network;
        ClassNames = classNames.ToArray();
        TrainingOptions = options.Clone();
        TrainingOptions.CancellationToken = default; // a live token is not part of the model
        OnnxBytes = onnx;
        this.chain = chain;
        TrainingHistory = history ?? training?.History ?? [];
        OptimizerState = optimizerState;
        Seed = seed;
        Memory = memory;
        scoringBatchSize = options.ScoringBatchSize;
        scorer = new Lazy<BatchedOnnxScorer>(() => new BatchedOnnxScorer(OnnxBytes, ml.GpuDeviceId, ml.FallbackToCpu), LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <summary>The architecture the network was built from.</summary>
    public NetworkArchitecture Architecture => Network.Architecture;

    /// <summary>The class names (the label's key values), in key order.</summary>
    public IReadOnlyList<string> ClassNames { get; }

    /// <summary>Name of the feature column the model reads.</summary>
    public string FeatureColumnName => TrainingOptions.FeatureColumnName;

    /// <summary>Name of the label column the model was trained on.</summary>
    public string LabelColumnName => TrainingOptions.LabelColumnName;

    /// <summary>Metrics of every epoch of the run that produced this model (empty for a model loaded from a checkpoint).</summary>
    public IReadOnlyList<EpochMetrics> TrainingHistory { get; }

    /// <summary>Where the model's memory goes.</summary>
    public MemoryReport Memory { get; }

    /// <summary>Total parameters (weights and biases).</summary>
    public long ParameterCount => Network.ParameterCount;

    /// <summary>Parameters that are not zero.</summary>
    public long NonZeroParameterCount => Network.NonZeroParameterCount;

    /// <summary>Always true: scoring maps one row to one row.</summary>
    public bool IsRowToRowMapper => true;

    internal NetworkModel Network { get; }

    /// <summary>The output head of the network (its loss and scoring columns); persisted through <see cref="NetworkModel.HeadKind"/>.</summary>
    internal Networks.Heads.OutputHeadKind HeadKind => Network.HeadKind;

    /// <summary>The context the model was made with (its seed, log and GPU settings carry over to later stages).</summary>
    internal MLContext Context => ml;

    internal NeuralNetworkOptions TrainingOptions { get; }

    internal byte[] OnnxBytes { get; }

    internal byte[]? OptimizerState { get; }

    internal int Seed { get; }

    /// <summary>How the exported weights are encoded (quantization, clustering), so later stages can redo it after changing the weights.</summary>
    internal CompressionRecipe Recipe { get; }

    /// <summary>
    /// What every compression stage that made this model did, oldest first: one report per stage (pruning, quantization,
    /// weight clustering, distillation, continued training), carried by every later stage's model. Empty for a model
    /// straight from the trainer.
    /// </summary>
    public IReadOnlyList<CompressionStageReport> CompressionHistory { get; private set; } = [];

    /// <summary>Sets the history of a model a stage has just made: <paramref name="earlier"/> (the source model's) and the stage's <paramref name="report"/>.</summary>
    internal void RecordStage(IReadOnlyList<CompressionStageReport> earlier, CompressionStageReport report) =>
        CompressionHistory = [.. earlier, report];

    /// <summary>Gives a model just restored (from a checkpoint) the history it was saved with; returns this model.</summary>
    internal NeuralNetworkTransformer WithCompressionHistory(IReadOnlyList<CompressionStageReport> history)
    {
        CompressionHistory = history.ToArray();
        return this;
    }

    /// <summary>
    /// What continued training carries from one increment to the next (replay memory, EWC Fisher and anchor weights);
    /// null for a model no <c>ContinueTraining</c> produced. Kept in the checkpoint.
    /// </summary>
    internal Incremental.IncrementalState? IncrementalState { get; }

    /// <summary>
    /// A model identical to this one (same weights, ONNX bytes, scoring chain and memory report) that carries
    /// <paramref name="incremental"/> and <paramref name="optimizerState"/>. Used by continued training to attach its state
    /// to a model another stage (re-quantization) produced; this instance must not be used afterwards (they share the chain).
    /// </summary>
    internal NeuralNetworkTransformer WithIncrementalState(Incremental.IncrementalState? incremental, byte[]? optimizerState) =>
        new(ml, Network, ClassNames, TrainingOptions, OnnxBytes, chain, null, optimizerState, Seed, Memory, Recipe, incremental, TrainingHistory)
        {
            CompressionHistory = CompressionHistory,
        };

    internal static NeuralNetworkTransformer Create(MLContext ml, NetworkModel network, IReadOnlyList<string> classNames, NeuralNetworkOptions options,
        DataViewSchema inputSchema, TrainingResult? training, int seed, OnnxExportOptions? exportOptions = null, long? residentWeightBytes = null,
        CompressionRecipe? recipe = null, byte[]? onnx = null)
    {
        // The label's key-value type (when numeric) travels in the ONNX metadata, and so in checkpoints, to the predicted label.
        var metadata = exportOptions?.Metadata;
        if (OnnxScoringColumns.ClassValueTypeName(inputSchema.GetColumnOrNull(options.LabelColumnName), classNames) is { } valueType)
            metadata = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>()) { [OnnxScoringColumns.ClassValueTypeKey] = valueType };
        exportOptions = new OnnxExportOptions
        {
            InputName = options.FeatureColumnName,
            ClassNames = classNames.ToArray(),
            Opset = exportOptions?.Opset ?? OnnxExportOptions.DefaultOpset,
            Metadata = metadata,
            LayerEmitter = exportOptions?.LayerEmitter ?? OnnxLayerEmitter.Default,
        };
        // A model restored from a checkpoint brings the exact export it scored with (quantized or not).
        onnx ??= OnnxExporter.Export(network, exportOptions);
        var chainSchema = ChainInputSchema(inputSchema, options.FeatureColumnName, network.InputLength);
        // Built on first use (saving, schema propagation, PredictionEngine): it creates an ONNX Runtime session of its own.
        var chain = new Lazy<ITransformer>(() => OnnxScoringChain.Build(ml, onnx, chainSchema, options.FeatureColumnName, classNames),
            LazyThreadSafetyMode.ExecutionAndPublication);
        Func<long> zip = () =>
        {
            // Measured the way users save: with the schema of the data the model was fitted on.
            using var ms = new MemoryStream();
            ml.Model.Save(chain.Value, inputSchema, ms);
            return ms.Length;
        };
        var memory = new MemoryReport(network, options.BatchSize, training?.Precision ?? options.Precision, options.Optimizer, options.Momentum,
            onnx.LongLength, zip, residentWeightBytes ?? network.ParameterCount * sizeof(float), training?.PeakProcessBytes, training?.PeakGpuBytes,
            training?.Device ?? "none");
        return new NeuralNetworkTransformer(ml, network, classNames, options, onnx, chain, training, training?.OptimizerState, seed, memory, recipe);
    }

    /// <summary>The schema the saved chain is built for: the feature column (and nothing the model does not need).</summary>
    private static DataViewSchema ChainInputSchema(DataViewSchema inputSchema, string featureColumnName, int inputLength)
    {
        var builder = new DataViewSchema.Builder();
        var feature = inputSchema.GetColumnOrNull(featureColumnName);
        builder.AddColumn(featureColumnName, feature?.Type ?? new VectorDataViewType(NumberDataViewType.Single, inputLength));
        return builder.ToSchema();
    }

    /// <summary>
    /// Scores <paramref name="input"/> in batches; adds the output head's columns (<c>Score</c> and <c>PredictedLabel</c> for a
    /// classifier). Lazy, like every ML.NET transform.
    /// </summary>
    /// <param name="input">Data with the feature column.</param>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ObjectDisposedException.ThrowIf(disposed, this);
        return new BatchedScoringDataView(input, scorer.Value, FeatureColumnName, ClassNames, scoringBatchSize);
    }

    /// <summary>The schema <see cref="Transform"/> produces for <paramref name="inputSchema"/>.</summary>
    /// <param name="inputSchema">Schema of the data to score.</param>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return chain.Value.GetOutputSchema(inputSchema);
    }

    /// <summary>A row-to-row mapper (used by <c>PredictionEngine</c>): the same ONNX model run one row at a time.</summary>
    /// <param name="inputSchema">Schema of the rows to score.</param>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return chain.Value.GetRowToRowMapper(inputSchema);
    }

    /// <summary>
    /// Saves as an ML.NET model: the built-in ONNX scoring transformer with the ONNX bytes inside, followed by built-in
    /// conversions. <c>mlContext.Model.Load</c> returns that chain; it needs no reference to this library.
    /// </summary>
    void ICanSaveModel.Save(ModelSaveContext ctx) => ((ICanSaveModel)chain.Value).Save(ctx);

    /// <summary>The ONNX model (a copy of the bytes).</summary>
    public byte[] GetOnnxModel() => (byte[])OnnxBytes.Clone();

    /// <summary>Writes the ONNX model to <paramref name="path"/> (through a temporary file, then moved into place).</summary>
    /// <param name="path">Destination file.</param>
    public void SaveOnnx(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (Distributed.MpiRuntime.SkipsWrites)
            return; // distributed training: only rank 0 writes files
        AtomicFile.Write(path, s => s.Write(OnnxBytes));
    }

    /// <summary>
    /// Saves what ONNX does not carry, so training or compression can continue later: the architecture, the weights,
    /// the class names and column names, every training option (except the <c>Progress</c> callback), the optimizer state,
    /// the compression recipe (quantization and clustering settings, re-applied by continued training), the compression
    /// history, the exported ONNX model exactly as it scores and, for a model made
    /// by continued training, its replay memory and EWC state. Written to a temporary file and moved into place.
    /// </summary>
    /// <param name="path">Destination file (a zip).</param>
    public void SaveCheckpoint(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ObjectDisposedException.ThrowIf(disposed, this);
        if (Distributed.MpiRuntime.SkipsWrites)
            return; // distributed training: only rank 0 writes files
        Checkpoint.Write(path, new Checkpoint(Network, ClassNames, TrainingOptions, OptimizerState, Seed, IncrementalState, Recipe, OnnxBytes, CompressionHistory));
    }

    /// <summary>
    /// Loads a checkpoint written by <see cref="SaveCheckpoint"/> (format versions 1 to 4). Everything is validated before it
    /// is used: format version, options, class names, layer shapes against the architecture, and the exact length of every
    /// binary entry, checked before anything is allocated. A version-3 or later checkpoint carries the exact ONNX export the model
    /// scored with, so the loaded model scores identically in every encoding (quantized, sparse, clustered); older
    /// checkpoints are exported again as float32. The recipe and the compression history are kept, so continued training
    /// re-applies quantization or clustering.
    /// </summary>
    /// <param name="ml">The context.</param>
    /// <param name="path">The checkpoint file.</param>
    /// <exception cref="CheckpointException">The file is not a valid checkpoint; the exception names the entry and field at fault.</exception>
    public static NeuralNetworkTransformer LoadCheckpoint(MLContext ml, string path)
    {
        ArgumentNullException.ThrowIfNull(ml);
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var cp = Checkpoint.Read(path);
        var schema = new DataViewSchema.Builder();
        schema.AddColumn(cp.Options.FeatureColumnName, new VectorDataViewType(NumberDataViewType.Single, cp.Network.InputLength));
        // The stored export is the quantized one when the recipe quantized: its resident size is re-derived, not float32's.
        long? resident = cp.Onnx is not null && cp.Recipe?.Quantization is { } quantization
            ? Quantization.QuantizedExport.ResidentBytes(cp.Network, quantization)
            : null;
        var result = Create(ml, cp.Network, cp.ClassNames, cp.Options, schema.ToSchema(), null, cp.Seed, residentWeightBytes: resident, onnx: cp.Onnx);
        var loaded = new NeuralNetworkTransformer(ml, result.Network, result.ClassNames, result.TrainingOptions, result.OnnxBytes, result.chain, null,
            cp.OptimizerState, cp.Seed, result.Memory, cp.Recipe, cp.Incremental);
        return cp.History is { } history ? loaded.WithCompressionHistory(history) : loaded;
    }

    /// <summary>Releases the ONNX Runtime sessions.</summary>
    public void Dispose()
    {
        if (disposed)
            return;
        disposed = true;
        if (scorer.IsValueCreated)
            scorer.Value.Dispose();
        if (chain.IsValueCreated)
            (chain.Value as IDisposable)?.Dispose();
    }
}
