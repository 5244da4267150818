namespace MLNet.Compression.Data;

/// <summary>
/// Thrown when an IDX file (the format of the MNIST files) cannot be used: wrong magic number,
/// truncated data, images and labels that do not pair up, labels outside the class range, or images
/// of a size other than the one asked for. The message names the file, what is wrong and what to do.
/// </summary>
public sealed class IdxFormatException : IOException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="filePath">The file that is at fault (for a count mismatch, the images file).</param>
    /// <param name="message">What is wrong and what to do about it.</param>
    /// <param name="innerException">The underlying error, if any.</param>
    public IdxFormatException(string filePath, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        FilePath = filePath;
    }

    /// <summary>The file that is at fault.</summary>
    public string FilePath { get; }
}
