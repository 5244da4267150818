namespace MLNet.Compression.Pipelines;

/// <summary>
/// Lets two cursors over parallel views (the rows and a model's outputs for the same rows) draw exactly the numbers one
/// <see cref="Random"/> would give a single cursor: every number is drawn once from the caller's source and recorded, and
/// each <see cref="Reader"/> replays the record from its own position, drawing (and recording) only when it is the first to
/// get there. So the first reader's sequence, and its shuffled row order, is the one the source alone would have produced:
/// the same rows in the same order as training without the second view.
/// </summary>
internal sealed class SharedRandom
{
    private readonly Random source;
    private readonly List<(int Kind, object Value)> drawn = [];

    /// <summary>Shares <paramref name="source"/> (which the readers advance; nobody else should draw from it meanwhile).</summary>
    public SharedRandom(Random source) => this.source = source ?? throw new ArgumentNullException(nameof(source));

    /// <summary>A new reader that starts at the first number.</summary>
    public Random NewReader() => new Reader(this);

    private T Next<T>(ref int position, int kind, Func<Random, T> draw)
    {
        if (position == drawn.Count)
            drawn.Add((kind, draw(source)!));
        var (k, value) = drawn[position++];
        if (k != kind)
            throw new InvalidOperationException(
                "Two cursors that must visit the same rows asked their shared random source for different kinds of numbers, so their " +
                "shuffled row orders would differ. The data view shuffles differently on every pass; cache it first (mlContext.Data.Cache).");
        return (T)value;
    }

    private sealed class Reader : Random
    {
        private readonly SharedRandom shared;
        private int position;

        public Reader(SharedRandom shared)
            : base(0) => this.shared = shared;

        public override int Next() => shared.Next(ref position, 0, r => r.Next());

        public override int Next(int maxValue) => shared.Next(ref position, 1, r => r.Next(maxValue));

        public override int Next(int minValue, int maxValue) => shared.Next(ref position, 2, r => r.Next(minValue, maxValue));

        public override long NextInt64() => shared.Next(ref position, 3, r => r.NextInt64());

        public override long NextInt64(long maxValue) => shared.Next(ref position, 4, r => r.NextInt64(maxValue));

        public override long NextInt64(long minValue, long maxValue) => shared.Next(ref position, 5, r => r.NextInt64(minValue, maxValue));

        public override double NextDouble() => shared.Next(ref position, 6, r => r.NextDouble());

        public override float NextSingle() => shared.Next(ref position, 7, r => r.NextSingle());

        public override void NextBytes(byte[] buffer)
        {
            ArgumentNullException.ThrowIfNull(buffer);
            NextBytes(buffer.AsSpan());
        }

        public override void NextBytes(Span<byte> buffer)
        {
            int n = buffer.Length;
            var bytes = shared.Next(ref position, 8, r =>
            {
                var b = new byte[n];
                r.NextBytes(b);
                return b;
            });
            if (bytes.Length != n)
                throw new InvalidOperationException("Two cursors that must visit the same rows asked their shared random source for different numbers of bytes.");
            bytes.CopyTo(buffer);
        }

        protected override double Sample() => NextDouble();
    }
}
