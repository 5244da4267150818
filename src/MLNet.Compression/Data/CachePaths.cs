using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace MLNet.Compression.Data;

/// <summary>
/// Where the library keeps files it derives or downloads, and how it writes them safely
/// (temporary name in the same directory, moved into place only when complete and checked).
/// </summary>
internal static class CachePaths
{
    /// <summary>Environment variable naming the library's cache root (MNIST goes to <c>&lt;root&gt;/mnist</c>).</summary>
    public const string CacheEnvironmentVariable = "MLNET_COMPRESSION_CACHE";

    /// <summary>Suffix of every temporary file the library writes.</summary>
    public const string TempSuffix = AtomicFile.TempSuffix;

    /// <summary>Environment variable naming the folder for the library's temporary files (default: <c>&lt;temp&gt;/mlnet-compression</c>).</summary>
    public const string TempEnvironmentVariable = "MLNET_COMPRESSION_TEMP";

    /// <summary>
    /// The folder of the library's own temporary files (teacher caches and the like): <paramref name="userFolder"/> when
    /// given, else <c>MLNET_COMPRESSION_TEMP</c>, else <c>&lt;system temp&gt;/mlnet-compression</c>. Created if missing.
    /// </summary>
    public static string TempFolder(string? userFolder = null)
    {
        string folder = !string.IsNullOrWhiteSpace(userFolder) ? userFolder
            : Environment.GetEnvironmentVariable(TempEnvironmentVariable) is { Length: > 0 } env ? env
            : Path.Combine(Path.GetTempPath(), "mlnet-compression");
        folder = Path.GetFullPath(folder);
        Directory.CreateDirectory(folder);
        return folder;
    }

    /// <summary>
    /// A new file name for a temporary of kind <paramref name="kind"/> owned by this process:
    /// <c>mlnet-compression-&lt;kind&gt;-&lt;pid&gt;-&lt;guid&gt;&lt;extension&gt;</c>. Before returning, the files of the same kind in
    /// <paramref name="folder"/> whose process is gone are removed.
    /// </summary>
    public static string NewOwnedTempFile(string folder, string kind, string extension)
    {
        string prefix = $"mlnet-compression-{kind}-";
        AtomicFile.SweepStale(folder, prefix + "*" + extension, name =>
        {
            string middle = name[prefix.Length..^extension.Length];
            int dash = middle.IndexOf('-', StringComparison.Ordinal);
            return dash > 0 && middle.Length - dash - 1 == 32 ? middle[..dash] : null;
        });
        return Path.Combine(folder, $"{prefix}{Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture)}-{Guid.NewGuid():N}{extension}");
    }

    /// <summary>
    /// The library's cache root: <c>MLNET_COMPRESSION_CACHE</c>, else <c>$XDG_CACHE_HOME/mlnet-compression</c>,
    /// else <c>~/.cache/mlnet-compression</c> (on Windows, <c>%LOCALAPPDATA%\mlnet-compression</c>).
    /// </summary>
    public static string LibraryRoot(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        string? explicitRoot = environment(CacheEnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(explicitRoot))
            return Path.GetFullPath(explicitRoot);
        string? xdg = environment("XDG_CACHE_HOME");
        if (!string.IsNullOrWhiteSpace(xdg))
            return Path.Combine(Path.GetFullPath(xdg), "mlnet-compression");
        if (OperatingSystem.IsWindows())
            return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData), "mlnet-compression");
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        if (string.IsNullOrEmpty(home))
            home = environment("HOME") ?? Path.GetTempPath();
        return Path.Combine(home, ".cache", "mlnet-compression");
    }

    /// <summary>A unique temporary path in <paramref name="directory"/> for a file that will become <paramref name="finalName"/>.</summary>
    /// <remarks>
    /// The name carries this process's id, so a later write of the same file removes it if this process dies (see <see cref="AtomicFile.SweepStale(string, string)"/>).
    /// </remarks>
    public static string NewTempPath(string directory, string finalName)
    {
        AtomicFile.SweepStale(directory, finalName);
        return AtomicFile.NewTempPath(directory, finalName);
    }

    /// <summary>Deletes a file or directory if it exists, ignoring failures (used in cleanup paths).</summary>
    public static void TryDelete(string? path)
    {
        if (path is null)
            return;
        try
        {
            if (Directory.Exists(path))
                Directory.Delete(path, recursive: true);
            else if (File.Exists(path))
                File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    /// <summary>
    /// Returns the path of a raw copy of the gzip file <paramref name="gzipPath"/> in <paramref name="cacheDirectory"/>,
    /// decompressing it once. The copy is named after the source file plus a hash of its full path, length and
    /// modification time, so a changed source gets a new copy. The first <paramref name="headerSize"/> decompressed bytes
    /// go to <paramref name="checkHeader"/> (which throws on a bad header and returns the total length the header declares)
    /// before anything is written; decompression stops with an <see cref="IdxFormatException"/> as soon as the stream
    /// exceeds that length. The copy is written to a temporary name, checked with <paramref name="validate"/> (which throws
    /// on bad content), and only then moved into place.
    /// </summary>
    public static string DecompressedCopy(string gzipPath, string cacheDirectory, int headerSize, Func<byte[], long> checkHeader, Action<string> validate)
    {
        var info = new FileInfo(gzipPath);
        string keyText = $"{info.FullName}|{info.Length}|{info.LastWriteTimeUtc.Ticks}";
        string key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(keyText)))[..16];
        string name = info.Name.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? info.Name[..^3] : info.Name;
        string finalPath = Path.Combine(cacheDirectory, $"{name}.{key}.raw");
        if (File.Exists(finalPath))
            return finalPath;

        string? temp = null;
        try
        {
            using var source = new FileStream(gzipPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            using var gzip = new GZipStream(source, CompressionMode.Decompress);
            try
            {
                var header = new byte[headerSize];
                int got = gzip.ReadAtLeast(header, headerSize, throwOnEndOfStream: false);
                Array.Resize(ref header, got);
                long expected = checkHeader(header);
                Directory.CreateDirectory(cacheDirectory);
                temp = NewTempPath(cacheDirectory, Path.GetFileName(finalPath));
                using (var target = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
                {
                    target.Write(header);
                    long written = got;
                    var buffer = new byte[1 << 16];
                    int read;
                    while ((read = gzip.Read(buffer, 0, buffer.Length)) > 0)
                    {
                        if (written + read > expected)
                            throw new IdxFormatException(gzipPath,
                                $"IDX file '{gzipPath}' decompresses to more than the {expected} bytes its header declares; decompression was stopped there. " +
                                "The header and the data disagree (or the file is a decompression bomb): re-download or re-create the file.");
                        target.Write(buffer, 0, read);
                        written += read;
                    }
                }
            }
            catch (InvalidDataException e)
            {
                throw new IdxFormatException(gzipPath,
                    $"IDX file '{gzipPath}' starts like a gzip file but is not a valid gzip stream ({e.Message}). Re-download the file.", e);
            }
            validate(temp);
            File.Move(temp, finalPath, overwrite: true);
            return finalPath;
        }
        finally
        {
            TryDelete(temp);
        }
    }

    /// <summary>
    /// What identifies the current content of a file without reading it: length, modification time, and on Linux the inode
    /// number and status-change time (statx), which change whenever the file is rewritten or replaced, even when its
    /// length and modification time are restored. Elsewhere the creation time stands in for the last two.
    /// </summary>
    public static (long Length, DateTime WriteTime, long Inode, long ChangeTicks) FileIdentity(FileInfo info)
    {
        info.Refresh();
        if (OperatingSystem.IsLinux())
        {
            var buffer = new byte[256];
            try
            {
                if (StatX(-100 /* AT_FDCWD */, info.FullName, 0, 0x0FFF /* STATX_BASIC_STATS | STATX_BTIME */, buffer) == 0)
                {
                    long inode = BitConverter.ToInt64(buffer, 32);
                    long ctimeSeconds = BitConverter.ToInt64(buffer, 96);
                    uint ctimeNanoseconds = BitConverter.ToUInt32(buffer, 104);
                    return (info.Length, info.LastWriteTimeUtc, inode, ctimeSeconds * 1_000_000_000L + ctimeNanoseconds);
                }
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
            }
        }
        return (info.Length, info.LastWriteTimeUtc, 0, info.CreationTimeUtc.Ticks);
    }

    [DllImport("libc", EntryPoint = "statx", SetLastError = true, CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern int StatX(int directoryFd, string path, int flags, uint mask, [Out] byte[] statx);
}
