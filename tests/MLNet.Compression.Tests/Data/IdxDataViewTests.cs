using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Data;
using Xunit;

namespace MLNet.Compression.Tests.Data;

/// <summary>The IDataView contract of <see cref="IdxDataView"/>, on small synthetic IDX files.</summary>
public sealed class IdxDataViewTests : IDisposable
{
    private const int Rows = 1000;
    private const int Height = 5;
    private const int Width = 7;
    private readonly TestMnist.TempDirectory _dir = TestMnist.NewTempDirectory();
    private readonly MLContext _ml = new(seed: 1);
    private readonly IdxDataView _view;

    public IdxDataViewTests()
    {
        var (images, labels) = TestMnist.WriteSynthetic(_dir.Path, Rows, Height, Width);
        _view = _ml.Data.LoadIdx(images, labels, Options());
    }

    public void Dispose() => _dir.Dispose();

    private IdxLoaderOptions Options() => new() { DecompressionCacheDirectory = _dir["cache"] };

    [Fact]
    public void Schema_HasKeyLabelWithKeyValuesAndFloatVector()
    {
        var schema = _view.Schema;
        Assert.Equal(2, schema.Count);
        var label = schema["Label"];
        var key = Assert.IsType<KeyDataViewType>(label.Type);
        Assert.Equal(typeof(uint), key.RawType);
        Assert.Equal(10UL, key.Count);

        var annotationColumn = label.Annotations.Schema["KeyValues"];
        var annotationType = Assert.IsType<VectorDataViewType>(annotationColumn.Type);
        Assert.Equal(TextDataViewType.Instance, annotationType.ItemType);
        Assert.Equal(10, annotationType.Size);
        VBuffer<ReadOnlyMemory<char>> names = default;
        label.Annotations.GetValue("KeyValues", ref names);
        Assert.Equal(Enumerable.Range(0, 10).Select(i => i.ToString()), names.DenseValues().Select(v => v.ToString()));

        var features = Assert.IsType<VectorDataViewType>(schema["Features"].Type);
        Assert.Equal(NumberDataViewType.Single, features.ItemType);
        Assert.Equal(Height * Width, features.Size);
        Assert.True(features.IsKnownSize);

        Assert.Equal(Rows, _view.GetRowCount());
        Assert.True(_view.CanShuffle);
        Assert.Equal(Height, _view.ImageHeight);
        Assert.Equal(Width, _view.ImageWidth);
    }

    [Fact]
    public void CustomColumnNamesAndClassCount()
    {
        var (images, labels) = TestMnist.WriteSynthetic(_dir.Path, 10, 2, 2);
        var view = _ml.Data.LoadIdx(images, labels, new IdxLoaderOptions { ClassCount = 12, LabelColumnName = "Digit", FeatureColumnName = "Pixels" });
        Assert.Equal(12UL, ((KeyDataViewType)view.Schema["Digit"].Type).Count);
        Assert.Equal(4, ((VectorDataViewType)view.Schema["Pixels"].Type).Size);
        VBuffer<ReadOnlyMemory<char>> names = default;
        view.Schema["Digit"].Annotations.GetValue("KeyValues", ref names);
        Assert.Equal("11", names.GetValues()[11].ToString());
    }

    [Fact]
    public void SequentialCursor_ValuesPositionIdAndBatch()
    {
        using var cursor = _view.GetRowCursor(_view.Schema);
        Assert.Equal(-1, cursor.Position);
        var labelGetter = cursor.GetGetter<uint>(_view.Schema["Label"]);
        var featureGetter = cursor.GetGetter<VBuffer<float>>(_view.Schema["Features"]);
        var idGetter = cursor.GetIdGetter();
        uint label = 0;
        Assert.Throws<InvalidOperationException>(() => labelGetter(ref label));

        VBuffer<float> features = default;
        DataViewRowId id = default;
        int row = 0;
        while (cursor.MoveNext())
        {
            Assert.Equal(row, cursor.Position);
            Assert.Equal(0, cursor.Batch);
            idGetter(ref id);
            Assert.Equal(new DataViewRowId((ulong)row, 0), id);
            labelGetter(ref label);
            Assert.Equal((uint)(row % 10 + 1), label);
            featureGetter(ref features);
            AssertSyntheticRow(row, features);
            row++;
        }
        Assert.Equal(Rows, row);
        Assert.Equal(-1, cursor.Position);
        Assert.False(cursor.MoveNext());
        Assert.Throws<InvalidOperationException>(() => featureGetter(ref features));
    }

    [Fact]
    public void Getters_ValidateActivityAndType()
    {
        using var cursor = _view.GetRowCursor([_view.Schema["Label"]]);
        Assert.True(cursor.IsColumnActive(_view.Schema["Label"]));
        Assert.False(cursor.IsColumnActive(_view.Schema["Features"]));
        Assert.Throws<InvalidOperationException>(() => cursor.GetGetter<VBuffer<float>>(_view.Schema["Features"]));
        Assert.Throws<InvalidOperationException>(() => cursor.GetGetter<float>(_view.Schema["Label"]));
        Assert.NotNull(cursor.GetGetter<uint>(_view.Schema["Label"]));

        var otherSchema = new DataViewSchema.Builder();
        otherSchema.AddColumn("A", NumberDataViewType.Single);
        otherSchema.AddColumn("B", NumberDataViewType.Single);
        otherSchema.AddColumn("C", NumberDataViewType.Single);
        Assert.Throws<ArgumentOutOfRangeException>(() => _view.GetRowCursor([otherSchema.ToSchema()["C"]]));
    }

    [Fact]
    public void LabelOnlyCursor_NeverReadsImages()
    {
        int count = 0;
        using (var cursor = _view.GetRowCursor([_view.Schema["Label"]]))
        {
            var getter = cursor.GetGetter<uint>(_view.Schema["Label"]);
            uint label = 0;
            while (cursor.MoveNext())
            {
                getter(ref label);
                count++;
            }
        }
        Assert.Equal(Rows, count);
        Assert.Equal(0, _view.ImageBytesRead);

        // Features active but never fetched: still nothing read.
        using (var cursor = _view.GetRowCursor(_view.Schema))
        {
            while (cursor.MoveNext())
            {
            }
        }
        Assert.Equal(0, _view.ImageBytesRead);

        // The image file is not even opened: delete it and a label-only pass still works.
        File.Delete(_view.ImagesPath);
        using (var cursor = _view.GetRowCursor([_view.Schema["Label"]], new Random(3)))
        {
            var getter = cursor.GetGetter<uint>(_view.Schema["Label"]);
            uint label = 0;
            count = 0;
            while (cursor.MoveNext())
            {
                getter(ref label);
                count++;
            }
        }
        Assert.Equal(Rows, count);
    }

    [Fact]
    public void FeaturesGetter_ReadsAllBytesOnceSequentially()
    {
        using var cursor = _view.GetRowCursor(_view.Schema);
        var getter = cursor.GetGetter<VBuffer<float>>(_view.Schema["Features"]);
        VBuffer<float> features = default;
        while (cursor.MoveNext())
            getter(ref features);
        Assert.Equal((long)Rows * Height * Width, _view.ImageBytesRead);
    }

    [Fact]
    public void ShuffledCursor_VisitsEveryRowOnceInRandomOrder()
    {
        var first = ReadIds(_view.GetRowCursor(_view.Schema, new Random(42)), checkValues: true);
        Assert.Equal(Rows, first.Count);
        Assert.Equal(Enumerable.Range(0, Rows), first.Order());
        Assert.NotEqual(Enumerable.Range(0, Rows), first);

        var same = ReadIds(_view.GetRowCursor(_view.Schema, new Random(42)), checkValues: false);
        var other = ReadIds(_view.GetRowCursor(_view.Schema, new Random(43)), checkValues: false);
        Assert.Equal(first, same);
        Assert.NotEqual(first, other);
    }

    [Theory]
    [InlineData(4, false)]
    [InlineData(4, true)]
    [InlineData(3, true)]
    [InlineData(1, false)]
    public void CursorSet_CoversAllRowsDisjointly(int n, bool shuffle)
    {
        var cursors = _view.GetRowCursorSet(_view.Schema, n, shuffle ? new Random(5) : null);
        Assert.Equal(n, cursors.Length);
        var all = new List<int>();
        var batches = new HashSet<long>();
        foreach (var cursor in cursors)
        {
            var ids = ReadIds(cursor, checkValues: true, batches);
            Assert.InRange(ids.Count, Rows / n - 1, Rows / n + 1);
            all.AddRange(ids);
        }
        Assert.Equal(n, batches.Count);
        Assert.Equal(Enumerable.Range(0, Rows), all.Order());
        if (shuffle)
            Assert.NotEqual(Enumerable.Range(0, Rows), all);
        else
            Assert.Equal(Enumerable.Range(0, Rows), all);
    }

    [Fact]
    public void CursorSet_NoMoreCursorsThanRows()
    {
        var (images, labels) = TestMnist.WriteSynthetic(_dir.Path, 3, 2, 2);
        var view = _ml.Data.LoadIdx(images, labels);
        var cursors = view.GetRowCursorSet(view.Schema, 8);
        Assert.Equal(3, cursors.Length);
        Assert.All(cursors, c => Assert.Single(ReadIds(c, checkValues: false)));
    }

    [Fact]
    public void GzipAndRaw_GiveIdenticalRows()
    {
        string gzDirectory = Directory.CreateDirectory(_dir["gz"]).FullName;
        var (images, labels) = TestMnist.WriteSynthetic(gzDirectory, Rows, Height, Width, gzip: true);
        var gz = _ml.Data.LoadIdx(images, labels, Options());
        AssertSameRows(_view, gz);

        // The decompressed copy is made once and reused; nothing temporary is left.
        string[] cached = Directory.GetFiles(_dir["cache"]);
        Assert.Single(cached);
        DateTime written = File.GetLastWriteTimeUtc(cached[0]);
        var again = _ml.Data.LoadIdx(images, labels, Options());
        Assert.Equal(cached, Directory.GetFiles(_dir["cache"]));
        Assert.Equal(written, File.GetLastWriteTimeUtc(cached[0]));
        IdxFormatTests.AssertNoTempFiles(_dir["cache"]);
        AssertSameRows(_view, again);
    }

    [Fact]
    public void WorksWithMLNetOperations()
    {
        // Key values: MapKeyToValue turns key 6 back into "5".
        var mapped = _ml.Transforms.Conversion.MapKeyToValue("Digit", "Label").Fit(_view).Transform(_view);
        var digits = mapped.GetColumn<ReadOnlyMemory<char>>("Digit").Select(d => d.ToString()).ToArray();
        Assert.Equal(Enumerable.Range(0, Rows).Select(i => (i % 10).ToString()), digits);

        // Shuffle, cache (which reads through cursor sets) and take.
        var shuffled = _ml.Data.ShuffleRows(_view, seed: 7);
        var cached = _ml.Data.Cache(shuffled);
        var labels = cached.GetColumn<uint>("Label").ToArray();
        Assert.Equal(Rows, labels.Length);
        Assert.Equal(Enumerable.Range(0, Rows).Select(i => (uint)(i % 10 + 1)).Order(), labels.Order());
        Assert.Equal(17, _ml.Data.TakeRows(_view, 17).GetColumn<VBuffer<float>>("Features").Count());

        // A column-concatenating transform sees the vector type.
        var norm = _ml.Transforms.NormalizeMinMax("Norm", "Features").Fit(_view).Transform(_view);
        Assert.Equal(Height * Width, ((VectorDataViewType)norm.Schema["Norm"].Type).Size);
    }

    private static List<int> ReadIds(DataViewRowCursor cursor, bool checkValues, HashSet<long>? batches = null)
    {
        using (cursor)
        {
            var ids = new List<int>();
            var idGetter = cursor.GetIdGetter();
            var labelGetter = cursor.GetGetter<uint>(cursor.Schema["Label"]);
            var featureGetter = cursor.GetGetter<VBuffer<float>>(cursor.Schema["Features"]);
            DataViewRowId id = default;
            uint label = 0;
            VBuffer<float> features = default;
            long? batch = null;
            while (cursor.MoveNext())
            {
                Assert.Equal(ids.Count, cursor.Position);
                batch ??= cursor.Batch;
                Assert.Equal(batch, cursor.Batch);
                idGetter(ref id);
                int row = (int)id.Low;
                ids.Add(row);
                if (checkValues)
                {
                    labelGetter(ref label);
                    Assert.Equal((uint)(row % 10 + 1), label);
                    featureGetter(ref features);
                    AssertSyntheticRow(row, features);
                }
            }
            if (batch is long b)
                Assert.True(batches?.Add(b) ?? true, $"batch {b} appears in two cursors");
            return ids;
        }
    }

    private static void AssertSyntheticRow(int row, VBuffer<float> features)
    {
        Assert.Equal(Height * Width, features.Length);
        var values = features.GetValues();
        Assert.Equal(Height * Width, values.Length);
        for (int p = 0; p < values.Length; p++)
            Assert.Equal(TestMnist.SyntheticPixel(row, p) / 255f, values[p]);
    }

    internal static void AssertSameRows(IDataView expected, IDataView actual)
    {
        Assert.Equal(expected.GetRowCount(), actual.GetRowCount());
        using var a = expected.GetRowCursor(expected.Schema);
        using var b = actual.GetRowCursor(actual.Schema);
        var la = a.GetGetter<uint>(a.Schema["Label"]);
        var lb = b.GetGetter<uint>(b.Schema["Label"]);
        var fa = a.GetGetter<VBuffer<float>>(a.Schema["Features"]);
        var fb = b.GetGetter<VBuffer<float>>(b.Schema["Features"]);
        uint x = 0, y = 0;
        VBuffer<float> u = default, v = default;
        long rows = 0;
        while (a.MoveNext())
        {
            Assert.True(b.MoveNext());
            la(ref x);
            lb(ref y);
            Assert.Equal(x, y);
            fa(ref u);
            fb(ref v);
            Assert.True(u.GetValues().SequenceEqual(v.GetValues()), $"row {rows} differs");
            rows++;
        }
        Assert.False(b.MoveNext());
        Assert.Equal(expected.GetRowCount(), rows);
    }
}
