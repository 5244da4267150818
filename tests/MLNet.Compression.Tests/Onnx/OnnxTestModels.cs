using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Networks;

namespace MLNet.Compression.Tests.Onnx;

/// <summary>Small networks with deterministic random weights, a naive reference forward pass, and synthetic ML.NET data.</summary>
internal static class OnnxTestModels
{
    public static readonly string[] Digits = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

    public static NetworkModel Mlp(int seed = 1, params int[] hidden)
    {
        int[] units = hidden.Length == 0 ? [32, 16] : hidden;
        return Fill(NetworkModel.Create(NetworkArchitecture.Mlp(inputLength: 784, hiddenUnits: units), 10), seed);
    }

    public static NetworkModel LeNet5(int seed = 2) => Fill(NetworkModel.Create(NetworkArchitecture.LeNet5(), 10), seed);

    public static NetworkModel DepthwiseSeparable(int seed = 3) => Fill(NetworkModel.Create(NetworkArchitecture.DepthwiseSeparable(), 10), seed);

    /// <summary>Uniform weights scaled by 1/sqrt(fan-in) (logits of order 1) and small biases.</summary>
    public static NetworkModel Fill(NetworkModel model, int seed)
    {
        var rng = new Random(seed);
        foreach (var layer in model.ParameterizedLayers)
        {
            float scale = 2.5f / MathF.Sqrt(layer.FanIn);
            for (int i = 0; i < layer.Weight.Length; i++)
                layer.Weight[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
            for (int i = 0; i < layer.Bias.Length; i++)
                layer.Bias[i] = (float)(rng.NextDouble() * 2 - 1) * 0.1f;
        }
        return model;
    }

    public static float[][] RandomFeatures(int rows, int length, int seed)
    {
        var rng = new Random(seed);
        var result = new float[rows][];
        for (int r = 0; r < rows; r++)
        {
            result[r] = new float[length];
            for (int i = 0; i < length; i++)
                result[r][i] = rng.NextDouble() < 0.3 ? 0f : (float)rng.NextDouble();
        }
        return result;
    }

    /// <summary>Softmax probabilities, computed naively in double precision.</summary>
    public static double[] Reference(NetworkModel model, float[] features)
    {
        double[] x = features.Select(f => (double)f).ToArray();
        foreach (var layer in model.Layers)
        {
            switch (layer)
            {
                case DenseModelLayer d:
                    var y = new double[d.OutFeatures];
                    for (int o = 0; o < d.OutFeatures; o++)
                    {
                        double s = d.Bias[o];
                        for (int i = 0; i < d.InFeatures; i++)
                            s += (double)d.Weight[o * d.InFeatures + i] * x[i];
                        y[o] = s;
                    }
                    x = Activate(y, d.Activation);
                    break;
                case ConvModelLayer c:
                    x = Activate(Conv(c, x), c.Activation);
                    break;
                case MaxPoolModelLayer p:
                    x = MaxPool(p, x);
                    break;
                case FlattenModelLayer:
                    break; // [C, H, W] row-major is already the flat order
                default:
                    throw new NotSupportedException(layer.GetType().Name);
            }
        }
        double max = x.Max();
        var e = x.Select(v => Math.Exp(v - max)).ToArray();
        double sum = e.Sum();
        return e.Select(v => v / sum).ToArray();
    }

    private static double[] Activate(double[] x, Activation a) => a == Activation.Relu ? x.Select(v => Math.Max(0, v)).ToArray() : x;

    private static double[] Conv(ConvModelLayer c, double[] x)
    {
        int inC = c.InputShape[0], inH = c.InputShape[1], inW = c.InputShape[2];
        int outC = c.OutputShape[0], outH = c.OutputShape[1], outW = c.OutputShape[2];
        int k = c.Kernel, inPerGroup = inC / c.Groups, outPerGroup = outC / c.Groups;
        var y = new double[outC * outH * outW];
        for (int oc = 0; oc < outC; oc++)
        {
            int g = oc / outPerGroup;
            for (int oh = 0; oh < outH; oh++)
                for (int ow = 0; ow < outW; ow++)
                {
                    double s = c.Bias[oc];
                    for (int icl = 0; icl < inPerGroup; icl++)
                    {
                        int ic = g * inPerGroup + icl;
                        for (int kh = 0; kh < k; kh++)
                            for (int kw = 0; kw < k; kw++)
                            {
                                int ih = oh * c.Stride - c.Padding + kh, iw = ow * c.Stride - c.Padding + kw;
                                if (ih < 0 || ih >= inH || iw < 0 || iw >= inW)
                                    continue;
                                s += (double)c.Weight[((oc * inPerGroup + icl) * k + kh) * k + kw] * x[(ic * inH + ih) * inW + iw];
                            }
                    }
                    y[(oc * outH + oh) * outW + ow] = s;
                }
        }
        return y;
    }

    private static double[] MaxPool(MaxPoolModelLayer p, double[] x)
    {
        int ch = p.InputShape[0], inH = p.InputShape[1], inW = p.InputShape[2];
        int outH = p.OutputShape[1], outW = p.OutputShape[2];
        var y = new double[ch * outH * outW];
        for (int c = 0; c < ch; c++)
            for (int oh = 0; oh < outH; oh++)
                for (int ow = 0; ow < outW; ow++)
                {
                    double m = double.NegativeInfinity;
                    for (int kh = 0; kh < p.Kernel; kh++)
                        for (int kw = 0; kw < p.Kernel; kw++)
                            m = Math.Max(m, x[(c * inH + oh * p.Stride + kh) * inW + ow * p.Stride + kw]);
                    y[(c * outH + oh) * outW + ow] = m;
                }
        return y;
    }

    public sealed class Row
    {
        [VectorType(784)]
        public float[] Features { get; set; } = [];

        public string LabelText { get; set; } = "";
    }

    /// <summary>Rows with Features vector&lt;float, 784&gt; and Label key&lt;uint, 10&gt; (KeyValues "0".."9" in order).</summary>
    public static IDataView Data(MLContext ml, int rows, int seed)
    {
        var features = RandomFeatures(rows, 784, seed);
        var rng = new Random(seed + 1000);
        var raw = ml.Data.LoadFromEnumerable(features.Select(f => new Row { Features = f, LabelText = Digits[rng.Next(10)] }).ToArray());
        var keys = ml.Data.LoadFromEnumerable(Digits.Select(d => new NameRow { Name = d }));
        return ml.Transforms.Conversion.MapValueToKey("Label", "LabelText", keyData: keys).Fit(raw).Transform(raw);
    }

    private sealed class NameRow
    {
        public string Name { get; set; } = "";
    }

    /// <summary>Reads Score and PredictedLabel of every row.</summary>
    public static (float[][] Scores, uint[] Labels) ReadOutputs(IDataView view)
    {
        var scoreCol = view.Schema["Score"];
        var labelCol = view.Schema["PredictedLabel"];
        var scores = new List<float[]>();
        var labels = new List<uint>();
        using var cursor = view.GetRowCursor([scoreCol, labelCol]);
        var sg = cursor.GetGetter<VBuffer<float>>(scoreCol);
        var lg = cursor.GetGetter<uint>(labelCol);
        VBuffer<float> s = default;
        uint l = 0;
        while (cursor.MoveNext())
        {
            sg(ref s);
            lg(ref l);
            scores.Add(s.DenseValues().ToArray());
            labels.Add(l);
        }
        return (scores.ToArray(), labels.ToArray());
    }
}
