using Microsoft.ML.Data;

namespace ModelConsumer;

/// <summary>One MNIST image: 784 pixels (28 x 28, row by row), each pixel / 255, as the model was trained on.</summary>
public sealed class ModelInput
{
    /// <summary>The input column the saved model reads.</summary>
    [VectorType(DigitImage.PixelCount)]
    public float[] Features { get; set; } = [];
}

/// <summary>What the saved model adds to a row.</summary>
public sealed class ModelOutput
{
    /// <summary>Probability of each class, in the order of the <c>PredictedLabel</c> key values ("0".."9").</summary>
    public float[] Score { get; set; } = [];

    /// <summary>
    /// The predicted class as an ML.NET key: 1..10 (0 would mean "missing"). The saved chain types the column as
    /// key&lt;uint, 10&gt; and annotates it with the class names; a key column maps to a <c>uint</c> field, and
    /// <see cref="Digits"/> turns the key into the digit it names.
    /// </summary>
    public uint PredictedLabel { get; set; }
}
