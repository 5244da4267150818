namespace MLNet.Compression.Augmentation;

/// <summary>
/// <see cref="ImageAugmentation"/> as a checkpoint stores it (<c>options.augmentation</c> in <c>checkpoint.json</c>), so continued
/// training and the fine-tuning stages of a reloaded model distort their batches as the model's own training did.
/// </summary>
internal sealed class CheckpointAugmentation
{
    public double MaxShiftPixels { get; set; }

    public double MaxRotationDegrees { get; set; }

    public double MinScale { get; set; } = 1;

    public double MaxScale { get; set; } = 1;

    public double ElasticAlpha { get; set; }

    public double ElasticSigma { get; set; }

    public int Channels { get; set; }

    public int Height { get; set; }

    public int Width { get; set; }

    public static CheckpointAugmentation? From(ImageAugmentation? a) => a is null ? null : new CheckpointAugmentation
    {
        MaxShiftPixels = a.MaxShiftPixels,
        MaxRotationDegrees = a.MaxRotationDegrees,
        MinScale = a.MinScale,
        MaxScale = a.MaxScale,
        ElasticAlpha = a.ElasticAlpha,
        ElasticSigma = a.ElasticSigma,
        Channels = a.Channels,
        Height = a.Height,
        Width = a.Width,
    };

    /// <summary>The augmentation these values describe, built (and checked) by the public factory methods; a broken rule throws their <see cref="ArgumentException"/>.</summary>
    internal ImageAugmentation ToAugmentation()
    {
        var a = ImageAugmentation.Affine(MaxShiftPixels, MaxRotationDegrees, (MinScale, MaxScale));
        if (ElasticAlpha > 0 || ElasticSigma > 0)
            a = a.WithElastic(ElasticAlpha, ElasticSigma);
        if (Channels != 0 || Height != 0 || Width != 0)
            a = a.WithImageShape(Channels, Height, Width);
        return a;
    }

    /// <summary>
    /// The augmentation, checked by the same rules as a new one; a bad stored value throws a
    /// <see cref="Training.CheckpointFormatException"/> naming the field (<c>options.augmentation.maxRotationDegrees</c>, ...;
    /// <paramref name="at"/> is the field's path, <c>recipe[0].clustering.augmentation</c> for a fine-tuning stage's own).
    /// All zeros read back as <see cref="ImageAugmentation.None"/>.
    /// </summary>
    public static ImageAugmentation? To(CheckpointAugmentation? c, string at = "options.augmentation")
    {
        if (c is null)
            return null;
        try
        {
            return c.ToAugmentation();
        }
        catch (ArgumentException e)
        {
            throw Training.Checkpoint.Fault(Training.Checkpoint.JsonEntry, at + (e.ParamName is { } p ? "." + p : string.Empty), e.Message, e);
        }
    }
}

/// <summary>
/// Writes and reads an <see cref="ImageAugmentation"/> in a checkpoint's recipe step (a fine-tuning stage's own
/// augmentation) in the same form as <c>options.augmentation</c>; a stored value that breaks a rule throws a
/// <see cref="System.Text.Json.JsonException"/> whose inner <see cref="ArgumentException"/> names the field.
/// </summary>
internal sealed class ImageAugmentationJsonConverter : System.Text.Json.Serialization.JsonConverter<ImageAugmentation>
{
    /// <inheritdoc />
    public override ImageAugmentation? Read(ref System.Text.Json.Utf8JsonReader reader, Type typeToConvert, System.Text.Json.JsonSerializerOptions options)
    {
        var stored = System.Text.Json.JsonSerializer.Deserialize<CheckpointAugmentation>(ref reader, options);
        if (stored is null)
            return null;
        try
        {
            return stored.ToAugmentation();
        }
        catch (ArgumentException e)
        {
            throw new System.Text.Json.JsonException(e.Message, e);
        }
    }

    /// <inheritdoc />
    public override void Write(System.Text.Json.Utf8JsonWriter writer, ImageAugmentation value, System.Text.Json.JsonSerializerOptions options) =>
        System.Text.Json.JsonSerializer.Serialize(writer, CheckpointAugmentation.From(value), options);
}
