using System.Text.Json.Nodes;

namespace MLNet.Compression.Networks;

/// <summary>JSON form of a <see cref="NetworkArchitecture"/> (checkpoints): name, input shape and one object per layer tagged by "type".</summary>
internal static class ArchitectureJson
{
    public static JsonNode ToJson(NetworkArchitecture a) => new JsonObject
    {
        ["name"] = a.Name,
        ["inputShape"] = new JsonArray(a.InputShape.Select(d => (JsonNode?)JsonValue.Create(d)).ToArray()),
        ["layers"] = new JsonArray(a.Layers.Select(l =>
        {
            var type = LayerRegistry.Find(l) ?? throw new NotSupportedException($"Cannot serialise layer {l}: its type is not registered.");
            var json = new JsonObject { ["type"] = type.JsonType };
            foreach (var (key, value) in type.ToJson(l).ToArray())
                json[key] = value?.DeepClone();
            return (JsonNode?)json;
        }).ToArray()),
    };

    public static NetworkArchitecture FromJson(JsonNode n)
    {
        var layers = n["layers"]!.AsArray().Select(l =>
        {
            var tag = (string)l!["type"]!;
            var type = LayerRegistry.Find(tag)
                ?? throw new FormatException($"unknown layer type '{tag}' (known: {string.Join(", ", LayerRegistry.JsonTypes)})");
            return type.FromJson(l.AsObject());
        }).ToArray();
        return new NetworkArchitecture((string)n["name"]!, n["inputShape"]!.AsArray().Select(d => (int)d!).ToArray(), layers);
    }
}
