namespace MLNet.Compression.Networks;

/// <summary>
/// Describes the hidden layers of a network and how the feature vector is shaped on input.
/// The trainer appends the output layer (one unit per class) and checks that the feature column has
/// exactly <c>product(InputShape)</c> values.
/// </summary>
public sealed class NetworkArchitecture
{
    /// <summary>Creates an architecture from an input shape and hidden layers.</summary>
    /// <param name="name">A short display name, used in reports.</param>
    /// <param name="inputShape">Shape of one example: [features] for dense networks, [channels, height, width] for convolutional ones.</param>
    /// <param name="layers">Hidden layers in order.</param>
    public NetworkArchitecture(string name, IReadOnlyList<int> inputShape, IReadOnlyList<LayerSpec> layers)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(inputShape);
        ArgumentNullException.ThrowIfNull(layers);
        if (inputShape.Count is not (1 or 3) || inputShape.Any(d => d <= 0))
            throw new ArgumentException(
                $"The input shape must be [features] or [channels, height, width] with positive sizes, but was [{string.Join(", ", inputShape)}].",
                nameof(inputShape));
        long length = 1;
        foreach (var d in inputShape)
            length *= d;
        if (length > Array.MaxLength)
            throw new ArgumentException(
                $"The input shape [{string.Join(", ", inputShape)}] has {length:N0} values, more than one feature vector can hold ({Array.MaxLength:N0}).",
                nameof(inputShape));
        if (layers.Any(l => l is null))
            throw new ArgumentException("The layer list contains a null entry.", nameof(layers));
        Name = name;
        InputShape = inputShape.ToArray();
        Layers = layers.ToArray();
    }

    /// <summary>A short display name, used in reports.</summary>
    public string Name { get; }

    /// <summary>Shape of one example: [features] or [channels, height, width].</summary>
    public IReadOnlyList<int> InputShape { get; }

    /// <summary>Hidden layers in order; the output layer is added by the trainer.</summary>
    public IReadOnlyList<LayerSpec> Layers { get; }

    /// <summary>Number of values in one example's feature vector.</summary>
    public int InputLength => InputShape.Aggregate(1, (a, b) => checked(a * b));

    /// <summary>
    /// A multilayer perceptron over flat features: one dense ReLU layer per entry of <paramref name="hiddenUnits"/>.
    /// <c>Mlp(300, 100)</c> is LeNet-300-100 (266,610 parameters on MNIST).
    /// </summary>
    /// <param name="hiddenUnits">Units of each hidden layer; may be empty for a linear (softmax regression) model.</param>
    public static NetworkArchitecture Mlp(params int[] hiddenUnits) => Mlp(hiddenUnits, 784);

    /// <summary>A multilayer perceptron over <paramref name="inputLength"/> flat features.</summary>
    /// <param name="hiddenUnits">Units of each hidden layer.</param>
    /// <param name="inputLength">Number of input features.</param>
    public static NetworkArchitecture Mlp(int[] hiddenUnits, int inputLength)
    {
        ArgumentNullException.ThrowIfNull(hiddenUnits);
        if (inputLength <= 0)
            throw new ArgumentOutOfRangeException(nameof(inputLength), inputLength, "The input length must be positive.");
        foreach (var u in hiddenUnits)
            if (u <= 0)
                throw new ArgumentOutOfRangeException(nameof(hiddenUnits), u, "Every hidden layer needs a positive number of units.");
        var name = hiddenUnits.Length == 0 ? "Linear" : "MLP-" + string.Join("-", hiddenUnits);
        return new NetworkArchitecture(name, [inputLength], hiddenUnits.Select(u => (LayerSpec)new DenseLayer(u)).ToArray());
    }

    /// <summary>
    /// LeNet-5 as used by Han et al. (2015) and Caffe: conv 5×5×20, max-pool 2, conv 5×5×50, max-pool 2, dense 500
    /// (431,080 parameters on MNIST).
    /// </summary>
    /// <param name="channels">Input channels.</param>
    /// <param name="height">Input height in pixels.</param>
    /// <param name="width">Input width in pixels.</param>
    public static NetworkArchitecture LeNet5(int channels = 1, int height = 28, int width = 28) =>
        new("LeNet-5", [channels, height, width],
        [
            new Conv2dLayer(20, 5), new MaxPool2dLayer(2),
            new Conv2dLayer(50, 5), new MaxPool2dLayer(2),
            new FlattenLayer(), new DenseLayer(500),
        ]);

    /// <summary>
    /// A small depthwise-separable CNN (MobileNet-style blocks): conv 3×3×16 stride 2, then two blocks of depthwise 3×3
    /// followed by pointwise 1×1 (32, then 64 channels, the second block with stride 2), max-pool 2, then the output layer on the
    /// flattened 64×3×3 map (about 9,000 parameters on MNIST).
    /// </summary>
    /// <param name="channels">Input channels.</param>
    /// <param name="height">Input height in pixels.</param>
    /// <param name="width">Input width in pixels.</param>
    public static NetworkArchitecture DepthwiseSeparable(int channels = 1, int height = 28, int width = 28) =>
        new("DepthwiseSeparable", [channels, height, width],
        [
            new Conv2dLayer(16, 3, Stride: 2, Padding: 1),
            new Conv2dLayer(16, 3, Padding: 1, Depthwise: true), new Conv2dLayer(32, 1),
            new Conv2dLayer(32, 3, Stride: 2, Padding: 1, Depthwise: true), new Conv2dLayer(64, 1),
            new MaxPool2dLayer(2), new FlattenLayer(),
        ]);

    /// <inheritdoc />
    public override string ToString() => $"{Name} [{string.Join("x", InputShape)}]";
}
