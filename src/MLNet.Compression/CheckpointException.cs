namespace MLNet.Compression;

/// <summary>Thrown when a checkpoint file cannot be read: it names the file, the zip entry and the field that is wrong.</summary>
public sealed class CheckpointException : IOException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What is wrong and what to do.</param>
    /// <param name="inner">The underlying error, if any.</param>
    public CheckpointException(string message, Exception? inner = null) : base(message, inner)
    {
    }

    /// <summary>Creates the exception for a fault in one entry and field.</summary>
    /// <param name="message">What is wrong and what to do.</param>
    /// <param name="entryName">The zip entry at fault (for example <c>weights.bin</c>), or null when the file as a whole is.</param>
    /// <param name="fieldName">The field at fault (for example <c>options.batchSize</c> or <c>length</c>), or null.</param>
    /// <param name="inner">The underlying error, if any.</param>
    public CheckpointException(string message, string? entryName, string? fieldName, Exception? inner = null) : base(message, inner)
    {
        EntryName = entryName;
        FieldName = fieldName;
    }

    /// <summary>The zip entry at fault (<c>checkpoint.json</c>, <c>weights.bin</c>, <c>optimizer.bin</c>, <c>replay.bin</c>, <c>ewc.bin</c>), or null.</summary>
    public string? EntryName { get; }

    /// <summary>The field at fault within the entry (a JSON path such as <c>options.batchSize</c>, or <c>length</c>), or null.</summary>
    public string? FieldName { get; }
}
