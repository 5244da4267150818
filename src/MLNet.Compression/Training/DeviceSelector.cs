using TorchSharp;
using MLNet.Compression.Native;

namespace MLNet.Compression.Training;

/// <summary>What the process can see of CUDA; an interface so device selection is testable on machines without a GPU.</summary>
internal interface ICudaInfo
{
    bool IsAvailable { get; }

    int DeviceCount { get; }
}

/// <summary>Asks libtorch.</summary>
internal sealed class TorchCudaInfo : ICudaInfo
{
    public static readonly TorchCudaInfo Instance = new();

    public bool IsAvailable => TorchNative.EnsureLoaded() && torch.cuda.is_available();

    public int DeviceCount => IsAvailable ? torch.cuda.device_count() : 0;
}

/// <summary>The outcome of resolving a requested device.</summary>
internal readonly record struct ResolvedDevice(TrainingDeviceKind Kind, int Index, string? Warning)
{
    public bool IsCuda => Kind == TrainingDeviceKind.Cuda;

    public override string ToString() => IsCuda ? $"cuda:{Index}" : "cpu";

    public torch.Device ToTorch() => IsCuda ? new torch.Device(DeviceType.CUDA, Index) : torch.CPU;
}

/// <summary>Turns a requested <see cref="TrainingDevice"/> into a concrete device.</summary>
internal static class DeviceSelector
{
    /// <param name="requested">What the options ask for.</param>
    /// <param name="cuda">What CUDA the process sees.</param>
    /// <param name="gpuDeviceId">MLContext.GpuDeviceId: the device Auto prefers.</param>
    /// <param name="fallbackToCpu">MLContext.FallbackToCpu: whether a missing CUDA device may fall back to the CPU.</param>
    public static ResolvedDevice Resolve(TrainingDevice requested, ICudaInfo cuda, int? gpuDeviceId, bool fallbackToCpu)
    {
        switch (requested.Kind)
        {
            case TrainingDeviceKind.Cpu:
                return new(TrainingDeviceKind.Cpu, 0, null);
            case TrainingDeviceKind.Auto:
                if (!cuda.IsAvailable || cuda.DeviceCount == 0)
                    return new(TrainingDeviceKind.Cpu, 0, null);
                int preferred = gpuDeviceId ?? 0;
                if (preferred < cuda.DeviceCount)
                    return new(TrainingDeviceKind.Cuda, preferred, null);
                return new(TrainingDeviceKind.Cuda, 0,
                    $"MLContext.GpuDeviceId is {preferred} but only {cuda.DeviceCount} CUDA device(s) exist; using cuda:0.");
            default:
                string? problem = !cuda.IsAvailable
                    ? "CUDA is not available to TorchSharp in this process (no CUDA build of libtorch is referenced, or no GPU/driver is present)"
                    : requested.Index >= cuda.DeviceCount
                        ? $"CUDA device {requested.Index} was requested but only {cuda.DeviceCount} device(s) exist"
                        : null;
                if (problem is null)
                    return new(TrainingDeviceKind.Cuda, requested.Index, null);
                if (fallbackToCpu)
                    return new(TrainingDeviceKind.Cpu, 0, problem + "; training on the CPU because MLContext.FallbackToCpu is set.");
                throw new InvalidOperationException(
                    problem + ". Reference the TorchSharp-cuda-linux (or -windows) package instead of libtorch-cpu, " +
                    "choose TrainingDevice.Auto or TrainingDevice.Cpu, or set MLContext.FallbackToCpu = true to fall back to the CPU.");
        }
    }
}
