using Microsoft.ML;
using Microsoft.ML.Runtime;

namespace MLNet.Compression;

/// <summary>Writes messages to <see cref="MLContext.Log"/> through a channel of the context's environment.</summary>
internal sealed class ContextLog
{
    private readonly IHostEnvironment environment;
    private readonly string name;

    public ContextLog(MLContext ml, string name)
    {
        environment = ml;
        this.name = name;
    }

    public void Info(string message)
    {
        using var channel = environment.Start(name);
        channel.Info(MessageSensitivity.None, "{0}", message);
    }

    public void Warning(string message)
    {
        using var channel = environment.Start(name);
        channel.Warning(MessageSensitivity.None, "{0}", message);
    }
}
