namespace MLNet.Compression.Networks;

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
