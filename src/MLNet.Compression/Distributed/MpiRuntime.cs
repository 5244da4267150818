using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using static MPI.Unsafe;

namespace MLNet.Compression.Distributed;

/// <summary>
/// This process's place in an MPI job, as data-parallel training sees it: rank, size, local rank, and a few collectives
/// for applications (sums and extremes of numbers, a barrier), e.g. to check that every rank holds the same weights.
/// MPI is initialised once per process, on first use (<see cref="Initialize"/> or a training run with
/// <see cref="NeuralNetworkOptions.Distributed"/> set), and finalised when the process exits. Every collective here is
/// guarded by a watchdog: one that waits longer than <see cref="DistributedOptions.CollectiveTimeout"/> aborts the whole job.
/// </summary>
public static class MpiRuntime
{
    private static readonly object Gate = new();
    private static MPI.Environment? environment;
    private static bool multipleThreads;
    private static int rank;
    private static int size = 1;
    private static int localRank;
    private static string library = string.Empty;
    private static string version = string.Empty;

    // Watchdog state: the operation in progress and when it began (Stopwatch ticks; 0 = none).
    private static long pendingSince;
    private static string pendingOperation = string.Empty;
    private static long timeoutTicks = (long)(TimeSpan.FromMinutes(10).TotalSeconds * Stopwatch.Frequency);
    private static Thread? watchdog;

    /// <summary>Whether this process has joined an MPI job (MPI is initialised and not finalised).</summary>
    public static bool IsInitialized => environment is not null && !MPI.Environment.Finalized;

    /// <summary>This process's rank in the job (0 when MPI is not initialised).</summary>
    public static int Rank => rank;

    /// <summary>The number of processes in the job (1 when MPI is not initialised).</summary>
    public static int Size => size;

    /// <summary>Whether this process is rank 0, the one that writes files (true when MPI is not initialised).</summary>
    public static bool IsRoot => rank == 0;

    /// <summary>
    /// This process's rank among the ranks on the same machine: from the launcher's environment (<c>MPI_LOCALRANKID</c>,
    /// <c>OMPI_COMM_WORLD_LOCAL_RANK</c>, <c>SLURM_LOCALID</c>, ...), else computed by comparing host names across ranks.
    /// Picks the CUDA device of a rank (see <see cref="NeuralNetworkOptions.Distributed"/>).
    /// </summary>
    public static int LocalRank => localRank;

    /// <summary>Figures of the last distributed training run in this process (null before one, or when it ran as a job of one).</summary>
    public static DistributedRunStatistics? LastRun { get; internal set; }

    /// <summary>The MPI library loaded and its version string (empty when MPI is not initialised).</summary>
    public static string LibraryDescription => IsInitialized ? $"{library} ({version})" : string.Empty;

    /// <summary>
    /// Joins the MPI job this process was started in (a job of one when started without <c>mpiexec</c>). Idempotent: later
    /// calls return at once (the first call's library choice stands).
    /// </summary>
    /// <param name="options">Which library to load and the collective timeout; default <see cref="DistributedOptions.Mpi"/>.</param>
    /// <exception cref="DllNotFoundException">No MPI library was found.</exception>
    /// <exception cref="NotSupportedException">The library found is Open MPI or not an MPI library.</exception>
    /// <exception cref="InvalidOperationException">MPI was already finalised in this process, or the launcher and the library do not match.</exception>
    public static void Initialize(DistributedOptions? options = null)
    {
        options ??= DistributedOptions.Mpi();
        options.Validate();
        lock (Gate)
        {
            SetTimeout(options.CollectiveTimeout);
            if (environment is not null)
                return;
            (library, version) = MpiLibrary.LoadAndMap(options.LibraryPath);
            if (MPI.Environment.Finalized)
                throw new InvalidOperationException("MPI was already finalised in this process; it can be initialised only once. Keep one process per training job.");
            string[]? args = null;
            environment = new MPI.Environment(ref args, MPI.Threading.Multiple);
            multipleThreads = MPI.Environment.Threading == MPI.Threading.Multiple;
            Check(MPI_Comm_rank(MPI_COMM_WORLD, out rank), "MPI_Comm_rank");
            Check(MPI_Comm_size(MPI_COMM_WORLD, out size), "MPI_Comm_size");
            AppDomain.CurrentDomain.ProcessExit += (_, _) => FinalizeMpi();
            int launched = LauncherSize(System.Environment.GetEnvironmentVariable);
            if (size == 1 && launched > 1)
                throw new InvalidOperationException(
                    $"This process was started as one of {launched} processes, but {library} reports a job of one: the launcher does not " +
                    "belong to this MPI (for example Open MPI's mpirun with MPICH's library). Start the program with MPICH's launcher " +
                    "(mpiexec.mpich, or srun --mpi=pmi2 under Slurm).");
            watchdog = new Thread(Watch) { IsBackground = true, Name = "MPI collective watchdog" };
            watchdog.Start();
            localRank = LocalRanks.FromEnvironment(System.Environment.GetEnvironmentVariable) ?? LocalRankFromHostNames();
        }
    }

    /// <summary>Sums <paramref name="value"/> over all ranks (every rank gets the sum).</summary>
    /// <param name="value">This rank's value.</param>
    public static double Sum(double value) => Reduce(value, MPI_SUM, "MPI_Allreduce(sum)");

    /// <summary>The largest <paramref name="value"/> over all ranks (every rank gets it).</summary>
    /// <param name="value">This rank's value.</param>
    public static double Max(double value) => Reduce(value, MPI_MAX, "MPI_Allreduce(max)");

    /// <summary>The smallest <paramref name="value"/> over all ranks (every rank gets it).</summary>
    /// <param name="value">This rank's value.</param>
    public static double Min(double value) => Reduce(value, MPI_MIN, "MPI_Allreduce(min)");

    /// <summary>Sums <paramref name="values"/> element-wise over all ranks, in place (one <c>MPI_Allreduce</c>; every rank gets the sums).</summary>
    /// <param name="values">This rank's values; the same length on every rank.</param>
    public static void SumInPlace(float[] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        SumInPlace(values, "MPI_Allreduce(sum)");
    }

    /// <summary>Sums <paramref name="values"/> element-wise over all ranks, in place (one <c>MPI_Allreduce</c>; every rank gets the sums).</summary>
    /// <param name="values">This rank's values; the same length on every rank.</param>
    public static void SumInPlace(double[] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        SumInPlace(values, "MPI_Allreduce(sum)");
    }

    /// <summary>Waits until every rank has called it.</summary>
    public static void Barrier()
    {
        RequireInitialized();
        Guarded("MPI_Barrier", () => Check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"));
    }

    /// <summary>How long <see cref="Abort"/> waits after printing, before <c>MPI_Abort</c>, for the launcher to forward the message.</summary>
    private static readonly TimeSpan AbortOutputGrace = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// Ends the whole MPI job: prints <paramref name="message"/> to standard error with this rank's number and calls
    /// <c>MPI_Abort</c>, which terminates every rank; without MPI it ends this process.
    /// </summary>
    /// <param name="message">Why the job ends.</param>
    /// <param name="exitCode">The exit status the launcher reports (non-zero).</param>
    public static void Abort(string message, int exitCode = 1)
    {
        Console.Error.WriteLine($"[rank {rank} of {size}] {message} Aborting the MPI job.");
        Console.Error.Flush();
        Console.Out.Flush();
        // The launcher forwards each rank's output through its own pipes and drops what it has not forwarded yet when
        // MPI_Abort tears the job down: give it a moment, so the reason reaches the user (an abort is not a hot path).
        Thread.Sleep(AbortOutputGrace);
        if (IsInitialized)
            MPI_Abort(MPI_COMM_WORLD, exitCode == 0 ? 1 : exitCode);
        System.Environment.Exit(exitCode == 0 ? 1 : exitCode);
    }

    /// <summary>The number of processes a launcher says it started (0 when none says so).</summary>
    internal static int LauncherSize(Func<string, string?> variable)
    {
        foreach (var name in new[] { "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE" })
            if (int.TryParse(variable(name), out int n) && n > 0)
                return n;
        return 0;
    }

    /// <summary>True on ranks other than 0 of a multi-process job: the file writers return without writing there.</summary>
    internal static bool SkipsWrites => IsInitialized && size > 1 && rank != 0;

    internal static void SetTimeout(TimeSpan timeout) => Interlocked.Exchange(ref timeoutTicks, (long)(timeout.TotalSeconds * Stopwatch.Frequency));

    /// <summary>Sums <paramref name="values"/> over all ranks, in place.</summary>
    internal static void SumInPlace(float[] values, string operation) => InPlace(values, MPI_FLOAT, MPI_SUM, operation);

    /// <summary>Sums <paramref name="values"/> over all ranks, in place.</summary>
    internal static void SumInPlace(double[] values, string operation) => InPlace(values, MPI_DOUBLE, MPI_SUM, operation);

    /// <summary>Element-wise maximum over all ranks, in place.</summary>
    internal static void MaxInPlace(double[] values, string operation) => InPlace(values, MPI_DOUBLE, MPI_MAX, operation);

    /// <summary>Element-wise minimum over all ranks, in place.</summary>
    internal static void MinInPlace(double[] values, string operation) => InPlace(values, MPI_DOUBLE, MPI_MIN, operation);

    /// <summary>Rank 0's <paramref name="values"/> into every rank's array (the arrays must have the same length everywhere).</summary>
    internal static void Broadcast(float[] values, string operation) => Broadcast(values, MPI_FLOAT, operation);

    /// <summary>Rank 0's <paramref name="values"/> into every rank's array (the arrays must have the same length everywhere).</summary>
    internal static void Broadcast(byte[] values, string operation) => Broadcast(values, MPI_BYTE, operation);

    /// <summary>Rank 0's <paramref name="values"/> into every rank's array (the arrays must have the same length everywhere).</summary>
    internal static void Broadcast(double[] values, string operation) => Broadcast(values, MPI_DOUBLE, operation);

    /// <summary>Every rank's <paramref name="mine"/>, concatenated in rank order.</summary>
    internal static double[] AllGather(double[] mine, string operation)
    {
        RequireInitialized();
        var all = new double[mine.Length * size];
        Pinned(mine, send => Pinned(all, receive => Guarded(operation, () =>
            Check(MPI_Allgather(send, mine.Length, MPI_DOUBLE, receive, mine.Length, MPI_DOUBLE, MPI_COMM_WORLD), operation))));
        return all;
    }

    private static double Reduce(double value, int op, string operation)
    {
        RequireInitialized();
        var buffer = new[] { value };
        InPlace(buffer, MPI_DOUBLE, op, operation);
        return buffer[0];
    }

    private static void InPlace(Array values, int datatype, int op, string operation)
    {
        RequireInitialized();
        // MPI_IN_PLACE is ((void*)-1) in the MPICH ABI (MPICH, MS-MPI, Intel MPI).
        Pinned(values, p => Guarded(operation, () => Check(MPI_Allreduce(new IntPtr(-1), p, values.Length, datatype, op, MPI_COMM_WORLD), operation)));
    }

    private static void Broadcast(Array values, int datatype, string operation)
    {
        RequireInitialized();
        Pinned(values, p => Guarded(operation, () => Check(MPI_Bcast(p, values.Length, datatype, 0, MPI_COMM_WORLD), operation)));
    }

    private static void Pinned(Array values, Action<IntPtr> action)
    {
        var handle = GCHandle.Alloc(values, GCHandleType.Pinned);
        try
        {
            action(handle.AddrOfPinnedObject());
        }
        finally
        {
            handle.Free();
        }
    }

    private static void Guarded(string operation, Action call)
    {
        Volatile.Write(ref pendingOperation, operation);
        Volatile.Write(ref pendingSince, Stopwatch.GetTimestamp());
        try
        {
            call();
        }
        finally
        {
            Volatile.Write(ref pendingSince, 0);
        }
    }

    private static void Watch()
    {
        while (true)
        {
            Thread.Sleep(250);
            long since = Volatile.Read(ref pendingSince);
            if (since == 0)
                continue;
            long waited = Stopwatch.GetTimestamp() - since;
            if (waited <= Volatile.Read(ref timeoutTicks) || Volatile.Read(ref pendingSince) != since)
                continue;
            string message = $"{Volatile.Read(ref pendingOperation)} waited {waited / (double)Stopwatch.Frequency:F0} s for the other ranks, longer than " +
                "DistributedOptions.CollectiveTimeout: another rank has hung, died or is not running the same training. ";
            Console.Error.WriteLine($"[rank {rank} of {size}] {message}Aborting the MPI job.");
            Console.Error.Flush();
            Thread.Sleep(AbortOutputGrace);
            if (multipleThreads)
                MPI_Abort(MPI_COMM_WORLD, 2);
            // Without MPI_THREAD_MULTIPLE, MPI_Abort may not be called from this thread: end this process; the launcher
            // sees a rank die without MPI_Finalize and ends the others.
            System.Environment.FailFast(message);
        }
    }

    private static void FinalizeMpi()
    {
        lock (Gate)
        {
            if (environment is null || MPI.Environment.Finalized)
                return;
            environment.Dispose();
        }
    }

    private static int LocalRankFromHostNames()
    {
        string host;
        try
        {
            host = Dns.GetHostName();
        }
        catch (System.Net.Sockets.SocketException)
        {
            host = System.Environment.MachineName;
        }
        // A 52-bit hash of the host name travels exactly in a double.
        ulong h = 1469598103934665603UL;
        foreach (char c in host)
            h = (h ^ c) * 1099511628211UL;
        double mine = h >> 12;
        var all = AllGather([mine], "MPI_Allgather(host names)");
        int local = 0;
        for (int r = 0; r < rank; r++)
            if (all[r] == mine)
                local++;
        return local;
    }

    private static void RequireInitialized()
    {
        if (!IsInitialized)
            throw new InvalidOperationException("MPI is not initialised in this process: call MpiRuntime.Initialize() first, or train with NeuralNetworkOptions.Distributed set.");
    }

    private static void Check(int code, string operation)
    {
        if (code != 0)
            throw new InvalidOperationException($"{operation} failed with MPI error code {code} on rank {rank} of {size}.");
    }
}
