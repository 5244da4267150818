using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Distillation;
using MLNet.Compression.Onnx;
using MLNet.Compression.Onnx.Proto;
using TorchSharp;
using static TorchSharp.torch;
using MLNet.Compression.Training;

namespace MLNet.Compression.Networks.Heads;

/// <summary>
/// The regression head: one output in the label's units. Label: a Single column; rows whose label is NaN or infinite are
/// skipped. Training: mean squared error on standardized targets (<see cref="TargetScaling"/>: the scaling lives in the
/// output layer, so the exported graph predicts in label units). Distillation: alpha · MSE(student, teacher's Score) +
/// (1 − alpha) · MSE(student, label) (the temperature does not apply). ONNX: the output float [N, 1]. ML.NET: <c>Score</c>
/// (Single), so <c>Regression.Evaluate</c> works; a row with NaN features scores NaN.
/// </summary>
/// <remarks>
/// The training loop carries labels as int64 (the class index of the classification heads). This head's label reader puts
/// the label's float32 bit pattern there (as an unsigned 32-bit value, so it is never negative, which would mean "skip the
/// row"), and <see cref="DecodeLabels"/> reads it back exactly: replay memories and every other place that keeps labels as
/// int64 keep regression labels unchanged.
/// </remarks>
internal sealed class RegressionHead : OutputHead
{
    /// <inheritdoc />
    public override OutputHeadKind Kind => OutputHeadKind.Regression;

    /// <inheritdoc />
    public override string Name => "regression";

    /// <inheritdoc />
    public override int OutputUnits(int classCount) => 1;

    /// <inheritdoc />
    public override DataViewSchema.Column ValidateLabel(DataViewSchema schema, string labelColumnName, out int classCount)
    {
        var column = RequireLabel(schema, labelColumnName);
        var hint = column.Type switch
        {
            KeyDataViewType => "It is a key (categories): for classification use ml.MulticlassClassification.Trainers.NeuralNetwork; " +
                $"if the key stands for numbers, get them back with ml.Transforms.Conversion.MapKeyToValue(\"{labelColumnName}\") and ConvertType to Single.",
            BooleanDataViewType => "For a Boolean label use ml.BinaryClassification.Trainers.NeuralNetwork.",
            NumberDataViewType => $"Convert it with ml.Transforms.Conversion.ConvertType(\"{labelColumnName}\", outputKind: DataKind.Single).",
            _ => "The regression trainer needs a number per row.",
        };
        if (column.Type != NumberDataViewType.Single)
            throw new ArgumentOutOfRangeException(nameof(labelColumnName),
                $"The label column '{labelColumnName}' has type {column.Type}; the regression trainer needs a scalar Single (float). {hint}");
        classCount = 1;
        return column;
    }

    /// <inheritdoc />
    /// <remarks>A NaN or infinite label gives -1 (skip the row); any other value its float32 bits as a non-negative int64.</remarks>
    public override LabelReader CreateLabelReader(DataViewRowCursor cursor, DataViewSchema.Column label, int classCount)
    {
        var getter = cursor.GetGetter<float>(label);
        float y = 0;
        return () =>
        {
            getter(ref y);
            return float.IsFinite(y) ? Encode(y) : -1;
        };
    }

    /// <summary>The int64 that carries the label <paramref name="value"/> through the training loop.</summary>
    public static long Encode(float value) => (uint)BitConverter.SingleToInt32Bits(value);

    /// <summary>Float32 labels [N] from the int64 [N] <see cref="Encode"/> made (float32 input is returned as is).</summary>
    public static Tensor DecodeLabels(Tensor labels)
    {
        if (labels.dtype != ScalarType.Int64)
            return labels.to(ScalarType.Float32);
        using var cpu = labels.cpu();
        var bits = cpu.data<long>().ToArray();
        var values = new float[bits.Length];
        for (int i = 0; i < bits.Length; i++)
            values[i] = BitConverter.Int32BitsToSingle(unchecked((int)(uint)bits[i]));
        return tensor(values, [values.Length]).to(labels.device);
    }

    /// <inheritdoc />
    public override IReadOnlyList<string> ClassNames(DataViewSchema.Column label, int classCount) => [OnnxScoringChain.ScoreColumnName];

    /// <inheritdoc />
    public override TargetScaling? CreateTargetScaling(IDataView data, DataViewSchema.Column label) => TargetScaling.FromData(data, label);

    /// <inheritdoc />
    public override double ValidationScore(double loss, double accuracy) => -loss;

    /// <inheritdoc />
    /// <remarks>Labels are float32 (standardized by the training loop) or this head's encoded int64.</remarks>
    public override Tensor Loss(Tensor outputs, Tensor labels) => nn.functional.mse_loss(outputs.squeeze(1), DecodeLabels(labels));

    /// <inheritdoc />
    /// <remarks>
    /// The training loss is the Gaussian negative log-likelihood of the standardized target (unit variance): ½ ((y − f) / std)².
    /// At the model's own prediction its gradient is zero, so the empirical-predictive Fisher would be zero; this head gives the
    /// true Fisher instead, the expectation over y of the squared gradient, 1 / std² per row (std from <paramref name="scaling"/>,
    /// 1 without): a constant gradient of 1 / std.
    /// </remarks>
    public override Tensor FisherOutputGradient(Tensor outputs, TargetScaling? scaling) =>
        full_like(outputs, 1.0 / (scaling?.Std ?? 1.0));

    /// <inheritdoc />
    /// <remarks>
    /// Regression has no classes: a row counts as correct when the prediction is within 0.5 of the target, in the units the
    /// loop trains in (half a standard deviation of the label), so the epoch "accuracy" says which share of rows is close.
    /// </remarks>
    public override Tensor CorrectCount(Tensor outputs, Tensor labels)
    {
        using var half = 0.5.ToScalar();
        return outputs.squeeze(1).sub(DecodeLabels(labels)).abs().lt(half).sum();
    }

    /// <inheritdoc />
    public override TeacherScoreKind ResolveTeacherScoreKind(Tensor scores, string columnName) => TeacherScoreKind.Logits;

    /// <inheritdoc />
    /// <remarks>The teacher's scores are in the same (standardized) units as the student's outputs; the temperature and the kind do not apply.</remarks>
    public override Tensor DistillationLoss(Tensor studentOutputs, Tensor teacherScores, Tensor labels, double temperature, double alpha,
        TeacherScoreKind kind)
    {
        using var softWeight = alpha.ToScalar();
        using var hardWeight = (1 - alpha).ToScalar();
        var prediction = studentOutputs.squeeze(1);
        var loss = nn.functional.mse_loss(prediction, teacherScores.reshape(-1)).mul(softWeight);
        if (alpha < 1)
            loss = loss.add(Loss(studentOutputs, labels).mul(hardWeight), Scalars.One);
        return loss;
    }

    /// <inheritdoc />
    public override IReadOnlyList<string> OutputNames(OnnxExportOptions options) => [options.ScoreName];

    /// <inheritdoc />
    public override void EmitOutputs(OnnxGraphBuilder g, string outputs, int classCount, OnnxExportOptions options)
    {
        outputs = PropagateNonFinite(g, outputs, options);
        g.AddNodeWithReservedOutput("Identity", [outputs], options.ScoreName);
        g.AddOutput(options.ScoreName, TensorProto.Types.DataType.Float, [null, 1]);
    }

    /// <inheritdoc />
    public override OnnxModelSignature ReadSignature(GraphProto graph, string inputName, int inputLength)
    {
        if (graph.Output.Count != 1 || graph.Output[0].Type?.TensorType?.ElemType != (int)TensorProto.Types.DataType.Float
            || graph.Output[0].Type.TensorType.Shape?.Dim.LastOrDefault() is not { HasDimValue: true, DimValue: 1 })
            throw new ArgumentException("A regression ONNX model must have one output: float predictions [N, 1].", "onnx");
        return new OnnxModelSignature(inputName, inputLength, graph.Output[0].Name, "", 1, OutputHeadKind.Regression);
    }

    /// <inheritdoc />
    public override SchemaShape GetOutputSchema(MLContext ml, SchemaShape inputSchema, string labelColumnName, string featureColumnName)
    {
        var label = RequireLabel(inputSchema, labelColumnName);
        if (label.Kind != SchemaShape.Column.VectorKind.Scalar || label.IsKey || label.ItemType != NumberDataViewType.Single)
            throw new ArgumentOutOfRangeException(nameof(inputSchema),
                $"The label column '{labelColumnName}' must be a scalar Single for the regression trainer, not {label.Kind} of {label.ItemType}.");
        // SchemaShape.Column has no public constructor: Score is a scalar Single, exactly like the label.
        return ml.Transforms.CopyColumns(OnnxScoringChain.ScoreColumnName, labelColumnName).GetOutputSchema(inputSchema);
    }

    /// <inheritdoc />
    public override IReadOnlyList<string> ChainOutputs(OnnxModelSignature signature) => [signature.ScoreName];

    /// <inheritdoc />
    /// <remarks>See <see cref="OnnxScoringChain.ScalarScore"/> for how the [N, 1] output becomes a scalar Single.</remarks>
    public override IReadOnlyList<IEstimator<ITransformer>> ChainConversions(MLContext ml, OnnxModelSignature signature, IReadOnlyList<string> classNames,
        List<string> temporaries) =>
        OnnxScoringChain.ScalarScore(ml, signature.ScoreName, binary: false, temporaries);

    /// <inheritdoc />
    public override IReadOnlyList<(string Name, int Width)> BatchedOutputs(OnnxModelSignature signature) => [(signature.ScoreName, 1)];

    /// <inheritdoc />
    public override IReadOnlyList<ScoredColumn> ScoredColumns(OnnxModelSignature signature, IReadOnlyList<string> classNames) =>
    [
        new ScoredColumn(OnnxScoringChain.ScoreColumnName, NumberDataViewType.Single, null,
            row => (ValueGetter<float>)((ref float dst) => dst = OnnxScoringChain.LinearScore(row()[0]))),
    ];
}
