using TorchSharp;

namespace MLNet.Compression.Training;

/// <summary>
/// Long-lived scalars for TorchSharp calls. Overloads such as <c>add_(Tensor)</c> or <c>add_(Scalar)</c> create their
/// <c>alpha = 1</c> through an implicit conversion that nothing keeps alive, and the finalizer can free it while libtorch
/// reads it (intermittent "toFloat" assertion failures). Library code passes every scalar explicitly: constants from here,
/// others created with <c>using var s = value.ToScalar()</c>.
/// </summary>
internal static class Scalars
{
    public static readonly Scalar One = 1.0.ToScalar();

    public static readonly Scalar Zero = 0.0.ToScalar();
}
