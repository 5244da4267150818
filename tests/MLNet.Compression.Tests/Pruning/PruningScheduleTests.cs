using MLNet.Compression.Pruning;
using Xunit;

namespace MLNet.Compression.Tests.Pruning;

public sealed class PruningScheduleTests
{
    [Fact]
    public void PolynomialDecayFollowsTheCubicAndClipsProgress()
    {
        var s = PruningSchedule.PolynomialDecay(0.5, 0.8, beginStep: 100, endStep: 1100);
        Assert.Equal(PruningScheduleKind.PolynomialDecay, s.Kind);
        Assert.Equal(0.5, s.SparsityAt(0), 12);    // before begin: progress clipped to 0
        Assert.Equal(0.5, s.SparsityAt(100), 12);
        Assert.Equal(0.8 - 0.3 * 0.125, s.SparsityAt(600), 12); // half way: (1 - 0.5)^3
        Assert.Equal(0.8 - 0.3 * Math.Pow(0.9, 3), s.SparsityAt(200), 12);
        Assert.Equal(0.8, s.SparsityAt(1100), 12);
        Assert.Equal(0.8, s.SparsityAt(5000), 12); // after end: clipped to 1
        var linear = PruningSchedule.PolynomialDecay(0, 0.6, 0, 10, power: 1);
        Assert.Equal(0.3, linear.SparsityAt(5), 12);
        // Monotone between begin and end.
        for (long t = 100; t < 1100; t += 50)
            Assert.True(s.SparsityAt(t + 50) >= s.SparsityAt(t));
    }

    [Fact]
    public void MasksUpdateOnlyEveryFrequencyStepsInsideTheRangeAndAtTheEnd()
    {
        var s = PruningSchedule.PolynomialDecay(0.5, 0.8, beginStep: 0, endStep: 950, frequency: 100);
        var updates = Enumerable.Range(0, 2000).Where(t => s.IsUpdateStep(t)).ToArray();
        Assert.Equal(new[] { 0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 950 }, updates);

        var shifted = PruningSchedule.PolynomialDecay(0.2, 0.9, beginStep: 30, endStep: 130, frequency: 50);
        Assert.Equal(new[] { 30, 80, 130 }, Enumerable.Range(0, 500).Where(t => shifted.IsUpdateStep(t)).ToArray());

        var constant = PruningSchedule.ConstantSparsity(0.6, beginStep: 200, frequency: 50);
        Assert.Equal(-1, constant.EndStep);
        Assert.False(constant.IsUpdateStep(0));
        Assert.False(constant.IsUpdateStep(150));
        Assert.True(constant.IsUpdateStep(200));
        Assert.False(constant.IsUpdateStep(225));
        Assert.True(constant.IsUpdateStep(250));
        Assert.True(constant.IsUpdateStep(1_000_000)); // -1: prunes until training ends
        Assert.Equal(0.6, constant.SparsityAt(0));
        Assert.Equal(0.6, constant.SparsityAt(123456));

        var bounded = PruningSchedule.ConstantSparsity(0.6, beginStep: 0, endStep: 120, frequency: 50);
        Assert.Equal(new[] { 0, 50, 100, 120 }, Enumerable.Range(0, 400).Where(t => bounded.IsUpdateStep(t)).ToArray());
    }

    [Fact]
    public void CompletionNeedsTheLastUpdateStep()
    {
        Assert.False(PruningSchedule.PolynomialDecay(0.5, 0.8, 0, 1000).CompletesWithin(160));
        Assert.True(PruningSchedule.PolynomialDecay(0.5, 0.8, 0, 1000).CompletesWithin(1000));
        Assert.True(PruningSchedule.ConstantSparsity(0.5).CompletesWithin(0));
        Assert.False(PruningSchedule.ConstantSparsity(0.5, beginStep: 500).CompletesWithin(499));
    }

    [Fact]
    public void RejectsBadArgumentsNamingThem()
    {
        Assert.Equal("targetSparsity", Assert.Throws<ArgumentOutOfRangeException>(() => PruningSchedule.ConstantSparsity(1.0)).ParamName);
        Assert.Equal("targetSparsity", Assert.Throws<ArgumentOutOfRangeException>(() => PruningSchedule.ConstantSparsity(-0.1)).ParamName);
        Assert.Equal("targetSparsity", Assert.Throws<ArgumentOutOfRangeException>(() => PruningSchedule.ConstantSparsity(double.NaN)).ParamName);
        Assert.Equal("initialSparsity", Assert.Throws<ArgumentOutOfRangeException>(() => PruningSchedule.PolynomialDecay(1.2, 0.8, 0, 10)).ParamName);
        Assert.Equal("finalSparsity", Assert.Throws<ArgumentOutOfRangeException>(() => PruningSchedule.PolynomialDecay(0.5, 1, 0, 10)).ParamName);
        Assert.Equal("endStep", Assert.Throws<ArgumentException>(() => PruningSchedule.PolynomialDecay(0.5, 0.8, 10, 10)).ParamName);
        Assert.Equal("endStep", Assert.Throws<ArgumentException>(() => PruningSchedule.ConstantSparsity(0.5, 100, 50)).ParamName);
        Assert.Equal("endStep", Assert.Throws<ArgumentOutOfRangeException>(() => PruningSchedule.PolynomialDecay(0.5, 0.8, 0, -2)).ParamName);
        Assert.Equal("beginStep", Assert.Throws<ArgumentOutOfRangeException>(() => PruningSchedule.ConstantSparsity(0.5, -1)).ParamName);
        Assert.Equal("frequency", Assert.Throws<ArgumentOutOfRangeException>(() => PruningSchedule.ConstantSparsity(0.5, frequency: 0)).ParamName);
        Assert.Equal("frequency", Assert.Throws<ArgumentOutOfRangeException>(() => PruningSchedule.PolynomialDecay(0.5, 0.8, 0, 10, frequency: -5)).ParamName);
        Assert.Equal("power", Assert.Throws<ArgumentOutOfRangeException>(() => PruningSchedule.PolynomialDecay(0.5, 0.8, 0, 10, power: 0)).ParamName);
        Assert.Equal("power", Assert.Throws<ArgumentOutOfRangeException>(() => PruningSchedule.PolynomialDecay(0.5, 0.8, 0, 10, power: double.NaN)).ParamName);
    }
}
