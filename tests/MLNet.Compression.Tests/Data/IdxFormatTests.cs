using Microsoft.ML;
using MLNet.Compression.Data;
using Xunit;

namespace MLNet.Compression.Tests.Data;

/// <summary>Bad IDX input must fail with a message that names the file, the problem and the fix.</summary>
public sealed class IdxFormatTests : IDisposable
{
    private readonly TestMnist.TempDirectory _dir = TestMnist.NewTempDirectory();
    private readonly MLContext _ml = new(seed: 1);

    public void Dispose() => _dir.Dispose();

    private IdxLoaderOptions Options(int classCount = 10, int? height = null, int? width = null) => new()
    {
        ClassCount = classCount,
        ExpectedImageHeight = height,
        ExpectedImageWidth = width,
        DecompressionCacheDirectory = _dir["cache"],
    };

    private IdxFormatException Load(string images, string labels, IdxLoaderOptions? options = null)
        => Assert.Throws<IdxFormatException>(() => _ml.Data.LoadIdx(images, labels, options ?? Options()));

    private string Labels(int count) => TestMnist.WriteFile(_dir.Path, "labels", TestMnist.LabelFileBytes(TestMnist.SyntheticLabels(count)));

    [Fact]
    public void ImagesFileWithLabelMagic_SaysSwapped()
    {
        string labels = Labels(5);
        var e = Load(labels, labels);
        Assert.Equal(labels, e.FilePath);
        Assert.Contains(labels, e.Message);
        Assert.Contains("0x00000801", e.Message);
        Assert.Contains("0x00000803", e.Message);
        Assert.Contains("swapped", e.Message);
    }

    [Fact]
    public void LabelFileWithImageMagic_SaysSwapped()
    {
        string images = TestMnist.WriteFile(_dir.Path, "images", TestMnist.ImageFileBytes(5, 2, 2));
        var e = Load(images, images);
        Assert.Contains("label file", e.Message);
        Assert.Contains("0x00000803", e.Message);
        Assert.Contains("swapped", e.Message);
    }

    [Fact]
    public void NotAnIdxFile_SaysSo()
    {
        string images = TestMnist.WriteFile(_dir.Path, "notes.txt", "hello, this is text and not IDX"u8.ToArray());
        var e = Load(images, Labels(5));
        Assert.Contains(images, e.Message);
        Assert.Contains("not an IDX file", e.Message);
    }

    [Fact]
    public void FloatElementType_IsRejected()
    {
        string images = TestMnist.WriteFile(_dir.Path, "images", TestMnist.ImageFileBytes(5, 2, 2, magic: 0x00000D03));
        var e = Load(images, Labels(5));
        Assert.Contains("0x00000D03", e.Message);
        Assert.Contains("float32", e.Message);
        Assert.Contains("not supported", e.Message);
    }

    [Fact]
    public void TruncatedImages_ReportDeclaredAndActualSizes()
    {
        byte[] full = TestMnist.ImageFileBytes(10, 4, 4);
        string images = TestMnist.WriteFile(_dir.Path, "images", full[..(16 + 7 * 16 + 5)]);
        var e = Load(images, Labels(10));
        Assert.Contains(images, e.Message);
        Assert.Contains("truncated", e.Message);
        Assert.Contains("10 images of 4x4", e.Message);
        Assert.Contains("7 complete images", e.Message);
        Assert.Contains("re-download", e.Message);
    }

    [Fact]
    public void TruncatedHeader_IsReported()
    {
        byte[] full = TestMnist.ImageFileBytes(10, 4, 4);
        string images = TestMnist.WriteFile(_dir.Path, "images", full[..10]);
        var e = Load(images, Labels(10));
        Assert.Contains("truncated", e.Message);
        Assert.Contains("16-byte header", e.Message);
    }

    [Fact]
    public void TruncatedLabels_AreReported()
    {
        byte[] full = TestMnist.LabelFileBytes(TestMnist.SyntheticLabels(10));
        string labels = TestMnist.WriteFile(_dir.Path, "labels", full[..15]);
        string images = TestMnist.WriteFile(_dir.Path, "images", TestMnist.ImageFileBytes(10, 2, 2));
        var e = Load(images, labels);
        Assert.Equal(labels, e.FilePath);
        Assert.Contains("truncated", e.Message);
        Assert.Contains("declares 10 labels but the file holds only 7", e.Message);
    }

    [Fact]
    public void TruncatedGzipImages_NameTheGzipFile()
    {
        byte[] full = TestMnist.ImageFileBytes(10, 4, 4);
        string images = TestMnist.WriteFile(_dir.Path, "images.gz", full[..100], gzip: true);
        var e = Load(images, Labels(10));
        Assert.Contains(images, e.Message);
        Assert.Contains("truncated", e.Message);
        AssertNoTempFiles(_dir["cache"]);
    }

    [Fact]
    public void ExtraBytesAfterImages_AreReported()
    {
        byte[] full = TestMnist.ImageFileBytes(10, 4, 4);
        string images = TestMnist.WriteFile(_dir.Path, "images", [.. full, 1, 2, 3]);
        var e = Load(images, Labels(10));
        Assert.Contains("3 bytes after the 10 images", e.Message);
    }

    [Fact]
    public void CountMismatch_NamesBothFilesAndCounts()
    {
        string images = TestMnist.WriteFile(_dir.Path, "images", TestMnist.ImageFileBytes(12, 2, 2));
        string labels = Labels(10);
        var e = Load(images, labels);
        Assert.Contains(images, e.Message);
        Assert.Contains(labels, e.Message);
        Assert.Contains("12 images", e.Message);
        Assert.Contains("10 labels", e.Message);
        Assert.Contains("same split", e.Message);
    }

    [Fact]
    public void LabelOutOfRange_ReportsFirstIndexAndValue()
    {
        byte[] values = TestMnist.SyntheticLabels(50);
        values[37] = 12;
        values[44] = 200;
        string labels = TestMnist.WriteFile(_dir.Path, "labels", TestMnist.LabelFileBytes(values));
        string images = TestMnist.WriteFile(_dir.Path, "images", TestMnist.ImageFileBytes(50, 2, 2));
        var e = Load(images, labels);
        Assert.Equal(labels, e.FilePath);
        Assert.Contains("label 12 at index 37", e.Message);
        Assert.Contains("0..9", e.Message);
        Assert.Contains("ClassCount", e.Message);

        // With enough classes the same files load.
        values[44] = 1;
        TestMnist.WriteFile(_dir.Path, "labels", TestMnist.LabelFileBytes(values));
        var view = _ml.Data.LoadIdx(images, labels, Options(classCount: 13));
        Assert.Equal(13, view.ClassCount);
    }

    [Fact]
    public void WrongImageSize_ForExpectedDimensions()
    {
        string images = TestMnist.WriteFile(_dir.Path, "images", TestMnist.ImageFileBytes(3, 4, 5));
        var e = Load(images, Labels(3), Options(height: 28, width: 28));
        Assert.Contains(images, e.Message);
        Assert.Contains("4x5", e.Message);
        Assert.Contains("28x28", e.Message);
        Assert.Contains("ExpectedImageHeight", e.Message);

        // Only the width constrained, and it matches: loads.
        Assert.Equal(20, ((Microsoft.ML.Data.VectorDataViewType)_ml.Data.LoadIdx(images, Labels(3), Options(width: 5)).Schema["Features"].Type).Size);
    }

    [Fact]
    public void GzipIsDetectedByMagicNotName()
    {
        var (rawImages, rawLabels) = TestMnist.WriteSynthetic(_dir.Path, 20, 3, 3);
        // gzip content with no .gz extension, and raw content with a .gz extension.
        string gzImages = TestMnist.WriteFile(_dir.Path, "images-no-ext", File.ReadAllBytes(rawImages), gzip: true);
        string rawNamedGz = TestMnist.WriteFile(_dir.Path, "labels-named.gz", File.ReadAllBytes(rawLabels));
        var view = _ml.Data.LoadIdx(gzImages, rawNamedGz, Options());
        Assert.Equal(20, view.GetRowCount());
        Assert.Equal(3, view.ImageHeight);
    }

    [Fact]
    public void CorruptGzip_IsReportedAndLeavesNoTempFiles()
    {
        byte[] bad = [0x1F, 0x8B, 0x08, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x12, 0x34, 0x56];
        string images = TestMnist.WriteFile(_dir.Path, "images.gz", bad);
        var e = Load(images, Labels(3));
        Assert.Contains(images, e.Message);
        Assert.Contains("gzip", e.Message);
        AssertNoTempFiles(_dir["cache"]);
    }

    [Fact]
    public void MissingFile_ThrowsFileNotFound()
    {
        var e = Assert.Throws<FileNotFoundException>(() => _ml.Data.LoadIdx(_dir["nope"], Labels(3)));
        Assert.Contains(_dir["nope"], e.Message);
    }

    internal static void AssertNoTempFiles(string directory)
    {
        if (!Directory.Exists(directory))
            return;
        var leftovers = Directory.GetFileSystemEntries(directory, "*", SearchOption.AllDirectories)
            .Where(p => Path.GetFileName(p).StartsWith('.') || p.EndsWith(".tmp", StringComparison.Ordinal))
            .ToArray();
        Assert.True(leftovers.Length == 0, "Temporary files left behind: " + string.Join(", ", leftovers));
    }
}
