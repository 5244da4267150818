using System.Runtime.InteropServices;
using MLNet.Compression.Memory;
using Xunit;

namespace MLNet.Compression.Tests.Memory;

/// <summary>Peak resident memory over a span (Process figures, peak reset through /proc on Linux) and the NVML probe.</summary>
public sealed class PeakMemoryTests
{
    [Fact]
    public void PeakBytes_CoversMemoryTouchedDuringTheSpan()
    {
        const int size = 64 << 20;
        var peak = PeakMemory.Start();
        Assert.True(peak.StartBytes > 0);
        IntPtr block = Touched(size);
        long during = PeakMemory.CurrentBytes();
        Marshal.FreeHGlobal(block);
        Assert.True(during >= peak.StartBytes + size / 2, $"resident {during} B after touching {size} B, {peak.StartBytes} B at the start");
        // The block is freed (unmapped) by now; the span's peak still counts it. (Not compared with `during` to the byte:
        // the kernel's RSS counters are per thread and synced lazily, so two readings can differ by a few hundred KB.)
        long peakBytes = peak.PeakBytes();
        Assert.True(peakBytes >= peak.StartBytes + size / 2, $"peak {peakBytes} B after touching {size} B, {peak.StartBytes} B at the start");
    }

    [Fact]
    public void PeakBytes_OnLinux_IsResetByStart()
    {
        if (!OperatingSystem.IsLinux() || !CanWriteClearRefs())
            return;
        // A large block made resident and freed (a native allocation this big is unmapped on free) raises the process
        // peak; a new span must not report it.
        IntPtr block = Touched(256 << 20);
        long processPeak = PeakMemory.Start().PeakBytes();
        Marshal.FreeHGlobal(block);
        var span = PeakMemory.Start();
        Assert.True(span.PeakBytes() < processPeak, $"the peak after a reset ({span.PeakBytes()} B) should be below the earlier one ({processPeak} B)");
    }

    [Fact]
    public void GpuProbe_LeavesTheAssemblysImportResolverFree()
    {
        // Without an NVIDIA driver the probe answers null; with one, a byte count. Either way it must not have claimed the
        // library assembly's one DllImport resolver, which other native interop (MPI.NET for distributed training) needs.
        long? used = GpuMemory.UsedBytes(0);
        Assert.True(used is null or >= 0);
        NativeLibrary.SetDllImportResolver(typeof(NeuralNetworkTrainer).Assembly, (_, _, _) => IntPtr.Zero);
    }

    /// <summary>Allocates <paramref name="size"/> native bytes and writes one byte per page, so every page is resident.</summary>
    private static IntPtr Touched(int size)
    {
        IntPtr block = Marshal.AllocHGlobal(size);
        for (int i = 0; i < size; i += 4096)
            Marshal.WriteByte(block, i, 1);
        return block;
    }

    private static bool CanWriteClearRefs()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
