namespace MLNet.Compression.Clustering;

/// <summary>The clusters of one layer's weights: a codebook and, per weight, its cluster (or -1 for a weight that is exactly zero).</summary>
/// <param name="Centroids">The shared values, ascending.</param>
/// <param name="Assignment">One entry per weight: the index into <paramref name="Centroids"/>, or -1 where the weight is zero.</param>
/// <param name="Iterations">Lloyd iterations run.</param>
internal sealed record LayerClusters(float[] Centroids, int[] Assignment, int Iterations)
{
    /// <summary>The weights each entry stands for: its centroid, or 0 for a pruned weight.</summary>
    public float[] Reconstruct()
    {
        var w = new float[Assignment.Length];
        for (int i = 0; i < w.Length; i++)
            w[i] = Assignment[i] < 0 ? 0f : Centroids[Assignment[i]];
        return w;
    }
}

/// <summary>
/// One-dimensional k-means (Lloyd's algorithm) over a layer's non-zero weights. In one dimension the clusters of sorted
/// centroids are contiguous runs of the sorted values, split at the midpoints between neighbouring centroids, so an iteration
/// is a binary search per boundary and a prefix-sum difference per cluster: O(k log n) after one O(n log n) sort.
/// </summary>
internal static class KMeans1D
{
    /// <summary>Clusters the non-zero entries of <paramref name="weights"/> into at most <paramref name="k"/> shared values.</summary>
    public static LayerClusters Fit(ReadOnlySpan<float> weights, int k, CentroidInitialization init, int maxIterations, Random random)
    {
        if (k < 1)
            throw new ArgumentOutOfRangeException(nameof(k), k, "At least one cluster is needed.");
        var nonZero = new List<float>(weights.Length);
        foreach (var w in weights)
            if (w != 0f)
            {
                if (!float.IsFinite(w))
                    throw new ArgumentException($"The weights hold a non-finite value ({w}); train the model again or check the data.", nameof(weights));
                nonZero.Add(w);
            }
        var assignment = new int[weights.Length];
        if (nonZero.Count == 0)
        {
            Array.Fill(assignment, -1);
            return new LayerClusters([], assignment, 0);
        }
        var sorted = nonZero.ToArray();
        Array.Sort(sorted);
        var prefix = new double[sorted.Length + 1];
        for (int i = 0; i < sorted.Length; i++)
            prefix[i + 1] = prefix[i] + sorted[i];

        var centroids = Initialize(sorted, Math.Min(k, sorted.Length), init, random);
        int iterations = 0;
        var bounds = new int[centroids.Length + 1];
        for (; iterations < maxIterations; iterations++)
        {
            Boundaries(sorted, centroids, bounds);
            bool moved = false;
            for (int c = 0; c < centroids.Length; c++)
            {
                int count = bounds[c + 1] - bounds[c];
                if (count == 0)
                    continue; // an empty cluster keeps its centroid
                double mean = (prefix[bounds[c + 1]] - prefix[bounds[c]]) / count;
                float m = (float)mean;
                if (m != centroids[c])
                {
                    centroids[c] = m;
                    moved = true;
                }
            }
            Array.Sort(centroids);
            if (!moved)
                break;
        }
        // Drop empty clusters and duplicates so the codebook holds only values in use.
        Boundaries(sorted, centroids, bounds);
        var used = Enumerable.Range(0, centroids.Length).Where(c => bounds[c + 1] > bounds[c]).Select(c => centroids[c]).Distinct().ToArray();
        Array.Sort(used);
        for (int i = 0; i < weights.Length; i++)
            assignment[i] = weights[i] == 0f ? -1 : Nearest(used, weights[i]);
        return new LayerClusters(used, assignment, iterations);
    }

    /// <summary>Index of the centroid nearest to <paramref name="value"/> (centroids ascending; ties go to the lower one).</summary>
    public static int Nearest(float[] centroids, float value)
    {
        int i = Array.BinarySearch(centroids, value);
        if (i >= 0)
            return i;
        i = ~i;
        if (i == 0)
            return 0;
        if (i == centroids.Length)
            return centroids.Length - 1;
        return value - centroids[i - 1] <= centroids[i] - value ? i - 1 : i;
    }

    private static float[] Initialize(float[] sorted, int k, CentroidInitialization init, Random random)
    {
        var c = new float[k];
        switch (init)
        {
            case CentroidInitialization.Linear:
                float lo = sorted[0], hi = sorted[^1];
                for (int i = 0; i < k; i++)
                    c[i] = k == 1 ? (lo + hi) / 2 : lo + (hi - lo) * i / (k - 1);
                break;
            case CentroidInitialization.Density:
                for (int i = 0; i < k; i++)
                    c[i] = sorted[(int)Math.Min(sorted.Length - 1, (long)Math.Round((i + 0.5) * sorted.Length / k - 0.5))];
                break;
            case CentroidInitialization.Random:
                var picked = new HashSet<int>();
                while (picked.Count < k)
                    picked.Add(random.Next(sorted.Length));
                int j = 0;
                foreach (var p in picked)
                    c[j++] = sorted[p];
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(init), init, null);
        }
        Array.Sort(c);
        return c;
    }

    /// <summary>bounds[c]..bounds[c+1] is the run of sorted values nearest to centroid c (centroids ascending).</summary>
    private static void Boundaries(float[] sorted, float[] centroids, int[] bounds)
    {
        bounds[0] = 0;
        for (int c = 0; c < centroids.Length - 1; c++)
        {
            float mid = centroids[c] + (centroids[c + 1] - centroids[c]) / 2;
            // First index whose value is above the midpoint (values at the midpoint go to the lower cluster).
            int lo = bounds[c], hi = sorted.Length;
            while (lo < hi)
            {
                int m = (lo + hi) >>> 1;
                if (sorted[m] <= mid)
                    lo = m + 1;
                else
                    hi = m;
            }
            bounds[c + 1] = lo;
        }
        bounds[centroids.Length] = sorted.Length;
    }
}
