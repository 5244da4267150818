using Microsoft.ML;

namespace MLNet.Compression;

/// <summary>
/// The entry point to MLNet.Compression's estimators, reached from the context: <c>mlContext.Compression()</c>.
/// It hangs off the <see cref="MLContext"/> itself so stages get the context's seed, log, <c>GpuDeviceId</c> and <c>FallbackToCpu</c>.
/// </summary>
public sealed class CompressionCatalog
{
    internal CompressionCatalog(MLContext context) => Context = context;

    internal MLContext Context { get; }

    /// <summary>A trainer for a neural network classifier (TorchSharp, CPU or CUDA).</summary>
    /// <param name="options">Architecture, epochs, batch size, optimizer, device, precision and column names.</param>
    public NeuralNetworkTrainer NeuralNetwork(NeuralNetworkOptions? options = null) => new(Context, options ?? new NeuralNetworkOptions());

    /// <summary>
    /// Prunes a network that is already trained: <c>Fit(data)</c> prunes a copy of <paramref name="fittedModel"/> (which is
    /// not changed) and fine-tunes it on the data. The estimator's <c>Report</c> says how sparse each layer became.
    /// </summary>
    /// <param name="fittedModel">The trained network.</param>
    /// <param name="options">Schedule, granularity, layers to keep dense, per-layer targets and fine-tuning settings.</param>
    public Pruning.PruningEstimator Prune(NeuralNetworkTransformer fittedModel, Pruning.PruningOptions options)
    {
        ArgumentNullException.ThrowIfNull(fittedModel);
        ArgumentNullException.ThrowIfNull(options);
        return new Pruning.PruningEstimator(Context, null, fittedModel, options);
    }

    /// <summary>
    /// Quantizes a network that is already trained: <c>Fit(data)</c> quantizes a copy of <paramref name="fittedModel"/> (which is
    /// not changed), calibrating activation ranges on the data (<see cref="Quantization.QuantizationMode.Int8Static"/>) or
    /// fine-tuning on it first (<see cref="Quantization.QuantizationOptions.QuantizationAwareTraining"/>). The returned model
    /// scores with the quantized ONNX graph; the estimator's <c>Report</c> gives each layer's encoding, size and input range.
    /// </summary>
    /// <param name="fittedModel">The trained network (pruned networks keep their zeros).</param>
    /// <param name="options">Mode, weight granularity, calibration and quantization-aware training settings.</param>
    public Quantization.QuantizationEstimator Quantize(NeuralNetworkTransformer fittedModel, Quantization.QuantizationOptions options)
    {
        ArgumentNullException.ThrowIfNull(fittedModel);
        ArgumentNullException.ThrowIfNull(options);
        return new Quantization.QuantizationEstimator(Context, null, fittedModel, options);
    }

    /// <summary>
    /// Shares weights in a network that is already trained (Deep Compression's weight sharing): <c>Fit(data)</c> clusters each
    /// layer of a copy of <paramref name="fittedModel"/> (which is not changed) into at most k shared values by k-means, keeps
    /// pruned zeros at zero, and fine-tunes the shared values on the data. The estimator's <c>Report</c> gives distinct values,
    /// bits per weight and bytes per layer.
    /// </summary>
    /// <param name="fittedModel">The trained (possibly pruned) network.</param>
    /// <param name="options">Clusters per layer, initialization, layers kept in float32 and fine-tuning settings.</param>
    public Clustering.WeightClusteringEstimator ClusterWeights(NeuralNetworkTransformer fittedModel, Clustering.WeightClusteringOptions options)
    {
        ArgumentNullException.ThrowIfNull(fittedModel);
        ArgumentNullException.ThrowIfNull(options);
        return new Clustering.WeightClusteringEstimator(Context, null, fittedModel, options);
    }

    /// <summary>
    /// Prunes the network inside a fitted pipeline (a <c>TransformerChain</c> such as <c>MapValueToKey → NormalizeMinMax → network →
    /// MapKeyToValue</c>, nested chains included, holding exactly one network of this library): <c>Fit(rawData)</c> runs the
    /// pipeline's transforms before the network, prunes and fine-tunes a copy of the network, and returns the same pipeline
    /// with only the network replaced. The estimator's <c>Report</c> says how sparse each layer became.
    /// </summary>
    /// <param name="fittedPipeline">The fitted pipeline (not changed).</param>
    /// <param name="options">Schedule, granularity, layers to keep dense, per-layer targets, fine-tuning settings and teacher (a teacher pipeline scores the same raw rows).</param>
    /// <exception cref="ArgumentException">The pipeline holds no network of this library, or more than one (the message lists what it holds).</exception>
    public PipelineStageEstimator<Pruning.PruningReport> Prune(ITransformer fittedPipeline, Pruning.PruningOptions options)
    {
        ArgumentNullException.ThrowIfNull(fittedPipeline);
        ArgumentNullException.ThrowIfNull(options);
        var copy = options.Clone();
        return new PipelineStageEstimator<Pruning.PruningReport>(Context, fittedPipeline, null,
            (ml, network) => new Pruning.PruningEstimator(ml, null, network, copy), copy, nameof(Pruning.PruningOptions));
    }

    /// <summary>
    /// Quantizes the network inside a fitted pipeline holding exactly one network of this library: <c>Fit(rawData)</c> runs the
    /// pipeline's transforms before the network, quantizes a copy of it (calibrating on those rows) and returns the same
    /// pipeline with only the network replaced.
    /// </summary>
    /// <param name="fittedPipeline">The fitted pipeline (not changed).</param>
    /// <param name="options">Mode, weight granularity, calibration and quantization-aware training settings.</param>
    /// <exception cref="ArgumentException">The pipeline holds no network of this library, or more than one.</exception>
    public PipelineStageEstimator<Quantization.QuantizationReport> Quantize(ITransformer fittedPipeline, Quantization.QuantizationOptions options)
    {
        ArgumentNullException.ThrowIfNull(fittedPipeline);
        ArgumentNullException.ThrowIfNull(options);
        var copy = options.Clone();
        return new PipelineStageEstimator<Quantization.QuantizationReport>(Context, fittedPipeline, null,
            (ml, network) => new Quantization.QuantizationEstimator(ml, null, network, copy), null, nameof(Quantization.QuantizationOptions));
    }

    /// <summary>
    /// Shares weights in the network inside a fitted pipeline holding exactly one network of this library: <c>Fit(rawData)</c>
    /// runs the pipeline's transforms before the network, clusters and fine-tunes a copy of it, and returns the same pipeline
    /// with only the network replaced.
    /// </summary>
    /// <param name="fittedPipeline">The fitted pipeline (not changed).</param>
    /// <param name="options">Clusters per layer, initialization, layers kept in float32, fine-tuning settings and teacher (a teacher pipeline scores the same raw rows).</param>
    /// <exception cref="ArgumentException">The pipeline holds no network of this library, or more than one.</exception>
    public PipelineStageEstimator<Clustering.WeightClusteringReport> ClusterWeights(ITransformer fittedPipeline, Clustering.WeightClusteringOptions options)
    {
        ArgumentNullException.ThrowIfNull(fittedPipeline);
        ArgumentNullException.ThrowIfNull(options);
        var copy = options.Clone();
        return new PipelineStageEstimator<Clustering.WeightClusteringReport>(Context, fittedPipeline, null,
            (ml, network) => new Clustering.WeightClusteringEstimator(ml, null, network, copy), copy, nameof(Clustering.WeightClusteringOptions));
    }

    /// <summary>
    /// Continues training the network inside a fitted pipeline holding exactly one network of this library on new raw rows:
    /// <c>Fit(newRawData)</c> runs the pipeline's fitted transforms before the network on the new rows (they are not refitted),
    /// continues a copy of the network as <see cref="ContinueTraining(NeuralNetworkTransformer, Incremental.ContinueTrainingOptions?)"/>
    /// does, and returns the same pipeline with only the network replaced, ready to be continued again.
    /// </summary>
    /// <param name="previousPipeline">The fitted pipeline (not changed).</param>
    /// <param name="options">Strategies, epochs, learning rate, replay budget, LwF and EWC settings.</param>
    /// <exception cref="ArgumentException">The pipeline holds no network of this library, or more than one.</exception>
    public PipelineStageEstimator<Incremental.ContinueTrainingReport> ContinueTraining(ITransformer previousPipeline, Incremental.ContinueTrainingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(previousPipeline);
        var copy = (options ?? new Incremental.ContinueTrainingOptions()).Clone();
        return new PipelineStageEstimator<Incremental.ContinueTrainingReport>(Context, previousPipeline, null,
            (ml, network) => new Incremental.ContinueTrainingEstimator(ml, network, copy), null, nameof(Incremental.ContinueTrainingOptions));
    }

    /// <summary>
    /// Knowledge distillation: <c>Fit(data)</c> trains a student network configured by <paramref name="studentOptions"/> on
    /// alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha) · cross-entropy with the labels. The teacher is
    /// any fitted model whose output has a <c>Score</c> column with one value per class (this library's networks, ML.NET's
    /// multiclass trainers, an ONNX model applied with <c>ApplyOnnxModel</c>); it runs batch by batch as the student trains.
    /// </summary>
    /// <param name="teacher">The fitted teacher.</param>
    /// <param name="studentOptions">The student's architecture and training settings.</param>
    /// <param name="temperature">Softmax temperature T &gt; 0 (default 4).</param>
    /// <param name="alpha">Weight of the teacher's term, in [0, 1] (default 0.9).</param>
    public Distillation.DistillationEstimator Distill(ITransformer teacher, NeuralNetworkOptions studentOptions, double temperature = 4, double alpha = 0.9) =>
        Distill(teacher, studentOptions, new Distillation.DistillationOptions { Temperature = temperature, Alpha = alpha });

    /// <summary>Knowledge distillation with every setting (score column, score kind, disk cache of the teacher's outputs).</summary>
    /// <param name="teacher">The fitted teacher.</param>
    /// <param name="studentOptions">The student's architecture and training settings.</param>
    /// <param name="options">Temperature, alpha, teacher column and cache settings.</param>
    public Distillation.DistillationEstimator Distill(ITransformer teacher, NeuralNetworkOptions studentOptions, Distillation.DistillationOptions options)
    {
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentNullException.ThrowIfNull(studentOptions);
        ArgumentNullException.ThrowIfNull(options);
        return new Distillation.DistillationEstimator(Context, teacher, studentOptions, options);
    }

    /// <summary>
    /// Knowledge distillation between whole pipelines, on RAW rows: <paramref name="teacherPipeline"/> is any fitted model with a
    /// <c>Score</c> column (a LightGBM or SDCA pipeline with its own normalizer and <c>MapValueToKey</c>, this library's network,
    /// an ONNX model) and scores the rows as they are; <paramref name="studentPipeline"/> is an estimator pipeline containing
    /// one network trainer of this library (for example <c>Concatenate → NormalizeMinMax → MapValueToKey → NeuralNetwork →
    /// MapKeyToValue</c>): its transforms prepare the student's own features and label, and its network learns from the
    /// teacher's scores of the same rows. <c>Fit(rawData)</c> returns the fitted student pipeline; <c>Report</c> says what was done.
    /// A teacher that cannot read the rows fails before any training, naming the column.
    /// </summary>
    /// <typeparam name="TTransformer">What the student pipeline fits to.</typeparam>
    /// <param name="teacherPipeline">The fitted teacher (not changed).</param>
    /// <param name="studentPipeline">The student's estimator pipeline.</param>
    /// <param name="options">Temperature, alpha, teacher column and cache settings.</param>
    public Distillation.PipelineDistillationEstimator<TTransformer> Distill<TTransformer>(ITransformer teacherPipeline, IEstimator<TTransformer> studentPipeline,
        Distillation.DistillationOptions options)
        where TTransformer : class, ITransformer
    {
        ArgumentNullException.ThrowIfNull(teacherPipeline);
        ArgumentNullException.ThrowIfNull(studentPipeline);
        ArgumentNullException.ThrowIfNull(options);
        return new Distillation.PipelineDistillationEstimator<TTransformer>(Context, teacherPipeline, studentPipeline, options);
    }

    /// <summary>
    /// Continues training a fitted network on new data (incremental learning): <c>Fit(newData)</c> trains a copy of
    /// <paramref name="previousModel"/> (which is not changed) from its weights and optimizer state, with the forgetting
    /// mitigation chosen in <see cref="Incremental.ContinueTrainingOptions.Strategies"/> (replay, learning without forgetting,
    /// EWC), growing the output layer when the new data's label has classes the model has not seen, keeping pruned weights
    /// at zero and re-quantizing a quantized model. The result carries its replay memory and EWC state (also in its
    /// checkpoint), so it can be continued again; the estimator's <c>Report</c> gives the memory carried forward. Binary and
    /// regression networks continue too (new data with the same Boolean or Single label; no class can be added): replay keeps
    /// a class-balanced sample (binary) or a uniform sample of rows with their targets (regression), LwF distills the previous
    /// model's logit (sigmoid, with the temperature) or prediction (squared error), EWC weighs parameters with the head's own
    /// Fisher information; DER++ (<see cref="Incremental.ContinueTrainingOptions.ReplayLogitWeight"/>) is multiclass only.
    /// </summary>
    /// <param name="previousModel">The model to continue (trained, compressed, loaded from a checkpoint, or from an earlier increment).</param>
    /// <param name="options">Strategies, epochs, learning rate, replay budget, LwF and EWC settings.</param>
    public Incremental.ContinueTrainingEstimator ContinueTraining(NeuralNetworkTransformer previousModel, Incremental.ContinueTrainingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(previousModel);
        return new Incremental.ContinueTrainingEstimator(Context, previousModel, options ?? new Incremental.ContinueTrainingOptions());
    }
}

/// <summary>Extension methods on <see cref="MLContext"/>.</summary>
public static class MLContextCompressionExtensions
{
    /// <summary>MLNet.Compression's estimators: training, pruning, quantization, weight sharing, distillation, incremental training.</summary>
    /// <param name="mlContext">The context.</param>
    public static CompressionCatalog Compression(this MLContext mlContext)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        return new CompressionCatalog(mlContext);
    }
}
