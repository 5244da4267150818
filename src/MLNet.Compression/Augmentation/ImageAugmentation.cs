using System.Globalization;

namespace MLNet.Compression;

/// <summary>
/// Random distortions applied to each training batch of images, on the training device, as the batch is trained: a random
/// affine transform (shift, rotation, scale) per row and, optionally, an elastic distortion (Simard, Steinkraus &amp; Platt 2003:
/// a random displacement field smoothed by a Gaussian). Every row gets a fresh draw in every epoch, from the run's seed, so a run
/// is repeatable; nothing is stored, and scoring, the ONNX export and the saved model are exactly those of a run without
/// augmentation. Set it on <see cref="NeuralNetworkOptions.Augmentation"/>; the fine-tuning stages (pruning, quantization-aware
/// training, weight clustering, distillation, continued training) inherit it from the model's options unless their own
/// <see cref="FineTuningOptions.Augmentation"/> says otherwise (<see cref="None"/> turns it off for a stage).
/// </summary>
/// <remarks>
/// The feature vector must be an image: its shape (channels, height, width) comes from a convolutional architecture's input shape
/// (for example <c>NetworkArchitecture.LeNet5()</c>) or is given with <see cref="WithImageShape"/> (for example 1×28×28 for
/// an MLP on MNIST). A flat input without a shape is refused when training starts. Pixels pulled in from outside the image take the
/// value of the nearest border pixel.
/// </remarks>
public sealed record ImageAugmentation
{
    private ImageAugmentation()
    {
    }

    /// <summary>Largest shift in pixels, up, down, left or right (drawn uniformly in [−max, max] for each axis).</summary>
    public double MaxShiftPixels { get; private init; }

    /// <summary>Largest rotation in degrees, either way (drawn uniformly in [−max, max]).</summary>
    public double MaxRotationDegrees { get; private init; }

    /// <summary>Smallest scale factor (1 = unchanged; drawn uniformly in [<see cref="MinScale"/>, <see cref="MaxScale"/>]).</summary>
    public double MinScale { get; private init; } = 1;

    /// <summary>Largest scale factor.</summary>
    public double MaxScale { get; private init; } = 1;

    /// <summary>
    /// Strength α of the elastic distortion in pixels: the smoothed uniform field in [−1, 1] is multiplied by it. 0 = no elastic
    /// distortion. Simard et al. used α = 34 with σ = 4 on MNIST.
    /// </summary>
    public double ElasticAlpha { get; private init; }

    /// <summary>Standard deviation σ in pixels of the Gaussian that smooths the elastic displacement field.</summary>
    public double ElasticSigma { get; private init; }

    /// <summary>Image channels; 0 = taken from the architecture's input shape.</summary>
    public int Channels { get; private init; }

    /// <summary>Image height in pixels; 0 = taken from the architecture's input shape.</summary>
    public int Height { get; private init; }

    /// <summary>Image width in pixels; 0 = taken from the architecture's input shape.</summary>
    public int Width { get; private init; }

    /// <summary>Whether the elastic distortion is on.</summary>
    public bool IsElastic => ElasticAlpha > 0;

    /// <summary>
    /// No distortion at all: training with it is training without augmentation (it needs no image shape). Its use is
    /// <see cref="FineTuningOptions.Augmentation"/>, where null means "the model's own augmentation" and <see cref="None"/> turns
    /// a model's augmentation off for one fine-tuning stage. Equal to <c>Affine(0, 0)</c>.
    /// </summary>
    public static ImageAugmentation None { get; } = new();

    /// <summary>Whether this draws no distortion (no shift, rotation, scaling or elastic field), as <see cref="None"/>.</summary>
    public bool IsNone => MaxShiftPixels == 0 && MaxRotationDegrees == 0 && MinScale == 1 && MaxScale == 1 && !IsElastic;

    /// <summary>
    /// A random affine transform per row: a shift of up to <paramref name="maxShiftPixels"/> pixels on each axis, a rotation of
    /// up to <paramref name="maxRotationDegrees"/> degrees and a scale factor in <paramref name="scale"/> (default (1, 1): none).
    /// </summary>
    /// <param name="maxShiftPixels">Largest shift in pixels (0 or more). Default 2.</param>
    /// <param name="maxRotationDegrees">Largest rotation in degrees, in [0, 180]. Default 10.</param>
    /// <param name="scale">Smallest and largest scale factor, both positive, smallest first; null for (1, 1).</param>
    public static ImageAugmentation Affine(double maxShiftPixels = 2, double maxRotationDegrees = 10, (double Min, double Max)? scale = null)
    {
        var (min, max) = scale ?? (1, 1);
        var a = new ImageAugmentation { MaxShiftPixels = maxShiftPixels, MaxRotationDegrees = maxRotationDegrees, MinScale = min, MaxScale = max };
        a.Validate();
        return a;
    }

    /// <summary>Elastic distortion alone (Simard et al. 2003): a Gaussian-smoothed random displacement field of strength α.</summary>
    /// <param name="alpha">Strength in pixels (positive). Default 34, as in the paper.</param>
    /// <param name="sigma">Smoothing in pixels (positive). Default 4, as in the paper.</param>
    public static ImageAugmentation Elastic(double alpha = 34, double sigma = 4) => new ImageAugmentation().WithElastic(alpha, sigma);

    /// <summary>This augmentation plus an elastic distortion of strength <paramref name="alpha"/> smoothed by <paramref name="sigma"/>.</summary>
    /// <param name="alpha">Strength in pixels (positive). Default 34.</param>
    /// <param name="sigma">Smoothing in pixels (positive). Default 4.</param>
    public ImageAugmentation WithElastic(double alpha = 34, double sigma = 4)
    {
        var a = this with { ElasticAlpha = alpha, ElasticSigma = sigma };
        if (!(alpha > 0) || !double.IsFinite(alpha))
            throw new ArgumentOutOfRangeException(nameof(alpha), alpha, "The elastic strength alpha must be a positive number of pixels (Simard et al. used 34).");
        if (!(sigma > 0) || !double.IsFinite(sigma) || sigma > 100)
            throw new ArgumentOutOfRangeException(nameof(sigma), sigma, "The elastic smoothing sigma must be a positive number of pixels up to 100 (Simard et al. used 4).");
        return a;
    }

    /// <summary>
    /// This augmentation for feature vectors that hold images of <paramref name="channels"/>×<paramref name="height"/>×<paramref name="width"/>
    /// values (channel-major, then rows), for architectures whose input shape is flat (an MLP).
    /// </summary>
    /// <param name="channels">Channels (1 for grey).</param>
    /// <param name="height">Height in pixels.</param>
    /// <param name="width">Width in pixels.</param>
    public ImageAugmentation WithImageShape(int channels, int height, int width)
    {
        if (channels <= 0)
            throw new ArgumentOutOfRangeException(nameof(channels), channels, "The image needs at least one channel.");
        if (height <= 1)
            throw new ArgumentOutOfRangeException(nameof(height), height, "The image height must be at least 2 pixels.");
        if (width <= 1)
            throw new ArgumentOutOfRangeException(nameof(width), width, "The image width must be at least 2 pixels.");
        return this with { Channels = channels, Height = height, Width = width };
    }

    /// <summary>Checks every setting; throws naming the bad one.</summary>
    internal void Validate()
    {
        if (!(MaxShiftPixels >= 0) || !double.IsFinite(MaxShiftPixels))
            throw new ArgumentOutOfRangeException("maxShiftPixels", MaxShiftPixels, "The largest shift must be a finite number of pixels, 0 or more.");
        if (!(MaxRotationDegrees >= 0 && MaxRotationDegrees <= 180))
            throw new ArgumentOutOfRangeException("maxRotationDegrees", MaxRotationDegrees, "The largest rotation must be in [0, 180] degrees.");
        if (!(MinScale > 0) || !(MaxScale >= MinScale) || !double.IsFinite(MaxScale))
            throw new ArgumentOutOfRangeException("scale", (MinScale, MaxScale),
                "The scale range must be two positive finite factors, the smaller first, for example (0.9, 1.1).");
        if (ElasticAlpha < 0 || ElasticSigma < 0)
            throw new ArgumentOutOfRangeException("alpha", ElasticAlpha, "The elastic strength and smoothing must not be negative.");
        if ((Channels == 0) != (Height == 0) || (Channels == 0) != (Width == 0) || Channels < 0 || Height < 0 || Width < 0)
            throw new ArgumentOutOfRangeException("channels", (Channels, Height, Width),
                "The image shape must be given whole (channels, height and width, all positive) or not at all.");
    }

    /// <summary>
    /// The image shape for an architecture input shape: the one given, else a [channels, height, width] input shape. Throws when
    /// the features are not an image or the given shape does not match their length.
    /// </summary>
    internal (int Channels, int Height, int Width) ResolveShape(IReadOnlyList<int> inputShape)
    {
        int length = inputShape.Aggregate(1, (a, b) => checked(a * b));
        if (Channels > 0)
        {
            if ((long)Channels * Height * Width != length)
                throw new ArgumentException(
                    $"NeuralNetworkOptions.Augmentation describes images of {Channels}x{Height}x{Width} = {(long)Channels * Height * Width:N0} values, " +
                    $"but the network's input has {length:N0} values ([{string.Join(", ", inputShape)}]). Give the shape of the images the feature vector holds.",
                    "Augmentation");
            return (Channels, Height, Width);
        }
        if (inputShape.Count == 3 && inputShape[1] > 1 && inputShape[2] > 1)
            return (inputShape[0], inputShape[1], inputShape[2]);
        throw new ArgumentException(
            $"NeuralNetworkOptions.Augmentation distorts images, but the network's input [{string.Join(", ", inputShape)}] is a flat feature vector, not " +
            "[channels, height, width]. If the features are images, say so with ImageAugmentation.WithImageShape(channels, height, width) " +
            "(for example WithImageShape(1, 28, 28) for MNIST); otherwise leave Augmentation null.",
            "Augmentation");
    }

    /// <inheritdoc />
    public override string ToString()
    {
        var parts = new List<string>();
        if (MaxShiftPixels > 0)
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"shift ±{MaxShiftPixels} px"));
        if (MaxRotationDegrees > 0)
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"rotation ±{MaxRotationDegrees}°"));
        if (MinScale != 1 || MaxScale != 1)
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"scale {MinScale}–{MaxScale}"));
        if (IsElastic)
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"elastic α={ElasticAlpha} σ={ElasticSigma}"));
        if (Channels > 0)
            parts.Add($"{Channels}x{Height}x{Width}");
        return parts.Count == 0 ? "no distortion" : string.Join(", ", parts);
    }
}
