using System.Buffers.Binary;
using System.IO.Compression;
using System.Security.Cryptography;

namespace MLNet.Compression.Data;

/// <summary>Header of a validated IDX image file (unsigned bytes, 3 dimensions).</summary>
internal readonly record struct IdxImageHeader(int Count, int Rows, int Columns)
{
    public int PixelsPerImage => Rows * Columns;

    public long DataLength => (long)Count * Rows * Columns;
}

/// <summary>
/// Reading and validation of IDX files: a big-endian header (magic number <c>0x0000TTDD</c> with element
/// type TT and dimension count DD, then one int32 per dimension) followed by the data.
/// Only unsigned-byte files are supported: labels (<c>0x00000801</c>) and images (<c>0x00000803</c>).
/// Files may be raw or gzip-compressed; compression is detected by the gzip magic bytes, not the name.
/// </summary>
internal static class IdxFormat
{
    public const int LabelMagic = 0x00000801;
    public const int ImageMagic = 0x00000803;
    public const int LabelHeaderSize = 8;
    public const int ImageHeaderSize = 16;
    private const byte UnsignedByteType = 0x08;

    /// <summary>Whether the bytes start with the gzip magic number (1F 8B).</summary>
    public static bool IsGzip(ReadOnlySpan<byte> start) => start.Length >= 2 && start[0] == 0x1F && start[1] == 0x8B;

    /// <summary>Whether the file starts with the gzip magic number, whatever its name.</summary>
    public static bool IsGzipFile(string path)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        Span<byte> start = stackalloc byte[2];
        int read = RandomAccess.Read(handle, start, 0);
        return IsGzip(start[..read]);
    }

    /// <summary>Throws a <see cref="FileNotFoundException"/> naming the role of a missing file.</summary>
    public static void CheckExists(string path, string role)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException(
                $"The IDX {role} file '{path}' does not exist. Check the path; MNIST files can be obtained with MnistDataset.Ensure().",
                path);
    }

    /// <summary>
    /// Validates the header and size of a raw (uncompressed) image file.
    /// <paramref name="displayPath"/> is the path named in messages (the .gz file when <paramref name="rawPath"/> is its decompressed copy).
    /// </summary>
    public static IdxImageHeader ReadImageHeader(string rawPath, string displayPath, int? expectedRows = null, int? expectedColumns = null)
    {
        using var handle = File.OpenHandle(rawPath, FileMode.Open, FileAccess.Read, FileShare.Read);
        long length = RandomAccess.GetLength(handle);
        Span<byte> header = stackalloc byte[ImageHeaderSize];
        int read = ReadFully(handle, header, 0);
        if (read < ImageHeaderSize && read >= 4)
            CheckMagic(header, ImageMagic, displayPath);
        if (read < ImageHeaderSize)
            throw Truncated(displayPath, $"it has only {length} bytes, fewer than the {ImageHeaderSize}-byte header of an IDX image file");
        var result = ParseImageHeader(header, displayPath);
        int count = result.Count, rows = result.Rows, cols = result.Columns;
        long expectedLength = ImageHeaderSize + result.DataLength;
        if (length < expectedLength)
        {
            long complete = (length - ImageHeaderSize) / result.PixelsPerImage;
            throw Truncated(displayPath,
                $"the header declares {count} images of {rows}x{cols} pixels ({expectedLength} bytes in all) but the file has only {length} bytes ({complete} complete images)");
        }
        if (length > expectedLength)
            throw new IdxFormatException(displayPath,
                $"IDX image file '{displayPath}' has {length - expectedLength} bytes after the {count} images of {rows}x{cols} pixels its header declares " +
                $"(expected {expectedLength} bytes, found {length}). The header and the data disagree: the file is corrupt or was written wrongly; re-download or re-create it.");

        if ((expectedRows is int er && er != rows) || (expectedColumns is int ec && ec != cols))
            throw new IdxFormatException(displayPath,
                $"IDX image file '{displayPath}' holds images of {rows}x{cols} pixels (height x width, {rows * cols} features) but " +
                $"{Describe(expectedRows)}x{Describe(expectedColumns)} was expected (IdxLoaderOptions.ExpectedImageHeight/ExpectedImageWidth). " +
                "Use files with images of the expected size, or change those options.");
        return result;
    }

    /// <summary>Throws the error for an image file of only <paramref name="bytes"/>.Length (&lt; 16) bytes: a wrong magic number or truncation.</summary>
    public static void ThrowShortImageHeader(ReadOnlySpan<byte> bytes, string displayPath)
    {
        if (bytes.Length >= 4)
            CheckMagic(bytes, ImageMagic, displayPath);
        throw Truncated(displayPath, $"it has only {bytes.Length} bytes, fewer than the {ImageHeaderSize}-byte header of an IDX image file");
    }

    /// <summary>
    /// Checks the 16-byte header of an IDX image file (magic number, positive sizes, at most 2^29 pixels per image) and
    /// returns it. Nothing is allocated from the sizes; <see cref="IdxImageHeader.DataLength"/> is a checked long.
    /// </summary>
    public static IdxImageHeader ParseImageHeader(ReadOnlySpan<byte> header, string displayPath)
    {
        CheckMagic(header, ImageMagic, displayPath);
        int count = BinaryPrimitives.ReadInt32BigEndian(header[4..]);
        int rows = BinaryPrimitives.ReadInt32BigEndian(header[8..]);
        int cols = BinaryPrimitives.ReadInt32BigEndian(header[12..]);
        if (count < 0 || rows <= 0 || cols <= 0 || (long)rows * cols > int.MaxValue / 4)
            throw new IdxFormatException(displayPath,
                $"IDX image file '{displayPath}' has an invalid header: {count} images of {rows}x{cols} pixels. " +
                "The header is corrupt or the file is not an image file; re-download or re-create it.");
        return new IdxImageHeader(count, rows, cols);
    }

    /// <summary>
    /// Reads and checks the header of a label file (raw or gzip) and returns the declared label count; for a raw file the
    /// count is also checked against the file's length. Nothing is allocated from the count.
    /// </summary>
    public static int ReadLabelCount(string path)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 4096);
        Span<byte> start = stackalloc byte[2];
        int n = file.Read(start);
        file.Position = 0;
        bool gzip = IsGzip(start[..n]);
        Stream stream = gzip ? new GZipStream(file, CompressionMode.Decompress, leaveOpen: true) : file;
        try
        {
            return ReadLabelHeader(stream, file, gzip, path);
        }
        catch (InvalidDataException e)
        {
            throw new IdxFormatException(path, $"IDX label file '{path}' starts like a gzip file but is not a valid gzip stream ({e.Message}). Re-download the file.", e);
        }
        finally
        {
            if (gzip)
                stream.Dispose();
        }
    }

    private static int ReadLabelHeader(Stream stream, FileStream file, bool gzip, string path)
    {
        Span<byte> header = stackalloc byte[LabelHeaderSize];
        int read = stream.ReadAtLeast(header, header.Length, throwOnEndOfStream: false);
        if (read >= 4)
            CheckMagic(header, LabelMagic, path);
        if (read < LabelHeaderSize)
            throw Truncated(path, $"it has only {read} bytes{(gzip ? " after decompression" : "")}, fewer than the {LabelHeaderSize}-byte header of an IDX label file");
        int count = BinaryPrimitives.ReadInt32BigEndian(header[4..]);
        if (count < 0)
            throw new IdxFormatException(path,
                $"IDX label file '{path}' declares a negative label count ({count}). The header is corrupt; re-download or re-create the file.");
        if (!gzip && file.Length - LabelHeaderSize != count)
        {
            if (file.Length - LabelHeaderSize < count)
                throw Truncated(path, $"the header declares {count} labels but the file holds only {file.Length - LabelHeaderSize}");
            throw new IdxFormatException(path,
                $"IDX label file '{path}' has {file.Length - LabelHeaderSize - count} bytes after the {count} labels its header declares. " +
                "The header and the data disagree: the file is corrupt or was written wrongly; re-download or re-create it.");
        }
        return count;
    }

    /// <summary>
    /// Reads a label file (raw or gzip) and returns the label bytes, without the header. Nothing is allocated from the
    /// declared count before the data is known to hold exactly that many labels: a raw file's count is checked against its
    /// length; a gzip file is first decompressed into a small buffer just to count its bytes (stopping one byte past the
    /// declared count), and only then read into an array of the checked size.
    /// </summary>
    /// <param name="path">The label file.</param>
    /// <param name="expectedCount">When set, the declared count must equal it (checked before any label is read).</param>
    /// <param name="expectedFrom">The file <paramref name="expectedCount"/> comes from, named in the error.</param>
    public static byte[] ReadLabels(string path, int? expectedCount = null, string? expectedFrom = null)
    {
        bool gzip = IsGzipFile(path);
        int count = 0;
        if (gzip)
            CountGzipLabels(path, expectedCount, expectedFrom, out count);
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        Stream stream = gzip ? new GZipStream(file, CompressionMode.Decompress, leaveOpen: true) : file;
        try
        {
            int declared = ReadLabelHeader(stream, file, gzip, path);
            if (expectedCount is int expected && expected != declared)
                CheckCounts(expected, expectedFrom ?? path, declared, path);
            if (gzip && declared != count)
                throw new IdxFormatException(path, $"IDX label file '{path}' changed while it was being read. Do not modify the file while loading it.");
            var labels = new byte[declared];
            int read = stream.ReadAtLeast(labels, declared, throwOnEndOfStream: false);
            if (read < declared)
                throw Truncated(path, $"the header declares {declared} labels but the {(gzip ? "decompressed " : "")}file holds only {read}");
            return labels;
        }
        catch (InvalidDataException e)
        {
            throw new IdxFormatException(path, $"IDX label file '{path}' starts like a gzip file but is not a valid gzip stream ({e.Message}). Re-download the file.", e);
        }
        finally
        {
            if (gzip)
                stream.Dispose();
        }
    }

    /// <summary>Checks a gzip label file's header and that it decompresses to exactly the declared count, with a fixed-size buffer.</summary>
    private static void CountGzipLabels(string path, int? expectedCount, string? expectedFrom, out int count)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        using var stream = new GZipStream(file, CompressionMode.Decompress);
        try
        {
            count = ReadLabelHeader(stream, file, gzip: true, path);
            if (expectedCount is int expected && expected != count)
                CheckCounts(expected, expectedFrom ?? path, count, path);
            var buffer = new byte[1 << 16];
            long total = 0;
            int read;
            while (total <= count && (read = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, count + 1L - total))) > 0)
                total += read;
            if (total < count)
                throw Truncated(path, $"the header declares {count} labels but the decompressed file holds only {total}");
            if (total > count)
                throw new IdxFormatException(path,
                    $"IDX label file '{path}' has data after the {count} labels its header declares. " +
                    "The header and the data disagree: the file is corrupt or was written wrongly; re-download or re-create it.");
        }
        catch (InvalidDataException e)
        {
            throw new IdxFormatException(path, $"IDX label file '{path}' starts like a gzip file but is not a valid gzip stream ({e.Message}). Re-download the file.", e);
        }
    }

    /// <summary>Throws for the first label that is not below <paramref name="classCount"/>.</summary>
    public static void CheckLabelRange(ReadOnlySpan<byte> labels, int classCount, string path)
    {
        if (classCount > 256)
            return;
        for (int i = 0; i < labels.Length; i++)
        {
            if (labels[i] >= classCount)
                throw new IdxFormatException(path,
                    $"IDX label file '{path}' has label {labels[i]} at index {i} (zero-based), outside the class range 0..{classCount - 1} " +
                    $"(ClassCount = {classCount}). Set IdxLoaderOptions.ClassCount to at least {labels[i] + 1}, or use the right label file.");
        }
    }

    /// <summary>Throws when the image and label files do not have the same number of rows.</summary>
    public static void CheckCounts(int imageCount, string imagesPath, int labelCount, string labelsPath)
    {
        if (imageCount != labelCount)
            throw new IdxFormatException(imagesPath,
                $"The IDX image file '{imagesPath}' holds {imageCount} images but the label file '{labelsPath}' holds {labelCount} labels. " +
                "Pair files of the same split (for MNIST: train-images with train-labels, t10k-images with t10k-labels).");
    }

    /// <summary>Reads until <paramref name="buffer"/> is full or the end of the file; returns the bytes read.</summary>
    public static int ReadFully(Microsoft.Win32.SafeHandles.SafeFileHandle handle, Span<byte> buffer, long offset)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int read = RandomAccess.Read(handle, buffer[total..], offset + total);
            if (read == 0)
                break;
            total += read;
        }
        return total;
    }

    /// <summary>Lower-case hexadecimal SHA-256 of a whole file.</summary>
    public static string Sha256OfFile(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    private static void CheckMagic(ReadOnlySpan<byte> header, int expected, string path)
    {
        int magic = BinaryPrimitives.ReadInt32BigEndian(header);
        if (magic == expected)
            return;
        string kind = expected == ImageMagic ? "image" : "label";
        string expectedText = expected == ImageMagic ? "0x00000803 (unsigned bytes, 3 dimensions: count, rows, columns)" : "0x00000801 (unsigned bytes, 1 dimension: count)";
        string detail;
        if (IsGzip(header))
            detail = "it looks like a gzip stream that was not decompressed (gzip data inside gzip?)";
        else if (expected == ImageMagic && magic == LabelMagic)
            detail = "that is the magic number of an IDX label file. Were the images and labels paths swapped?";
        else if (expected == LabelMagic && magic == ImageMagic)
            detail = "that is the magic number of an IDX image file. Were the images and labels paths swapped?";
        else if (header[0] != 0 || header[1] != 0)
            detail = "the file is not an IDX file (IDX magic numbers start with two zero bytes)";
        else if (header[2] != UnsignedByteType)
            detail = $"its element type 0x{header[2]:X2} ({TypeName(header[2])}) is not supported; only unsigned bytes (0x08) are";
        else
            detail = $"it has {header[3]} dimension(s), but an IDX {kind} file has {(expected == ImageMagic ? 3 : 1)}";
        throw new IdxFormatException(path,
            $"IDX {kind} file '{path}' has magic number 0x{magic:X8}, expected {expectedText}: {detail}. Pass an IDX {kind} file such as " +
            $"{(expected == ImageMagic ? "train-images-idx3-ubyte" : "train-labels-idx1-ubyte")} (raw or .gz).");
    }

    private static string TypeName(byte type) => type switch
    {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "int16",
        0x0C => "int32",
        0x0D => "float32",
        0x0E => "float64",
        _ => "unknown",
    };

    private static string Describe(int? value) => value?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "any";

    private static IdxFormatException Truncated(string path, string detail)
        => new(path, $"IDX file '{path}' is truncated: {detail}. The download or extraction was probably interrupted; re-download or re-extract the file.");
}
