using System.Diagnostics;
using System.Runtime.InteropServices;

namespace MLNet.Compression.Memory;

/// <summary>
/// Measures the process's peak resident memory over a span of work. On Linux the kernel's high-water mark (VmHWM) is reset
/// at the start (writing 5 to /proc/self/clear_refs) so the figure belongs to that span; elsewhere it is the process peak.
/// </summary>
internal sealed class PeakMemory
{
    private readonly bool reset;

    private PeakMemory(bool reset, long startBytes)
    {
        this.reset = reset;
        StartBytes = startBytes;
    }

    /// <summary>Resident bytes when tracking started.</summary>
    public long StartBytes { get; }

    public static PeakMemory Start()
    {
        bool reset = false;
        if (OperatingSystem.IsLinux())
        {
            try
            {
                File.WriteAllText("/proc/self/clear_refs", "5");
                reset = true;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }
        return new PeakMemory(reset, CurrentBytes());
    }

    /// <summary>Peak resident bytes since <see cref="Start"/> (or of the whole process where the peak cannot be reset).</summary>
    public long PeakBytes()
    {
        if (OperatingSystem.IsLinux() && ReadStatus("VmHWM") is long hwm)
            return hwm;
        using var p = Process.GetCurrentProcess();
        return p.PeakWorkingSet64;
    }

    /// <summary>Whether the peak covers only the tracked span.</summary>
    public bool IsSpanPeak => reset;

    public static long CurrentBytes()
    {
        if (OperatingSystem.IsLinux() && ReadStatus("VmRSS") is long rss)
            return rss;
        using var p = Process.GetCurrentProcess();
        return p.WorkingSet64;
    }

    private static long? ReadStatus(string key)
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith(key + ":", StringComparison.Ordinal))
                {
                    var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    return long.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
                }
        }
        catch (IOException)
        {
        }
        return null;
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
        try
        {
            if (Nvml.nvmlInit_v2() != 0)
                return null;
            try
            {
                if (Nvml.nvmlDeviceGetHandleByIndex_v2((uint)deviceIndex, out var device) != 0)
                    return null;
                if (Nvml.nvmlDeviceGetMemoryInfo(device, out var info) != 0)
                    return null;
                return (long)info.Used;
            }
            finally
            {
                Nvml.nvmlShutdown();
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            return null;
        }
    }

    private static class Nvml
    {
        // Resolved by name below: drivers ship libnvidia-ml.so.1 (Linux) and nvml.dll (Windows).
        private const string Library = "nvidia-ml";

        static Nvml()
        {
            NativeLibrary.SetDllImportResolver(typeof(Nvml).Assembly, (name, assembly, path) =>
            {
                if (name != Library)
                    return IntPtr.Zero;
                foreach (var candidate in OperatingSystem.IsWindows() ? new[] { "nvml.dll" } : ["libnvidia-ml.so.1", "libnvidia-ml.so"])
                    if (NativeLibrary.TryLoad(candidate, assembly, path, out var handle))
                        return handle;
                return IntPtr.Zero;
            });
        }

        [StructLayout(LayoutKind.Sequential)]
        public struct MemoryInfo
        {
            public ulong Total;
            public ulong Free;
            public ulong Used;
        }

        [DllImport(Library, EntryPoint = "nvmlInit_v2")]
        public static extern int nvmlInit_v2();

        [DllImport(Library, EntryPoint = "nvmlShutdown")]
        public static extern int nvmlShutdown();

        [DllImport(Library, EntryPoint = "nvmlDeviceGetHandleByIndex_v2")]
        public static extern int nvmlDeviceGetHandleByIndex_v2(uint index, out IntPtr device);

        [DllImport(Library, EntryPoint = "nvmlDeviceGetMemoryInfo")]
        public static extern int nvmlDeviceGetMemoryInfo(IntPtr device, out MemoryInfo memory);
    }
}
