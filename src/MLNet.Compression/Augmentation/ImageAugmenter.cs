using TorchSharp;
using MLNet.Compression.Networks;
using static TorchSharp.torch;

namespace MLNet.Compression.Augmentation;

/// <summary>
/// Applies an <see cref="ImageAugmentation"/> to training batches: builds one sampling grid per row (an affine map from
/// <c>affine_grid</c>, plus a Gaussian-smoothed random displacement field when elastic) and resamples the batch with
/// <c>grid_sample</c> on the batch's device. The random draws of a batch come from a generator seeded by (run seed, epoch, step),
/// drawn on the CPU so that a seed gives the same distortions on every device; every tensor made here belongs to the caller's
/// dispose scope.
/// </summary>
internal sealed class ImageAugmenter
{
    private readonly ImageAugmentation augmentation;
    private readonly int channels;
    private readonly int height;
    private readonly int width;
    private readonly int seed;
    private readonly float[]? gaussian;

    private ImageAugmenter(ImageAugmentation augmentation, (int C, int H, int W) shape, int seed)
    {
        this.augmentation = augmentation;
        (channels, height, width) = shape;
        this.seed = seed;
        if (augmentation.IsElastic)
            gaussian = GaussianKernel(augmentation.ElasticSigma);
    }

    /// <summary>The augmenter for a run, or null when <paramref name="augmentation"/> is null. Throws when the input is not an image.</summary>
    public static ImageAugmenter? Create(ImageAugmentation? augmentation, NetworkArchitecture architecture, int seed)
    {
        if (augmentation is null)
            return null;
        augmentation.Validate();
        return new ImageAugmenter(augmentation, augmentation.ResolveShape(architecture.InputShape), seed);
    }

    /// <summary>The image shape the batches are read as.</summary>
    public (int Channels, int Height, int Width) Shape => (channels, height, width);

    /// <summary>
    /// Returns the distorted batch, [rows, channels·height·width] like <paramref name="x"/> (float32, on its device). The draw
    /// depends only on the run's seed, <paramref name="epoch"/> and <paramref name="step"/> (the global step of this batch).
    /// </summary>
    public Tensor Apply(Tensor x, int epoch, long step)
    {
        long n = x.shape[0];
        var device = x.device;
        ulong generatorSeed = unchecked((ulong)(uint)seed * 0x9E3779B97F4A7C15UL ^ (ulong)(uint)epoch * 0xC2B2AE3D27D4EB4FUL ^ (ulong)step * 0x165667B19E3779F9UL);
        using var generator = new Generator(generatorSeed, CPU);
        using var noGrad = no_grad();
        var images = x.reshape(n, channels, height, width);

        // Every scalar is created explicitly and kept alive until the end of the call (see Training.Scalars: an implicit
        // conversion can be finalized while libtorch still reads it).
        using var two = 2.ToScalar();
        using var one = 1.ToScalar();
        // Per row: uniform draws in [-1, 1) for rotation, scale, shift x, shift y.
        var u = rand([n, 4], ScalarType.Float32, CPU, generator: generator).mul_(two).sub_(one);
        using var radians = (augmentation.MaxRotationDegrees * Math.PI / 180).ToScalar();
        var angle = u[.., 0].mul(radians);
        using var midScale = ((augmentation.MinScale + augmentation.MaxScale) / 2).ToScalar();
        using var halfRange = ((augmentation.MaxScale - augmentation.MinScale) / 2).ToScalar();
        var inverseScale = u[.., 1].mul(halfRange).add_(midScale).reciprocal_();
        using var shiftScaleX = (augmentation.MaxShiftPixels * 2.0 / width).ToScalar();
        using var shiftScaleY = (augmentation.MaxShiftPixels * 2.0 / height).ToScalar();
        var shiftX = u[.., 2].mul(shiftScaleX);
        var shiftY = u[.., 3].mul(shiftScaleY);
        var cos = angle.cos().mul_(inverseScale);
        var sin = angle.sin().mul_(inverseScale);
        // Output → input map in normalised coordinates, corrected for the aspect ratio so rotations stay rotations.
        using var minusHw = (-((double)height / width)).ToScalar();
        using var wh = ((double)width / height).ToScalar();
        var theta = stack([cos, sin.mul(minusHw), shiftX, sin.mul(wh), cos, shiftY], 1).reshape(n, 2, 3);
        var grid = nn.functional.affine_grid(theta, [n, channels, height, width], align_corners: false);

        if (gaussian is not null)
        {
            // Simard et al. 2003: uniform displacements in [-1, 1] per pixel and axis, smoothed by a Gaussian of σ, times α (pixels).
            var field = rand([n * 2, 1, height, width], ScalarType.Float32, CPU, generator: generator).mul_(two).sub_(one);
            int k = gaussian.Length;
            var kernel = tensor(gaussian, ScalarType.Float32);
            field = nn.functional.conv2d(field, kernel.reshape(1, 1, k, 1), padding: [k / 2, 0]);
            field = nn.functional.conv2d(field, kernel.reshape(1, 1, 1, k), padding: [0, k / 2]);
            using var alpha = augmentation.ElasticAlpha.ToScalar();
            field = field.reshape(n, 2, height, width).permute(0, 2, 3, 1).mul(alpha);
            var toNormalised = tensor(new[] { 2f / width, 2f / height }, ScalarType.Float32);
            grid = grid.add(field.mul(toNormalised), Training.Scalars.One);
        }

        var warped = nn.functional.grid_sample(images, grid.to(device), GridSampleMode.Bilinear,
            GridSamplePaddingMode.Border, align_corners: false);
        return warped.reshape(n, (long)channels * height * width);
    }

    /// <summary>A normalised 1-D Gaussian of standard deviation <paramref name="sigma"/>, 2·⌈3σ⌉+1 taps.</summary>
    internal static float[] GaussianKernel(double sigma)
    {
        int radius = Math.Max(1, (int)Math.Ceiling(3 * sigma));
        var k = new float[2 * radius + 1];
        double sum = 0;
        for (int i = -radius; i <= radius; i++)
            sum += k[i + radius] = (float)Math.Exp(-i * i / (2 * sigma * sigma));
        for (int i = 0; i < k.Length; i++)
            k[i] = (float)(k[i] / sum);
        return k;
    }
}
