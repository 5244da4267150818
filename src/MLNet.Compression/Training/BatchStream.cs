using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.Compression.Training;

/// <summary>
/// Streams (features, class index) batches from an <see cref="IDataView"/> through one row cursor into buffers that are
/// reused for every batch: memory does not depend on the number of rows.
/// </summary>
internal sealed class BatchStream
{
    private readonly IDataView data;
    private readonly DataViewSchema.Column labelColumn;
    private readonly DataViewSchema.Column featureColumn;
    private readonly DataViewSchema.Column? targetColumn;
    private readonly Networks.Heads.OutputHead head;

    /// <summary>
    /// Reads <paramref name="labelColumnName"/> (key) and <paramref name="featureColumnName"/> (float vector), and, when
    /// <paramref name="targetColumnName"/> is given, a known-size float vector per row (e.g. a teacher's scores) into
    /// <see cref="Batch.Targets"/>. The label column is checked by <paramref name="head"/> (default: the multiclass head).
    /// </summary>
    public BatchStream(IDataView data, string labelColumnName, string featureColumnName, int featureLength, string? targetColumnName = null,
        Networks.Heads.OutputHead? head = null)
    {
        this.data = data;
        this.head = head ?? Networks.Heads.OutputHead.Multiclass;
        featureColumn = SchemaValidation.FeatureColumn(data.Schema, featureColumnName, featureLength);
        labelColumn = this.head.ValidateLabel(data.Schema, labelColumnName, out int classCount);
        ClassCount = classCount;
        FeatureLength = featureLength;
        if (targetColumnName is not null)
        {
            var column = data.Schema.GetColumnOrNull(targetColumnName)
                ?? throw new ArgumentOutOfRangeException(nameof(targetColumnName), $"The data has no column '{targetColumnName}'.");
            if (column.Type is not VectorDataViewType { ItemType: NumberDataViewType } vt || vt.ItemType.RawType != typeof(float) || !vt.IsKnownSize)
                throw new ArgumentOutOfRangeException(nameof(targetColumnName),
                    $"The column '{targetColumnName}' has type {column.Type}; a known-size vector of Single is needed.");
            targetColumn = column;
            TargetLength = vt.Size;
        }
    }

    public int ClassCount { get; }

    public int FeatureLength { get; }

    /// <summary>Values per row of the target column (0 when there is none).</summary>
    public int TargetLength { get; }

    /// <summary>A filled batch; its arrays are reused by the next batch.</summary>
    public sealed class Batch
    {
        public Batch(int capacity, int featureLength, int targetLength = 0)
        {
            Features = new float[capacity * featureLength];
            Labels = new long[capacity];
            Targets = new float[capacity * targetLength];
            Capacity = capacity;
        }

        public float[] Features { get; }

        /// <summary>The target column's values, row-major (empty when the stream has no target column).</summary>
        public float[] Targets { get; }

        public long[] Labels { get; }

        public int Capacity { get; }

        public int Count { get; internal set; }
    }

    /// <summary>
    /// Reads one pass over the data. Rows with a missing label (for the multiclass head: key 0) are skipped; the output head
    /// turns each label into its training target (<see cref="Networks.Heads.OutputHead.CreateLabelReader"/>). <paramref name="include"/> selects
    /// rows by id (for a validation split); <paramref name="rand"/> shuffles when the view supports it.
    /// </summary>
    public IEnumerable<Batch> Read(int batchSize, Random? rand, Func<DataViewRowId, bool>? include)
    {
        var batch = new Batch(batchSize, FeatureLength, TargetLength);
        var columns = targetColumn is { } t ? new[] { labelColumn, featureColumn, t } : new[] { labelColumn, featureColumn };
        using var cursor = data.GetRowCursor(columns, data.CanShuffle ? rand : null);
        var targetGetter = targetColumn is { } tc ? cursor.GetGetter<VBuffer<float>>(tc) : null;
        VBuffer<float> target = default;
        var readLabel = head.CreateLabelReader(cursor, labelColumn, ClassCount);
        var featureGetter = cursor.GetGetter<VBuffer<float>>(featureColumn);
        var idGetter = include is null ? null : cursor.GetIdGetter();
        VBuffer<float> features = default;
        DataViewRowId id = default;
        int n = 0;
        while (cursor.MoveNext())
        {
            if (idGetter is not null)
            {
                idGetter(ref id);
                if (!include!(id))
                    continue;
            }
            long label = readLabel();
            if (label < 0)
                continue;
            featureGetter(ref features);
            if (features.Length != FeatureLength)
                throw new InvalidDataException($"Row {cursor.Position} of column '{featureColumn.Name}' has {features.Length} values, expected {FeatureLength}.");
            var dst = batch.Features.AsSpan(n * FeatureLength, FeatureLength);
            if (features.IsDense)
                features.GetValues().CopyTo(dst);
            else
            {
                dst.Clear();
                var values = features.GetValues();
                var indices = features.GetIndices();
                for (int i = 0; i < values.Length; i++)
                    dst[indices[i]] = values[i];
            }
            if (targetGetter is not null)
            {
                targetGetter(ref target);
                if (target.Length != TargetLength)
                    throw new InvalidDataException($"Row {cursor.Position} of column '{targetColumn!.Value.Name}' has {target.Length} values, expected {TargetLength}.");
                target.CopyTo(batch.Targets.AsSpan(n * TargetLength, TargetLength));
            }
            batch.Labels[n] = label;
            if (++n == batchSize)
            {
                batch.Count = n;
                yield return batch;
                n = 0;
            }
        }
        if (n > 0)
        {
            batch.Count = n;
            yield return batch;
        }
    }

    /// <summary>A stable pseudo-random split of row ids: true for roughly <paramref name="fraction"/> of the rows.</summary>
    public static bool IsHeldOut(DataViewRowId id, int seed, double fraction)
    {
        if (fraction <= 0)
            return false;
        ulong h = id.Low * 0x9E3779B97F4A7C15UL ^ id.High * 0xC2B2AE3D27D4EB4FUL ^ (ulong)(uint)seed * 0x165667B19E3779F9UL;
        h ^= h >> 33;
        h *= 0xFF51AFD7ED558CCDUL;
        h ^= h >> 33;
        return (h >> 11) * (1.0 / (1UL << 53)) < fraction;
    }
}

/// <summary>Checks of input columns with messages that say what is wrong and what to do.</summary>
internal static class SchemaValidation
{
    public static DataViewSchema.Column FeatureColumn(DataViewSchema schema, string name, int expectedLength)
    {
        var column = schema.GetColumnOrNull(name)
            ?? throw new ArgumentOutOfRangeException(nameof(name), $"The input data has no feature column '{name}'. Columns present: {Describe(schema)}. " +
                "Set the options' FeatureColumnName, or build the column with ml.Transforms.Concatenate.");
        if (column.Type is not VectorDataViewType { ItemType: NumberDataViewType } vt || vt.ItemType.RawType != typeof(float) || !vt.IsKnownSize)
            throw new ArgumentOutOfRangeException(nameof(name),
                $"The feature column '{name}' has type {column.Type}; a known-size vector of Single is needed. " +
                "Convert it with ml.Transforms.Conversion.ConvertType or ml.Transforms.Concatenate.");
        if (expectedLength > 0 && vt.Size != expectedLength)
            throw new ArgumentOutOfRangeException(nameof(name),
                $"The feature column '{name}' has {vt.Size} values per row but the network's input shape needs {expectedLength}. " +
                "Choose an architecture whose input matches the data (e.g. NetworkArchitecture.Mlp(inputLength, ...)).");
        return column;
    }

    public static DataViewSchema.Column LabelColumn(DataViewSchema schema, string name, out int classCount)
    {
        var column = schema.GetColumnOrNull(name)
            ?? throw new ArgumentOutOfRangeException(nameof(name), $"The input data has no label column '{name}'. Columns present: {Describe(schema)}. " +
                "Set the options' LabelColumnName.");
        if (column.Type is not KeyDataViewType key || key.RawType != typeof(uint))
            throw new ArgumentOutOfRangeException(nameof(name),
                $"The label column '{name}' has type {column.Type}; a key type (UInt32) is needed. " +
                $"Add ml.Transforms.Conversion.MapValueToKey(\"{name}\") before the trainer.");
        if (key.Count < 2 || key.Count > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(name), $"The label column '{name}' has {key.Count} classes; between 2 and {int.MaxValue} are needed.");
        classCount = (int)key.Count;
        return column;
    }

    /// <summary>The label's key values as text ("0".."K-1" when it has none).</summary>
    public static string[] ClassNames(DataViewSchema.Column label, int classCount)
    {
        var names = new string[classCount];
        if (label.Annotations.Schema.GetColumnOrNull("KeyValues") is { } kv
            && kv.Type is VectorDataViewType { Size: > 0 } kvType && kvType.Size == classCount)
        {
            if (kvType.ItemType is TextDataViewType)
            {
                VBuffer<ReadOnlyMemory<char>> values = default;
                label.GetKeyValues(ref values);
                var dense = values.DenseValues().ToArray();
                for (int i = 0; i < classCount; i++)
                    names[i] = dense[i].ToString();
            }
            else
            {
                var getter = typeof(SchemaValidation).GetMethod(nameof(KeyValuesAsText), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
                    .MakeGenericMethod(kvType.ItemType.RawType);
                var text = (string[])getter.Invoke(null, [label, classCount])!;
                text.CopyTo(names, 0);
            }
        }
        else
        {
            for (int i = 0; i < classCount; i++)
                names[i] = i.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        if (names.Distinct(StringComparer.Ordinal).Count() != names.Length)
            for (int i = 0; i < classCount; i++)
                names[i] = i.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return names;
    }

    private static string[] KeyValuesAsText<T>(DataViewSchema.Column label, int classCount)
    {
        VBuffer<T> values = default;
        label.Annotations.GetValue("KeyValues", ref values);
        return values.DenseValues().Take(classCount)
            .Select(v => Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture) ?? string.Empty).ToArray();
    }

    private static string Describe(DataViewSchema schema) =>
        string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => $"'{c.Name}' ({c.Type})"));
}
