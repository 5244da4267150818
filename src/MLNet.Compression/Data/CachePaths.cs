using System.IO.Compression;
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
    public const string TempSuffix = ".tmp";

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
    public static string NewTempPath(string directory, string finalName)
        => Path.Combine(directory, $".{finalName}.{Guid.NewGuid():N}{TempSuffix}");

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
    /// modification time, so a changed source gets a new copy. It is written to a temporary name, checked with
    /// <paramref name="validate"/> (which throws on bad content), and only then moved into place.
    /// </summary>
    public static string DecompressedCopy(string gzipPath, string cacheDirectory, Action<string> validate)
    {
        var info = new FileInfo(gzipPath);
        string keyText = $"{info.FullName}|{info.Length}|{info.LastWriteTimeUtc.Ticks}";
        string key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(keyText)))[..16];
        string name = info.Name.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? info.Name[..^3] : info.Name;
        string finalPath = Path.Combine(cacheDirectory, $"{name}.{key}.raw");
        if (File.Exists(finalPath))
            return finalPath;

        Directory.CreateDirectory(cacheDirectory);
        string temp = NewTempPath(cacheDirectory, Path.GetFileName(finalPath));
        try
        {
            using (var source = new FileStream(gzipPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16))
            using (var gzip = new GZipStream(source, CompressionMode.Decompress))
            using (var target = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                try
                {
                    gzip.CopyTo(target, 1 << 20);
                }
                catch (InvalidDataException e)
                {
                    throw new IdxFormatException(gzipPath,
                        $"IDX file '{gzipPath}' starts like a gzip file but is not a valid gzip stream ({e.Message}). Re-download the file.", e);
                }
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
}
