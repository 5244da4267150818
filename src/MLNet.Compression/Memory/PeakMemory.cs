using System.Diagnostics;
using System.Runtime.InteropServices;

namespace MLNet.Compression.Memory;

/// <summary>
/// Measures the process's peak resident memory over a span of work, through <see cref="Process.PeakWorkingSet64"/> (the
/// kernel's high-water mark, VmHWM, on Linux). On Linux that mark is reset at the start by writing 5 to
/// <c>/proc/self/clear_refs</c>, which <see cref="Process"/> cannot do, so the figure belongs to the span; elsewhere, or
/// where the write is refused, it is the peak of the whole process so far.
/// </summary>
internal sealed class PeakMemory
{
    private PeakMemory(long startBytes) => StartBytes = startBytes;

    /// <summary>Resident bytes when tracking started.</summary>
    public long StartBytes { get; }

    /// <summary>Resets the peak where the operating system allows it and records the resident bytes now.</summary>
    public static PeakMemory Start()
    {
        if (OperatingSystem.IsLinux())
        {
            try
            {
                File.WriteAllText("/proc/self/clear_refs", "5");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Not allowed here (some containers): the peak then covers the whole process.
            }
        }
        return new PeakMemory(CurrentBytes());
    }

    /// <summary>Peak resident bytes since <see cref="Start"/> (or of the whole process where the peak cannot be reset).</summary>
    public long PeakBytes()
    {
        using var process = Process.GetCurrentProcess();
        return process.PeakWorkingSet64;
    }

    /// <summary>Resident bytes now (<see cref="Process.WorkingSet64"/>: VmRSS on Linux).</summary>
    public static long CurrentBytes()
    {
        using var process = Process.GetCurrentProcess();
        return process.WorkingSet64;
    }
}

/// <summary>
/// GPU memory in use, read through NVML (libnvidia-ml, shipped with the NVIDIA driver): TorchSharp 0.107 exposes no CUDA
/// allocator statistics, so the device's used memory is sampled at epoch ends and the largest sample kept.
/// </summary>
internal static class GpuMemory
{
    public sealed class Tracker : IDisposable
    {
        private readonly int index;

        internal Tracker(int index)
        {
            this.index = index;
            Sample();
        }

        /// <summary>Largest used-memory sample in bytes, or null when NVML is unavailable.</summary>
        public long? PeakBytes { get; private set; }

        public void Sample()
        {
            if (UsedBytes(index) is long used)
                PeakBytes = Math.Max(PeakBytes ?? 0, used);
        }

        public void Dispose()
        {
        }
    }

    public static Tracker TrackPeak(int deviceIndex) => new(deviceIndex);

    /// <summary>Bytes in use on the device, or null where NVML cannot be loaded or answers with an error.</summary>
    public static long? UsedBytes(int deviceIndex)
    {
        if (Nvml.Instance is not { } nvml || nvml.Init() != 0)
            return null;
        try
        {
            if (nvml.GetHandleByIndex((uint)deviceIndex, out var device) != 0)
                return null;
            if (nvml.GetMemoryInfo(device, out var info) != 0)
                return null;
            return (long)info.Used;
        }
        finally
        {
            nvml.Shutdown();
        }
    }

    /// <summary>
    /// The four NVML entry points, loaded on first use with <see cref="NativeLibrary.TryLoad(string, out IntPtr)"/> and called
    /// through delegates: no <c>DllImport</c>, so no assembly-wide import resolver that would stand in the way of another
    /// one in this assembly. Drivers ship <c>libnvidia-ml.so.1</c> (Linux) and <c>nvml.dll</c> (Windows).
    /// </summary>
    private sealed class Nvml
    {
        private static readonly Lazy<Nvml?> Loaded = new(Load, LazyThreadSafetyMode.ExecutionAndPublication);

        private Nvml(IntPtr library)
        {
            Init = Function<InitDelegate>(library, "nvmlInit_v2");
            Shutdown = Function<ShutdownDelegate>(library, "nvmlShutdown");
            GetHandleByIndex = Function<GetHandleByIndexDelegate>(library, "nvmlDeviceGetHandleByIndex_v2");
            GetMemoryInfo = Function<GetMemoryInfoDelegate>(library, "nvmlDeviceGetMemoryInfo");
        }

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        public delegate int InitDelegate();

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        public delegate int ShutdownDelegate();

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        public delegate int GetHandleByIndexDelegate(uint index, out IntPtr device);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        public delegate int GetMemoryInfoDelegate(IntPtr device, out MemoryInfo memory);

        /// <summary>The loaded library, or null where NVML (or one of its functions) is not available.</summary>
        public static Nvml? Instance => Loaded.Value;

        public InitDelegate Init { get; }

        public ShutdownDelegate Shutdown { get; }

        public GetHandleByIndexDelegate GetHandleByIndex { get; }

        public GetMemoryInfoDelegate GetMemoryInfo { get; }

        [StructLayout(LayoutKind.Sequential)]
        public struct MemoryInfo
        {
            public ulong Total;
            public ulong Free;
            public ulong Used;
        }

        private static Nvml? Load()
        {
            foreach (string name in OperatingSystem.IsWindows() ? new[] { "nvml.dll" } : ["libnvidia-ml.so.1", "libnvidia-ml.so"])
            {
                if (!NativeLibrary.TryLoad(name, out IntPtr library))
                    continue;
                try
                {
                    return new Nvml(library);
                }
                catch (EntryPointNotFoundException)
                {
                    NativeLibrary.Free(library);
                }
            }
            return null;
        }

        private static T Function<T>(IntPtr library, string name)
            where T : Delegate
            => Marshal.GetDelegateForFunctionPointer<T>(NativeLibrary.GetExport(library, name));
    }
}
