using System.IO.Compression;
using System.Text.Json.Nodes;
using MLNet.Compression.Networks;

namespace MLNet.Compression.Incremental;

/// <summary>
/// What a model made by continued training carries to the next increment: the replay memory (null without replay), the
/// EWC state (null without EWC) and the number of increments so far. Immutable from the outside: the next increment
/// works on copies, so the previous model keeps its own state. Saved in the checkpoint (format version 2) as
/// <c>replay.bin</c>, <c>ewc.bin</c> and an <c>incremental</c> object in <c>checkpoint.json</c>.
/// </summary>
internal sealed record IncrementalState(ReplayMemory? Replay, EwcState? Ewc, int Increments)
{
    /// <summary>Bytes of the replay memory as stored (pixels and class indices).</summary>
    public long ReplayBytes => Replay?.Bytes ?? 0;

    /// <summary>Bytes of the EWC state (Fisher and anchor, float32).</summary>
    public long EwcBytes => Ewc?.Bytes ?? 0;

    internal void WriteTo(ZipArchive zip, JsonObject meta)
    {
        var info = new JsonObject { ["increments"] = Increments };
        if (Replay is { } replay)
        {
            info["replay"] = new JsonObject
            {
                ["exemplars"] = replay.Count,
                ["capacity"] = replay.Capacity,
                ["featureLength"] = replay.FeatureLength,
                ["bytes"] = replay.Bytes,
            };
            using var s = zip.CreateEntry("replay.bin", CompressionLevel.Fastest).Open();
            replay.Write(s);
        }
        if (Ewc is { } ewc)
        {
            info["ewc"] = new JsonObject { ["tasks"] = ewc.Tasks, ["bytes"] = ewc.Bytes };
            using var s = zip.CreateEntry("ewc.bin", CompressionLevel.Fastest).Open();
            ewc.Write(s);
        }
        meta["incremental"] = info;
    }

    /// <summary>The state of a version-2 checkpoint, or null when it has none.</summary>
    internal static IncrementalState? ReadFrom(ZipArchive zip, JsonNode meta, NetworkModel network)
    {
        if (meta["incremental"] is not JsonObject info)
            return null;
        int increments = (int?)info["increments"] ?? 0;
        ReplayMemory? replay = null;
        if (info["replay"] is not null)
        {
            var entry = zip.GetEntry("replay.bin") ?? throw new InvalidDataException("checkpoint.json describes a replay memory but replay.bin is missing");
            using var s = entry.Open();
            replay = ReplayMemory.Read(s);
            if (replay.FeatureLength != network.InputLength)
                throw new InvalidDataException($"replay.bin holds exemplars of {replay.FeatureLength} values but the network reads {network.InputLength}");
            if (replay.CountsPerClass().Length > network.NumClasses)
                throw new InvalidDataException($"replay.bin holds exemplars of {replay.CountsPerClass().Length} classes but the network has {network.NumClasses}");
        }
        EwcState? ewc = null;
        if (info["ewc"] is not null)
        {
            var entry = zip.GetEntry("ewc.bin") ?? throw new InvalidDataException("checkpoint.json describes an EWC state but ewc.bin is missing");
            using var s = entry.Open();
            ewc = EwcState.Read(s);
            if (!ewc.Matches(network))
                throw new InvalidDataException("ewc.bin does not match the network's parameters");
        }
        return new IncrementalState(replay, ewc, increments);
    }
}
