using System.Buffers.Binary;
using System.IO.Compression;
using Microsoft.ML;
using MLNet.Compression.Data;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.Tests.Reliability;

/// <summary>
/// Bad IDX files of at most 1 MB (gzip bombs, huge declared counts) must fail with an <see cref="IdxFormatException"/>
/// naming the file, allocate at most a few MB and leave nothing in the decompression cache.
/// </summary>
public sealed class BoundedReaderTests(ITestOutputHelper output) : IDisposable
{
    /// <summary>Most managed bytes one failed load of a bad file of at most 1 MB may allocate.</summary>
    private const long AllocationLimit = 8L << 20;

    /// <summary>Most bytes the process may write while one bad file fails to load.</summary>
    private const long WriteLimit = 64L << 20;

    private const long OneGiB = 1L << 30;

    private readonly TestMnist.TempDirectory _dir = TestMnist.NewTempDirectory();

    public void Dispose() => _dir.Dispose();

    /// <summary>One bad input: the images and labels files to write (name, content) and a word the error must contain.</summary>
    public sealed record Case(string Name, Func<string, (string Images, string Labels)> Write, string Expected)
    {
        public override string ToString() => Name;
    }

    private static byte[] ImageHeader(int count, int rows, int cols, int magic = 0x00000803)
    {
        var h = new byte[16];
        BinaryPrimitives.WriteInt32BigEndian(h, magic);
        BinaryPrimitives.WriteInt32BigEndian(h.AsSpan(4), count);
        BinaryPrimitives.WriteInt32BigEndian(h.AsSpan(8), rows);
        BinaryPrimitives.WriteInt32BigEndian(h.AsSpan(12), cols);
        return h;
    }

    private static byte[] LabelHeader(int count)
    {
        var h = new byte[8];
        BinaryPrimitives.WriteInt32BigEndian(h, 0x00000801);
        BinaryPrimitives.WriteInt32BigEndian(h.AsSpan(4), count);
        return h;
    }

    private static byte[] Gzip(byte[] content)
    {
        using var buffer = new MemoryStream();
        using (var zip = new GZipStream(buffer, CompressionLevel.SmallestSize, leaveOpen: true))
            zip.Write(content);
        return buffer.ToArray();
    }

    private static readonly Lazy<byte[]> ZeroMiBMember = new(() => Gzip(new byte[1 << 20]));

    // Deflate's best ratio (about 1030:1) needs long members: 1 GiB of zeros in 64 MiB members is about 1.04 MB.
    private static readonly Lazy<byte[]> Zero64MiBMember = new(() => Gzip(new byte[64 << 20]));

    /// <summary>
    /// A gzip file (multi-member, which GZipStream reads as one stream) of <paramref name="head"/> followed by
    /// <paramref name="zeros"/> zero bytes: 1 GiB of zeros takes about 1 MB.
    /// </summary>
    private static byte[] GzipBomb(byte[] head, long zeros)
    {
        using var file = new MemoryStream();
        file.Write(Gzip(head));
        for (long i = 0; i < zeros >> 26; i++)
            file.Write(Zero64MiBMember.Value);
        for (long i = 0; i < (zeros >> 20) % 64; i++)
            file.Write(ZeroMiBMember.Value);
        return file.ToArray();
    }

    private static string Write(string dir, string name, byte[] content)
    {
        Assert.True(content.Length <= 1 << 20, $"the bad input {name} is {content.Length} bytes, more than the 1 MB these tests are about");
        string path = Path.Combine(dir, name);
        File.WriteAllBytes(path, content);
        return path;
    }

    private static string GoodLabels(string dir, int count) => Write(dir, "labels", TestMnist.LabelFileBytes(TestMnist.SyntheticLabels(count)));

    private static string GoodImages(string dir, int count) => Write(dir, "images", TestMnist.ImageFileBytes(count, 28, 28));

    public static TheoryData<Case> Cases => new()
    {
        new("gzip image bomb: 1 GiB of zeros (no IDX header)",
            d => (Write(d, "images.gz", GzipBomb([], OneGiB)), GoodLabels(d, 10)), "magic number"),
        new("gzip image bomb: valid header for 10 images, then 1 GiB of zeros",
            d => (Write(d, "images.gz", GzipBomb([.. ImageHeader(10, 28, 28), .. new byte[10 * 784]], OneGiB)), GoodLabels(d, 10)), "decompresses to more than"),
        new("gzip image file declaring 2^31-1 images over 1 MB of data",
            d => (Write(d, "images.gz", GzipBomb(ImageHeader(int.MaxValue, 28, 28), 1 << 20)), GoodLabels(d, 10)), "truncated"),
        new("gzip image file declaring 2^31-1 images of 2^14 x 2^14 pixels",
            d => (Write(d, "images.gz", Gzip(ImageHeader(int.MaxValue, 1 << 14, 1 << 14))), GoodLabels(d, 10)), "truncated"),
        new("raw image file declaring 2^31-1 images",
            d => (Write(d, "images", [.. ImageHeader(int.MaxValue, 28, 28), .. new byte[784]]), GoodLabels(d, 10)), "truncated"),
        new("raw image file declaring 28 x 2^30 pixels per image",
            d => (Write(d, "images", ImageHeader(1, 28, 1 << 30)), GoodLabels(d, 1)), "invalid header"),
        new("gzip label file declaring 2^31-1 labels (100 bytes)",
            d => (GoodImages(d, 10), Write(d, "labels.gz", Gzip([.. LabelHeader(int.MaxValue), .. new byte[92]]))), "2147483647"),
        new("gzip label bomb: 2^31-1 labels declared, 1 GiB of zeros",
            d => (GoodImages(d, 10), Write(d, "labels.gz", GzipBomb(LabelHeader(int.MaxValue), OneGiB))), "2147483647"),
        new("gzip label bomb: 10 labels declared, then 1 GiB of zeros",
            d => (GoodImages(d, 10), Write(d, "labels.gz", GzipBomb(LabelHeader(10), OneGiB))), "after the 10 labels"),
        new("raw label file declaring 2^31-1 labels",
            d => (GoodImages(d, 10), Write(d, "labels", [.. LabelHeader(int.MaxValue), .. new byte[10]])), "truncated"),
        new("raw label file declaring a negative count",
            d => (GoodImages(d, 10), Write(d, "labels", [.. LabelHeader(-1), .. new byte[10]])), "negative"),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void BadFileOfAtMostOneMegabyte_FailsNamingTheFile_AllocatesLittle_AndWritesNothingToTheCache(Case bad)
    {
        string dir = Path.Combine(_dir.Path, "in");
        string cache = Path.Combine(_dir.Path, "cache");
        Directory.CreateDirectory(dir);
        var (images, labels) = bad.Write(dir);
        var ml = new MLContext(seed: 1);
        var options = new IdxLoaderOptions { DecompressionCacheDirectory = cache };

        long? writtenBefore = BytesWrittenByProcess();
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<IdxFormatException>(() => ml.Data.LoadIdx(images, labels, options));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        long? written = BytesWrittenByProcess() - writtenBefore;

        output.WriteLine($"{bad.Name}: {allocated:N0} managed bytes allocated, {written:N0} bytes written by the process; {e.Message}");
        Assert.True(e.FilePath == images || e.FilePath == labels, $"the error names '{e.FilePath}', not one of the input files");
        Assert.Contains(e.FilePath, e.Message);
        Assert.Contains(bad.Expected, e.Message);
        Assert.True(allocated < AllocationLimit, $"{bad.Name}: {allocated:N0} managed bytes allocated, limit {AllocationLimit:N0}");
        // The whole process's writes (other tests may write at the same time), so only a generous bound: a bomb written
        // to the cache would be 1 GiB.
        if (written is long w)
            Assert.True(w < WriteLimit, $"{bad.Name}: {w:N0} bytes written while loading, limit {WriteLimit:N0}");
        long cached = Directory.Exists(cache) ? Directory.GetFiles(cache, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length) : 0;
        Assert.Equal(0, cached);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void GzipLabelFileDeclaring2Pow31Rows_IsReportedNamingTheFile_WithoutAllocatingTheDeclaredCount(bool bomb)
    {
        // Read directly, without the image file's count to compare with: memory follows the data actually present.
        byte[] content = bomb ? GzipBomb(LabelHeader(int.MaxValue), 16L << 20) : Gzip([.. LabelHeader(int.MaxValue), .. new byte[92]]);
        string labels = Write(_dir.Path, "labels.gz", content);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<IdxFormatException>(() => IdxFormat.ReadLabels(labels));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        output.WriteLine($"{content.Length:N0}-byte file: {allocated:N0} managed bytes allocated; {e.Message}");
        Assert.Equal(labels, e.FilePath);
        Assert.Contains(labels, e.Message);
        Assert.Contains("2147483647", e.Message);
        Assert.Contains("truncated", e.Message);
        // Counted with a fixed buffer first: neither the declared 2 GiB nor the 16 MiB really present are allocated.
        Assert.True(allocated < 1L << 20, $"{allocated:N0} managed bytes allocated");

        // With the count the image file holds (as IdxDataView passes it), nothing is read past the header.
        before = GC.GetAllocatedBytesForCurrentThread();
        e = Assert.Throws<IdxFormatException>(() => IdxFormat.ReadLabels(labels, 10, "images"));
        allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Contains("2147483647", e.Message);
        Assert.True(allocated < 1L << 20, $"{allocated:N0} managed bytes allocated with the expected count");
    }

    /// <summary>Bytes this process has passed to write(2) so far (Linux /proc/self/io "wchar"); null elsewhere.</summary>
    private static long? BytesWrittenByProcess()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/io"))
                if (line.StartsWith("wchar:", StringComparison.Ordinal))
                    return long.Parse(line.AsSpan(6).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
        return null;
    }
}
