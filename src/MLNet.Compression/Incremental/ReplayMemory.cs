using System.Buffers.Binary;
using MLNet.Compression.Training;

namespace MLNet.Compression.Incremental;

/// <summary>
/// A bounded exemplar memory for experience replay: at most <see cref="Capacity"/> rows, each stored as <see cref="Bits"/> bits
/// per feature (packed densely, on an affine grid over the feature's range) plus its class index and, with logit replay,
/// <see cref="LogitLength"/> float16 outputs of the network. Rows are chosen by class-balanced reservoir sampling (Chrysakis &amp;
/// Moens, 2020): while there is room every row is kept; once full, a row of a class that holds fewer exemplars than the largest
/// class replaces a random exemplar of a largest class, and a row of a largest class c replaces a random exemplar of c with
/// probability m_c / n_c (m_c exemplars of c stored, n_c rows of c seen). An <see cref="Ordered"/> memory (herding) instead keeps
/// each class's exemplars in priority order and is filled by <see cref="AddCodes"/>. A memory that <see cref="HoldsTargets"/>
/// (regression) is one plain reservoir whose exemplars carry a float32 target in place of the class index.
/// </summary>
/// <remarks>
/// <para>Ranges: each feature's range starts unset and becomes the hull of the values seen (<see cref="Widen"/>, or the first
/// row offered); while every value of a feature lies in [0, 1] its range is [0, 1] itself, so pixel data (and data scaled into
/// [0, 1]) is stored on the fixed grid k / 255 at 8 bits, exactly as version 1 of the format stored it. A range only ever grows;
/// when it does, the stored exemplars are decoded on the old grid and encoded again on the new one (each widening adds at
/// most half a step of the new grid to their error). Values outside the range when a row is offered are clamped to it and
/// counted in <see cref="ClampedValues"/>; NaN cannot be stored and raises an <see cref="InvalidDataException"/>.</para>
/// <para>Bytes: <see cref="Bytes"/> = <see cref="Count"/> × <see cref="BytesPerExemplar(int, int, int)"/> + <see cref="RangeBytes"/>
/// (8 bytes per feature, only when a range differs from [0, 1]). The bookkeeping (per-class counts of rows seen, the generator
/// state, the header) is not counted.</para>
/// </remarks>
internal sealed class ReplayMemory
{
    /// <summary>Bytes stored per exemplar besides its features (the class index, int32).</summary>
    public const int LabelBytes = sizeof(int);

    /// <summary>Bytes per stored output (float16).</summary>
    public const int LogitBytes = 2;

    private const string Magic = "MLNC-REPLAY";
    private const int Version1 = 1;
    private const int Version2 = 2;
    private const int FlagOrdered = 1;
    private const int FlagRanges = 2;
    private const int FlagTargets = 4;

    private byte[] codes;
    private int[] labels;
    private Half[] logits;
    private long[] seen;
    private float[] lo;
    private float[] hi;
    private readonly List<List<int>> slotsByClass = new();
    private ulong rng;

    public ReplayMemory(int featureLength, int capacity, ulong seed)
        : this(featureLength, capacity, capacity, seed, 8, 0)
    {
    }

    public ReplayMemory(int featureLength, int capacity, ulong seed, int bits, int logitLength = 0, bool ordered = false, bool targets = false)
        : this(featureLength, capacity, capacity, seed, bits, logitLength)
    {
        if (targets && ordered)
            throw new ArgumentException("A memory of regression targets is a plain reservoir; herding (an ordered memory) needs classes.", nameof(ordered));
        Ordered = ordered;
        HoldsTargets = targets;
    }

    /// <summary>A memory of <paramref name="capacity"/> exemplars with room allocated for <paramref name="slots"/> of them (it grows on demand).</summary>
    private ReplayMemory(int featureLength, int capacity, int slots, ulong seed, int bits, int logitLength)
    {
        if (featureLength <= 0)
            throw new ArgumentOutOfRangeException(nameof(featureLength), featureLength, "Exemplars need at least one feature.");
        if (capacity <= 0)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "The replay memory needs room for at least one exemplar.");
        if (bits is not (8 or 4 or 2 or 1))
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "Exemplars store 8, 4, 2 or 1 bits per feature.");
        if (logitLength < 0)
            throw new ArgumentOutOfRangeException(nameof(logitLength), logitLength, "The number of stored outputs is not negative.");
        FeatureLength = featureLength;
        Bits = bits;
        CodeBytes = (int)((featureLength * (long)bits + 7) / 8);
        Capacity = capacity;
        LogitLength = logitLength;
        codes = new byte[ArrayBytes(slots, CodeBytes)];
        labels = new int[slots];
        logits = new Half[ArrayBytes(slots, logitLength)];
        seen = [];
        lo = new float[featureLength];
        hi = new float[featureLength];
        Array.Fill(lo, float.NaN);
        Array.Fill(hi, float.NaN);
        rng = seed == 0 ? 0x9E3779B97F4A7C15UL : seed;
    }

    /// <summary><paramref name="rows"/> × <paramref name="perRow"/> values, checked: one array holds at most 2^31 − 1.</summary>
    private static int ArrayBytes(int rows, int perRow)
    {
        long bytes = (long)rows * perRow;
        if (bytes > Array.MaxLength)
            throw new ArgumentOutOfRangeException(nameof(rows), rows,
                $"{rows} exemplars of {perRow} values need {bytes:N0} entries, more than one array holds ({Array.MaxLength:N0}); use a smaller replay budget.");
        return (int)bytes;
    }

    /// <summary>Values per exemplar.</summary>
    public int FeatureLength { get; }

    /// <summary>Bits stored per feature (8, 4, 2 or 1).</summary>
    public int Bits { get; }

    /// <summary>Bytes of one exemplar's packed features.</summary>
    public int CodeBytes { get; }

    /// <summary>Network outputs stored per exemplar (0 without logit replay); grows with the classes.</summary>
    public int LogitLength { get; private set; }

    /// <summary>Whether each class keeps its exemplars in priority order (herding) rather than as a random sample.</summary>
    public bool Ordered { get; private set; }

    /// <summary>
    /// Whether the memory stores a regression target (float32) per exemplar instead of a class index: one plain (uniform)
    /// reservoir, every exemplar in "class" 0 for the bookkeeping, its 4-byte label slot holding the target's bits, so the
    /// bytes per exemplar are the same. Written as version 2 with flag 4; a memory without it reads as before.
    /// </summary>
    public bool HoldsTargets { get; private set; }

    /// <summary>Most exemplars the memory holds.</summary>
    public int Capacity { get; private set; }

    /// <summary>Exemplars held now.</summary>
    public int Count { get; private set; }

    /// <summary>Feature values clamped into their stored range so far (values outside it when their row was offered).</summary>
    public long ClampedValues { get; private set; }

    /// <summary>Whether every feature's range is [0, 1] (or still unset): then no range table is stored.</summary>
    public bool UnitRanges
    {
        get
        {
            for (int i = 0; i < lo.Length; i++)
                if (!(float.IsNaN(lo[i]) && float.IsNaN(hi[i])) && !(lo[i] == 0f && hi[i] == 1f))
                    return false;
            return true;
        }
    }

    /// <summary>Bytes of the range table: 8 per feature when some range is not [0, 1], else 0.</summary>
    public long RangeBytes => UnitRanges ? 0 : 8L * FeatureLength;

    /// <summary>Bytes of one exemplar: packed features, class index, stored outputs.</summary>
    public long ExemplarBytes => BytesPerExemplar(FeatureLength, Bits, LogitLength);

    /// <summary>Bytes of the stored exemplars for <see cref="Count"/> rows, plus the range table.</summary>
    public long Bytes => Count * ExemplarBytes + RangeBytes;

    /// <summary>Bytes the memory can grow to (<see cref="Capacity"/> rows, plus the range table).</summary>
    public long CapacityBytes => Capacity * ExemplarBytes + RangeBytes;

    /// <summary>Bytes one 8-bit exemplar without stored outputs takes.</summary>
    public static long BytesPerExemplar(int featureLength) => BytesPerExemplar(featureLength, 8, 0);

    /// <summary>Bytes one exemplar takes: ⌈features · bits / 8⌉ + 4 + 2 · outputs.</summary>
    public static long BytesPerExemplar(int featureLength, int bits, int logitLength) =>
        ((long)featureLength * bits + 7) / 8 + LabelBytes + (long)LogitBytes * logitLength;

    /// <summary>The range [low, high] of feature <paramref name="feature"/> (NaN while unset).</summary>
    public (float Low, float High) RangeOf(int feature) => (lo[feature], hi[feature]);

    /// <summary>Exemplars held per class index (index = class).</summary>
    public int[] CountsPerClass() => slotsByClass.Select(s => s.Count).ToArray();

    /// <summary>Rows offered per class index so far.</summary>
    public long[] SeenPerClass() => (long[])seen.Clone();

    /// <summary>The class index of exemplar <paramref name="slot"/> (0 ≤ slot &lt; <see cref="Count"/>); 0 in a memory of <see cref="HoldsTargets"/>.</summary>
    public int LabelAt(int slot) => HoldsTargets ? 0 : labels[slot];

    /// <summary>The regression target of exemplar <paramref name="slot"/> in a memory that <see cref="HoldsTargets"/>.</summary>
    public float TargetAt(int slot) => HoldsTargets
        ? BitConverter.Int32BitsToSingle(labels[slot])
        : throw new InvalidOperationException("This replay memory stores class indices, not regression targets.");

    /// <summary>
    /// Offers one row with its regression target to a memory that <see cref="HoldsTargets"/> (plain reservoir sampling: every
    /// row seen so far is kept with the same probability). Returns the slot it was stored in, or -1.
    /// </summary>
    public int OfferTarget(ReadOnlySpan<float> features, float target, Func<string> where)
    {
        if (!HoldsTargets)
            throw new InvalidOperationException("This replay memory stores class indices; offer rows with their class (Offer).");
        if (!float.IsFinite(target))
            throw new InvalidDataException($"{where()} has target {target}; a replayed regression target must be finite.");
        int slot = Offer(features, 0, where);
        if (slot >= 0)
            labels[slot] = BitConverter.SingleToInt32Bits(target);
        return slot;
    }

    /// <summary>The slots of class <paramref name="label"/>'s exemplars (in priority order for an <see cref="Ordered"/> memory).</summary>
    public IReadOnlyList<int> SlotsOf(int label) => label < slotsByClass.Count ? slotsByClass[label] : [];

    /// <summary>The packed codes of exemplar <paramref name="slot"/>.</summary>
    public ReadOnlySpan<byte> CodesAt(int slot) => codes.AsSpan(slot * CodeBytes, CodeBytes);

    /// <summary>The stored outputs of exemplar <paramref name="slot"/> (NaN for classes it did not cover, all NaN when none were stored yet).</summary>
    public ReadOnlySpan<Half> LogitsAt(int slot) => logits.AsSpan(slot * LogitLength, LogitLength);

    /// <summary>Whether exemplar <paramref name="slot"/> has stored outputs.</summary>
    public bool HasLogits(int slot) => LogitLength > 0 && !Half.IsNaN(logits[slot * LogitLength]);

    /// <summary>Stores <paramref name="values"/> (one per class, at most <see cref="LogitLength"/>) as exemplar <paramref name="slot"/>'s outputs.</summary>
    public void SetLogits(int slot, ReadOnlySpan<float> values)
    {
        var dst = logits.AsSpan(slot * LogitLength, LogitLength);
        dst.Fill(Half.NaN);
        for (int i = 0; i < Math.Min(values.Length, dst.Length); i++)
            dst[i] = (Half)values[i];
    }

    /// <summary>Makes room for <paramref name="logitLength"/> outputs per exemplar (the new ones NaN: not known when stored).</summary>
    public void GrowLogits(int logitLength)
    {
        if (logitLength <= LogitLength)
            return;
        int slots = labels.Length;
        var grown = new Half[ArrayBytes(slots, logitLength)];
        Array.Fill(grown, Half.NaN);
        for (int s = 0; s < Count; s++)
            logits.AsSpan(s * LogitLength, LogitLength).CopyTo(grown.AsSpan(s * logitLength, LogitLength));
        logits = grown;
        LogitLength = logitLength;
    }

    /// <summary>Decodes exemplar <paramref name="slot"/> into <paramref name="destination"/>: low + code · (high − low) / (2^bits − 1).</summary>
    public void CopyFeatures(int slot, Span<float> destination) => Decode(codes.AsSpan(slot * CodeBytes, CodeBytes), destination);

    private void Decode(ReadOnlySpan<byte> src, Span<float> destination)
    {
        int levels = (1 << Bits) - 1;
        float fl = levels;
        for (int i = 0; i < FeatureLength; i++)
        {
            int code = Bits == 8 ? src[i] : ReadCode(src, i);
            float l = lo[i], h = hi[i];
            if (float.IsNaN(l))
                (l, h) = (0f, 1f);
            // Order of operations: for the range [0, 1] at 8 bits this is code / 255f, as version 1 decoded.
            destination[i] = l + code * (h - l) / fl;
        }
    }

    private int ReadCode(ReadOnlySpan<byte> src, int feature)
    {
        int bit = feature * Bits;
        return (src[bit >> 3] >> (bit & 7)) & ((1 << Bits) - 1);
    }

    private void Encode(ReadOnlySpan<float> features, Span<byte> destination, bool count)
    {
        int levels = (1 << Bits) - 1;
        if (Bits != 8)
            destination.Clear();
        for (int i = 0; i < features.Length; i++)
        {
            float v = features[i];
            float l = lo[i], h = hi[i];
            if (float.IsNaN(l))
                (l, h) = (0f, 1f);
            if (v < l || v > h)
            {
                v = v < l ? l : h;
                if (count)
                    ClampedValues++;
            }
            int code = h > l ? (int)MathF.Round((v - l) / (h - l) * levels) : 0;
            code = Math.Clamp(code, 0, levels);
            if (Bits == 8)
                destination[i] = (byte)code;
            else
            {
                int bit = i * Bits;
                destination[bit >> 3] |= (byte)(code << (bit & 7));
            }
        }
    }

    /// <summary>Checks <paramref name="features"/> (length, no NaN) and sets the ranges still unset from them.</summary>
    private void Check(ReadOnlySpan<float> features, Func<string> where)
    {
        if (features.Length != FeatureLength)
            throw new InvalidDataException($"{where()} has {features.Length} feature values; the replay memory stores {FeatureLength}.");
        bool unset = false;
        for (int i = 0; i < features.Length; i++)
        {
            if (float.IsNaN(features[i]))
                throw new InvalidDataException(
                    $"{where()} has feature value NaN at index {i}. Replay cannot store a missing value; replace missing values first " +
                    "(for example with ml.Transforms.ReplaceMissingValues) or continue without ContinualStrategies.Replay.");
            unset |= float.IsNaN(lo[i]);
        }
        if (unset)
        {
            var row = features.ToArray();
            Widen(row, row);
        }
    }

    /// <summary>
    /// Widens each feature's range to cover [<paramref name="min"/>[i], <paramref name="max"/>[i]] (infinite bounds are ignored; a
    /// range inside [0, 1] is [0, 1]), and re-encodes the stored exemplars on the new grid when a range changed. Returns whether one did.
    /// </summary>
    public bool Widen(ReadOnlySpan<float> min, ReadOnlySpan<float> max)
    {
        var newLo = (float[])lo.Clone();
        var newHi = (float[])hi.Clone();
        bool changed = false;
        for (int i = 0; i < FeatureLength; i++)
        {
            float a = float.IsFinite(min[i]) ? min[i] : float.NaN, b = float.IsFinite(max[i]) ? max[i] : float.NaN;
            if (float.IsNaN(a) && float.IsNaN(b))
                continue;
            if (float.IsNaN(a)) a = b;
            if (float.IsNaN(b)) b = a;
            float l = float.IsNaN(newLo[i]) ? a : Math.Min(newLo[i], a);
            float h = float.IsNaN(newHi[i]) ? b : Math.Max(newHi[i], b);
            if (l >= 0f && h <= 1f)
                (l, h) = (0f, 1f);
            if (l != lo[i] || h != hi[i])
            {
                newLo[i] = l;
                newHi[i] = h;
                changed = true;
            }
        }
        if (!changed)
            return false;
        if (Count > 0)
        {
            var decoded = new float[FeatureLength];
            var oldLo = lo;
            var oldHi = hi;
            for (int s = 0; s < Count; s++)
            {
                (lo, hi) = (oldLo, oldHi);
                CopyFeatures(s, decoded);
                (lo, hi) = (newLo, newHi);
                Encode(decoded, codes.AsSpan(s * CodeBytes, CodeBytes), count: false);
            }
        }
        lo = newLo;
        hi = newHi;
        return true;
    }

    /// <summary>
    /// Offers one row to the memory (class-balanced reservoir sampling). <paramref name="where"/> describes the row for the
    /// error raised when a feature cannot be stored (NaN). Returns the slot it was stored in, or -1.
    /// </summary>
    public int Offer(ReadOnlySpan<float> features, int label, Func<string> where)
    {
        Check(features, where);
        if (label < 0)
            throw new ArgumentOutOfRangeException(nameof(label), label, "Class indices are non-negative.");
        EnsureClass(label);
        long n = ++seen[label];
        int slot;
        if (Count < Capacity)
        {
            if (Count == labels.Length)
                Grow();
            slot = Count++;
        }
        else
        {
            int largest = slotsByClass.Max(s => s.Count);
            var own = slotsByClass[label];
            if (own.Count < largest)
            {
                // Take the place of a random exemplar of a largest class (a random one of them when several tie).
                var candidates = Enumerable.Range(0, slotsByClass.Count).Where(c => slotsByClass[c].Count == largest).ToArray();
                var victimClass = slotsByClass[candidates[NextInt(candidates.Length)]];
                int at = NextInt(victimClass.Count);
                slot = victimClass[at];
                RemoveAt(victimClass, at);
            }
            else
            {
                // Reservoir sampling within the class: keep the row with probability m_c / n_c.
                if (NextDouble() * n >= own.Count)
                    return -1;
                int at = NextInt(own.Count);
                slot = own[at];
                RemoveAt(own, at);
            }
        }
        Store(slot, features, label);
        return slot;
    }

    private void Store(int slot, ReadOnlySpan<float> features, int label)
    {
        Encode(features, codes.AsSpan(slot * CodeBytes, CodeBytes), count: true);
        labels[slot] = label;
        if (LogitLength > 0)
            logits.AsSpan(slot * LogitLength, LogitLength).Fill(Half.NaN);
        slotsByClass[label].Add(slot);
    }

    /// <summary>Counts a row of <paramref name="label"/> as seen without offering it (herding chooses its exemplars later).</summary>
    public void CountSeen(int label)
    {
        if (label < 0)
            throw new ArgumentOutOfRangeException(nameof(label), label, "Class indices are non-negative.");
        EnsureClass(label);
        seen[label]++;
    }

    /// <summary>Keeps the first <paramref name="keep"/> exemplars of class <paramref name="label"/> (its highest-priority ones in an ordered memory).</summary>
    public void TrimClass(int label, int keep)
    {
        if (label >= slotsByClass.Count)
            return;
        var list = slotsByClass[label];
        while (list.Count > keep)
            RemoveSlot(label, list.Count - 1);
    }

    /// <summary>
    /// Appends <paramref name="rows"/> (features, in priority order) as exemplars of class <paramref name="label"/>; room must
    /// be left (<see cref="Count"/> + rows ≤ <see cref="Capacity"/>). Values outside the ranges are clamped and counted.
    /// </summary>
    public void AddToClass(int label, IReadOnlyList<float[]> rows, Func<string> where)
    {
        if (Count + rows.Count > Capacity)
            throw new InvalidOperationException($"{rows.Count} exemplars do not fit: {Count} of {Capacity} held.");
        EnsureClass(label);
        foreach (var r in rows)
        {
            Check(r, where);
            if (Count == labels.Length)
                Grow();
            Store(Count++, r, label);
        }
    }

    /// <summary>
    /// Appends the exemplars <paramref name="slots"/> of <paramref name="pool"/> (same layout and ranges: made by
    /// <see cref="EmptyLike"/> after the last widening) to class <paramref name="label"/>, codes copied as they are, in order.
    /// </summary>
    public void AddCodes(int label, ReplayMemory pool, IReadOnlyList<int> slots)
    {
        if (pool.Bits != Bits || pool.FeatureLength != FeatureLength || !pool.lo.AsSpan().SequenceEqual(lo) || !pool.hi.AsSpan().SequenceEqual(hi))
            throw new InvalidOperationException("The candidate pool's layout or ranges differ from the memory's.");
        if (Count + slots.Count > Capacity)
            throw new InvalidOperationException($"{slots.Count} exemplars do not fit: {Count} of {Capacity} held.");
        EnsureClass(label);
        foreach (int from in slots)
        {
            if (Count == labels.Length)
                Grow();
            int slot = Count++;
            pool.codes.AsSpan(from * CodeBytes, CodeBytes).CopyTo(codes.AsSpan(slot * CodeBytes, CodeBytes));
            labels[slot] = label;
            if (LogitLength > 0)
                logits.AsSpan(slot * LogitLength, LogitLength).Fill(Half.NaN);
            slotsByClass[label].Add(slot);
        }
        ClampedValues += pool.ClampedValues;
    }

    /// <summary>A copy stored at <paramref name="bits"/> bits per feature (each exemplar decoded and encoded again), same order and ranges.</summary>
    public ReplayMemory Reencoded(int bits, bool ordered)
    {
        var c = new ReplayMemory(FeatureLength, Capacity, Math.Max(Count, 1), rng, bits, LogitLength)
        {
            seen = (long[])seen.Clone(),
            lo = (float[])lo.Clone(),
            hi = (float[])hi.Clone(),
            ClampedValues = ClampedValues,
            Ordered = ordered,
            HoldsTargets = HoldsTargets,
        };
        var decoded = new float[FeatureLength];
        for (int s = 0; s < Count; s++)
        {
            CopyFeatures(s, decoded);
            c.Encode(decoded, c.codes.AsSpan(s * c.CodeBytes, c.CodeBytes), count: false);
            c.labels[s] = labels[s];
            logits.AsSpan(s * LogitLength, LogitLength).CopyTo(c.logits.AsSpan(s * LogitLength, LogitLength));
        }
        c.Count = Count;
        foreach (var list in slotsByClass)
            c.slotsByClass.Add(new List<int>(list));
        return c;
    }

    /// <summary>
    /// Changes the capacity. Shrinking drops random exemplars of the largest classes (the last of a largest class in an
    /// <see cref="Ordered"/> memory) until the memory fits, so it stays class-balanced; growing only makes room.
    /// </summary>
    public void Resize(int capacity)
    {
        if (capacity <= 0)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "The replay memory needs room for at least one exemplar.");
        if (capacity == Capacity)
            return;
        while (Count > capacity)
        {
            int largest = slotsByClass.Max(s => s.Count);
            var candidates = Enumerable.Range(0, slotsByClass.Count).Where(c => slotsByClass[c].Count == largest).ToArray();
            int victimClass = candidates[Ordered ? candidates.Length - 1 : NextInt(candidates.Length)];
            RemoveSlot(victimClass, Ordered ? slotsByClass[victimClass].Count - 1 : NextInt(slotsByClass[victimClass].Count));
        }
        var newCodes = new byte[ArrayBytes(capacity, CodeBytes)];
        codes.AsSpan(0, Count * CodeBytes).CopyTo(newCodes);
        var newLabels = new int[capacity];
        labels.AsSpan(0, Count).CopyTo(newLabels);
        var newLogits = new Half[ArrayBytes(capacity, LogitLength)];
        logits.AsSpan(0, Count * LogitLength).CopyTo(newLogits);
        codes = newCodes;
        labels = newLabels;
        logits = newLogits;
        Capacity = capacity;
    }

    /// <summary>Removes entry <paramref name="at"/> of class <paramref name="label"/>'s list and moves the last exemplar into the freed slot.</summary>
    private void RemoveSlot(int label, int at)
    {
        var victims = slotsByClass[label];
        int slot = victims[at];
        if (Ordered)
            victims.RemoveAt(at);
        else
            RemoveAt(victims, at);
        int last = Count - 1;
        if (slot != last)
        {
            codes.AsSpan(last * CodeBytes, CodeBytes).CopyTo(codes.AsSpan(slot * CodeBytes, CodeBytes));
            logits.AsSpan(last * LogitLength, LogitLength).CopyTo(logits.AsSpan(slot * LogitLength, LogitLength));
            labels[slot] = labels[last];
            var list = slotsByClass[LabelAt(last)];
            list[list.IndexOf(last)] = slot;
        }
        Count--;
    }

    /// <summary>Moves the exemplars so that slots run class by class, each class in its list's order (herding's priority order).</summary>
    public void Canonicalize()
    {
        var order = slotsByClass.SelectMany(l => l).ToArray();
        var newCodes = new byte[codes.Length];
        var newLabels = new int[labels.Length];
        var newLogits = new Half[logits.Length];
        for (int s = 0; s < order.Length; s++)
        {
            codes.AsSpan(order[s] * CodeBytes, CodeBytes).CopyTo(newCodes.AsSpan(s * CodeBytes, CodeBytes));
            newLabels[s] = labels[order[s]];
            logits.AsSpan(order[s] * LogitLength, LogitLength).CopyTo(newLogits.AsSpan(s * LogitLength, LogitLength));
        }
        codes = newCodes;
        labels = newLabels;
        logits = newLogits;
        int next = 0;
        foreach (var list in slotsByClass)
            for (int k = 0; k < list.Count; k++)
                list[k] = next++;
    }

    /// <summary>A deep copy (the next increment changes its own copy; the previous model keeps its memory).</summary>
    public ReplayMemory Clone()
    {
        var c = new ReplayMemory(FeatureLength, Capacity, labels.Length, rng, Bits, LogitLength)
        {
            Count = Count,
            seen = (long[])seen.Clone(),
            lo = (float[])lo.Clone(),
            hi = (float[])hi.Clone(),
            ClampedValues = ClampedValues,
        };
        c.Ordered = Ordered;
        c.HoldsTargets = HoldsTargets;
        codes.CopyTo(c.codes, 0);
        labels.CopyTo(c.labels, 0);
        logits.CopyTo(c.logits, 0);
        foreach (var s in slotsByClass)
            c.slotsByClass.Add(new List<int>(s));
        return c;
    }

    /// <summary>An empty memory of the same layout, ranges and generator state, with another capacity and selection.</summary>
    public ReplayMemory EmptyLike(int capacity, bool ordered)
    {
        var c = new ReplayMemory(FeatureLength, capacity, Math.Min(capacity, 16), rng, Bits, LogitLength)
        {
            lo = (float[])lo.Clone(),
            hi = (float[])hi.Clone(),
        };
        c.Ordered = ordered;
        c.HoldsTargets = HoldsTargets;
        return c;
    }

    /// <summary>A uniformly random integer in [0, <paramref name="bound"/>) from the memory's own generator.</summary>
    internal int NextInt(int bound) => (int)(NextULong() % (ulong)bound);

    private double NextDouble() => (NextULong() >> 11) * (1.0 / (1UL << 53));

    private ulong NextULong()
    {
        // SplitMix64: small, fast, and its state (one ulong) is saved with the memory.
        ulong z = rng += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Makes room for more exemplars (a memory read from a checkpoint holds only its stored ones), up to <see cref="Capacity"/>.</summary>
    private void Grow()
    {
        int slots = (int)Math.Min(Capacity, Math.Max(16L, 2L * labels.Length));
        Array.Resize(ref codes, ArrayBytes(slots, CodeBytes));
        Array.Resize(ref labels, slots);
        Array.Resize(ref logits, ArrayBytes(slots, LogitLength));
    }

    private void EnsureClass(int label)
    {
        if (label >= seen.Length)
            Array.Resize(ref seen, label + 1);
        while (slotsByClass.Count <= label)
            slotsByClass.Add(new List<int>());
    }

    private static void RemoveAt(List<int> list, int at)
    {
        list[at] = list[^1];
        list.RemoveAt(list.Count - 1);
    }

    /// <summary>
    /// Writes the memory (little-endian). An 8-bit memory with ranges [0, 1], no stored outputs, nothing clamped and reservoir
    /// order is written in version 1 (header, per-class seen counts, class indices, pixels), which older versions of the library
    /// read; any other in version 2: the same, then bits, output count, flags (1 ordered, 2 range table, 4 regression targets:
    /// the int32 label slots hold float32 targets), clamped count, the range table (low[], high[] float32), the packed codes and
    /// the outputs (float16). Flag 4 was added later: files without it read exactly as before.
    /// </summary>
    public void Write(Stream stream)
    {
        // An ordered memory is written class by class in priority order (the reader rebuilds each class's list in slot order).
        var order = Ordered ? slotsByClass.SelectMany(l => l).ToArray() : Enumerable.Range(0, Count).ToArray();
        using var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        bool unit = UnitRanges;
        bool v1 = Bits == 8 && unit && LogitLength == 0 && !Ordered && ClampedValues == 0 && !HoldsTargets;
        w.Write(Magic);
        w.Write(v1 ? Version1 : Version2);
        w.Write(FeatureLength);
        w.Write(Capacity);
        w.Write(Count);
        w.Write(rng);
        w.Write(seen.Length);
        foreach (var s in seen)
            w.Write(s);
        foreach (int i in order)
            w.Write(labels[i]);
        if (v1)
        {
            w.Write(codes, 0, Count * CodeBytes);
            return;
        }
        w.Write(Bits);
        w.Write(LogitLength);
        w.Write((Ordered ? FlagOrdered : 0) | (unit ? 0 : FlagRanges) | (HoldsTargets ? FlagTargets : 0));
        w.Write(ClampedValues);
        if (!unit)
        {
            foreach (var v in lo)
                w.Write(v);
            foreach (var v in hi)
                w.Write(v);
        }
        foreach (int i in order)
            w.Write(codes, i * CodeBytes, CodeBytes);
        foreach (int i in order)
            for (int k = 0; k < LogitLength; k++)
                w.Write(BitConverter.HalfToUInt16Bits(logits[i * LogitLength + k]));
    }

    /// <summary>Bytes of <see cref="Write"/>'s header: magic, version, feature length, capacity, count, generator state, class count.</summary>
    private static readonly int HeaderBytes = 1 + Magic.Length + 4 + 4 + 4 + 4 + 8 + 4;

    /// <summary>Bytes of version 2's fields after the class indices and before the range table: bits, outputs, flags, clamped.</summary>
    private const int Version2Bytes = 4 + 4 + 4 + 8;

    /// <summary>
    /// Reads a memory written by <see cref="Write"/> (version 1 or 2) from <paramref name="stream"/>, whose length is
    /// <paramref name="length"/> bytes, for a network of <paramref name="featureLength"/> inputs and <paramref name="maxClasses"/>
    /// classes. The header is checked against the network and the exact length it implies (checked arithmetic) is compared with
    /// <paramref name="length"/> before anything is allocated; only the stored exemplars are allocated, not the capacity.
    /// Throws <see cref="CheckpointFormatException"/> on <c>replay.bin</c> naming the field.
    /// </summary>
    public static ReplayMemory Read(Stream stream, long length, int featureLength, int maxClasses)
    {
        const string entry = IncrementalState.ReplayEntry;
        if (length < HeaderBytes)
            throw Checkpoint.Fault(entry, "length", $"is {length} bytes, shorter than the {HeaderBytes}-byte header");
        var h = Checkpoint.ReadMagicHeader(stream, HeaderBytes, Magic, entry, "a replay memory").AsSpan();
        int version = BinaryPrimitives.ReadInt32LittleEndian(h);
        if (version is not (Version1 or Version2))
            throw Checkpoint.Fault(entry, "version", $"is {version}; this library reads versions {Version1} and {Version2}");
        int storedFeatureLength = BinaryPrimitives.ReadInt32LittleEndian(h[4..]);
        int capacity = BinaryPrimitives.ReadInt32LittleEndian(h[8..]);
        int count = BinaryPrimitives.ReadInt32LittleEndian(h[12..]);
        ulong state = BinaryPrimitives.ReadUInt64LittleEndian(h[16..]);
        int classes = BinaryPrimitives.ReadInt32LittleEndian(h[24..]);
        if (storedFeatureLength != featureLength)
            throw Checkpoint.Fault(entry, "featureLength", $"is {storedFeatureLength} but the network reads {featureLength} values");
        if (capacity <= 0)
            throw Checkpoint.Fault(entry, "capacity", $"is {capacity}; a replay memory holds at least one exemplar");
        if (count < 0 || count > capacity)
            throw Checkpoint.Fault(entry, "count", $"is {count}; it must be from 0 to the capacity, {capacity}");
        if (classes < 0 || classes > maxClasses)
            throw Checkpoint.Fault(entry, "classes", $"is {classes} but the network has {maxClasses} classes");
        long prefix;
        try
        {
            prefix = checked(HeaderBytes + (long)classes * sizeof(long) + (long)count * LabelBytes);
        }
        catch (OverflowException e)
        {
            throw Checkpoint.Fault(entry, "count", $"{count} exemplars overflow the size arithmetic", e);
        }
        int bits = 8, logitLength = 0, flags = 0;
        long clamped = 0;
        byte[] body;
        if (version == Version1)
        {
            long expected;
            try
            {
                expected = checked(prefix + (long)count * featureLength);
            }
            catch (OverflowException e)
            {
                throw Checkpoint.Fault(entry, "count", $"{count} exemplars of {featureLength} values overflow the size arithmetic", e);
            }
            if (expected != length)
                throw Checkpoint.Fault(entry, "length", $"is {length} bytes but its header ({count} exemplars of {featureLength} values, {classes} classes) needs exactly {expected}");
            body = new byte[checked((int)(expected - HeaderBytes))];
            Checkpoint.ReadExactly(stream, body, entry);
        }
        else
        {
            if (length < prefix + Version2Bytes)
                throw Checkpoint.Fault(entry, "length", $"is {length} bytes, shorter than the {prefix + Version2Bytes} bytes its header ({count} exemplars, {classes} classes) needs before the codes");
            var front = new byte[checked((int)(prefix + Version2Bytes - HeaderBytes))];
            Checkpoint.ReadExactly(stream, front, entry);
            var x = front.AsSpan((int)(prefix - HeaderBytes));
            bits = BinaryPrimitives.ReadInt32LittleEndian(x);
            logitLength = BinaryPrimitives.ReadInt32LittleEndian(x[4..]);
            flags = BinaryPrimitives.ReadInt32LittleEndian(x[8..]);
            clamped = BinaryPrimitives.ReadInt64LittleEndian(x[12..]);
            if (bits is not (8 or 4 or 2 or 1))
                throw Checkpoint.Fault(entry, "bits", $"is {bits}; exemplars store 8, 4, 2 or 1 bits per feature");
            if (logitLength < 0 || logitLength > maxClasses)
                throw Checkpoint.Fault(entry, "logitLength", $"is {logitLength} but the network has {maxClasses} classes");
            if ((flags & ~(FlagOrdered | FlagRanges | FlagTargets)) != 0)
                throw Checkpoint.Fault(entry, "flags", $"is {flags}; this library knows 1 (ordered), 2 (ranges) and 4 (regression targets)");
            if ((flags & FlagTargets) != 0 && ((flags & FlagOrdered) != 0 || classes > 1))
                throw Checkpoint.Fault(entry, "flags", $"is {flags} with {classes} class counts; a memory of regression targets is one unordered reservoir");
            if (clamped < 0)
                throw Checkpoint.Fault(entry, "clamped", $"is {clamped}; a count of values is not negative");
            long expected;
            try
            {
                long codeBytes = ((long)featureLength * bits + 7) / 8;
                expected = checked(prefix + Version2Bytes + ((flags & FlagRanges) != 0 ? 8L * featureLength : 0)
                    + (long)count * codeBytes + (long)count * logitLength * LogitBytes);
            }
            catch (OverflowException e)
            {
                throw Checkpoint.Fault(entry, "count", $"{count} exemplars of {featureLength} values overflow the size arithmetic", e);
            }
            if (expected != length)
                throw Checkpoint.Fault(entry, "length", $"is {length} bytes but its header ({count} exemplars of {featureLength} values at {bits} bits, {logitLength} outputs, {classes} classes) needs exactly {expected}");
            var rest = new byte[checked((int)(expected - prefix - Version2Bytes))];
            Checkpoint.ReadExactly(stream, rest, entry);
            body = new byte[front.Length - Version2Bytes + rest.Length];
            front.AsSpan(0, front.Length - Version2Bytes).CopyTo(body);
            rest.CopyTo(body.AsSpan(front.Length - Version2Bytes));
        }
        if (stream.ReadByte() != -1)
            throw Checkpoint.Fault(entry, "length", $"holds more than the {length} bytes its zip entry declares");
        var memory = new ReplayMemory(featureLength, capacity, Math.Max(count, 1), state, bits, logitLength)
        {
            Ordered = (flags & FlagOrdered) != 0,
            HoldsTargets = (flags & FlagTargets) != 0,
            ClampedValues = clamped,
        };
        var b = body.AsSpan();
        memory.seen = new long[classes];
        for (int c = 0; c < classes; c++)
        {
            memory.seen[c] = BinaryPrimitives.ReadInt64LittleEndian(b[(c * 8)..]);
            if (memory.seen[c] < 0)
                throw Checkpoint.Fault(entry, $"seen[{c}]", $"is {memory.seen[c]}; a count of rows is not negative");
        }
        b = b[(classes * 8)..];
        memory.EnsureClass(Math.Max(classes - 1, 0));
        for (int i = 0; i < count; i++)
        {
            int label = BinaryPrimitives.ReadInt32LittleEndian(b[(i * 4)..]);
            if (memory.HoldsTargets)
            {
                if (classes != 1 || !float.IsFinite(BitConverter.Int32BitsToSingle(label)))
                    throw Checkpoint.Fault(entry, $"targets[{i}]", $"is {BitConverter.Int32BitsToSingle(label)} in a memory of {classes} class counts; a stored regression target is finite, in one reservoir");
                memory.labels[i] = label;
                memory.slotsByClass[0].Add(i);
                continue;
            }
            if (label < 0 || label >= classes)
                throw Checkpoint.Fault(entry, $"labels[{i}]", $"is {label}, outside the memory's {classes} classes");
            memory.labels[i] = label;
            memory.slotsByClass[label].Add(i);
        }
        b = b[(count * 4)..];
        if ((flags & FlagRanges) != 0)
        {
            for (int i = 0; i < featureLength; i++)
            {
                float l = BinaryPrimitives.ReadSingleLittleEndian(b[(i * 4)..]);
                float u = BinaryPrimitives.ReadSingleLittleEndian(b[((featureLength + i) * 4)..]);
                bool unset = float.IsNaN(l) && float.IsNaN(u);
                if (!unset && !(float.IsFinite(l) && float.IsFinite(u) && l <= u))
                    throw Checkpoint.Fault(entry, $"range[{i}]", $"is [{l}, {u}]; a feature's range is finite with low ≤ high (or unset, both NaN)");
                memory.lo[i] = l;
                memory.hi[i] = u;
            }
            b = b[(8 * featureLength)..];
        }
        else if (count > 0)
        {
            // Version 1 and unit-range version 2: every range is [0, 1].
            Array.Fill(memory.lo, 0f);
            Array.Fill(memory.hi, 1f);
        }
        b[..(count * memory.CodeBytes)].CopyTo(memory.codes);
        b = b[(count * memory.CodeBytes)..];
        for (int i = 0; i < count * logitLength; i++)
            memory.logits[i] = BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(b[(i * 2)..]));
        memory.Count = count;
        memory.rng = state;
        return memory;
    }
}
