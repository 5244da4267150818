using System.Globalization;
using System.Text;
using MLNet.Compression.Networks;

namespace MLNet.Compression;

/// <summary>
/// Bytes a training run is expected to add to the process, made before any training by <see cref="MemoryReport.Estimate(NeuralNetworkOptions, int)"/>:
/// weights, gradients and optimizer state, the activations one batch keeps for the backward pass (by layer), the transient
/// gradients of the backward pass, the input buffers, and the copies written back when the run ends.
/// </summary>
public sealed class TrainingMemoryEstimate
{
    internal TrainingMemoryEstimate(NetworkModel model, int batchSize, OptimizerKind optimizer, TrainingPrecision precision, double momentum)
    {
        checked
        {
            Architecture = model.Architecture.Name;
            BatchSize = batchSize;
            Optimizer = optimizer;
            Precision = precision;
            Parameters = model.ParameterCount;
            int element = precision == TrainingPrecision.Float32 ? sizeof(float) : 2;
            bool mixed = precision != TrainingPrecision.Float32;
            ParameterBytes = Parameters * sizeof(float);
            GradientBytes = Parameters * sizeof(float);
            int slots = optimizer == OptimizerKind.Adam ? 2 : momentum > 0 ? 1 : 0;
            OptimizerStateBytes = slots * Parameters * sizeof(float);
            // Mixed precision: the compute copy of the weights and its gradients, both in 16 bits.
            LowPrecisionBytes = mixed ? 2 * Parameters * 2 : 0;

            var layers = new List<LayerActivation>();
            long widest = model.InputLength;
            foreach (var layer in model.Layers)
            {
                layers.Add(new LayerActivation(layer.Name, layer.ActivationElements, layer.ActivationElements * batchSize * element));
                widest = Math.Max(widest, ModelLayer.ShapeSize(layer.OutputShape));
            }
            Layers = layers;
            int classes = model.NumClasses;
            // The input batch in the training precision, the float32 logits and the loss's softmax and its gradient.
            ActivationBytesPerBatch = layers.Sum(l => l.Bytes) + (long)batchSize * model.InputLength * element + 3L * batchSize * classes * sizeof(float);
            // While the backward pass runs, the gradient arriving at the widest layer and the one it passes on are alive at once.
            BackwardTransientBytes = 2 * widest * batchSize * element;
            // Two batches read from the data view (managed float[] and labels): the training step's and the one the background
            // reader fills (BatchStream.Prefetch); the batch tensors share these arrays.
            InputBufferBytes = 2 * ((long)batchSize * model.InputLength * sizeof(float) + (long)batchSize * sizeof(long));
            // At the end: the weights written back into the model and the optimizer state serialised for the checkpoint.
            WriteBackBytes = ParameterBytes + OptimizerStateBytes;
            // Depthwise (grouped) convolutions: the CPU backend's backward pass works on copies of the layer's input and output
            // in its own blocked layout; the largest such pair is alive at once.
            long workspace = 0;
            foreach (var conv in model.Layers.OfType<ConvModelLayer>())
                if (conv.Groups > 1)
                    workspace = Math.Max(workspace, ModelLayer.ShapeSize(conv.InputShape) + ModelLayer.ShapeSize(conv.OutputShape));
            WorkspaceBytes = workspace * batchSize * element;
            RuntimeOverheadBytes = RuntimeOverhead;
        }
    }

    /// <summary>The architecture's name.</summary>
    public string Architecture { get; }

    /// <summary>Rows per batch.</summary>
    public int BatchSize { get; }

    /// <summary>The optimizer.</summary>
    public OptimizerKind Optimizer { get; }

    /// <summary>The training precision.</summary>
    public TrainingPrecision Precision { get; }

    /// <summary>Weights and biases, the output layer included.</summary>
    public long Parameters { get; }

    /// <summary>The float32 master weights.</summary>
    public long ParameterBytes { get; }

    /// <summary>One float32 gradient per parameter.</summary>
    public long GradientBytes { get; }

    /// <summary>Adam's two moments, or SGD's momentum buffer, in float32.</summary>
    public long OptimizerStateBytes { get; }

    /// <summary>Mixed precision only: the 16-bit compute copy of the weights and its 16-bit gradients.</summary>
    public long LowPrecisionBytes { get; }

    /// <summary>What each layer keeps for the backward pass for one batch (its output, and its pre-activation when it has an activation).</summary>
    public IReadOnlyList<LayerActivation> Layers { get; }

    /// <summary>Activations kept for one batch: every layer's, the input batch, the logits and the loss's softmax.</summary>
    public long ActivationBytesPerBatch { get; }

    /// <summary>Gradients alive at once during the backward pass: the two widest consecutive ones.</summary>
    public long BackwardTransientBytes { get; }

    /// <summary>The batch as read from the data view and its copy as a tensor.</summary>
    public long InputBufferBytes { get; }

    /// <summary>The trained weights copied back into the model and the optimizer state serialised when the run ends.</summary>
    public long WriteBackBytes { get; }

    /// <summary>Depthwise convolutions only: the backward pass's copies of the largest such layer's input and output, for one batch.</summary>
    public long WorkspaceBytes { get; }

    /// <summary>
    /// What any training run adds regardless of the network (the autograd engine, allocator caches and the data-reading buffers):
    /// 5 MiB, fitted on the CPU backend to the zoo measured in fresh processes (the benchmark command --memory-estimate).
    /// </summary>
    public long RuntimeOverheadBytes { get; }

    /// <summary>Bytes that depend on the batch size (activations, backward transients, depthwise workspace, input buffers).</summary>
    public long BatchBytes => ActivationBytesPerBatch + BackwardTransientBytes + WorkspaceBytes + InputBufferBytes;

    /// <summary>The whole estimate: what a training run adds to the process at its peak.</summary>
    public long TotalBytes => ParameterBytes + GradientBytes + OptimizerStateBytes + LowPrecisionBytes + BatchBytes + WriteBackBytes + RuntimeOverheadBytes;

    /// <summary>The constant of <see cref="RuntimeOverheadBytes"/>.</summary>
    internal const long RuntimeOverhead = 5L << 20;

    /// <inheritdoc />
    public override string ToString()
    {
        var sb = new StringBuilder();
        void Row(string name, long bytes) => sb.Append(CultureInfo.InvariantCulture, $"  {name,-40}{MemoryReport.FormatBytes(bytes)}\n");
        sb.Append(CultureInfo.InvariantCulture, $"Training memory estimate: {Architecture}, {Parameters:N0} parameters, batch {BatchSize}, {Optimizer}, {Precision}\n");
        Row("parameters (float32)", ParameterBytes);
        Row("gradients", GradientBytes);
        Row("optimizer state", OptimizerStateBytes);
        if (LowPrecisionBytes > 0)
            Row("16-bit weight copy and gradients", LowPrecisionBytes);
        foreach (var l in Layers)
            Row($"  activations {l.Layer}", l.Bytes);
        Row("activations per batch (all)", ActivationBytesPerBatch);
        Row("backward transients", BackwardTransientBytes);
        if (WorkspaceBytes > 0)
            Row("depthwise backward workspace", WorkspaceBytes);
        Row("input buffers", InputBufferBytes);
        Row("written back at the end", WriteBackBytes);
        Row("runtime overhead", RuntimeOverheadBytes);
        Row("total", TotalBytes);
        return sb.ToString();
    }
}

/// <summary>What one layer keeps for the backward pass for one batch.</summary>
/// <param name="Layer">The layer's name (dense1, conv1, pool1, ...).</param>
/// <param name="ElementsPerRow">Values kept per row.</param>
/// <param name="Bytes">Bytes for the whole batch in the training precision.</param>
public sealed record LayerActivation(string Layer, long ElementsPerRow, long Bytes);
