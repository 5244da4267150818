using MLNet.Compression.Clustering;
using Xunit;

namespace MLNet.Compression.Tests.Clustering;

public sealed class KMeans1DTests
{
    [Theory]
    [InlineData(CentroidInitialization.Linear)]
    [InlineData(CentroidInitialization.Density)]
    public void WellSeparatedGroupsAreFound(CentroidInitialization init)
    {
        // Three tight groups around -1, 0.5 and 2, with pruned zeros in between.
        var rand = new Random(3);
        var weights = new float[3000];
        for (int i = 0; i < weights.Length; i++)
            weights[i] = (i % 4) switch
            {
                0 => 0f,
                1 => -1f + (float)(rand.NextDouble() - 0.5) * 0.01f,
                2 => 0.5f + (float)(rand.NextDouble() - 0.5) * 0.01f,
                _ => 2f + (float)(rand.NextDouble() - 0.5) * 0.01f,
            };
        var clusters = KMeans1D.Fit(weights, 3, init, 100, new Random(1));
        Assert.Equal(3, clusters.Centroids.Length);
        Assert.Equal(-1f, clusters.Centroids[0], 0.01f);
        Assert.Equal(0.5f, clusters.Centroids[1], 0.01f);
        Assert.Equal(2f, clusters.Centroids[2], 0.01f);
        for (int i = 0; i < weights.Length; i++)
        {
            if (weights[i] == 0f)
                Assert.Equal(-1, clusters.Assignment[i]);
            else
                Assert.Equal((i % 4) - 1, clusters.Assignment[i]);
        }
    }

    [Theory]
    [InlineData(CentroidInitialization.Linear)]
    [InlineData(CentroidInitialization.Density)]
    [InlineData(CentroidInitialization.Random)]
    public void EveryWeightGoesToItsNearestCentroidAndEachCentroidIsItsMembersMean(CentroidInitialization init)
    {
        var rand = new Random(5);
        var weights = Enumerable.Range(0, 5000).Select(_ => (float)(rand.NextDouble() * 2 - 1) * (rand.Next(3) == 0 ? 0 : 1)).ToArray();
        var c = KMeans1D.Fit(weights, 16, init, 300, new Random(1));
        Assert.InRange(c.Centroids.Length, 2, 16);
        Assert.True(c.Centroids.Zip(c.Centroids.Skip(1)).All(p => p.First < p.Second), "centroids ascending and distinct");
        var rebuilt = c.Reconstruct();
        for (int i = 0; i < weights.Length; i++)
        {
            if (weights[i] == 0f)
            {
                Assert.Equal(0f, rebuilt[i]);
                continue;
            }
            float best = c.Centroids.Min(x => Math.Abs(x - weights[i]));
            Assert.Equal(best, Math.Abs(rebuilt[i] - weights[i]), 1e-6f);
        }
        // Converged Lloyd: each centroid is the mean of its members.
        for (int j = 0; j < c.Centroids.Length; j++)
        {
            var members = weights.Where((w, i) => c.Assignment[i] == j).ToArray();
            Assert.NotEmpty(members);
            Assert.Equal(members.Average(), c.Centroids[j], 1e-4);
        }
        // Quantization error well below that of k evenly spaced levels over [-1, 1] (step 2/15, mean error step/4).
        double meanError = weights.Select((w, i) => Math.Abs(w - rebuilt[i])).Average();
        Assert.True(meanError < 2.0 / 15 / 4 * 1.05, $"mean error {meanError}");
    }

    [Fact]
    public void FewerDistinctWeightsThanClustersGiveOneCentroidPerValue()
    {
        var weights = new[] { 0f, 1f, 1f, 2f, 0f, 2f, 3f };
        var c = KMeans1D.Fit(weights, 8, CentroidInitialization.Linear, 50, new Random(1));
        Assert.Equal(new[] { 1f, 2f, 3f }, c.Centroids);
        Assert.Equal(weights, c.Reconstruct());
    }

    [Fact]
    public void AllZeroLayerHasAnEmptyCodebookAndNonFiniteWeightsAreRejected()
    {
        var empty = KMeans1D.Fit(new float[10], 4, CentroidInitialization.Linear, 10, new Random(1));
        Assert.Empty(empty.Centroids);
        Assert.All(empty.Assignment, a => Assert.Equal(-1, a));
        var e = Assert.Throws<ArgumentException>(() => KMeans1D.Fit(new[] { 1f, float.NaN }, 4, CentroidInitialization.Linear, 10, new Random(1)));
        Assert.Contains("non-finite", e.Message);
    }
}
