namespace MLNet.Compression.Networks;

/// <summary>The non-linearity applied after a layer.</summary>
public enum Activation
{
    /// <summary>No activation: the layer is linear.</summary>
    None,

    /// <summary>Rectified linear unit, max(0, x).</summary>
    Relu,
}

/// <summary>
/// One hidden layer of a <see cref="NetworkArchitecture"/>. The output layer (a dense layer with one unit per class)
/// is appended by the trainer from the label's key count.
/// </summary>
public abstract record LayerSpec
{
    private protected LayerSpec()
    {
    }
}

/// <summary>A fully connected layer: y = activation(W·x + b).</summary>
/// <param name="Units">Number of output units (neurons); must be positive.</param>
/// <param name="Activation">Activation applied to the output.</param>
public sealed record DenseLayer(int Units, Activation Activation = Activation.Relu) : LayerSpec;

/// <summary>
/// A 2-D convolution over an input of shape [channels, height, width]. With <see cref="Depthwise"/> each input channel
/// is convolved with its own filter (groups = channels) and <see cref="OutChannels"/> must be a multiple of the input channels.
/// </summary>
/// <param name="OutChannels">Number of output channels (filters); must be positive.</param>
/// <param name="KernelSize">Side of the square kernel; must be positive.</param>
/// <param name="Stride">Stride in both directions; must be positive.</param>
/// <param name="Padding">Zero padding on each side; must be non-negative.</param>
/// <param name="Activation">Activation applied to the output.</param>
/// <param name="Depthwise">Whether the convolution is depthwise (one group per input channel).</param>
public sealed record Conv2dLayer(int OutChannels, int KernelSize, int Stride = 1, int Padding = 0,
    Activation Activation = Activation.Relu, bool Depthwise = false) : LayerSpec;

/// <summary>Max pooling over square windows.</summary>
/// <param name="KernelSize">Side of the pooling window; must be positive.</param>
/// <param name="Stride">Stride; when 0 it equals <paramref name="KernelSize"/>.</param>
public sealed record MaxPool2dLayer(int KernelSize, int Stride = 0) : LayerSpec;

/// <summary>Flattens a [channels, height, width] activation into a vector; needed between convolutional and dense layers.</summary>
public sealed record FlattenLayer : LayerSpec;
