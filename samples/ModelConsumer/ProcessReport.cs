using System.Diagnostics;
using System.Globalization;

namespace ModelConsumer;

/// <summary>What this process loaded and how much memory it used at most.</summary>
public static class ProcessReport
{
    /// <summary>Managed assemblies loaded in this process whose names start with TorchSharp or MLNet.Compression.</summary>
    public static string[] TorchAssemblies() => AppDomain.CurrentDomain.GetAssemblies()
        .Select(a => a.GetName().Name ?? "")
        .Where(n => n.StartsWith("TorchSharp", StringComparison.OrdinalIgnoreCase) || n.StartsWith("MLNet.Compression", StringComparison.OrdinalIgnoreCase))
        .Distinct(StringComparer.OrdinalIgnoreCase)
        .ToArray();

    /// <summary>
    /// Native torch libraries (libtorch*, libLibTorchSharp*) mapped into this process, from /proc/self/maps;
    /// null where that file does not exist (not Linux), so the answer is unknown.
    /// </summary>
    public static string[]? TorchNativeLibraries()
    {
        const string maps = "/proc/self/maps";
        if (!File.Exists(maps))
            return null;
        return File.ReadLines(maps)
            .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(fields => fields.Length >= 6)
            .Select(fields => string.Join(' ', fields.Skip(5)))
            .Where(path => Path.GetFileName(path).StartsWith("libtorch", StringComparison.OrdinalIgnoreCase)
                           || path.Contains("LibTorchSharp", StringComparison.OrdinalIgnoreCase))
            .Distinct(StringComparer.Ordinal)
            .ToArray();
    }

    /// <summary>
    /// The process's peak resident memory in bytes and where the number comes from: VmHWM in /proc/self/status on Linux
    /// (the kernel's high-water mark of the resident set), else <see cref="Process.PeakWorkingSet64"/>.
    /// </summary>
    public static (long Bytes, string Source) PeakMemory()
    {
        const string status = "/proc/self/status";
        if (File.Exists(status))
        {
            foreach (string line in File.ReadLines(status))
            {
                if (!line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    continue;
                string[] parts = line["VmHWM:".Length..].Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (parts.Length == 2 && parts[1] == "kB" && long.TryParse(parts[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out long kb))
                    return (kb * 1024, "VmHWM");
            }
        }
        using var self = Process.GetCurrentProcess();
        return (self.PeakWorkingSet64, "PeakWorkingSet64");
    }
}
