namespace MLNet.Compression.Incremental;

/// <summary>
/// A bounded exemplar memory for experience replay: at most <see cref="Capacity"/> rows, each stored as one uint8 per
/// feature (round(x · 255)) plus its class index, chosen by class-balanced reservoir sampling (Chrysakis &amp; Moens, 2020):
/// while there is room every row is kept; once full, a row of a class that holds fewer exemplars than the largest class
/// replaces a random exemplar of a largest class, and a row of a largest class c replaces a random exemplar of c with
/// probability m_c / n_c (m_c exemplars of c stored, n_c rows of c seen), so each class keeps a uniform sample of its
/// rows and the classes stay within one exemplar of each other once every class has enough rows.
/// </summary>
/// <remarks>
/// Features must lie in [0, 1] (pixel / 255, as MNIST's loader gives them): such values are stored exactly when they
/// are multiples of 1/255 and to the nearest multiple otherwise. Any other value (negative, above 1, NaN) cannot be
/// stored as a uint8 pixel and raises an <see cref="InvalidDataException"/>. Memory use is
/// <see cref="Capacity"/> × (<see cref="FeatureLength"/> + 4) bytes, allocated once.
/// </remarks>
internal sealed class ReplayMemory
{
    /// <summary>Bytes stored per exemplar besides its pixels (the class index, int32).</summary>
    public const int LabelBytes = sizeof(int);

    private const string Magic = "MLNC-REPLAY";
    private const int Version = 1;

    private byte[] pixels;
    private int[] labels;
    private long[] seen;
    private readonly List<List<int>> slotsByClass = new();
    private ulong rng;

    public ReplayMemory(int featureLength, int capacity, ulong seed)
    {
        if (featureLength <= 0)
            throw new ArgumentOutOfRangeException(nameof(featureLength), featureLength, "Exemplars need at least one feature.");
        if (capacity <= 0)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "The replay memory needs room for at least one exemplar.");
        FeatureLength = featureLength;
        Capacity = capacity;
        pixels = new byte[(long)capacity * featureLength];
        labels = new int[capacity];
        seen = [];
        rng = seed == 0 ? 0x9E3779B97F4A7C15UL : seed;
    }

    /// <summary>Values per exemplar.</summary>
    public int FeatureLength { get; }

    /// <summary>Most exemplars the memory holds.</summary>
    public int Capacity { get; private set; }

    /// <summary>Exemplars held now.</summary>
    public int Count { get; private set; }

    /// <summary>Bytes of the stored exemplars (pixels and class indices) for <see cref="Count"/> rows.</summary>
    public long Bytes => (long)Count * (FeatureLength + LabelBytes);

    /// <summary>Bytes the memory can grow to (<see cref="Capacity"/> rows).</summary>
    public long CapacityBytes => (long)Capacity * (FeatureLength + LabelBytes);

    /// <summary>Bytes one exemplar takes.</summary>
    public static long BytesPerExemplar(int featureLength) => featureLength + LabelBytes;

    /// <summary>Exemplars held per class index (index = class).</summary>
    public int[] CountsPerClass() => slotsByClass.Select(s => s.Count).ToArray();

    /// <summary>Rows offered per class index so far.</summary>
    public long[] SeenPerClass() => (long[])seen.Clone();

    /// <summary>Classes with at least one exemplar.</summary>
    public int ClassesHeld => slotsByClass.Count(s => s.Count > 0);

    /// <summary>The class index of exemplar <paramref name="slot"/> (0 ≤ slot &lt; <see cref="Count"/>).</summary>
    public int LabelAt(int slot) => labels[slot];

    /// <summary>Decodes exemplar <paramref name="slot"/> into <paramref name="destination"/> (byte / 255f, as the MNIST loader computes pixels).</summary>
    public void CopyFeatures(int slot, Span<float> destination)
    {
        var src = pixels.AsSpan(slot * FeatureLength, FeatureLength);
        for (int i = 0; i < src.Length; i++)
            destination[i] = src[i] / 255f;
    }

    /// <summary>The raw uint8 pixels of exemplar <paramref name="slot"/>.</summary>
    public ReadOnlySpan<byte> PixelsAt(int slot) => pixels.AsSpan(slot * FeatureLength, FeatureLength);

    /// <summary>
    /// Offers one row to the memory (class-balanced reservoir sampling). <paramref name="where"/> describes the row for
    /// the error raised when a feature cannot be stored as a uint8 pixel.
    /// </summary>
    public void Offer(ReadOnlySpan<float> features, int label, Func<string> where)
    {
        if (features.Length != FeatureLength)
            throw new InvalidDataException($"{where()} has {features.Length} feature values; the replay memory stores {FeatureLength}.");
        if (label < 0)
            throw new ArgumentOutOfRangeException(nameof(label), label, "Class indices are non-negative.");
        EnsureClass(label);
        long n = ++seen[label];
        int slot;
        if (Count < Capacity)
        {
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
                    return;
                int at = NextInt(own.Count);
                slot = own[at];
                RemoveAt(own, at);
            }
        }
        Encode(features, pixels.AsSpan(slot * FeatureLength, FeatureLength), where);
        labels[slot] = label;
        slotsByClass[label].Add(slot);
    }

    /// <summary>
    /// Changes the capacity. Shrinking drops random exemplars of the largest classes until the memory fits, so it stays
    /// class-balanced; growing only makes room.
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
            var victims = slotsByClass[candidates[NextInt(candidates.Length)]];
            int at = NextInt(victims.Count);
            int slot = victims[at];
            RemoveAt(victims, at);
            // Move the last exemplar into the freed slot.
            int last = Count - 1;
            if (slot != last)
            {
                pixels.AsSpan(last * FeatureLength, FeatureLength).CopyTo(pixels.AsSpan(slot * FeatureLength, FeatureLength));
                labels[slot] = labels[last];
                var list = slotsByClass[labels[last]];
                list[list.IndexOf(last)] = slot;
            }
            Count--;
        }
        var newPixels = new byte[(long)capacity * FeatureLength];
        pixels.AsSpan(0, Count * FeatureLength).CopyTo(newPixels);
        var newLabels = new int[capacity];
        labels.AsSpan(0, Count).CopyTo(newLabels);
        pixels = newPixels;
        labels = newLabels;
        Capacity = capacity;
    }

    /// <summary>A deep copy (the next increment changes its own copy; the previous model keeps its memory).</summary>
    public ReplayMemory Clone()
    {
        var c = new ReplayMemory(FeatureLength, Capacity, rng)
        {
            Count = Count,
            seen = (long[])seen.Clone(),
        };
        pixels.CopyTo(c.pixels, 0);
        labels.CopyTo(c.labels, 0);
        foreach (var s in slotsByClass)
            c.slotsByClass.Add(new List<int>(s));
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

    private static void Encode(ReadOnlySpan<float> features, Span<byte> destination, Func<string> where)
    {
        for (int i = 0; i < features.Length; i++)
        {
            float v = features[i];
            if (!(v >= 0f && v <= 1f))
                throw new InvalidDataException(
                    $"{where()} has feature value {v} at index {i}. Replay stores exemplars as uint8 pixels, round(x · 255), which needs every feature " +
                    "in [0, 1] (pixel / 255, as ml.Data.LoadMnist gives them). Scale the features into [0, 1] first (for example with " +
                    "ml.Transforms.NormalizeMinMax), or continue without ContinualStrategies.Replay (LwF and EWC have no such limit).");
            destination[i] = (byte)MathF.Round(v * 255f);
        }
    }

    /// <summary>Writes the memory (little-endian): header, per-class seen counts, class indices, pixels, generator state.</summary>
    public void Write(Stream stream)
    {
        using var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        w.Write(Magic);
        w.Write(Version);
        w.Write(FeatureLength);
        w.Write(Capacity);
        w.Write(Count);
        w.Write(rng);
        w.Write(seen.Length);
        foreach (var s in seen)
            w.Write(s);
        for (int i = 0; i < Count; i++)
            w.Write(labels[i]);
        w.Write(pixels, 0, Count * FeatureLength);
    }

    /// <summary>Reads a memory written by <see cref="Write"/>; throws <see cref="InvalidDataException"/> when it is damaged.</summary>
    public static ReplayMemory Read(Stream stream)
    {
        using var r = new BinaryReader(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        try
        {
            if (r.ReadString() != Magic)
                throw new InvalidDataException("replay.bin is not a replay memory");
            int version = r.ReadInt32();
            if (version != Version)
                throw new InvalidDataException($"replay.bin has version {version}; this library reads version {Version}");
            int featureLength = r.ReadInt32(), capacity = r.ReadInt32(), count = r.ReadInt32();
            ulong state = r.ReadUInt64();
            if (featureLength <= 0 || capacity <= 0 || count < 0 || count > capacity)
                throw new InvalidDataException($"replay.bin has an impossible size ({count} of {capacity} exemplars of {featureLength} values)");
            var memory = new ReplayMemory(featureLength, capacity, state);
            int classes = r.ReadInt32();
            if (classes < 0 || classes > 1 << 24)
                throw new InvalidDataException($"replay.bin claims {classes} classes");
            memory.seen = new long[classes];
            for (int c = 0; c < classes; c++)
                memory.seen[c] = r.ReadInt64();
            memory.EnsureClass(Math.Max(classes - 1, 0));
            for (int i = 0; i < count; i++)
            {
                int label = r.ReadInt32();
                if (label < 0 || label >= classes)
                    throw new InvalidDataException($"replay.bin has class index {label} for exemplar {i}, outside its {classes} classes");
                memory.labels[i] = label;
                memory.slotsByClass[label].Add(i);
            }
            int bytes = count * featureLength;
            int read = 0;
            while (read < bytes)
            {
                int n = r.Read(memory.pixels, read, bytes - read);
                if (n == 0)
                    throw new InvalidDataException("replay.bin is shorter than its header says");
                read += n;
            }
            memory.Count = count;
            memory.rng = state;
            return memory;
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("replay.bin is shorter than its header says", e);
        }
    }
}
