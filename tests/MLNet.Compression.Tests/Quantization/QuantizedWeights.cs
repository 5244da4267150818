using Microsoft.ML.OnnxRuntime;
using MLNet.Compression.Onnx.Proto;

namespace MLNet.Compression.Tests.Quantization;

/// <summary>Reads the quantized weight tensors back out of an exported ONNX model (initializers or Constant nodes).</summary>
internal static class QuantizedWeights
{
    /// <summary>
    /// Per layer, how many weight values ONNX Runtime holds as exactly zero: int8 bytes of "{layer}.weight_q" or int4 nibbles of
    /// "{layer}.weight_q4" (symmetric encodings, zero point 0, so a stored 0 dequantizes to exactly 0), read from the model
    /// after ONNX Runtime's constant folding (which rebuilds tensors stored sparsely).
    /// </summary>
    public static Dictionary<string, long> ZeroCounts(byte[] onnx)
    {
        var path = Path.Combine(Path.GetTempPath(), $"mlnc-zeros-{Guid.NewGuid():N}.onnx");
        ModelProto folded;
        try
        {
            using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC, OptimizedModelFilePath = path })
            using (new InferenceSession(onnx, options))
            {
            }
            folded = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        }
        finally
        {
            File.Delete(path);
        }
        var graph = folded.Graph;
        var tensors = graph.Initializer.Select(t => (t.Name, Tensor: t))
            .Concat(graph.Node.Where(n => n.OpType == "Constant" && n.Output.Count == 1)
                .SelectMany(n => n.Attribute.Where(a => a.Name == "value" && a.T is not null).Select(a => (Name: n.Output[0], Tensor: a.T))));
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var (name, tensor) in tensors)
        {
            var data = tensor.RawData.Span;
            long elements = tensor.Dims.Aggregate(1L, (a, b) => a * b);
            if (name.EndsWith(".weight_q", StringComparison.Ordinal) && tensor.DataType == (int)TensorProto.Types.DataType.Int8)
                counts[name[..^".weight_q".Length]] = data.ToArray().LongCount(b => b == 0);
            else if (name.EndsWith(".weight_q4", StringComparison.Ordinal) && tensor.DataType == (int)TensorProto.Types.DataType.Int4)
            {
                long zeros = 0;
                for (long e = 0; e < elements; e++)
                    if (((data[(int)(e >> 1)] >> (int)((e & 1) * 4)) & 0x0F) == 0)
                        zeros++;
                counts[name[..^".weight_q4".Length]] = zeros;
            }
        }
        return counts;
    }
}
