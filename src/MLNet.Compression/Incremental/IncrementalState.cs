using System.IO.Compression;
using MLNet.Compression.Networks;
using MLNet.Compression.Training;

namespace MLNet.Compression.Incremental;

/// <summary>
/// What a model made by continued training carries to the next increment: the replay memory (null without replay), the
/// EWC state (null without EWC) and the number of increments so far. Immutable from the outside: the next increment
/// works on copies, so the previous model keeps its own state. Saved in the checkpoint (format version 2) as
/// <c>replay.bin</c>, <c>ewc.bin</c> and an <c>incremental</c> object in <c>checkpoint.json</c>.
/// </summary>
internal sealed record IncrementalState(ReplayMemory? Replay, EwcState? Ewc, int Increments)
{
    /// <summary>Bytes of the replay memory as stored (packed features, class indices, stored outputs, ranges).</summary>
    public long ReplayBytes => Replay?.Bytes ?? 0;

    /// <summary>Bytes of the EWC state (Fisher and anchor, float32).</summary>
    public long EwcBytes => Ewc?.Bytes ?? 0;

    /// <summary>Writes <c>replay.bin</c> and <c>ewc.bin</c> into <paramref name="zip"/>; returns the <c>incremental</c> object of checkpoint.json.</summary>
    internal CheckpointIncremental WriteTo(ZipArchive zip)
    {
        var info = new CheckpointIncremental { Increments = Increments };
        if (Replay is { } replay)
        {
            info.Replay = new CheckpointReplay
            {
                Exemplars = replay.Count,
                Capacity = replay.Capacity,
                FeatureLength = replay.FeatureLength,
                Bytes = replay.Bytes,
                Bits = replay.Bits,
                LogitLength = replay.LogitLength,
                ClampedValues = replay.ClampedValues,
            };
            using var s = zip.CreateEntry(ReplayEntry, CompressionLevel.Fastest).Open();
            replay.Write(s);
        }
        if (Ewc is { } ewc)
        {
            info.Ewc = new CheckpointEwc { Tasks = ewc.Tasks, Bytes = ewc.Bytes };
            using var s = zip.CreateEntry(EwcEntry, CompressionLevel.Fastest).Open();
            ewc.Write(s);
        }
        return info;
    }

    internal const string ReplayEntry = "replay.bin";
    internal const string EwcEntry = "ewc.bin";

    /// <summary>
    /// The state of a version-2 or later checkpoint, or null when it has none. Each binary entry is parsed and checked
    /// against <paramref name="network"/> and against what checkpoint.json declares; its length is checked before anything
    /// is allocated. Throws <see cref="CheckpointFormatException"/>.
    /// </summary>
    internal static IncrementalState? ReadFrom(ZipArchive zip, CheckpointIncremental? info, NetworkModel network)
    {
        if (info is null)
        {
            foreach (var name in new[] { ReplayEntry, EwcEntry })
                if (zip.GetEntry(name) is not null)
                    throw Checkpoint.Fault(Checkpoint.JsonEntry, "incremental", $"is missing but the checkpoint holds {name}");
            return null;
        }
        int increments = info.Increments ?? 0;
        if (increments < 0)
            throw Checkpoint.Fault(Checkpoint.JsonEntry, "incremental.increments", $"is {increments}; it counts increments and is not negative");
        ReplayMemory? replay = null;
        if (info.Replay is { } r)
        {
            var entry = zip.GetEntry(ReplayEntry) ?? throw Checkpoint.Fault(ReplayEntry, null, "is missing but checkpoint.json's incremental.replay describes it");
            using (var s = entry.Open())
                replay = ReplayMemory.Read(s, entry.Length, network.InputLength, network.NumClasses);
            Same(r.Exemplars, replay.Count, "incremental.replay.exemplars");
            Same(r.Capacity, replay.Capacity, "incremental.replay.capacity");
            Same(r.FeatureLength, replay.FeatureLength, "incremental.replay.featureLength");
            Same(r.Bytes, replay.Bytes, "incremental.replay.bytes");
            Same(r.Bits, replay.Bits, "incremental.replay.bits");
            Same(r.LogitLength, replay.LogitLength, "incremental.replay.logitLength");
            Same(r.ClampedValues, replay.ClampedValues, "incremental.replay.clampedValues");
        }
        else if (zip.GetEntry(ReplayEntry) is not null)
            throw Checkpoint.Fault(Checkpoint.JsonEntry, "incremental.replay", "is missing but the checkpoint holds replay.bin");
        EwcState? ewc = null;
        if (info.Ewc is { } e)
        {
            var entry = zip.GetEntry(EwcEntry) ?? throw Checkpoint.Fault(EwcEntry, null, "is missing but checkpoint.json's incremental.ewc describes it");
            using (var s = entry.Open())
                ewc = EwcState.Read(s, entry.Length, network);
            Same(e.Tasks, ewc.Tasks, "incremental.ewc.tasks");
            Same(e.Bytes, ewc.Bytes, "incremental.ewc.bytes");
        }
        else if (zip.GetEntry(EwcEntry) is not null)
            throw Checkpoint.Fault(Checkpoint.JsonEntry, "incremental.ewc", "is missing but the checkpoint holds ewc.bin");
        return new IncrementalState(replay, ewc, increments);
    }

    private static void Same(long? declared, long actual, string field)
    {
        if (declared is { } d && d != actual)
            throw Checkpoint.Fault(Checkpoint.JsonEntry, field, $"is {d} but the binary entry holds {actual}");
    }
}
