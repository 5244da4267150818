using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Onnx;
using MLNet.Compression.Training;

namespace MLNet.Compression.Incremental;

/// <summary>
/// The view continued training trains on: the new data's rows with their labels moved onto the merged class indices, and
/// exemplars from the replay memory mixed in between them. It has two columns, the label (key over the merged class
/// names) and the features, named as the model names them. A Boolean (binary) or Single (regression) label is passed
/// through with its type; an exemplar's label is then its stored class (0 = false, 1 = true) or its stored target.
/// </summary>
/// <remarks>
/// Mixing: after each source row the cursor owes <c>f / (1 − f)</c> more exemplars (f = the replay fraction) and pays
/// them out one row each, so every batch read from it holds about f·B exemplars and (1 − f)·B new rows. Exemplars are
/// visited in a random permutation that is redrawn after each pass over the memory. A pass therefore reads every source
/// row once plus about N·f/(1 − f) exemplars. Shuffling follows the source (<see cref="CanShuffle"/> is the source's);
/// the permutation of exemplars comes from the cursor's <see cref="Random"/> (or, without one, from the seed and the number of
/// cursors opened so far, so each epoch replays in a new order).
/// Memory: one decoded exemplar (features as float) besides the source cursor.
/// With logit replay a third column, <see cref="TargetsColumnName"/>, holds 1 + classes values per row: 1 and the exemplar's
/// stored outputs (NaN for classes they do not cover) for an exemplar, 0 and NaN for a new row.
/// </remarks>
internal sealed class IncrementalDataView : IDataView
{
    private readonly IDataView source;
    private readonly DataViewSchema.Column sourceLabel;
    private readonly DataViewSchema.Column sourceFeatures;
    private readonly int[] labelMap;
    private readonly DataViewType labelType;
    private readonly ReplayMemory? replay;
    private readonly double exemplarsPerRow;
    private readonly int seed;
    private readonly int targetLength;
    private int cursorsOpened;

    /// <summary>The name of the replay-target column (present only with logit replay).</summary>
    public const string TargetsColumnName = "__ReplayTargets";

    /// <param name="source">The new data.</param>
    /// <param name="labelColumnName">Its key-typed label column (also the output's name).</param>
    /// <param name="featureColumnName">Its feature column (also the output's name).</param>
    /// <param name="featureLength">Values per row.</param>
    /// <param name="labelMap">For each class index of the source's label key (0-based), the merged class index.</param>
    /// <param name="classNames">The merged class names (the output label's key values).</param>
    /// <param name="replay">Exemplars to mix in, or null.</param>
    /// <param name="replayFraction">Share of rows that are exemplars, in [0, 1).</param>
    /// <param name="seed">Seed for the exemplar order when a cursor is opened without a <see cref="Random"/>.</param>
    /// <param name="replayTargets">Whether to add the replay-target column (logit replay).</param>
    public IncrementalDataView(IDataView source, string labelColumnName, string featureColumnName, int featureLength, int[] labelMap,
        IReadOnlyList<string> classNames, ReplayMemory? replay, double replayFraction, int seed, bool replayTargets = false)
    {
        this.source = source;
        sourceFeatures = SchemaValidation.FeatureColumn(source.Schema, featureColumnName, featureLength);
        var plain = source.Schema.GetColumnOrNull(labelColumnName);
        if (plain is { Type: BooleanDataViewType } || plain?.Type == NumberDataViewType.Single)
        {
            sourceLabel = plain.Value;
            labelType = plain.Value.Type;
        }
        else
        {
            sourceLabel = SchemaValidation.LabelColumn(source.Schema, labelColumnName, out int classCount);
            if (labelMap.Length != classCount)
                throw new ArgumentException($"The label map has {labelMap.Length} entries for {classCount} classes.", nameof(labelMap));
            labelType = new KeyDataViewType(typeof(uint), classNames.Count);
        }
        this.labelMap = labelMap;
        this.replay = replay is { Count: > 0 } ? replay : null;
        exemplarsPerRow = this.replay is null || replayFraction <= 0 ? 0 : replayFraction / (1 - replayFraction);
        this.seed = seed;
        var builder = new DataViewSchema.Builder();
        if (labelType is KeyDataViewType)
            builder.AddColumn(labelColumnName, labelType, OnnxScoringColumns.KeyValuesAnnotations(classNames));
        else
            builder.AddColumn(labelColumnName, labelType);
        builder.AddColumn(featureColumnName, new VectorDataViewType(NumberDataViewType.Single, featureLength));
        if (replayTargets)
        {
            targetLength = 1 + classNames.Count;
            builder.AddColumn(TargetsColumnName, new VectorDataViewType(NumberDataViewType.Single, targetLength));
        }
        Schema = builder.ToSchema();
        FeatureLength = featureLength;
    }

    public int FeatureLength { get; }

    /// <summary>Whether the label is a regression target (Single) rather than a class (key or Boolean).</summary>
    public bool HasTargets => labelType == NumberDataViewType.Single;

    /// <summary>
    /// A reader of the label column (index 0) on <paramref name="cursor"/>, a cursor of this view: -1 for a row without a
    /// label (key 0, a NaN or infinite target), else the class index (key − 1; false 0, true 1) or, for a regression target,
    /// its bits as the regression head encodes them (<see cref="Networks.Heads.RegressionHead.Encode"/>).
    /// </summary>
    public Func<long> LabelCodes(DataViewRowCursor cursor)
    {
        var column = Schema[0];
        switch (labelType)
        {
            case BooleanDataViewType:
            {
                var getter = cursor.GetGetter<bool>(column);
                bool b = false;
                return () =>
                {
                    getter(ref b);
                    return b ? 1 : 0;
                };
            }
            case KeyDataViewType:
            {
                var getter = cursor.GetGetter<uint>(column);
                uint key = 0;
                return () =>
                {
                    getter(ref key);
                    return key == 0 ? -1 : key - 1;
                };
            }
            default:
            {
                var getter = cursor.GetGetter<float>(column);
                float y = 0;
                return () =>
                {
                    getter(ref y);
                    return float.IsFinite(y) ? Networks.Heads.RegressionHead.Encode(y) : -1;
                };
            }
        }
    }

    public bool CanShuffle => source.CanShuffle;

    public DataViewSchema Schema { get; }

    public long? GetRowCount() => null;

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var needed = columnsNeeded.Select(c => c.Index).ToHashSet();
        var cols = new List<DataViewSchema.Column>();
        if (needed.Contains(0))
            cols.Add(sourceLabel);
        if (needed.Contains(1))
            cols.Add(sourceFeatures);
        // The target column needs no source column: a new row's targets are constant.
        var inner = source.GetRowCursor(cols, source.CanShuffle ? rand : null);
        // Without a Random (a source that cannot shuffle) each pass still gets its own exemplar order.
        int pass = Interlocked.Increment(ref cursorsOpened);
        return new Cursor(this, inner, needed.Contains(0), needed.Contains(1), targetLength > 0 && needed.Contains(2), rand is null ? new Random(unchecked(seed + 7919 * pass)) : new Random(rand.Next()));
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly IncrementalDataView parent;
        private readonly DataViewRowCursor inner;
        private readonly bool label, features, targets;
        private readonly ValueGetter<uint>? innerLabel;
        private readonly Delegate? innerPlainLabel;
        private readonly ValueGetter<VBuffer<float>>? innerFeatures;
        private readonly ValueGetter<DataViewRowId> innerId;
        private readonly Random rand;
        private readonly int[] order;
        private readonly float[] decoded;
        private int orderPosition;
        private double owed;
        private int slot = -1;       // the exemplar the cursor is on, or -1 for a source row
        private long position = -1;
        private long exemplarsServed;
        private bool done;

        public Cursor(IncrementalDataView parent, DataViewRowCursor inner, bool label, bool features, bool targets, Random rand)
        {
            this.parent = parent;
            this.inner = inner;
            this.label = label;
            this.features = features;
            this.targets = targets;
            this.rand = rand;
            innerLabel = label && parent.labelType is KeyDataViewType ? inner.GetGetter<uint>(parent.sourceLabel) : null;
            innerPlainLabel = !label || parent.labelType is KeyDataViewType ? null
                : parent.labelType is BooleanDataViewType ? inner.GetGetter<bool>(parent.sourceLabel) : inner.GetGetter<float>(parent.sourceLabel);
            innerFeatures = features ? inner.GetGetter<VBuffer<float>>(parent.sourceFeatures) : null;
            innerId = inner.GetIdGetter();
            order = parent.replay is { } r ? Enumerable.Range(0, r.Count).ToArray() : [];
            orderPosition = order.Length;
            decoded = parent.replay is null ? [] : new float[parent.FeatureLength];
        }

        public override DataViewSchema Schema => parent.Schema;

        public override long Position => position;

        public override long Batch => 0;

        public override bool MoveNext()
        {
            if (done)
                return false;
            if (owed >= 1)
            {
                owed -= 1;
                if (orderPosition >= order.Length)
                {
                    // A new random pass over the memory (Fisher-Yates).
                    for (int i = order.Length - 1; i > 0; i--)
                    {
                        int j = rand.Next(i + 1);
                        (order[i], order[j]) = (order[j], order[i]);
                    }
                    orderPosition = 0;
                }
                slot = order[orderPosition++];
                if (features)
                    parent.replay!.CopyFeatures(slot, decoded);
                exemplarsServed++;
                position++;
                return true;
            }
            if (!inner.MoveNext())
            {
                done = true;
                slot = -1;
                return false;
            }
            slot = -1;
            owed += parent.exemplarsPerRow;
            position++;
            return true;
        }

        public override bool IsColumnActive(DataViewSchema.Column column) => column.Index switch
        {
            0 => label,
            1 => features,
            2 => targets,
            _ => false,
        };

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (column.Index == 0 && label && parent.labelType is BooleanDataViewType)
            {
                var innerBool = (ValueGetter<bool>)innerPlainLabel!;
                ValueGetter<bool> getter = (ref bool value) =>
                {
                    if (slot >= 0)
                        value = parent.replay!.LabelAt(slot) == 1;
                    else
                        innerBool(ref value);
                };
                return getter as ValueGetter<TValue> ?? throw new InvalidOperationException($"Column '{column.Name}' is a Boolean, not {typeof(TValue)}.");
            }
            if (column.Index == 0 && label && parent.labelType == NumberDataViewType.Single)
            {
                var innerFloat = (ValueGetter<float>)innerPlainLabel!;
                ValueGetter<float> getter = (ref float value) =>
                {
                    if (slot >= 0)
                        value = parent.replay!.TargetAt(slot);
                    else
                        innerFloat(ref value);
                };
                return getter as ValueGetter<TValue> ?? throw new InvalidOperationException($"Column '{column.Name}' is a Single, not {typeof(TValue)}.");
            }
            if (column.Index == 0 && label)
            {
                ValueGetter<uint> getter = (ref uint value) =>
                {
                    if (slot >= 0)
                    {
                        value = (uint)parent.replay!.LabelAt(slot) + 1;
                        return;
                    }
                    innerLabel!(ref value);
                    if (value == 0)
                        return; // missing label: skipped by the trainer
                    if (value > parent.labelMap.Length)
                        throw new InvalidDataException($"Row {inner.Position} has label key {value}, outside the {parent.labelMap.Length} classes of column '{parent.sourceLabel.Name}'.");
                    value = (uint)parent.labelMap[value - 1] + 1;
                };
                return getter as ValueGetter<TValue> ?? throw new InvalidOperationException($"Column '{column.Name}' is a key of UInt32, not {typeof(TValue)}.");
            }
            if (column.Index == 1 && features)
            {
                ValueGetter<VBuffer<float>> getter = (ref VBuffer<float> value) =>
                {
                    if (slot < 0)
                    {
                        innerFeatures!(ref value);
                        return;
                    }
                    var editor = VBufferEditor.Create(ref value, decoded.Length);
                    decoded.CopyTo(editor.Values);
                    value = editor.Commit();
                };
                return getter as ValueGetter<TValue> ?? throw new InvalidOperationException($"Column '{column.Name}' is a vector of Single, not {typeof(TValue)}.");
            }
            if (column.Index == 2 && targets)
            {
                ValueGetter<VBuffer<float>> getter = (ref VBuffer<float> value) =>
                {
                    var editor = VBufferEditor.Create(ref value, parent.targetLength);
                    var v = editor.Values;
                    v.Fill(float.NaN);
                    v[0] = slot >= 0 ? 1f : 0f;
                    if (slot >= 0)
                    {
                        var stored = parent.replay!.LogitsAt(slot);
                        for (int i = 0; i < stored.Length && i + 1 < v.Length; i++)
                            v[i + 1] = (float)stored[i];
                    }
                    value = editor.Commit();
                };
                return getter as ValueGetter<TValue> ?? throw new InvalidOperationException($"Column '{column.Name}' is a vector of Single, not {typeof(TValue)}.");
            }
            throw new InvalidOperationException($"Column '{column.Name}' was not requested when the cursor was opened.");
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId value) =>
        {
            if (slot < 0)
                innerId(ref value);
            else
                value = new DataViewRowId((ulong)exemplarsServed, 1UL << 63); // exemplars get ids no source row uses
        };

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                inner.Dispose();
            base.Dispose(disposing);
        }
    }
}
