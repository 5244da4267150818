using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Networks.Heads;

namespace MLNet.Compression.Onnx;

/// <summary>
/// A lazy view over <c>source</c> that appends the same columns as <see cref="OnnxScoringChain"/> (those of the model's
/// output head, <see cref="OutputHead.ScoredColumns"/>; multiclass: <c>Score</c> vector&lt;float, K&gt; and
/// <c>PredictedLabel</c> key&lt;uint, K&gt; with the class names as KeyValues) but computes them with a
/// <see cref="BatchedOnnxScorer"/> on blocks of rows instead of one ONNX Runtime call per row.
/// </summary>
/// <remarks>
/// A cursor wraps one source cursor for the requested source columns and, only when one of the head's columns is
/// requested, a second look-ahead source cursor over the feature column that reads a block, scores it, and serves the
/// results row by row. The source must give rows in the same order on every pass (true for ML.NET's loaders and
/// row-to-row transforms). Shuffling is supported when the source supports it: both cursors draw the numbers the caller's
/// <see cref="Random"/> gives (<see cref="Pipelines.SharedRandom"/>), so the rows come in the order the source alone would give for
/// that random source (a trainer's own shuffle), and the row ids they visit are compared, so a source whose shuffled order is not reproducible
/// fails loudly instead of pairing scores with the wrong rows. A cursor set is a single cursor. The scorer is shared, not owned; dispose it after the last cursor.
/// </remarks>
internal sealed class BatchedScoringDataView : IDataView
{
    private readonly IDataView source;
    private readonly BatchedOnnxScorer scorer;
    private readonly int featureIndex;
    private readonly int blockSize;
    private readonly int firstOutputIndex;
    private readonly IReadOnlyList<ScoredColumn> columns;

    /// <summary>Wraps <paramref name="source"/>; throws if <paramref name="featureColumnName"/> is not vector&lt;float, InputLength&gt;.</summary>
    /// <param name="source">The data to score.</param>
    /// <param name="scorer">The batched session (not owned).</param>
    /// <param name="featureColumnName">The feature column fed to the model.</param>
    /// <param name="classNames">One name per class, in class-index order (the label's key values).</param>
    /// <param name="blockSize">Rows per ONNX Runtime call.</param>
    public BatchedScoringDataView(IDataView source, BatchedOnnxScorer scorer, string featureColumnName, IReadOnlyList<string> classNames, int blockSize = 1024)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(scorer);
        ArgumentException.ThrowIfNullOrWhiteSpace(featureColumnName);
        ArgumentOutOfRangeException.ThrowIfLessThan(blockSize, 1);
        columns = scorer.Signature.OutputHead.ScoredColumns(scorer.Signature, classNames);
        featureIndex = OnnxScoringColumns.ValidateFeatureColumn(source.Schema, featureColumnName, scorer.InputLength);
        this.source = source;
        this.scorer = scorer;
        this.blockSize = blockSize;

        var builder = new DataViewSchema.Builder();
        builder.AddColumns(source.Schema);
        foreach (var column in columns)
            builder.AddColumn(column.Name, column.Type, column.Annotations);
        Schema = builder.ToSchema();
        firstOutputIndex = source.Schema.Count;
    }

    /// <inheritdoc />
    public bool CanShuffle => source.CanShuffle;

    /// <inheritdoc />
    public DataViewSchema Schema { get; }

    /// <inheritdoc />
    public long? GetRowCount() => source.GetRowCount();

    /// <inheritdoc />
    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        ArgumentNullException.ThrowIfNull(columnsNeeded);
        var needed = columnsNeeded.Select(c => c.Index).ToHashSet();
        var sourceColumns = needed.Where(i => i < firstOutputIndex).Select(i => source.Schema[i]).ToArray();
        var active = columns.Select((_, k) => needed.Contains(firstOutputIndex + k)).ToArray();
        bool shuffle = rand is not null && source.CanShuffle;
        bool scoring = active.Any(a => a);
        // The main cursor draws exactly what the caller's random source gives, so the rows come in the order the source alone
        // would give them for that source (a trainer's own order); the look-ahead cursor replays the same numbers.
        var shared = shuffle && scoring ? new Pipelines.SharedRandom(rand!) : null;
        var main = source.GetRowCursor(sourceColumns, shared?.NewReader() ?? (shuffle ? rand : null));
        DataViewRowCursor? ahead = null;
        try
        {
            if (scoring)
                ahead = source.GetRowCursor([source.Schema[featureIndex]], shared?.NewReader());
            return new Cursor(this, main, ahead, active, checkIds: shuffle);
        }
        catch
        {
            ahead?.Dispose();
            main.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly BatchedScoringDataView parent;
        private readonly DataViewRowCursor main;
        private readonly DataViewRowCursor? ahead;
        private readonly ValueGetter<VBuffer<float>>? featureGetter;
        private readonly bool[] active;
        private readonly int inputLength, width;
        private readonly float[] features = [], outputs = [];
        private readonly float[] denseRow = []; // one row, when the scorer takes input codes and no float block is kept
        private readonly HostRowValues? rowValues;
        private readonly DataViewRowId[] ids = [];
        private readonly ValueGetter<DataViewRowId>? aheadId, mainId;
        private VBuffer<float> featureRow;
        private long aheadRows;      // rows the look-ahead cursor has moved past
        private long blockStart = -1; // position of the first row in the scored block
        private int blockRows;

        public Cursor(BatchedScoringDataView parent, DataViewRowCursor main, DataViewRowCursor? ahead, bool[] active, bool checkIds)
        {
            this.parent = parent;
            this.main = main;
            this.ahead = ahead;
            this.active = active;
            inputLength = parent.scorer.InputLength;
            width = parent.scorer.OutputWidth;
            if (ahead is not null)
            {
                featureGetter = ahead.GetGetter<VBuffer<float>>(parent.source.Schema[parent.featureIndex]);
                // A model scored from input codes needs no float block (issue 19: 4 bytes a feature less per block row): one
                // row of room for a sparse row's dense copy is enough.
                if (parent.scorer.TakesInputCodes)
                    denseRow = new float[inputLength];
                else
                    features = new float[(long)parent.blockSize * inputLength];
                outputs = new float[(long)parent.blockSize * width];
                rowValues = parent.scorer.NewRowValues(parent.blockSize);
                if (checkIds)
                {
                    ids = new DataViewRowId[parent.blockSize];
                    aheadId = ahead.GetIdGetter();
                    mainId = main.GetIdGetter();
                }
            }
        }

        public override DataViewSchema Schema => parent.Schema;

        public override long Position => main.Position;

        public override long Batch => main.Batch;

        public override bool MoveNext() => main.MoveNext();

        public override ValueGetter<DataViewRowId> GetIdGetter() => main.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column)
        {
            if (column.Index >= parent.firstOutputIndex)
                return active[column.Index - parent.firstOutputIndex];
            return main.IsColumnActive(main.Schema[column.Index]);
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (column.Index < parent.firstOutputIndex)
                return main.GetGetter<TValue>(main.Schema[column.Index]);
            int k = column.Index - parent.firstOutputIndex;
            if (k < active.Length && active[k])
            {
                var scored = parent.columns[k];
                if (typeof(TValue) != scored.Type.RawType)
                    throw new InvalidOperationException(
                        $"Column '{column.Name}' is {column.Type}; read it as {RawTypeName(scored.Type.RawType)}, not {RawTypeName(typeof(TValue))}.");
                return (ValueGetter<TValue>)scored.MakeGetter(CurrentRowOutputs);
            }
            throw new InvalidOperationException($"Column '{column.Name}' was not requested when the cursor was created.");
        }

        /// <summary>Index of the current row in the scored block, scoring the block that starts here if needed.</summary>
        private int CurrentBlockRow()
        {
            long pos = main.Position;
            if (pos < 0)
                throw new InvalidOperationException("The cursor is not on a row; call MoveNext first.");
            int row;
            if (pos >= blockStart && pos < blockStart + blockRows)
                row = (int)(pos - blockStart);
            else
            {
                ScoreBlockAt(pos);
                row = 0;
            }
            if (mainId is not null)
            {
                DataViewRowId id = default;
                mainId(ref id);
                if (!id.Equals(ids[row]))
                    throw new InvalidOperationException(
                        "The source data view visited rows in a different order for two cursors created with the same random seed, so shuffled " +
                        "scores cannot be paired with their rows. Score without shuffling, or cache the source first (mlContext.Data.Cache).");
            }
            return row;
        }

        private void ScoreBlockAt(long pos)
        {
            var lookAhead = ahead!;
            // Skip rows whose outputs were never read (no feature reads for them).
            while (aheadRows < pos)
            {
                if (!lookAhead.MoveNext())
                    throw SourceChanged();
                aheadRows++;
            }
            int n = 0;
            while (n < parent.blockSize && lookAhead.MoveNext())
            {
                aheadRows++;
                aheadId?.Invoke(ref ids[n]);
                featureGetter!(ref featureRow);
                if (featureRow.Length != inputLength)
                    throw new InvalidOperationException(
                        $"Row {aheadRows - 1} of feature column '{parent.source.Schema[parent.featureIndex].Name}' has {featureRow.Length} values; the model needs {inputLength}.");
                // Copied with the model's row checks on the way (issue 19: the non-finite probe on values already in registers).
                var row = features.Length == 0 ? denseRow.AsSpan() : features.AsSpan(n * inputLength, inputLength);
                if (featureRow.IsDense)
                    parent.scorer.CopyRow(featureRow.GetValues(), row, rowValues!, n);
                else
                {
                    featureRow.CopyTo(row);
                    parent.scorer.CopyRow(row, row, rowValues!, n);
                }
                n++;
            }
            if (n == 0)
                throw SourceChanged();
            // The array overload: ONNX Runtime reads the block and writes the outputs in place (no staging copies).
            parent.scorer.Score(features, n, outputs, rowValues);
            blockStart = pos;
            blockRows = n;
        }

        /// <summary>The head's batched outputs of the current row (scores its block first when needed).</summary>
        private ReadOnlySpan<float> CurrentRowOutputs() => outputs.AsSpan(CurrentBlockRow() * width, width);

        /// <summary>A type's C# name for messages (VBuffer&lt;Single&gt; rather than VBuffer`1).</summary>
        private static string RawTypeName(Type type) =>
            type.IsGenericType ? $"{type.Name[..type.Name.IndexOf('`')]}<{string.Join(", ", type.GetGenericArguments().Select(RawTypeName))}>" : type.Name;

        private static InvalidOperationException SourceChanged() =>
            new("The source data view returned fewer rows to the look-ahead cursor than to the main cursor; " +
                "BatchedScoringDataView needs a source that gives the same rows in the same order on every pass.");

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                ahead?.Dispose();
                main.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
