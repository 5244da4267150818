using System.Diagnostics;
using System.Globalization;

namespace MLNet.Compression;

/// <summary>
/// Writes a file through a temporary name in the same directory and moves it into place, so no half-written file is left:
/// a crash at any moment leaves the previous file or the new one. Temporary names carry the writer's process id
/// (<c>.&lt;name&gt;.&lt;pid&gt;.&lt;guid&gt;.tmp</c>), so the next write to the same target removes the leftovers of a
/// process that died while writing.
/// </summary>
internal static class AtomicFile
{
    /// <summary>Suffix of every temporary file the library writes.</summary>
    public const string TempSuffix = ".tmp";

    /// <summary>Writes <paramref name="path"/> with <paramref name="write"/> through a temporary file, flushed to disk and moved into place.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        string name = Path.GetFileName(full);
        SweepStale(dir, name);
        var temp = NewTempPath(dir, name);
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try
            {
                File.Delete(temp);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
            throw;
        }
    }

    /// <summary>A unique temporary path in <paramref name="directory"/> for a file that will become <paramref name="finalName"/>, naming this process.</summary>
    public static string NewTempPath(string directory, string finalName)
        => Path.Combine(directory, $".{finalName}.{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)}.{Guid.NewGuid():N}{TempSuffix}");

    /// <summary>
    /// Deletes the temporary files <see cref="NewTempPath"/> made for <paramref name="finalName"/> in
    /// <paramref name="directory"/> whose writing process is gone. Returns how many were removed; never throws for I/O.
    /// </summary>
    public static int SweepStale(string directory, string finalName)
    {
        string prefix = "." + finalName + ".";
        return SweepStale(directory, prefix + "*" + TempSuffix, file =>
        {
            string middle = file[prefix.Length..^TempSuffix.Length];
            int dot = middle.IndexOf('.', StringComparison.Ordinal);
            return dot > 0 && middle.IndexOf('.', dot + 1) < 0 && middle.Length - dot - 1 == 32 ? middle[..dot] : null;
        });
    }

    /// <summary>
    /// Deletes the files in <paramref name="directory"/> that match <paramref name="pattern"/> and whose owner process
    /// (the id <paramref name="ownerPid"/> returns from the file name; null = not one of ours) no longer runs.
    /// A process id that was reused by a process started after the file was last written counts as gone.
    /// </summary>
    public static int SweepStale(string directory, string pattern, Func<string, string?> ownerPid)
    {
        int removed = 0;
        string[] candidates;
        try
        {
            if (!Directory.Exists(directory))
                return 0;
            candidates = Directory.GetFiles(directory, pattern);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
        foreach (string candidate in candidates)
        {
            string? pidText = ownerPid(Path.GetFileName(candidate));
            if (pidText is null || !int.TryParse(pidText, NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
                continue;
            try
            {
                if (IsRunning(pid, File.GetLastWriteTimeUtc(candidate)))
                    continue;
                File.Delete(candidate);
                removed++;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }
        return removed;
    }

    /// <summary>Whether process <paramref name="pid"/> runs and was started before <paramref name="writtenUtc"/> (so it may own the file).</summary>
    internal static bool IsRunning(int pid, DateTime writtenUtc)
    {
        if (pid == Environment.ProcessId)
            return true;
        try
        {
            using var process = Process.GetProcessById(pid);
            if (process.HasExited)
                return false;
            // A process started after the file was last written cannot have written it: the id was reused.
            return process.StartTime.ToUniversalTime() <= writtenUtc.AddSeconds(2);
        }
        catch (ArgumentException)
        {
            return false;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return true;
        }
        catch (NotSupportedException)
        {
            return true;
        }
    }
}
