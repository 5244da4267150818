using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Pipelines;

namespace MLNet.Compression.Distillation;

/// <summary>
/// The rows a student reads, untouched, plus one column: a teacher's scores for each row, read from the teacher's output over
/// the same rows. Nothing is copied per row: the source's columns are served by the source's own cursor, and the score
/// column by a second cursor over the teacher's output (which computes only that column). The teacher may rewrite any
/// column for itself (a normalizer, <c>MapValueToKey</c>): the student never sees its versions.
/// </summary>
/// <remarks>
/// Both cursors draw the numbers of the caller's <see cref="Random"/> through <see cref="SharedRandom"/>, so a shuffled pass
/// visits the rows in exactly the order the source alone gives for that random source (distilling with alpha = 0 trains the
/// same weights as training alone); the row ids of the two cursors are compared, so a mismatch fails loudly.
/// </remarks>
internal sealed class TeacherScoresDataView : IDataView
{
    private readonly IDataView source;
    private readonly IDataView taught;
    private readonly DataViewSchema.Column teacherScore;

    /// <summary>Adds <paramref name="taught"/>'s column <paramref name="score"/> to <paramref name="source"/> as <paramref name="name"/>.</summary>
    /// <param name="source">The rows.</param>
    /// <param name="taught">The teacher applied to <paramref name="source"/> (row to row, same rows in the same order).</param>
    /// <param name="score">The teacher's score column in <paramref name="taught"/>.</param>
    /// <param name="name">The new column's name, not in <paramref name="source"/>.</param>
    public TeacherScoresDataView(IDataView source, IDataView taught, DataViewSchema.Column score, string name)
    {
        this.source = source;
        this.taught = taught;
        teacherScore = score;
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(source.Schema);
        builder.AddColumn(name, score.Type);
        Schema = builder.ToSchema();
    }

    /// <summary>The added column.</summary>
    public DataViewSchema.Column ScoreColumn => Schema[Schema.Count - 1];

    /// <inheritdoc />
    public bool CanShuffle => source.CanShuffle && taught.CanShuffle;

    /// <inheritdoc />
    public DataViewSchema Schema { get; }

    /// <inheritdoc />
    public long? GetRowCount() => source.GetRowCount();

    /// <inheritdoc />
    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        ArgumentNullException.ThrowIfNull(columnsNeeded);
        var needed = columnsNeeded.Select(c => c.Index).ToHashSet();
        bool scores = needed.Contains(Schema.Count - 1);
        bool shuffle = rand is not null && CanShuffle;
        var shared = shuffle && scores ? new SharedRandom(rand!) : null;
        var main = source.GetRowCursor(needed.Where(i => i < source.Schema.Count).Select(i => source.Schema[i]),
            shared?.NewReader() ?? (shuffle ? rand : null));
        if (!scores)
            return new Cursor(this, main, null);
        try
        {
            return new Cursor(this, main, taught.GetRowCursor([teacherScore], shared?.NewReader()));
        }
        catch
        {
            main.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly TeacherScoresDataView parent;
        private readonly DataViewRowCursor main;
        private readonly DataViewRowCursor? teacher;
        private readonly ValueGetter<DataViewRowId>? mainId, teacherId;
        private DataViewRowId a, b;

        public Cursor(TeacherScoresDataView parent, DataViewRowCursor main, DataViewRowCursor? teacher)
        {
            this.parent = parent;
            this.main = main;
            this.teacher = teacher;
            if (teacher is not null)
            {
                mainId = main.GetIdGetter();
                teacherId = teacher.GetIdGetter();
            }
        }

        public override DataViewSchema Schema => parent.Schema;

        public override long Position => main.Position;

        public override long Batch => main.Batch;

        public override bool MoveNext()
        {
            bool more = main.MoveNext();
            if (teacher is null)
                return more;
            if (teacher.MoveNext() != more)
                throw new InvalidOperationException(
                    "The teacher's output has a different number of rows than the data it was applied to; a teacher must map each row to one row.");
            if (more)
            {
                mainId!(ref a);
                teacherId!(ref b);
                if (!a.Equals(b))
                    throw new InvalidOperationException(
                        $"Row {main.Position}: the teacher's output came in a different order than the rows it scored (row ids {a} and {b}), so its " +
                        "scores cannot be paired with the rows. The data view shuffles differently on every pass; cache it first (mlContext.Data.Cache).");
            }
            return more;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => main.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column) =>
            column.Index < parent.source.Schema.Count ? main.IsColumnActive(parent.source.Schema[column.Index]) : teacher is not null;

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (column.Index < parent.source.Schema.Count)
                return main.GetGetter<TValue>(parent.source.Schema[column.Index]);
            if (teacher is null)
                throw new InvalidOperationException($"Column '{column.Name}' was not requested when the cursor was created.");
            return teacher.GetGetter<TValue>(parent.teacherScore);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                teacher?.Dispose();
                main.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
