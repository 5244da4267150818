namespace MLNet.Compression.Networks;

/// <summary>
/// Describes the hidden layers of a network and how the feature vector is shaped on input.
/// The trainer appends the output layer (one unit per class) and checks that the feature column has
/// exactly <c>product(InputShape)</c> values, except for an architecture whose input size comes from the data
/// (<see cref="InputFromData"/>, e.g. <c>Mlp(128, 64)</c>), which takes the feature column's size at <c>Fit</c>.
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

    /// <summary>
    /// Whether the input size is taken from the feature column when training starts (<see cref="Mlp(int[])"/>): the trained
    /// network's architecture then has the column's size as <see cref="InputShape"/>. Until then <see cref="InputShape"/> holds
    /// a placeholder, [784] (an MNIST image), which is also the size used when a network is built without data.
    /// False for an architecture with a stated input (<see cref="Mlp(int[], int)"/>, <see cref="WithInput"/>, the image architectures).
    /// </summary>
    public bool InputFromData { get; private init; }

    /// <summary>Shape of one example: [features] or [channels, height, width].</summary>
    public IReadOnlyList<int> InputShape { get; }

    /// <summary>Hidden layers in order; the output layer is added by the trainer.</summary>
    public IReadOnlyList<LayerSpec> Layers { get; }

    /// <summary>Number of values in one example's feature vector.</summary>
    public int InputLength => InputShape.Aggregate(1, (a, b) => checked(a * b));

    /// <summary>
    /// A multilayer perceptron over flat features: one dense ReLU layer per entry of <paramref name="hiddenUnits"/>; the input
    /// size is the feature column's, taken at <c>Fit</c> (<see cref="InputFromData"/>). <c>Mlp(300, 100)</c> is LeNet-300-100
    /// (266,610 parameters on MNIST's 784 features); <c>Mlp(32)</c> on 4 features is a 4-32-K network.
    /// </summary>
    /// <param name="hiddenUnits">Units of each hidden layer; may be empty for a linear (softmax regression) model.</param>
    public static NetworkArchitecture Mlp(params int[] hiddenUnits)
    {
        var fixedInput = Mlp(hiddenUnits, PlaceholderInputLength);
        return new NetworkArchitecture(fixedInput.Name, fixedInput.InputShape, fixedInput.Layers) { InputFromData = true };
    }

    /// <summary>The input size an architecture whose input comes from the data has before it meets the data: 784 (28×28).</summary>
    private const int PlaceholderInputLength = 784;

    /// <summary>
    /// A multilayer perceptron over exactly <paramref name="inputLength"/> flat features (the trainer refuses data of another size).
    /// <c>Mlp(inputLength: 64, hiddenUnits: [128, 64])</c> is the same as <c>Mlp(128, 64).WithInput(64)</c>.
    /// </summary>
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

    /// <summary>
    /// This architecture over exactly <paramref name="inputLength"/> flat features: the same layers, a stated input size
    /// (<see cref="InputFromData"/> false). Only for architectures that read a flat vector (an MLP); an image architecture states its
    /// shape in its factory, e.g. <c>LeNet5(channels, height, width)</c>.
    /// </summary>
    /// <param name="inputLength">Number of input features.</param>
    public NetworkArchitecture WithInput(int inputLength)
    {
        if (inputLength <= 0)
            throw new ArgumentOutOfRangeException(nameof(inputLength), inputLength, "The input length must be positive.");
        if (InputShape.Count != 1)
            throw new InvalidOperationException(
                $"Architecture '{Name}' reads images of {DescribeShape(InputShape)}; state another image shape in its factory " +
                $"(e.g. NetworkArchitecture.{FactoryName}(channels: 1, height: 8, width: 8)) instead of WithInput.");
        return new NetworkArchitecture(Name, [inputLength], Layers);
    }

    /// <summary>
    /// The architecture to train on <paramref name="featureColumnName"/> of <paramref name="schema"/>: itself with the column's size as
    /// input when <see cref="InputFromData"/>, else itself when the sizes match; otherwise an error that says what to write.
    /// </summary>
    internal NetworkArchitecture ForFeatures(Microsoft.ML.DataViewSchema schema, string featureColumnName)
    {
        var column = Training.SchemaValidation.FeatureColumn(schema, featureColumnName, 0);
        int size = ((Microsoft.ML.Data.VectorDataViewType)column.Type).Size;
        if (InputFromData)
            return WithInput(size);
        if (size == InputLength)
            return this;
        string fix;
        if (InputShape.Count == 1)
        {
            var hidden = string.Join(", ", Layers.OfType<DenseLayer>().Select(d => d.Units));
            fix = Layers.All(l => l is DenseLayer { Activation: Activation.Relu })
                ? $"Write NetworkArchitecture.Mlp({hidden}) to take the input size from the data, or NetworkArchitecture.Mlp({hidden}).WithInput({size})."
                : $"Give the architecture an input of {size} (new NetworkArchitecture(name, [{size}], layers), or .WithInput({size})).";
        }
        else
        {
            fix = SuggestImageShape(size) is { } shape
                ? $"If each row is a {shape.C}×{shape.H}×{shape.W} image, write NetworkArchitecture.{FactoryName}(channels: {shape.C}, height: {shape.H}, width: {shape.W}); " +
                  "channels × height × width must equal the values per row."
                : $"State the image shape in the factory, NetworkArchitecture.{FactoryName}(channels, height, width), so that channels × height × width = {size}, " +
                  "or use NetworkArchitecture.Mlp(...) for data that is not an image.";
        }
        throw new ArgumentOutOfRangeException(featureColumnName,
            $"The feature column '{featureColumnName}' has {size} values per row, but architecture '{Name}' takes " +
            (InputShape.Count == 1 ? $"{InputLength} inputs. " : $"images of {DescribeShape(InputShape)} = {InputLength} values. ") + fix);
    }

    private string FactoryName => Name switch
    {
        "LeNet-5" => nameof(LeNet5),
        "DepthwiseSeparable" => nameof(DepthwiseSeparable),
        _ => Name,
    };

    private static string DescribeShape(IReadOnlyList<int> shape) =>
        shape.Count == 3 ? $"{shape[0]} channel(s) × {shape[1]} × {shape[2]} pixels" : string.Join("×", shape);

    /// <summary>A square image shape with 1 or 3 channels whose size is <paramref name="size"/>, if there is one.</summary>
    private static (int C, int H, int W)? SuggestImageShape(int size)
    {
        foreach (int c in new[] { 1, 3 })
        {
            if (size % c != 0)
                continue;
            int side = (int)Math.Round(Math.Sqrt(size / c));
            if (side * side * c == size)
                return (c, side, side);
        }
        return null;
    }

    /// <inheritdoc />
    public override string ToString() => InputFromData ? $"{Name} [input from data]" : $"{Name} [{string.Join("x", InputShape)}]";
}
