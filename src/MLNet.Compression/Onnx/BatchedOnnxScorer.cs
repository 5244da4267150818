using Microsoft.ML.OnnxRuntime;
using MLNet.Compression.Networks.Heads;

namespace MLNet.Compression.Onnx;

/// <summary>
/// Runs an exported classifier on ONNX Runtime many rows per call, unlike ML.NET's OnnxTransformer which fixes the batch
/// dimension to 1. Input and output go through pinned, reused managed buffers wrapped by <see cref="OrtValue"/>s, so a
/// call allocates no large arrays.
/// </summary>
/// <remarks>
/// Thread safety: <c>Score</c> may be called from several threads; calls are serialized by an internal lock
/// because the staging buffers are shared. Use one scorer per thread for parallel scoring.
/// <see cref="Dispose"/> must not race with <c>Score</c>.
/// </remarks>
internal sealed class BatchedOnnxScorer : IDisposable
{
    private readonly InferenceSession session;
    private readonly RunOptions runOptions = new();
    private readonly string[] inputNames;
    private readonly HostRowChecks hostChecks;
    private HostRowValues? hostValues;
    private readonly string[] outputNames;
    private readonly object sync = new();
    private readonly int[] outputWidths;
    private float[] inputBuffer = [];
    private float[][] outputBuffers;
    private bool disposed;
    private long rowsScored;

    /// <summary>
    /// Creates a session over <paramref name="onnx"/> (an exported network, see <see cref="OnnxExporter"/>); it fetches the
    /// outputs its output head names (<see cref="OutputHead.BatchedOutputs"/>).
    /// </summary>
    /// <param name="onnx">The serialized ONNX model.</param>
    /// <param name="gpuDeviceId">CUDA device to run on, or null for the CPU (as <c>MLContext.GpuDeviceId</c>).</param>
    /// <param name="fallbackToCpu">When the CUDA provider cannot be used, run on the CPU instead of throwing (as <c>MLContext.FallbackToCpu</c>).</param>
    /// <param name="intraOpThreads">ONNX Runtime intra-op threads; null for its default (one per physical core).</param>
    /// <param name="hostRowChecks">Make the graph's row checks on the host (<see cref="HostRowChecks"/>, the default); false runs
    /// the exported graph as it is (tests and benchmarks compare the two).</param>
    /// <param name="hostQuantizedInput">With the host checks, also let the host write the first layer's uint8 input codes where
    /// the graph quantizes the features (<see cref="HostRowChecks.QuantizedInput"/>, the default); false keeps the float features
    /// as the input (benchmarks compare the two).</param>
    public BatchedOnnxScorer(byte[] onnx, int? gpuDeviceId = null, bool fallbackToCpu = false, int? intraOpThreads = null, bool hostRowChecks = true,
        bool hostQuantizedInput = true)
    {
        ArgumentNullException.ThrowIfNull(onnx);
        Signature = OnnxExporter.ReadSignature(onnx);
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        if (intraOpThreads is int threads)
            options.IntraOpNumThreads = threads;
        if (gpuDeviceId is int device)
        {
            try
            {
                options.AppendExecutionProvider_CUDA(device);
                UsesGpu = true;
            }
            catch (Exception e) when (fallbackToCpu && e is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
            {
                FallbackReason = e.Message;
            }
            catch (Exception e) when (e is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
            {
                throw new InvalidOperationException(
                    $"CUDA device {device} was requested for ONNX scoring but ONNX Runtime's CUDA execution provider could not be used ({e.Message}). " +
                    "Reference Microsoft.ML.OnnxRuntime.Gpu and install CUDA/cuDNN, or allow falling back to the CPU (MLContext.FallbackToCpu = true).", e);
            }
        }
        // Issue 19: the graph's checks of the input rows (the non-finite probe, the per-batch clean) run on the host, on the
        // block this scorer is handed, instead of as a pass of ONNX Runtime over the features; same outputs bit for bit.
        var outputs = Signature.OutputHead.BatchedOutputs(Signature);
        hostChecks = hostRowChecks ? HostRowChecks.Rewrite(onnx, hostQuantizedInput, outputs.Select(o => o.Name).ToArray()) : HostRowChecks.None(onnx);
        session = new InferenceSession(hostChecks.Onnx, options);
        inputNames = hostChecks.InputNames(Signature.InputName);
        outputNames = outputs.Select(o => o.Name).ToArray();
        outputWidths = outputs.Select(o => o.Width).ToArray();
        outputBuffers = outputNames.Select(_ => Array.Empty<float>()).ToArray();
        OutputWidth = outputWidths.Sum();
    }

    /// <summary>The model's input and output names and sizes.</summary>
    public OnnxModelSignature Signature { get; }

    /// <summary>Features per row.</summary>
    public int InputLength => Signature.InputLength;

    /// <summary>Number of classes.</summary>
    public int ClassCount => Signature.ClassCount;

    /// <summary>
    /// Values <c>Score</c> writes per row: the output head's batched outputs side by side (multiclass: the
    /// <see cref="ClassCount"/> probabilities).
    /// </summary>
    public int OutputWidth { get; }

    /// <summary>Whether the CUDA execution provider was appended.</summary>
    public bool UsesGpu { get; }

    /// <summary>Total rows scored so far (diagnostics: shows whether a view computed its outputs).</summary>
    public long RowsScored => Interlocked.Read(ref rowsScored);

    /// <summary>Why CUDA was not used although requested (fallback to CPU), or null.</summary>
    public string? FallbackReason { get; }

    /// <summary>
    /// Scores <paramref name="rows"/> rows: <paramref name="features"/> holds rows × <see cref="InputLength"/> values,
    /// row-major; <paramref name="probabilities"/> receives rows × <see cref="OutputWidth"/> values, row-major (multiclass:
    /// the class probabilities). The values are copied through the scorer's own buffers; the array overload avoids the copies.
    /// </summary>
    public void Score(ReadOnlySpan<float> features, int rows, Span<float> probabilities)
    {
        var (inLen, outLen) = CheckLengths(features.Length, rows, probabilities.Length);
        if (rows == 0)
            return;
        lock (sync)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            // A model scored from input codes keeps no float block: the codes go into the row values (one row of room suffices).
            int floats = TakesInputCodes ? 0 : (int)inLen;
            if (inputBuffer.Length < Math.Max(floats, InputLength)) // pinned (POH) so ONNX Runtime reads it in place; grown only when a bigger block arrives
                inputBuffer = GC.AllocateUninitializedArray<float>(checked(Math.Max(floats, InputLength)), pinned: true);
            EnsureOutputBuffers(rows);
            HostRowValues? values = null;
            if (hostChecks.Any)
            {
                // The host checks as the rows are copied in (one pass), as the batched view does.
                values = HostValues(rows);
                for (int r = 0; r < rows; r++)
                    hostChecks.CopyRow(features.Slice(r * InputLength, InputLength), inputBuffer.AsSpan(floats == 0 ? 0 : r * InputLength, InputLength), values, r);
            }
            else
                features[..(int)inLen].CopyTo(inputBuffer);
            Run(inputBuffer.AsMemory(0, floats), rows, directOutput: null, values);
            CopyOutputs(rows, probabilities[..(int)outLen]);
        }
    }

    /// <summary>
    /// Scores <paramref name="rows"/> rows as <see cref="Score(ReadOnlySpan{float}, int, Span{float})"/> does, but ONNX
    /// Runtime reads <paramref name="features"/> and (single-output heads) writes <paramref name="probabilities"/> in place,
    /// pinned for the call: no copy of the rows in or out (issue 19: the batched view's path). For a per-batch int8 model
    /// the rows are cleaned in place first, as its graph would (a row with a NaN or an infinity zeroed, values clipped).
    /// </summary>
    public void Score(float[] features, int rows, float[] probabilities) => Score(features, rows, probabilities, rowValues: null);

    /// <summary>
    /// Scores as <see cref="Score(float[], int, float[])"/> with the rows already copied through <see cref="CopyRow"/>:
    /// <paramref name="rowValues"/> holds what it wrote for each row (the host checks are then not repeated). When the model
    /// <see cref="TakesInputCodes"/>, the codes in <paramref name="rowValues"/> are scored and <paramref name="features"/> is
    /// not read (it may be empty).
    /// </summary>
    public void Score(float[] features, int rows, float[] probabilities, HostRowValues? rowValues)
    {
        ArgumentNullException.ThrowIfNull(features);
        ArgumentNullException.ThrowIfNull(probabilities);
        bool codesOnly = TakesInputCodes && rowValues is not null; // the features are not read: the codes are
        var (inLen, outLen) = CheckLengths(codesOnly ? null : features.Length, rows, probabilities.Length);
        var input = codesOnly ? Memory<float>.Empty : features.AsMemory(0, (int)inLen);
        if (rows == 0)
            return;
        if (rowValues is not null && rowValues.Capacity < rows)
            throw new ArgumentException($"{rows} rows need {rows} row values but {rowValues.Capacity} were given.", nameof(rowValues));
        lock (sync)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            if (outputBuffers.Length == 1)
            {
                Run(input, rows, probabilities.AsMemory(0, (int)outLen), rowValues);
                return;
            }
            EnsureOutputBuffers(rows);
            Run(input, rows, directOutput: null, rowValues);
            CopyOutputs(rows, probabilities.AsSpan(0, (int)outLen));
        }
    }

    /// <summary>
    /// Copies one row of features into a block for <see cref="Score(float[], int, float[], HostRowValues)"/>, making this model's
    /// host checks on it as it goes into row <paramref name="row"/> of <paramref name="values"/> (see <see cref="HostRowChecks.CopyRow"/>).
    /// </summary>
    public void CopyRow(ReadOnlySpan<float> source, Span<float> destination, HostRowValues values, int row) =>
        hostChecks.CopyRow(source, destination, values, row);

    /// <summary>
    /// Whether the in-process graph takes the first layer's uint8 input codes (int8 static, per-row int8 dynamic with a dense first
    /// layer): <see cref="CopyRow"/> then writes them into the row values, and <see cref="Score(float[], int, float[], HostRowValues)"/>
    /// given those values does not read its features (a caller need not keep a float block).
    /// </summary>
    public bool TakesInputCodes => hostChecks.QuantizedInput is not null;

    /// <summary>Per-row host values for blocks of up to <paramref name="capacity"/> rows of this model, for <see cref="CopyRow"/>.</summary>
    public HostRowValues NewRowValues(int capacity) => hostChecks.NewValues(capacity);

    /// <summary>The scorer's own per-row host values, grown to hold <paramref name="rows"/> rows (under the lock).</summary>
    private HostRowValues HostValues(int rows)
    {
        if (hostValues is null || hostValues.Capacity < rows)
            hostValues = hostChecks.NewValues(rows);
        return hostValues;
    }

    /// <summary>Grows the output buffers (pinned, so ONNX Runtime writes them in place) to hold <paramref name="rows"/> rows.</summary>
    private void EnsureOutputBuffers(int rows)
    {
        for (int k = 0; k < outputBuffers.Length; k++)
            if (outputBuffers[k].Length < rows * outputWidths[k])
                outputBuffers[k] = GC.AllocateUninitializedArray<float>(checked(rows * outputWidths[k]), pinned: true);
    }

    /// <summary>The lengths <paramref name="rows"/> rows need; <paramref name="featureLength"/> null: the features are not read.</summary>
    private (long InLength, long OutLength) CheckLengths(int? featureLength, int rows, int outputLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        long inLen = (long)rows * InputLength, outLen = (long)rows * OutputWidth;
        if (featureLength is int given && given < inLen)
            throw new ArgumentException($"{rows} rows need {inLen} feature values but {given} were given.", "features");
        if (outputLength < outLen)
            throw new ArgumentException($"{rows} rows need room for {outLen} output values but the destination holds {outputLength}.", "probabilities");
        return (inLen, outLen);
    }

    /// <summary>One session run (under the lock): into <paramref name="directOutput"/> (single output) or the output buffers.</summary>
    private void Run(Memory<float> input, int rows, Memory<float>? directOutput, HostRowValues? rowValues = null)
    {
        if (hostChecks.Any && rowValues is null)
        {
            rowValues = HostValues(rows);
            hostChecks.Apply(input.Span, rows, InputLength, rowValues);
        }
        OrtValue[] inputs = [];
        var outputs = new OrtValue[outputBuffers.Length];
        try
        {
            inputs = hostChecks.CreateInputs(input, rowValues, rows, InputLength);
            for (int k = 0; k < outputs.Length; k++)
                outputs[k] = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance,
                    directOutput ?? outputBuffers[k].AsMemory(0, rows * outputWidths[k]), [rows, outputWidths[k]]);
            session.Run(runOptions, inputNames, inputs, outputNames, outputs);
        }
        finally
        {
            foreach (var o in inputs)
                o?.Dispose();
            foreach (var o in outputs)
                o?.Dispose();
        }
        Interlocked.Add(ref rowsScored, rows);
    }

    /// <summary>The output buffers side by side per row into <paramref name="probabilities"/>: row r holds output 0's values, then output 1's, ...</summary>
    private void CopyOutputs(int rows, Span<float> probabilities)
    {
        if (outputBuffers.Length == 1)
        {
            outputBuffers[0].AsSpan(0, probabilities.Length).CopyTo(probabilities);
            return;
        }
        for (int k = 0, offset = 0; k < outputBuffers.Length; offset += outputWidths[k], k++)
            for (int r = 0; r < rows; r++)
                outputBuffers[k].AsSpan(r * outputWidths[k], outputWidths[k]).CopyTo(probabilities.Slice(r * OutputWidth + offset, outputWidths[k]));
    }

    /// <summary>Releases the ONNX Runtime session.</summary>
    public void Dispose()
    {
        lock (sync)
        {
            if (disposed)
                return;
            disposed = true;
            session.Dispose();
            runOptions.Dispose();
        }
    }
}
