using System.Globalization;
using System.Numerics;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.Win32.SafeHandles;

namespace MLNet.Compression.Data;

/// <summary>
/// A lazy, seekable <see cref="IDataView"/> over a pair of IDX files (images and labels, the MNIST format).
/// </summary>
/// <remarks>
/// <para>Columns: the label column is <c>key&lt;uint, ClassCount&gt;</c> (IDX label <c>v</c> becomes key <c>v + 1</c>)
/// with a <c>KeyValues</c> annotation holding the class names <c>"0"</c>, <c>"1"</c>, …; the feature column is
/// <c>vector&lt;float, height × width&gt;</c> with each pixel divided by 255 (row-major, as stored).</para>
/// <para>Memory does not grow with the number of rows. The labels (one byte a row) are held in memory and checked
/// when the view is created; image bytes are read on demand. Each cursor opens its own file handle and reads with
/// positional reads (no memory mapping): sequential cursors read blocks of about 512 KB, shuffled cursors read one
/// image at a time at its offset. A cursor in which only the label column is active never touches the image file,
/// and image bytes are read only when the feature getter is called.</para>
/// <para>Gzip-compressed files (detected by their magic bytes, whatever their name) are handled as follows: the
/// label file is decompressed into memory; the image file is decompressed once into a raw copy in
/// <see cref="IdxLoaderOptions.DecompressionCacheDirectory"/> (written under a temporary name, validated, then moved
/// into place; named after the source's path, length and time stamp, so later loads reuse it and a changed source gets a
/// new copy), and the view reads that copy exactly like a raw file, so shuffling stays random access.</para>
/// <para>Shuffling is supported (<see cref="CanShuffle"/>): a cursor created with a <see cref="Random"/> visits a
/// random permutation of the rows drawn from it. <see cref="GetRowCursorSet"/> splits the rows (or the permutation)
/// into disjoint contiguous parts, one per cursor, each cursor with its own file handle; the part's index is the
/// cursor's <see cref="DataViewRow.Batch"/>. Row ids (<see cref="DataViewRow.GetIdGetter"/>) are the row index.</para>
/// </remarks>
public sealed class IdxDataView : IDataView
{
    private const int SequentialBlockBytes = 512 * 1024;
    private static readonly float[] PixelToFloat = CreatePixelTable();

    private readonly byte[] labels;
    private readonly string rawImagesPath;
    private readonly int pixelsPerImage;
    private long imageBytesRead;

    /// <summary>Opens a pair of IDX files, validating both headers, their sizes, the row counts and every label.</summary>
    /// <param name="imagesPath">IDX image file (magic 0x00000803), raw or gzip-compressed.</param>
    /// <param name="labelsPath">IDX label file (magic 0x00000801), raw or gzip-compressed.</param>
    /// <param name="options">Class count, column names and expected image size; defaults when <see langword="null"/>.</param>
    /// <exception cref="FileNotFoundException">A file does not exist.</exception>
    /// <exception cref="IdxFormatException">A file is not a valid IDX file of the right kind, the files do not pair up,
    /// a label is outside the class range, or the images do not have the expected size.</exception>
    public IdxDataView(string imagesPath, string labelsPath, IdxLoaderOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(imagesPath);
        ArgumentException.ThrowIfNullOrWhiteSpace(labelsPath);
        options ??= new IdxLoaderOptions();
        if (options.ClassCount is < 1 or > 256)
            throw new ArgumentOutOfRangeException(nameof(options), options.ClassCount,
                "IdxLoaderOptions.ClassCount must be between 1 and 256 (IDX labels are bytes).");
        ArgumentException.ThrowIfNullOrWhiteSpace(options.LabelColumnName, $"{nameof(options)}.{nameof(IdxLoaderOptions.LabelColumnName)}");
        ArgumentException.ThrowIfNullOrWhiteSpace(options.FeatureColumnName, $"{nameof(options)}.{nameof(IdxLoaderOptions.FeatureColumnName)}");
        if (options.LabelColumnName == options.FeatureColumnName)
            throw new ArgumentException("The label and feature column names must differ.", nameof(options));
        if (options.ExpectedImageHeight is <= 0 || options.ExpectedImageWidth is <= 0)
            throw new ArgumentOutOfRangeException(nameof(options), "Expected image height and width must be positive when set.");

        imagesPath = Path.GetFullPath(imagesPath);
        labelsPath = Path.GetFullPath(labelsPath);
        IdxFormat.CheckExists(imagesPath, "image");
        IdxFormat.CheckExists(labelsPath, "label");

        // Label header first: cheap, and a swapped pair is reported on the label file's magic number too. The label data
        // is read only once the image file has shown it holds as many rows, so no declared count alone sizes an allocation.
        int labelCount = IdxFormat.ReadLabelCount(labelsPath);

        IdxImageHeader header;
        if (IdxFormat.IsGzipFile(imagesPath))
        {
            string cacheDirectory = options.DecompressionCacheDirectory ?? Path.Combine(CachePaths.LibraryRoot(), "idx");
            const string GzipNote = " (The file is gzip-compressed; sizes are after decompression, and a truncated or corrupt gzip stream also ends here.)";
            rawImagesPath = CachePaths.DecompressedCopy(imagesPath, cacheDirectory, IdxFormat.ImageHeaderSize, bytes =>
            {
                try
                {
                    if (bytes.Length < IdxFormat.ImageHeaderSize)
                        IdxFormat.ThrowShortImageHeader(bytes, imagesPath);
                    return IdxFormat.ImageHeaderSize + IdxFormat.ParseImageHeader(bytes, imagesPath).DataLength;
                }
                catch (IdxFormatException e)
                {
                    throw new IdxFormatException(imagesPath, e.Message + GzipNote, e);
                }
            }, temp =>
            {
                try
                {
                    IdxFormat.ReadImageHeader(temp, imagesPath);
                }
                catch (IdxFormatException e)
                {
                    throw new IdxFormatException(imagesPath, e.Message + GzipNote, e);
                }
            });
            header = IdxFormat.ReadImageHeader(rawImagesPath, imagesPath, options.ExpectedImageHeight, options.ExpectedImageWidth);
        }
        else
        {
            rawImagesPath = imagesPath;
            header = IdxFormat.ReadImageHeader(imagesPath, imagesPath, options.ExpectedImageHeight, options.ExpectedImageWidth);
        }

        IdxFormat.CheckCounts(header.Count, imagesPath, labelCount, labelsPath);
        labels = IdxFormat.ReadLabels(labelsPath, header.Count, imagesPath);
        IdxFormat.CheckCounts(header.Count, imagesPath, labels.Length, labelsPath);
        IdxFormat.CheckLabelRange(labels, options.ClassCount, labelsPath);

        ImagesPath = imagesPath;
        LabelsPath = labelsPath;
        ImageHeight = header.Rows;
        ImageWidth = header.Columns;
        ClassCount = options.ClassCount;
        pixelsPerImage = header.PixelsPerImage;
        Schema = BuildSchema(options.LabelColumnName, options.FeatureColumnName, ClassCount, pixelsPerImage);
    }

    /// <summary>Full path of the image file as given (for a gzip file, the compressed file).</summary>
    public string ImagesPath { get; }

    /// <summary>Full path of the label file as given.</summary>
    public string LabelsPath { get; }

    /// <summary>Height of every image in pixels (IDX rows).</summary>
    public int ImageHeight { get; }

    /// <summary>Width of every image in pixels (IDX columns).</summary>
    public int ImageWidth { get; }

    /// <summary>Number of classes (the key count of the label column).</summary>
    public int ClassCount { get; }

    /// <inheritdoc/>
    public bool CanShuffle => true;

    /// <inheritdoc/>
    public DataViewSchema Schema { get; }

    /// <summary>Total image bytes read from disk by all cursors of this view (diagnostics and tests).</summary>
    internal long ImageBytesRead => Interlocked.Read(ref imageBytesRead);

    /// <inheritdoc/>
    public long? GetRowCount() => labels.Length;

    /// <inheritdoc/>
    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        bool[] active = ActiveColumns(columnsNeeded);
        int[]? order = rand is null ? null : Permutation(rand);
        return new Cursor(this, active, order, 0, labels.Length, batch: 0);
    }

    /// <inheritdoc/>
    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
    {
        bool[] active = ActiveColumns(columnsNeeded);
        int count = labels.Length;
        if (n <= 0)
            n = Environment.ProcessorCount;
        n = Math.Max(1, Math.Min(n, count));
        int[]? order = rand is null ? null : Permutation(rand);
        var cursors = new DataViewRowCursor[n];
        long start = 0;
        for (int i = 0; i < n; i++)
        {
            long end = (long)count * (i + 1) / n;
            cursors[i] = new Cursor(this, active, order, (int)start, (int)end, batch: i);
            start = end;
        }
        return cursors;
    }

    private int[] Permutation(Random rand)
    {
        var order = new int[labels.Length];
        for (int i = 0; i < order.Length; i++)
            order[i] = i;
        rand.Shuffle(order);
        return order;
    }

    private bool[] ActiveColumns(IEnumerable<DataViewSchema.Column> columnsNeeded)
    {
        ArgumentNullException.ThrowIfNull(columnsNeeded);
        var active = new bool[Schema.Count];
        foreach (var column in columnsNeeded)
        {
            CheckColumn(column, nameof(columnsNeeded));
            active[column.Index] = true;
        }
        return active;
    }

    private void CheckColumn(DataViewSchema.Column column, string parameterName)
    {
        if (column.Index < 0 || column.Index >= Schema.Count || column.Name != Schema[column.Index].Name)
            throw new ArgumentOutOfRangeException(parameterName,
                $"Column '{column.Name}' (index {column.Index}) is not a column of this IdxDataView, whose columns are " +
                $"'{Schema[0].Name}' (0) and '{Schema[1].Name}' (1).");
    }

    private static DataViewSchema BuildSchema(string labelName, string featureName, int classCount, int pixels)
    {
        var keyValues = new DataViewSchema.Annotations.Builder();
        // "KeyValues" is ML.NET's annotation kind for key names (AnnotationUtils.Kinds.KeyValues, internal there).
        keyValues.Add("KeyValues", new VectorDataViewType(TextDataViewType.Instance, classCount), (ref VBuffer<ReadOnlyMemory<char>> dst) =>
        {
            var editor = VBufferEditor.Create(ref dst, classCount);
            for (int i = 0; i < classCount; i++)
                editor.Values[i] = i.ToString(CultureInfo.InvariantCulture).AsMemory();
            dst = editor.Commit();
        });
        var builder = new DataViewSchema.Builder();
        builder.AddColumn(labelName, new KeyDataViewType(typeof(uint), classCount), keyValues.ToAnnotations());
        builder.AddColumn(featureName, new VectorDataViewType(NumberDataViewType.Single, pixels));
        return builder.ToSchema();
    }

    private static float[] CreatePixelTable()
    {
        var table = new float[256];
        for (int i = 0; i < table.Length; i++)
            table[i] = i / 255f;
        return table;
    }

    private sealed class Cursor : DataViewRowCursor
    {
        private const int LabelIndex = 0;
        private const int FeatureIndex = 1;

        private readonly IdxDataView view;
        private readonly bool[] activeColumns;
        private readonly int[]? rowOrder;
        private readonly int endRow;
        private readonly long batchIndex;
        private readonly int pixelsPerImage;
        private readonly Delegate labelGetter;
        private readonly Delegate featureGetter;
        private readonly ValueGetter<DataViewRowId> idGetter;

        private SafeFileHandle? handle;
        private byte[]? buffer;
        private int bufferFirstRow = -1;
        private int bufferRows;
        private long position = -1;
        private int next;
        private int currentRow = -1;
        private bool done;

        public Cursor(IdxDataView parent, bool[] active, int[]? order, int start, int end, long batch)
        {
            view = parent;
            activeColumns = active;
            rowOrder = order;
            endRow = end;
            next = start;
            batchIndex = batch;
            pixelsPerImage = parent.pixelsPerImage;
            labelGetter = (ValueGetter<uint>)GetLabel;
            featureGetter = (ValueGetter<VBuffer<float>>)GetFeatures;
            idGetter = GetId;
        }

        public override DataViewSchema Schema => view.Schema;

        public override long Position => position;

        public override long Batch => batchIndex;

        public override bool MoveNext()
        {
            if (done)
                return false;
            if (next >= endRow)
            {
                done = true;
                position = -1;
                currentRow = -1;
                ReleaseFile();
                return false;
            }
            currentRow = rowOrder is null ? next : rowOrder[next];
            next++;
            position++;
            return true;
        }

        public override bool IsColumnActive(DataViewSchema.Column column)
        {
            view.CheckColumn(column, nameof(column));
            return activeColumns[column.Index];
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            view.CheckColumn(column, nameof(column));
            if (!activeColumns[column.Index])
                throw new InvalidOperationException(
                    $"Column '{column.Name}' was requested but is not active in this cursor. Include it in the columns passed to GetRowCursor.");
            Delegate getter = column.Index == LabelIndex ? labelGetter : featureGetter;
            if (getter is ValueGetter<TValue> typed)
                return typed;
            throw new InvalidOperationException(
                $"Invalid TValue in GetGetter for column '{column.Name}': '{typeof(TValue)}', expected type: '{column.Type.RawType}'.");
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => idGetter;

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                done = true;
                position = -1;
                currentRow = -1;
                ReleaseFile();
            }
            base.Dispose(disposing);
        }

        private void ReleaseFile()
        {
            handle?.Dispose();
            handle = null;
            buffer = null;
            bufferFirstRow = -1;
            bufferRows = 0;
        }

        private void CheckRow()
        {
            if (currentRow < 0)
                throw new InvalidOperationException(
                    "A value getter was called while the cursor is not on a row (before the first MoveNext, after MoveNext returned false, or after Dispose).");
        }

        private void GetId(ref DataViewRowId value)
        {
            CheckRow();
            value = new DataViewRowId((ulong)currentRow, 0);
        }

        private void GetLabel(ref uint value)
        {
            CheckRow();
            value = (uint)view.labels[currentRow] + 1;
        }

        private void GetFeatures(ref VBuffer<float> value)
        {
            CheckRow();
            ReadOnlySpan<byte> pixels = ImageBytes(currentRow);
            var editor = VBufferEditor.Create(ref value, pixelsPerImage);
            ToFloats(pixels, editor.Values);
            value = editor.Commit();
        }

        /// <summary>pixel / 255f for each byte (vectorized; division is exact in both paths, so results are identical).</summary>
        private static void ToFloats(ReadOnlySpan<byte> pixels, Span<float> values)
        {
            int i = 0;
            if (Vector.IsHardwareAccelerated && pixels.Length >= Vector<byte>.Count)
            {
                var divisor = new Vector<float>(255f);
                int step = Vector<byte>.Count;
                int uintCount = Vector<uint>.Count;
                for (; i <= pixels.Length - step; i += step)
                {
                    var bytes = new Vector<byte>(pixels.Slice(i, step));
                    Vector.Widen(bytes, out Vector<ushort> low, out Vector<ushort> high);
                    Vector.Widen(low, out Vector<uint> a, out Vector<uint> b);
                    Vector.Widen(high, out Vector<uint> c, out Vector<uint> d);
                    (Vector.ConvertToSingle(a) / divisor).CopyTo(values.Slice(i, uintCount));
                    (Vector.ConvertToSingle(b) / divisor).CopyTo(values.Slice(i + uintCount, uintCount));
                    (Vector.ConvertToSingle(c) / divisor).CopyTo(values.Slice(i + 2 * uintCount, uintCount));
                    (Vector.ConvertToSingle(d) / divisor).CopyTo(values.Slice(i + 3 * uintCount, uintCount));
                }
            }
            float[] table = PixelToFloat;
            for (; i < pixels.Length; i++)
                values[i] = table[pixels[i]];
        }

        private ReadOnlySpan<byte> ImageBytes(int row)
        {
            if (row >= bufferFirstRow && row < bufferFirstRow + bufferRows)
                return buffer.AsSpan((row - bufferFirstRow) * pixelsPerImage, pixelsPerImage);

            handle ??= File.OpenHandle(view.rawImagesPath, FileMode.Open, FileAccess.Read, FileShare.Read,
                rowOrder is null ? FileOptions.SequentialScan : FileOptions.RandomAccess);
            int rows;
            if (rowOrder is null)
            {
                // Sequential: a block of rows from this one to the end of the cursor's range.
                rows = Math.Max(1, SequentialBlockBytes / pixelsPerImage);
                rows = Math.Min(rows, endRow - row);
            }
            else
            {
                rows = 1;
            }
            int bytes = rows * pixelsPerImage;
            if (buffer is null || buffer.Length < bytes)
                buffer = new byte[rowOrder is null ? Math.Max(bytes, Math.Max(1, SequentialBlockBytes / pixelsPerImage) * pixelsPerImage) : bytes];
            long offset = IdxFormat.ImageHeaderSize + (long)row * pixelsPerImage;
            int read = IdxFormat.ReadFully(handle, buffer.AsSpan(0, bytes), offset);
            Interlocked.Add(ref view.imageBytesRead, read);
            if (read < bytes)
                throw new IdxFormatException(view.ImagesPath,
                    $"IDX image file '{view.ImagesPath}' became shorter while it was being read (row {row}: expected {bytes} bytes at offset {offset}, got {read}). " +
                    "Do not modify the file while a data view uses it; re-create the view.");
            bufferFirstRow = row;
            bufferRows = rows;
            return buffer.AsSpan(0, pixelsPerImage);
        }
    }
}
