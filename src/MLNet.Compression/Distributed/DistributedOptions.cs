namespace MLNet.Compression;

/// <summary>
/// Data-parallel training across the processes of an MPI job (set <see cref="NeuralNetworkOptions.Distributed"/> to
/// <see cref="Mpi"/>). Start the program with MPICH's <c>mpiexec -n N</c> (or <c>srun</c>, or a host file for several
/// machines); every rank runs the same program, reads the same data, and:
/// <list type="bullet">
/// <item>starts from rank 0's weights (broadcast before the first step);</item>
/// <item>reads the same shuffled row order (shared seed) in global batches of <see cref="NeuralNetworkOptions.BatchSize"/> ×
/// ranks rows and trains on its own share of each (<see cref="NeuralNetworkOptions.BatchSize"/> is the batch <b>per rank</b>,
/// as in Horovod and PyTorch DDP; raise the learning rate yourself if you want the linear-scaling rule);</item>
/// <item>averages the gradients with one MPI <c>Allreduce</c> per step, so every rank takes the same optimizer step and the
/// weights stay identical without being sent;</item>
/// <item>reports loss, accuracy and validation figures summed over all ranks, so early stopping agrees everywhere;</item>
/// <item>writes files only on rank 0: <c>SaveAtomically</c>, <c>SaveCheckpoint</c> and <c>SaveOnnx</c> do nothing on the other
/// ranks, so the same program runs unchanged with one or many processes.</item>
/// </list>
/// It is not automatic: a program started by <c>mpiexec</c> without this option trains one independent model per process
/// (and logs a warning saying so). Every compression stage that fine-tunes inherits the option from the model's training options.
/// </summary>
public sealed class DistributedOptions
{
    /// <summary>
    /// The environment variable that names the MPI library to load (a file name such as <c>libmpich.so.12</c> or a full path),
    /// used when <see cref="LibraryPath"/> is not set.
    /// </summary>
    public const string LibraryEnvironmentVariable = "MLNET_COMPRESSION_MPI_LIBRARY";

    /// <summary>
    /// Data-parallel training over MPI. Needs an MPI with the MPICH ABI: MPICH (Debian/Ubuntu <c>apt-get install mpich</c>),
    /// Intel MPI, Cray MPICH, or MS-MPI on Windows. Open MPI is not ABI-compatible and is refused with a message.
    /// </summary>
    /// <param name="libraryPath">The MPI library to load; default: <see cref="LibraryEnvironmentVariable"/>, then the usual names
    /// (<c>libmpich.so.12</c>, <c>libmpi.so.12</c> on Linux; <c>msmpi.dll</c> on Windows).</param>
    public static DistributedOptions Mpi(string? libraryPath = null) => new() { LibraryPath = libraryPath };

    /// <summary>
    /// The MPI library to load (file name or full path). Default (null): <see cref="LibraryEnvironmentVariable"/>, then the
    /// usual MPICH-ABI names. Only the first use in a process counts: MPI is initialised once per process.
    /// </summary>
    public string? LibraryPath { get; set; }

    /// <summary>
    /// How long one collective operation (an all-reduce of gradients, a broadcast, a metric reduction) may wait for the other
    /// ranks before this rank aborts the whole MPI job with a message naming the operation; a rank that hangs or dies then
    /// ends the job instead of leaving the others waiting forever. Default 10 minutes: more than any step plus the slowest
    /// rank's data loading should take.
    /// </summary>
    public TimeSpan CollectiveTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// Whether an exception thrown on one rank during training (bad data on that rank, a callback that throws, cancellation)
    /// aborts the whole MPI job (<c>MPI_Abort</c>, after printing the exception to standard error). Default true: the other
    /// ranks would otherwise wait for it in the next collective. Errors that every rank detects together (ranks disagree on
    /// the data or the options) are thrown on every rank instead, as ordinary exceptions.
    /// </summary>
    public bool AbortOnError { get; set; } = true;

    /// <summary>Returns a copy.</summary>
    public DistributedOptions Clone() => (DistributedOptions)MemberwiseClone();

    /// <summary>Throws naming the bad setting.</summary>
    internal void Validate()
    {
        if (CollectiveTimeout <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(CollectiveTimeout), CollectiveTimeout,
                "DistributedOptions.CollectiveTimeout must be positive (for example TimeSpan.FromMinutes(10)).");
        if (LibraryPath is not null && string.IsNullOrWhiteSpace(LibraryPath))
            throw new ArgumentException("DistributedOptions.LibraryPath must name a library (for example 'libmpich.so.12') or be null.", nameof(LibraryPath));
    }
}
