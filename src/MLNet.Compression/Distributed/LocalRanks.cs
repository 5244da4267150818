namespace MLNet.Compression.Distributed;

/// <summary>
/// A rank's place on its machine, from the launcher's environment, and the CUDA device it trains on: one device per rank,
/// chosen by local rank, so that the ranks on one machine spread over its GPUs.
/// </summary>
internal static class LocalRanks
{
    /// <summary>Variables launchers set to a process's rank on its node: MPICH Hydra, Open MPI, Slurm, MVAPICH2, Cray PALS, PMIx.</summary>
    internal static readonly string[] LocalRankVariables =
        ["MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MV2_COMM_WORLD_LOCAL_RANK", "PALS_LOCAL_RANKID", "PMI_LOCAL_RANK", "PMIX_LOCAL_RANK"];

    /// <summary>Variables launchers set to the number of processes on a node.</summary>
    internal static readonly string[] LocalSizeVariables =
        ["MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "MV2_COMM_WORLD_LOCAL_SIZE", "PALS_LOCAL_SIZE", "PMI_LOCAL_SIZE", "PMIX_LOCAL_SIZE"];

    /// <summary>The first local rank a launcher variable gives, or null.</summary>
    public static int? FromEnvironment(Func<string, string?> variable) => First(LocalRankVariables, variable);

    /// <summary>The number of ranks on this node a launcher variable gives, or null.</summary>
    public static int? LocalSizeFromEnvironment(Func<string, string?> variable) => First(LocalSizeVariables, variable);

    private static int? First(string[] names, Func<string, string?> variable)
    {
        foreach (var name in names)
            if (int.TryParse(variable(name), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int value) && value >= 0)
                return value;
        return null;
    }

    /// <summary>
    /// The device a rank trains on. CPU stays CPU. <see cref="TrainingDevice.Auto"/> and <see cref="TrainingDevice.Cuda"/> pick
    /// CUDA device <c>(base + localRank) mod deviceCount</c>, where base is the requested index (Auto: MLContext.GpuDeviceId,
    /// default 0): with one rank per GPU on each machine, local rank r uses GPU r. Returns a warning when ranks share a GPU.
    /// </summary>
    /// <param name="requested">The options' device.</param>
    /// <param name="gpuDeviceId">MLContext.GpuDeviceId.</param>
    /// <param name="localRank">This rank's local rank.</param>
    /// <param name="localSize">Ranks on this machine, when known.</param>
    /// <param name="cudaDeviceCount">CUDA devices this process sees (0: none).</param>
    public static (TrainingDevice Device, string? Warning) DeviceFor(TrainingDevice requested, int? gpuDeviceId, int localRank, int? localSize, int cudaDeviceCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(localRank);
        if (requested.Kind == TrainingDeviceKind.Cpu || cudaDeviceCount <= 0)
            return (requested, null); // CPU, or no CUDA: device selection reports the missing GPU as it does for one process
        int baseIndex = requested.Kind == TrainingDeviceKind.Cuda ? requested.Index : gpuDeviceId ?? 0;
        int index = (baseIndex + localRank) % cudaDeviceCount;
        string? warning = localSize is int n && n > cudaDeviceCount
            ? $"{n} ranks run on this machine but it has {cudaDeviceCount} CUDA device(s): ranks share GPUs (local rank {localRank} uses cuda:{index}). Start at most one rank per GPU."
            : null;
        return (TrainingDevice.Cuda(index), warning);
    }
}
