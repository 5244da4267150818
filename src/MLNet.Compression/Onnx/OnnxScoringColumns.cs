using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.Compression.Onnx;

/// <summary>Checks and type definitions shared by <see cref="OnnxScoringChain"/> and <see cref="BatchedScoringDataView"/>.</summary>
internal static class OnnxScoringColumns
{
    /// <summary>Throws unless <paramref name="schema"/> has a visible known-size vector&lt;float, <paramref name="inputLength"/>&gt; column <paramref name="column"/>.</summary>
    public static int ValidateFeatureColumn(DataViewSchema schema, string column, int inputLength)
    {
        var expected = $"a known-size vector of {inputLength} Single (float) values, Vector<Single, {inputLength}>";
        var col = schema.GetColumnOrNull(column);
        if (col is null)
            throw new ArgumentException(
                $"The input data has no column named '{column}'; the model needs it as {expected}. " +
                $"Columns present: {string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => $"'{c.Name}' ({c.Type})"))}.", nameof(schema));
        var c = col.Value;
        if (c.Type is not VectorDataViewType v || v.ItemType != NumberDataViewType.Single || !v.IsKnownSize || v.Size != inputLength)
            throw new ArgumentException(
                $"The feature column '{column}' has type {c.Type}, but the model needs {expected}. " +
                "Convert it with mlContext.Transforms.Conversion.ConvertType or reshape it to the network's input size.", nameof(schema));
        return c.Index;
    }

    /// <summary>Throws unless there are exactly <paramref name="classCount"/> distinct, non-empty class names.</summary>
    public static void ValidateClassNames(IReadOnlyList<string> classNames, int classCount)
    {
        ArgumentNullException.ThrowIfNull(classNames);
        if (classNames.Count != classCount)
            throw new ArgumentException($"{classNames.Count} class names were given but the model has {classCount} classes.", nameof(classNames));
        if (classNames.Any(string.IsNullOrEmpty))
            throw new ArgumentException("Class names must be non-empty.", nameof(classNames));
        if (classNames.Distinct(StringComparer.Ordinal).Count() != classNames.Count)
            throw new ArgumentException($"Class names must be distinct, but were: {string.Join(", ", classNames)}.", nameof(classNames));
    }

    /// <summary>Annotations of the PredictedLabel column: KeyValues = the class names.</summary>
    public static DataViewSchema.Annotations KeyValuesAnnotations(IReadOnlyList<string> classNames)
    {
        var names = classNames.Select(n => n.AsMemory()).ToArray();
        var builder = new DataViewSchema.Annotations.Builder();
        builder.Add("KeyValues", new VectorDataViewType(TextDataViewType.Instance, names.Length),
            (ref VBuffer<ReadOnlyMemory<char>> dst) => dst = new VBuffer<ReadOnlyMemory<char>>(names.Length, (ReadOnlyMemory<char>[])names.Clone()));
        return builder.ToAnnotations();
    }
}

/// <summary>A data view with a given schema and no rows (to fit transformers that learn nothing from data).</summary>
internal sealed class EmptyDataView : IDataView
{
    /// <summary>Creates an empty view with <paramref name="schema"/>.</summary>
    public EmptyDataView(DataViewSchema schema) => Schema = schema;

    /// <inheritdoc />
    public bool CanShuffle => true;

    /// <inheritdoc />
    public DataViewSchema Schema { get; }

    /// <inheritdoc />
    public long? GetRowCount() => 0;

    /// <inheritdoc />
    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) => new Cursor(Schema);

    /// <inheritdoc />
    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) => [new Cursor(Schema)];

    private sealed class Cursor(DataViewSchema schema) : DataViewRowCursor
    {
        public override DataViewSchema Schema => schema;

        public override long Position => -1;

        public override long Batch => 0;

        public override bool MoveNext() => false;

        public override bool IsColumnActive(DataViewSchema.Column column) => false;

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column) =>
            throw new InvalidOperationException("An empty data view has no rows to read.");

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId v) => v = default;
    }
}
