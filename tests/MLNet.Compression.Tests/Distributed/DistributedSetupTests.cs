using System.Runtime.InteropServices;
using MLNet.Compression.Distributed;
using Xunit;

namespace MLNet.Compression.Tests.Distributed;

/// <summary>
/// The parts of distributed training that need no MPI job (runs in the test process, which never initialises MPI): local
/// rank from the launchers' variables, one CUDA device per rank, library resolution errors, option checks. The training
/// itself is tested under mpiexec in MLNet.Compression.DistributedTests.
/// </summary>
public sealed class DistributedSetupTests
{
    private static Func<string, string?> Env(params (string Name, string Value)[] variables) =>
        name => variables.FirstOrDefault(v => v.Name == name).Value;

    [Fact]
    public void LocalRankComesFromTheLaunchersVariables()
    {
        Assert.Equal(3, LocalRanks.FromEnvironment(Env(("MPI_LOCALRANKID", "3"))));                // MPICH Hydra
        Assert.Equal(1, LocalRanks.FromEnvironment(Env(("OMPI_COMM_WORLD_LOCAL_RANK", "1"))));     // Open MPI's launcher
        Assert.Equal(2, LocalRanks.FromEnvironment(Env(("SLURM_LOCALID", "2"))));                  // srun
        Assert.Equal(0, LocalRanks.FromEnvironment(Env(("MPI_LOCALRANKID", "0"), ("SLURM_LOCALID", "5")))); // Hydra first
        Assert.Null(LocalRanks.FromEnvironment(Env(("MPI_LOCALRANKID", "x"), ("PMI_RANK", "4"))));
        Assert.Equal(4, LocalRanks.LocalSizeFromEnvironment(Env(("MPI_LOCALNRANKS", "4"))));
        Assert.Equal(8, MpiRuntime.LauncherSize(Env(("PMI_SIZE", "8"))));
        Assert.Equal(0, MpiRuntime.LauncherSize(Env()));
    }

    [Fact]
    public void EachLocalRankTrainsOnItsOwnCudaDevice()
    {
        // Four ranks on a machine with four GPUs: rank r on cuda:r, whether the options say Auto or Cuda(0).
        for (int r = 0; r < 4; r++)
        {
            Assert.Equal(TrainingDevice.Cuda(r), LocalRanks.DeviceFor(TrainingDevice.Auto, null, r, 4, 4).Device);
            Assert.Equal(TrainingDevice.Cuda(r), LocalRanks.DeviceFor(TrainingDevice.Cuda(0), null, r, 4, 4).Device);
            Assert.Null(LocalRanks.DeviceFor(TrainingDevice.Auto, null, r, 4, 4).Warning);
        }
        // The requested index (or MLContext.GpuDeviceId for Auto) is an offset, wrapping around the devices.
        Assert.Equal(TrainingDevice.Cuda(0), LocalRanks.DeviceFor(TrainingDevice.Cuda(1), null, 1, 2, 2).Device);
        Assert.Equal(TrainingDevice.Cuda(3), LocalRanks.DeviceFor(TrainingDevice.Auto, 2, 1, 2, 4).Device);
        // More ranks than GPUs: shared, with a warning.
        var (shared, warning) = LocalRanks.DeviceFor(TrainingDevice.Auto, null, 2, 3, 2);
        Assert.Equal(TrainingDevice.Cuda(0), shared);
        Assert.Contains("share GPUs", warning);
        // CPU stays CPU; without CUDA the request is left for the usual device selection (Auto -> CPU, Cuda -> error or fallback).
        Assert.Equal(TrainingDevice.Cpu, LocalRanks.DeviceFor(TrainingDevice.Cpu, null, 1, 2, 2).Device);
        Assert.Equal(TrainingDevice.Auto, LocalRanks.DeviceFor(TrainingDevice.Auto, null, 1, 2, 0).Device);
        Assert.Throws<ArgumentOutOfRangeException>(() => LocalRanks.DeviceFor(TrainingDevice.Auto, null, -1, 2, 2));
    }

    [Fact]
    public void AMissingMpiLibraryIsReportedWithWhatToInstall()
    {
        var e = Assert.Throws<DllNotFoundException>(() => MpiLibrary.LoadAndMap("libno-such-mpi.so.12"));
        Assert.Contains("libno-such-mpi.so.12", e.Message);
        Assert.Contains("DistributedOptions.LibraryPath", e.Message);
        Assert.Contains("apt-get install mpich", e.Message);
    }

    [Fact]
    public void ALibraryThatIsNotMpiIsRefused()
    {
        if (!OperatingSystem.IsLinux())
            return; // libc.so.6 is the Linux C library
        var handle = NativeLibrary.Load("libc.so.6");
        var e = Assert.Throws<NotSupportedException>(() => MpiLibrary.CheckAbi(handle, "libc.so.6"));
        Assert.Contains("not an MPI library", e.Message);
    }

    [Fact]
    public void MpichPassesTheAbiCheckWhereItIsInstalled()
    {
        if (!NativeLibrary.TryLoad("libmpich.so.12", out var handle))
            return; // no MPICH here: nothing to check (CI installs it)
        string version = MpiLibrary.CheckAbi(handle, "libmpich.so.12");
        Assert.Contains("MPICH", version, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void BadDistributedOptionsAreRefusedNamingTheSetting()
    {
        var options = new NeuralNetworkOptions { Distributed = DistributedOptions.Mpi() };
        options.Distributed.CollectiveTimeout = TimeSpan.Zero;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => options.Validate());
        Assert.Equal("CollectiveTimeout", e.ParamName);
        options.Distributed = DistributedOptions.Mpi(" ");
        Assert.Equal("LibraryPath", Assert.Throws<ArgumentException>(() => options.Validate()).ParamName);
    }

    [Fact]
    public void OutsideAnMpiJobEveryRankIsRankZeroAndWritesFiles()
    {
        Assert.False(MpiRuntime.IsInitialized);
        Assert.Equal(0, MpiRuntime.Rank);
        Assert.Equal(1, MpiRuntime.Size);
        Assert.False(MpiRuntime.SkipsWrites);
        Assert.Throws<InvalidOperationException>(() => MpiRuntime.Sum(1));
    }
}
