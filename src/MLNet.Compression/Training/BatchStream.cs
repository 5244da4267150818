using System.Collections.Concurrent;
using System.Numerics;
using System.Runtime.ExceptionServices;
using Microsoft.ML;
using Microsoft.ML.Data;
using TorchSharp;
using static TorchSharp.torch;

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
            FeatureLength = featureLength;
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

        /// <summary>Values per row of <see cref="Features"/>.</summary>
        public int FeatureLength { get; }

        /// <summary>
        /// The first <see cref="Count"/> rows of <see cref="Features"/> as a [Count, FeatureLength] float32 tensor on the CPU that
        /// shares the array's memory (pinned while the tensor lives) instead of copying it (<c>torch.tensor(float[])</c> clones
        /// the whole array, a large-object allocation per batch). Valid until the stream fills the batch again, i.e. for the step
        /// that reads it: dispose it (a dispose scope) before asking for the next batch, and copy it to keep it longer.
        /// </summary>
        public Tensor FeaturesTensor() => BenchmarkHooks.ShareBatchArrays
            ? torch.frombuffer(Features, ScalarType.Float32, (long)Count * FeatureLength).view(Count, FeatureLength)
            : tensor(Features, [Capacity, FeatureLength]).narrow(0, 0, Count);

        /// <summary>The first <see cref="Count"/> labels as an int64 tensor sharing <see cref="Labels"/>' memory (as <see cref="FeaturesTensor"/>).</summary>
        public Tensor LabelsTensor() => BenchmarkHooks.ShareBatchArrays ? torch.frombuffer(Labels, ScalarType.Int64, Count) : tensor(Labels, [Capacity]).narrow(0, 0, Count);
    }

    /// <summary>
    /// The most bytes the in-memory shuffle cache may take (for a view that cannot shuffle); 0 never caches. Default
    /// <see cref="NeuralNetworkOptions.DefaultShuffleCacheLimitBytes"/>.
    /// </summary>
    public long ShuffleCacheLimitBytes { get; init; } = NeuralNetworkOptions.DefaultShuffleCacheLimitBytes;

    /// <summary>Rows in the shuffle buffer used when the cache does not fit. Default <see cref="NeuralNetworkOptions.DefaultShuffleBufferRows"/>.</summary>
    public int ShuffleBufferRows { get; init; } = NeuralNetworkOptions.DefaultShuffleBufferRows;

    /// <summary>
    /// Stops a pass between rows (checked every 1,024 rows read), so that building the shuffle cache or filling the shuffle buffer
    /// of a large view can be cancelled too, not only the training steps.
    /// </summary>
    public CancellationToken Cancellation { get; init; }

    /// <summary>
    /// Whether <see cref="Read"/> fills the next batches on a background thread while the caller works on the current one
    /// (default false). The batches, their order and the <c>Last*</c> counters are the same either way; each yielded batch
    /// stays valid until the next one is asked for, as without prefetching, and an exception of the reading thread (a bad
    /// row, <see cref="Cancellation"/>) is rethrown to the caller after the batches read before it.
    /// </summary>
    public bool Prefetch { get; init; }

    /// <summary>How the rows of the last (or current) <see cref="Read"/> are ordered.</summary>
    public RowOrder LastOrder { get; private set; }

    /// <summary>
    /// Whether NaN in the target column means "no target for this value" (logit replay marks new rows and classes an exemplar's
    /// stored outputs do not cover with NaN) rather than a bad row: then only infinite targets skip a row. Default false.
    /// </summary>
    public bool TargetsMayHoldNaN { get; init; }

    /// <summary>Rows of the last <see cref="Read"/> skipped because a feature or target value was NaN or infinite.</summary>
    public long LastSkippedNonFinite { get; private set; }

    /// <summary>Rows of the last <see cref="Read"/> skipped because the label was missing.</summary>
    public long LastSkippedMissingLabel { get; private set; }

    /// <summary>Rows of the last <see cref="Read"/> that were read (skipped or not), after the row-id selection.</summary>
    public long LastRowsRead { get; private set; }

    /// <summary>Bytes one cached row takes: its features and targets as float, its label as long.</summary>
    public long CachedRowBytes => ((long)FeatureLength + TargetLength) * sizeof(float) + sizeof(long);

    private RowCache? cache;
    private Func<DataViewRowId, bool>? cacheSelection;
    private bool cacheTooLarge;

    /// <summary>
    /// Reads one pass over the data. Rows with a missing label (for the multiclass head: key 0) or a NaN or infinite feature
    /// (or target) value are skipped and counted (<see cref="LastSkippedMissingLabel"/>, <see cref="LastSkippedNonFinite"/>); the
    /// output head turns each label into its training target (<see cref="Networks.Heads.OutputHead.CreateLabelReader"/>).
    /// <paramref name="include"/> selects rows by id (for a validation split). <paramref name="rand"/> (null: the data's order)
    /// shuffles: through the cursor when the view can shuffle, else through an in-memory cache of the selected rows (a full
    /// permutation per pass, when they fit <see cref="ShuffleCacheLimitBytes"/>) or a shuffle buffer of
    /// <see cref="ShuffleBufferRows"/> rows. Every selected row is visited exactly once per pass, in an order that depends
    /// only on the data and <paramref name="rand"/>'s seed.
    /// </summary>
    public IEnumerable<Batch> Read(int batchSize, Random? rand, Func<DataViewRowId, bool>? include)
    {
        if (!Prefetch)
        {
            var batch = new Batch(batchSize, FeatureLength, TargetLength); // one batch, filled again after each one yielded
            return ReadInOrder(batchSize, rand, include, () => batch);
        }
        var pool = new PrefetchPool(batchSize, FeatureLength, TargetLength);
        return Prefetched(ReadInOrder(batchSize, rand, include, pool.Take), pool);
    }

    /// <summary>
    /// One pass; <paramref name="nextBatch"/> gives the batch to fill first and after each one yielded (the same one again, or
    /// the next of the background reader's pool, which is then filled without copying).
    /// </summary>
    private IEnumerable<Batch> ReadInOrder(int batchSize, Random? rand, Func<DataViewRowId, bool>? include, Func<Batch> nextBatch)
    {
        if (rand is null || data.CanShuffle)
        {
            LastOrder = rand is null ? RowOrder.DataOrder : RowOrder.ShuffledByDataView;
            return ReadCursor(batchSize, rand, include, nextBatch);
        }
        if (!cacheTooLarge && ShuffleCacheLimitBytes > 0 && (cache is null || !ReferenceEquals(cacheSelection, include)))
        {
            cache = RowCache.TryBuild(this, include, ShuffleCacheLimitBytes);
            cacheSelection = include;
            cacheTooLarge = cache is null;
        }
        if (cache is not null && ReferenceEquals(cacheSelection, include))
        {
            LastOrder = RowOrder.ShuffledInMemory;
            LastRowsRead = cache.RowsRead;
            LastSkippedNonFinite = cache.SkippedNonFinite;
            LastSkippedMissingLabel = cache.SkippedMissingLabel;
            return cache.Read(batchSize, rand, nextBatch);
        }
        LastOrder = RowOrder.ShuffleBuffer;
        return ReadBuffered(batchSize, rand, include, nextBatch);
    }

    private IEnumerable<Batch> ReadCursor(int batchSize, Random? rand, Func<DataViewRowId, bool>? include, Func<Batch> nextBatch)
    {
        using var reader = new RowReader(this, rand, include);
        foreach (var batch in Batches(batchSize, nextBatch, (batch, n) =>
        {
            if (!reader.MoveNext(batch.Features.AsSpan(n * FeatureLength, FeatureLength), batch.Targets.AsSpan(n * TargetLength, TargetLength), out long label))
                return false;
            batch.Labels[n] = label;
            return true;
        }))
            yield return batch;
    }

    /// <summary>
    /// The rows of one pass grouped into batches of <paramref name="batchSize"/> (the last one may be smaller):
    /// <paramref name="writeRow"/> writes the pass's next row into row n of the batch, or returns false at the end of the pass.
    /// A full batch is yielded first; only then does <paramref name="nextBatch"/> give the batch to fill next (with prefetching
    /// that may wait until the caller gives one back).
    /// </summary>
    private static IEnumerable<Batch> Batches(int batchSize, Func<Batch> nextBatch, Func<Batch, int, bool> writeRow)
    {
        var batch = nextBatch();
        int n = 0;
        while (writeRow(batch, n))
        {
            if (++n == batchSize)
            {
                batch.Count = n;
                yield return batch;
                n = 0;
                batch = nextBatch();
            }
        }
        if (n > 0)
        {
            batch.Count = n;
            yield return batch;
        }
    }

    /// <summary>
    /// A streaming shuffle for views that cannot shuffle and do not fit the cache: the first <see cref="ShuffleBufferRows"/> rows
    /// fill a buffer; each later row takes the place of one drawn uniformly from the buffer, which goes into the batch; at the end
    /// the rest of the buffer follows in a random order.
    /// </summary>
    private IEnumerable<Batch> ReadBuffered(int batchSize, Random rand, Func<DataViewRowId, bool>? include, Func<Batch> nextBatch)
    {
        int capacity = ShuffleBufferRows;
        var features = new float[(long)capacity * FeatureLength];
        var targets = new float[(long)capacity * TargetLength];
        var labels = new long[capacity];
        using var slots = ShuffleBufferOrder(rand, include, features, targets, labels).GetEnumerator();
        foreach (var batch in Batches(batchSize, nextBatch, (batch, n) =>
        {
            if (!slots.MoveNext())
                return false;
            Copy(slots.Current, features, targets, labels, batch, n);
            return true;
        }))
            yield return batch;
    }

    /// <summary>
    /// The buffer slots of <see cref="ReadBuffered"/> in the order their rows leave the buffer. The caller copies a yielded
    /// slot's row out before asking for the next slot, which may write a new row into it.
    /// </summary>
    private IEnumerable<int> ShuffleBufferOrder(Random rand, Func<DataViewRowId, bool>? include, float[] features, float[] targets, long[] labels)
    {
        int f = FeatureLength, t = TargetLength, capacity = labels.Length;
        var rowFeatures = new float[f];
        var rowTargets = new float[t];
        using var reader = new RowReader(this, null, include);
        int held = 0;
        while (reader.MoveNext(rowFeatures, rowTargets, out long label))
        {
            int slot;
            if (held < capacity)
                slot = held++;
            else
            {
                slot = rand.Next(capacity);
                yield return slot;
            }
            rowFeatures.CopyTo(features.AsSpan(slot * f, f));
            rowTargets.CopyTo(targets.AsSpan(slot * t, t));
            labels[slot] = label;
        }
        foreach (int slot in Permutation(held, rand))
            yield return slot;
    }

    private void Copy(int row, float[] features, float[] targets, long[] labels, Batch batch, int n)
    {
        int f = FeatureLength, t = TargetLength;
        features.AsSpan(row * f, f).CopyTo(batch.Features.AsSpan(n * f, f));
        targets.AsSpan(row * t, t).CopyTo(batch.Targets.AsSpan(n * t, t));
        batch.Labels[n] = labels[row];
    }

    /// <summary>
    /// <paramref name="source"/>'s batches (a pass that fills the batches of <paramref name="pool"/> in turn, so nothing is copied),
    /// read one batch ahead on a background thread: the pool holds two, one with the caller and one being filled (the same two
    /// batch buffers <see cref="TrainingMemoryEstimate.InputBufferBytes"/> counts; the batch tensors share them). Disposing
    /// the enumerator stops the thread and waits for it, so the cursor is closed when the caller's loop ends, early or not.
    /// </summary>
    private static IEnumerable<Batch> Prefetched(IEnumerable<Batch> source, PrefetchPool pool)
    {
        using var owned = pool;
        var (free, ready, stop) = (pool.Free, pool.Ready, pool.Stop);
        ExceptionDispatchInfo? failure = null;
        var reader = new Thread(() =>
        {
            try
            {
                foreach (var batch in source)
                    ready.Add(batch);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                // The caller stopped reading.
            }
            catch (Exception e)
            {
                failure = ExceptionDispatchInfo.Capture(e);
            }
            finally
            {
                ready.CompleteAdding();
            }
        })
        {
            IsBackground = true,
            Name = "BatchStream prefetch",
        };
        reader.Start();
        Batch? held = null;
        try
        {
            while (true)
            {
                if (held is not null)
                    free.Add(held); // the caller asked for the next batch: it is done with this one
                if (!ready.TryTake(out held, Timeout.Infinite))
                    break;
                yield return held;
            }
            failure?.Throw();
        }
        finally
        {
            stop.Cancel();
            reader.Join();
        }
    }

    /// <summary>The batches the background reader fills and the caller releases, and the signal that stops the reader.</summary>
    private sealed class PrefetchPool : IDisposable
    {
        public PrefetchPool(int batchSize, int featureLength, int targetLength)
        {
            for (int i = 0; i < 2; i++)
                Free.Add(new Batch(batchSize, featureLength, targetLength));
        }

        public BlockingCollection<Batch> Free { get; } = new(new ConcurrentQueue<Batch>());

        public BlockingCollection<Batch> Ready { get; } = new(new ConcurrentQueue<Batch>());

        public CancellationTokenSource Stop { get; } = new();

        /// <summary>The next batch to fill: waits until the caller has released one; throws when the reader is stopped.</summary>
        public Batch Take() => Free.Take(Stop.Token);

        public void Dispose()
        {
            Free.Dispose();
            Ready.Dispose();
            Stop.Dispose();
        }
    }

    /// <summary>A uniformly random permutation of 0..<paramref name="count"/>−1 (Fisher–Yates), drawn from <paramref name="rand"/>.</summary>
    internal static int[] Permutation(int count, Random rand)
    {
        var order = new int[count];
        for (int i = 0; i < count; i++)
            order[i] = i;
        for (int i = count - 1; i > 0; i--)
        {
            int j = rand.Next(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    /// <summary>
    /// One cursor over the selected columns that copies each usable row's features, targets and label into spans the caller
    /// gives, skipping (and counting, into the stream's <c>Last*</c> counters) rows without a label or with a non-finite value.
    /// </summary>
    private sealed class RowReader : IDisposable
    {
        private readonly BatchStream stream;
        private readonly DataViewRowCursor cursor;
        private readonly Networks.Heads.LabelReader readLabel;
        private readonly ValueGetter<VBuffer<float>> featureGetter;
        private readonly ValueGetter<VBuffer<float>>? targetGetter;
        private readonly ValueGetter<DataViewRowId>? idGetter;
        private readonly Func<DataViewRowId, bool>? include;
        private VBuffer<float> features;
        private VBuffer<float> target;
        private DataViewRowId id;
        private long visited;

        public RowReader(BatchStream stream, Random? rand, Func<DataViewRowId, bool>? include)
        {
            this.stream = stream;
            this.include = include;
            var columns = stream.targetColumn is { } t ? new[] { stream.labelColumn, stream.featureColumn, t } : new[] { stream.labelColumn, stream.featureColumn };
            cursor = stream.data.GetRowCursor(columns, rand);
            targetGetter = stream.targetColumn is { } tc ? cursor.GetGetter<VBuffer<float>>(tc) : null;
            readLabel = stream.head.CreateLabelReader(cursor, stream.labelColumn, stream.ClassCount);
            featureGetter = cursor.GetGetter<VBuffer<float>>(stream.featureColumn);
            idGetter = include is null ? null : cursor.GetIdGetter();
            stream.LastRowsRead = 0;
            stream.LastSkippedMissingLabel = 0;
            stream.LastSkippedNonFinite = 0;
        }

        /// <summary>Moves to the next usable row and copies it; false at the end.</summary>
        public bool MoveNext(Span<float> featureDst, Span<float> targetDst, out long label)
        {
            while (cursor.MoveNext())
            {
                if ((++visited & 1023) == 0)
                    stream.Cancellation.ThrowIfCancellationRequested();
                if (idGetter is not null)
                {
                    idGetter(ref id);
                    if (!include!(id))
                        continue;
                }
                stream.LastRowsRead++;
                label = readLabel();
                if (label < 0)
                {
                    stream.LastSkippedMissingLabel++;
                    continue;
                }
                featureGetter(ref features);
                if (features.Length != stream.FeatureLength)
                    throw new InvalidDataException(
                        $"Row {cursor.Position} of column '{stream.featureColumn.Name}' has {features.Length} values, expected {stream.FeatureLength}.");
                var values = features.GetValues();
                if (!AllFinite(values))
                {
                    stream.LastSkippedNonFinite++;
                    continue;
                }
                if (features.IsDense)
                    values.CopyTo(featureDst);
                else
                {
                    featureDst.Clear();
                    var indices = features.GetIndices();
                    for (int i = 0; i < values.Length; i++)
                        featureDst[indices[i]] = values[i];
                }
                if (targetGetter is not null)
                {
                    targetGetter(ref target);
                    if (target.Length != stream.TargetLength)
                        throw new InvalidDataException(
                            $"Row {cursor.Position} of column '{stream.targetColumn!.Value.Name}' has {target.Length} values, expected {stream.TargetLength}.");
                    if (stream.TargetsMayHoldNaN ? AnyInfinite(target.GetValues()) : !AllFinite(target.GetValues()))
                    {
                        stream.LastSkippedNonFinite++;
                        continue;
                    }
                    target.CopyTo(targetDst);
                }
                return true;
            }
            label = 0;
            return false;
        }

        public void Dispose() => cursor.Dispose();

        private static bool AnyInfinite(ReadOnlySpan<float> values)
        {
            foreach (var v in values)
                if (float.IsInfinity(v))
                    return true;
            return false;
        }

        private static bool AllFinite(ReadOnlySpan<float> values)
        {
            int i = 0;
            if (Vector.IsHardwareAccelerated && values.Length >= Vector<float>.Count)
            {
                // v - v is 0 for a finite v and NaN for NaN or ±infinity; a NaN stays in the sum.
                var sum = Vector<float>.Zero;
                for (; i <= values.Length - Vector<float>.Count; i += Vector<float>.Count)
                {
                    var v = new Vector<float>(values.Slice(i, Vector<float>.Count));
                    sum += v - v;
                }
                if (!Vector.EqualsAll(sum, Vector<float>.Zero))
                    return false;
            }
            for (; i < values.Length; i++)
                if (!float.IsFinite(values[i]))
                    return false;
            return true;
        }
    }

    /// <summary>
    /// The selected, usable rows of a view that cannot shuffle, held compactly in chunks of plain arrays (features and targets as
    /// float, labels as long), so each pass can visit them in a fresh random permutation.
    /// </summary>
    private sealed class RowCache
    {
        private readonly int chunkRows;
        private readonly BatchStream stream;
        private readonly List<float[]> features = new();
        private readonly List<float[]> targets = new();
        private readonly List<long[]> labels = new();

        private RowCache(BatchStream stream)
        {
            this.stream = stream;
            chunkRows = Math.Max(1, Math.Min(4096, Array.MaxLength / Math.Max(1, Math.Max(stream.FeatureLength, stream.TargetLength))));
        }

        public int Count { get; private set; }

        public long RowsRead { get; private set; }

        public long SkippedNonFinite { get; private set; }

        public long SkippedMissingLabel { get; private set; }

        /// <summary>Reads every selected row into a cache; null (nothing kept) as soon as the rows exceed <paramref name="limitBytes"/>.</summary>
        public static RowCache? TryBuild(BatchStream stream, Func<DataViewRowId, bool>? include, long limitBytes)
        {
            long rowBytes = stream.CachedRowBytes;
            if (stream.data.GetRowCount() is long known && include is null && known * rowBytes > limitBytes)
                return null;
            long allowed = Math.Min(limitBytes / rowBytes, Array.MaxLength);
            var cache = new RowCache(stream);
            int f = stream.FeatureLength, t = stream.TargetLength;
            using var reader = new RowReader(stream, null, include);
            while (true)
            {
                if (cache.Count >= allowed)
                {
                    // Full: the rows fit only if there is no other usable row.
                    if (reader.MoveNext(new float[f], new float[t], out _))
                        return null;
                    break;
                }
                int within = cache.Count % cache.chunkRows;
                if (within == 0)
                {
                    // Only the last chunk may be shorter (when the limit ends inside it), so row / cache.chunkRows still finds a row's chunk.
                    int rows = (int)Math.Min(cache.chunkRows, allowed - cache.Count);
                    cache.features.Add(new float[rows * f]);
                    cache.targets.Add(new float[rows * t]);
                    cache.labels.Add(new long[rows]);
                }
                int chunk = cache.Count / cache.chunkRows;
                if (!reader.MoveNext(cache.features[chunk].AsSpan(within * f, f), cache.targets[chunk].AsSpan(within * t, t), out long label))
                    break;
                cache.labels[chunk][within] = label;
                cache.Count++;
            }
            cache.RowsRead = stream.LastRowsRead;
            cache.SkippedNonFinite = stream.LastSkippedNonFinite;
            cache.SkippedMissingLabel = stream.LastSkippedMissingLabel;
            return cache;
        }

        /// <summary>One pass over the cached rows in a permutation drawn from <paramref name="rand"/>.</summary>
        public IEnumerable<Batch> Read(int batchSize, Random rand, Func<Batch> nextBatch)
        {
            int f = stream.FeatureLength, t = stream.TargetLength;
            var order = Permutation(Count, rand);
            int next = 0;
            foreach (var batch in Batches(batchSize, nextBatch, (batch, n) =>
            {
                if (next == order.Length)
                    return false;
                int row = order[next++];
                int chunk = row / chunkRows, within = row % chunkRows;
                features[chunk].AsSpan(within * f, f).CopyTo(batch.Features.AsSpan(n * f, f));
                targets[chunk].AsSpan(within * t, t).CopyTo(batch.Targets.AsSpan(n * t, t));
                batch.Labels[n] = labels[chunk][within];
                return true;
            }))
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
                $"The feature column '{name}' has {vt.Size} values per row but the network reads {expectedLength}. " +
                "Give it data prepared by the same transforms as the data it was trained on; to train a new network on this data, " +
                "NetworkArchitecture.Mlp(hidden...) takes its input size from the feature column.");
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
