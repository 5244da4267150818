using System.Buffers.Binary;
using MLNet.Compression.Training;

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
/// <see cref="Capacity"/> × (<see cref="FeatureLength"/> + 4) bytes, allocated once (a memory read from a checkpoint
/// allocates only its stored exemplars and grows towards its capacity as rows are offered).
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
        : this(featureLength, capacity, capacity, seed)
    {
    }

    /// <summary>A memory of <paramref name="capacity"/> exemplars with room allocated for <paramref name="slots"/> of them (it grows on demand).</summary>
    private ReplayMemory(int featureLength, int capacity, int slots, ulong seed)
    {
        if (featureLength <= 0)
            throw new ArgumentOutOfRangeException(nameof(featureLength), featureLength, "Exemplars need at least one feature.");
        if (capacity <= 0)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "The replay memory needs room for at least one exemplar.");
        FeatureLength = featureLength;
        Capacity = capacity;
        pixels = new byte[PixelBytes(slots, featureLength)];
        labels = new int[slots];
        seen = [];
        rng = seed == 0 ? 0x9E3779B97F4A7C15UL : seed;
    }

    /// <summary><paramref name="rows"/> × <paramref name="featureLength"/> bytes, checked: one array holds at most 2^31 − 1.</summary>
    private static int PixelBytes(int rows, int featureLength)
    {
        long bytes = (long)rows * featureLength;
        if (bytes > Array.MaxLength)
            throw new ArgumentOutOfRangeException(nameof(rows), rows,
                $"{rows} exemplars of {featureLength} values need {bytes:N0} bytes, more than one array holds ({Array.MaxLength:N0}); use a smaller replay budget.");
        return (int)bytes;
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
        var newPixels = new byte[PixelBytes(capacity, FeatureLength)];
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
        var c = new ReplayMemory(FeatureLength, Capacity, labels.Length, rng)
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

    /// <summary>Makes room for more exemplars (a memory read from a checkpoint holds only its stored ones), up to <see cref="Capacity"/>.</summary>
    private void Grow()
    {
        int slots = (int)Math.Min(Capacity, Math.Max(16L, 2L * labels.Length));
        Array.Resize(ref pixels, PixelBytes(slots, FeatureLength));
        Array.Resize(ref labels, slots);
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

    /// <summary>Bytes of <see cref="Write"/>'s header: magic, version, feature length, capacity, count, generator state, class count.</summary>
    private static readonly int HeaderBytes = 1 + Magic.Length + 4 + 4 + 4 + 4 + 8 + 4;

    /// <summary>
    /// Reads a memory written by <see cref="Write"/> from <paramref name="stream"/>, whose length is <paramref name="length"/>
    /// bytes, for a network of <paramref name="featureLength"/> inputs and <paramref name="maxClasses"/> classes. The header is
    /// checked against the network and the exact length it implies (checked arithmetic) is compared with
    /// <paramref name="length"/> before anything is allocated; only the stored exemplars are allocated, not the capacity.
    /// Throws <see cref="CheckpointFormatException"/> on <c>replay.bin</c> naming the field.
    /// </summary>
    public static ReplayMemory Read(Stream stream, long length, int featureLength, int maxClasses)
    {
        const string entry = IncrementalState.ReplayEntry;
        if (length < HeaderBytes)
            throw Checkpoint.Fault(entry, "length", $"is {length} bytes, shorter than the {HeaderBytes}-byte header");
        var header = new byte[HeaderBytes];
        Checkpoint.ReadExactly(stream, header, entry);
        var h = header.AsSpan();
        if (h[0] != Magic.Length || System.Text.Encoding.ASCII.GetString(h.Slice(1, Magic.Length)) != Magic)
            throw Checkpoint.Fault(entry, "magic", "is not 'MLNC-REPLAY': this is not a replay memory");
        h = h[(1 + Magic.Length)..];
        int version = BinaryPrimitives.ReadInt32LittleEndian(h);
        if (version != Version)
            throw Checkpoint.Fault(entry, "version", $"is {version}; this library reads version {Version}");
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
        long expected;
        try
        {
            expected = checked(HeaderBytes + (long)classes * sizeof(long) + (long)count * LabelBytes + (long)count * featureLength);
        }
        catch (OverflowException e)
        {
            throw Checkpoint.Fault(entry, "count", $"{count} exemplars of {featureLength} values overflow the size arithmetic", e);
        }
        if (expected != length)
            throw Checkpoint.Fault(entry, "length", $"is {length} bytes but its header ({count} exemplars of {featureLength} values, {classes} classes) needs exactly {expected}");
        var memory = new ReplayMemory(featureLength, capacity, Math.Max(count, 1), state);
        var body = new byte[checked((int)(expected - HeaderBytes))];
        Checkpoint.ReadExactly(stream, body, entry);
        if (stream.ReadByte() != -1)
            throw Checkpoint.Fault(entry, "length", $"holds more than the {length} bytes its zip entry declares");
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
            if (label < 0 || label >= classes)
                throw Checkpoint.Fault(entry, $"labels[{i}]", $"is {label}, outside the memory's {classes} classes");
            memory.labels[i] = label;
            memory.slotsByClass[label].Add(i);
        }
        b[(count * 4)..].CopyTo(memory.pixels);
        memory.Count = count;
        memory.rng = state;
        return memory;
    }
}
