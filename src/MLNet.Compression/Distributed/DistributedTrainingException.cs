namespace MLNet.Compression;

/// <summary>
/// Thrown on every rank of a distributed training job at once when the ranks found, with a collective, that they do not
/// run the same training: different data (row counts, feature size, class count), different options, or different
/// numbers of batches. The message lists each rank's value. Fix the program or the data so that every rank reads the
/// same <c>IDataView</c> with the same options.
/// </summary>
public sealed class DistributedTrainingException : InvalidOperationException
{
    /// <summary>Creates the exception with its message.</summary>
    /// <param name="message">What the ranks disagree on and what to do.</param>
    public DistributedTrainingException(string message) : base(message)
    {
    }

    /// <summary>Creates the exception with its message and cause.</summary>
    /// <param name="message">What went wrong.</param>
    /// <param name="innerException">The cause.</param>
    public DistributedTrainingException(string message, Exception innerException) : base(message, innerException)
    {
    }

    /// <summary>Creates the exception with a default message.</summary>
    public DistributedTrainingException() : base("The ranks of the distributed training job do not run the same training.")
    {
    }
}
