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

    /// <summary>ONNX metadata key of the label's key-value type when it is not text (e.g. <c>Single</c>, <c>UInt32</c>).</summary>
    public const string ClassValueTypeKey = "mlnet_compression.class_value_type";

    private static readonly (string Name, PrimitiveDataViewType Type)[] ValueTypes =
    [
        ("Single", NumberDataViewType.Single), ("Double", NumberDataViewType.Double), ("SByte", NumberDataViewType.SByte),
        ("Byte", NumberDataViewType.Byte), ("Int16", NumberDataViewType.Int16), ("UInt16", NumberDataViewType.UInt16),
        ("Int32", NumberDataViewType.Int32), ("UInt32", NumberDataViewType.UInt32), ("Int64", NumberDataViewType.Int64),
        ("UInt64", NumberDataViewType.UInt64),
    ];

    /// <summary>
    /// The name of the numeric type of <paramref name="label"/>'s key values (what <c>MapKeyToValue</c> gives back), when
    /// they are numeric and written as <paramref name="classNames"/>; null for text key values, for none, and for anything
    /// else (then the predicted label's key values are the class names as text).
    /// </summary>
    public static string? ClassValueTypeName(DataViewSchema.Column? label, IReadOnlyList<string> classNames)
    {
        if (label?.Annotations.Schema.GetColumnOrNull("KeyValues") is not { Type: VectorDataViewType { ItemType: PrimitiveDataViewType item } })
            return null;
        var name = Array.Find(ValueTypes, t => t.Type == item).Name;
        if (name is null || ParseClassValues(name, classNames) is null)
            return null;
        // Only when the class names are these key values' text (not the 0..K-1 fallback for duplicate values).
        var read = typeof(OnnxScoringColumns).GetMethod(nameof(KeyValueText), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
            .MakeGenericMethod(item.RawType);
        var text = (string[])read.Invoke(null, [label.Value])!;
        return text.Length >= classNames.Count && text.Take(classNames.Count).SequenceEqual(classNames, StringComparer.Ordinal) ? name : null;
    }

    private static string[] KeyValueText<T>(DataViewSchema.Column label)
    {
        VBuffer<T> values = default;
        label.Annotations.GetValue("KeyValues", ref values);
        return values.DenseValues().Select(v => Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture) ?? string.Empty).ToArray();
    }

    /// <summary>The ML.NET type named <paramref name="name"/> (see <see cref="ClassValueTypeName"/>), or null (text).</summary>
    public static PrimitiveDataViewType? ClassValueType(string? name) => name is null ? null : Array.Find(ValueTypes, t => t.Name == name).Type;

    /// <summary>
    /// The class names parsed as values of the type named <paramref name="typeName"/> (an array of that type), or null when
    /// one does not parse or two are equal.
    /// </summary>
    public static Array? ParseClassValues(string? typeName, IReadOnlyList<string> classNames)
    {
        if (ClassValueType(typeName) is not { } type)
            return null;
        var values = Array.CreateInstance(type.RawType, classNames.Count);
        try
        {
            for (int i = 0; i < classNames.Count; i++)
                values.SetValue(Convert.ChangeType(classNames[i], type.RawType, System.Globalization.CultureInfo.InvariantCulture), i);
        }
        catch (Exception e) when (e is FormatException or OverflowException or InvalidCastException)
        {
            return null;
        }
        return values.Cast<object>().Distinct().Count() == classNames.Count ? values : null;
    }

    /// <summary>
    /// Annotations of the PredictedLabel column: KeyValues = the class values, of the type named
    /// <paramref name="valueTypeName"/> (null: the class names as text).
    /// </summary>
    public static DataViewSchema.Annotations KeyValuesAnnotations(IReadOnlyList<string> classNames, string? valueTypeName)
    {
        if (ParseClassValues(valueTypeName, classNames) is not { } values)
            return KeyValuesAnnotations(classNames);
        var make = typeof(OnnxScoringColumns).GetMethod(nameof(TypedKeyValues), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
            .MakeGenericMethod(values.GetType().GetElementType()!);
        return (DataViewSchema.Annotations)make.Invoke(null, [values, ClassValueType(valueTypeName)!])!;
    }

    private static DataViewSchema.Annotations TypedKeyValues<T>(T[] values, PrimitiveDataViewType type)
    {
        var builder = new DataViewSchema.Annotations.Builder();
        builder.Add("KeyValues", new VectorDataViewType(type, values.Length),
            (ref VBuffer<T> dst) => dst = new VBuffer<T>(values.Length, (T[])values.Clone()));
        return builder.ToAnnotations();
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
