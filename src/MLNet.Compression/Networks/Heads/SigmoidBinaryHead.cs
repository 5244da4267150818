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
/// The binary head: one logit, sigmoid. Label: a Boolean column. Training loss: binary cross-entropy on the logit.
/// Distillation: alpha · T² · BCE(sigmoid(student/T), sigmoid(teacher/T)) + (1 − alpha) · BCE(student, label), the teacher's
/// <c>Score</c> read as a logit (or its <c>Probability</c>, read as a probability). ONNX: the logit float [N, 1] as the score
/// output and the predicted class int64 [N] (logit &gt; 0). ML.NET: <c>Score</c> (Single, the raw logit), <c>Probability</c>
/// (Single, sigmoid of the logit) and <c>PredictedLabel</c> (Boolean, logit &gt; 0), so <c>BinaryClassification.Evaluate</c>
/// gives AUC, F1 and the rest. A row with NaN features scores NaN, Probability NaN and PredictedLabel false, exactly as
/// ML.NET's own binary trainers (their scorer's <c>score &gt; threshold</c> is false for NaN).
/// </summary>
internal sealed class SigmoidBinaryHead : OutputHead
{
    /// <summary>The two class names (the Boolean label's values).</summary>
    public static readonly IReadOnlyList<string> BooleanClassNames = ["False", "True"];

    /// <inheritdoc />
    public override OutputHeadKind Kind => OutputHeadKind.Binary;

    /// <inheritdoc />
    public override string Name => "binary";

    /// <inheritdoc />
    public override int OutputUnits(int classCount) => 1;

    /// <inheritdoc />
    public override DataViewSchema.Column ValidateLabel(DataViewSchema schema, string labelColumnName, out int classCount)
    {
        var column = RequireLabel(schema, labelColumnName);
        if (column.Type is not BooleanDataViewType)
        {
            var hint = column.Type switch
            {
                KeyDataViewType k => $"It is a key with {k.Count} classes: use ml.MulticlassClassification.Trainers.NeuralNetwork, or make a Boolean " +
                    $"column, e.g. ml.Transforms.Expression(\"{labelColumnName}\", \"x => x == 2\", \"{labelColumnName}\") for the second class.",
                NumberDataViewType n when n.RawType == typeof(float) =>
                    "For a numeric target use ml.Regression.Trainers.NeuralNetwork; for two classes coded as numbers make a Boolean column, " +
                    $"e.g. ml.Transforms.Expression(\"{labelColumnName}\", \"x => x > 0\", \"{labelColumnName}\").",
                _ => "Load it as bool (e.g. [LoadColumn] on a bool property) or convert it to a Boolean column.",
            };
            throw new ArgumentOutOfRangeException(nameof(labelColumnName),
                $"The label column '{labelColumnName}' has type {column.Type}; the binary classification trainer needs a Boolean label. {hint}");
        }
        classCount = 2;
        return column;
    }

    /// <inheritdoc />
    /// <remarks>False gives 0, true 1 (a Boolean column has no missing value).</remarks>
    public override LabelReader CreateLabelReader(DataViewRowCursor cursor, DataViewSchema.Column label, int classCount)
    {
        var getter = cursor.GetGetter<bool>(label);
        bool value = false;
        return () =>
        {
            getter(ref value);
            return value ? 1 : 0;
        };
    }

    /// <inheritdoc />
    public override IReadOnlyList<string> ClassNames(DataViewSchema.Column label, int classCount) => BooleanClassNames;

    /// <inheritdoc />
    public override Tensor Loss(Tensor outputs, Tensor labels) =>
        nn.functional.binary_cross_entropy_with_logits(outputs.squeeze(1), labels.to(ScalarType.Float32));

    /// <inheritdoc />
    /// <remarks>
    /// The empirical-predictive Fisher of the Bernoulli likelihood: binary cross-entropy at the predicted class ŷ = (logit &gt; 0),
    /// whose gradient with respect to the logit is sigmoid(logit) − ŷ.
    /// </remarks>
    public override Tensor FisherOutputGradient(Tensor outputs, TargetScaling? scaling) =>
        outputs.sigmoid().sub(outputs.gt(Scalars.Zero).to(ScalarType.Float32));

    /// <inheritdoc />
    public override Tensor CorrectCount(Tensor outputs, Tensor labels) =>
        outputs.squeeze(1).gt(Scalars.Zero).to(ScalarType.Int64).eq(labels.to(ScalarType.Int64)).sum();

    /// <inheritdoc />
    /// <remarks>
    /// A binary teacher's <c>Score</c> is a raw score (a logit for this library's networks), so Auto reads scores as logits;
    /// only a column named <c>Probability</c> (ML.NET's calibrated probability) is read as probabilities.
    /// </remarks>
    public override TeacherScoreKind ResolveTeacherScoreKind(Tensor scores, string columnName) =>
        string.Equals(columnName, "Probability", StringComparison.Ordinal) ? TeacherScoreKind.Probabilities : TeacherScoreKind.Logits;

    /// <inheritdoc />
    /// <remarks>Teacher probabilities are clamped to [floor, 1 − floor] before their log-odds are taken.</remarks>
    public override Tensor DistillationLoss(Tensor studentOutputs, Tensor teacherScores, Tensor labels, double temperature, double alpha,
        TeacherScoreKind kind)
    {
        using var invT = (1.0 / temperature).ToScalar();
        using var softWeight = (alpha * temperature * temperature).ToScalar();
        using var hardWeight = (1 - alpha).ToScalar();
        var teacher = teacherScores.reshape(-1);
        if (kind == TeacherScoreKind.Probabilities)
        {
            using var lo = 1e-7.ToScalar();
            using var hi = (1 - 1e-7).ToScalar();
            var p = teacher.clamp(lo, hi);
            teacher = p.log().sub(p.neg().add(Scalars.One).log());
        }
        var softTarget = teacher.mul(invT).sigmoid();
        var loss = nn.functional.binary_cross_entropy_with_logits(studentOutputs.squeeze(1).mul(invT), softTarget).mul(softWeight);
        if (alpha < 1)
            loss = loss.add(Loss(studentOutputs, labels).mul(hardWeight), Scalars.One);
        return loss;
    }

    /// <inheritdoc />
    public override IReadOnlyList<string> OutputNames(OnnxExportOptions options) => [options.ScoreName, options.LabelIndexName];

    /// <inheritdoc />
    public override void EmitOutputs(OnnxGraphBuilder g, string outputs, int classCount, OnnxExportOptions options)
    {
        outputs = PropagateNonFinite(g, outputs, options);
        g.AddNodeWithReservedOutput("Identity", [outputs], options.ScoreName);
        // Predicted class: logit > 0 (false for NaN, as ML.NET's binary scorers), as int64 [N]; built without initializers.
        var zero = g.AddNode("Sub", [options.ScoreName, options.ScoreName], "logit_zero");
        var positive = g.AddNode("Cast", [g.AddNode("Greater", [options.ScoreName, zero], "logit_positive")], "logit_positive_float",
            new Dictionary<string, object> { ["to"] = (long)TensorProto.Types.DataType.Float });
        var flat = g.AddNode("Einsum", [positive], "logit_positive_flat", new Dictionary<string, object> { ["equation"] = "ij->i" });
        g.AddNodeWithReservedOutput("Cast", [flat], options.LabelIndexName, new Dictionary<string, object> { ["to"] = (long)TensorProto.Types.DataType.Int64 });
        g.AddOutput(options.ScoreName, TensorProto.Types.DataType.Float, [null, 1]);
        g.AddOutput(options.LabelIndexName, TensorProto.Types.DataType.Int64, [null]);
    }

    /// <inheritdoc />
    public override OnnxModelSignature ReadSignature(GraphProto graph, string inputName, int inputLength)
    {
        var score = graph.Output.Where(o => o.Type?.TensorType?.ElemType == (int)TensorProto.Types.DataType.Float).ToArray();
        var label = graph.Output.Where(o => o.Type?.TensorType?.ElemType == (int)TensorProto.Types.DataType.Int64).ToArray();
        if (graph.Output.Count != 2 || score.Length != 1 || label.Length != 1
            || score[0].Type.TensorType.Shape?.Dim.LastOrDefault() is not { HasDimValue: true, DimValue: 1 })
            throw new ArgumentException("A binary ONNX model must have two outputs: the float logit [N, 1] and the int64 predicted class [N].", "onnx");
        return new OnnxModelSignature(inputName, inputLength, score[0].Name, label[0].Name, 2, OutputHeadKind.Binary);
    }

    /// <inheritdoc />
    public override SchemaShape GetOutputSchema(MLContext ml, SchemaShape inputSchema, string labelColumnName, string featureColumnName)
    {
        var label = RequireLabel(inputSchema, labelColumnName);
        if (label.Kind != SchemaShape.Column.VectorKind.Scalar || label.ItemType is not BooleanDataViewType)
            throw new ArgumentOutOfRangeException(nameof(inputSchema),
                $"The label column '{labelColumnName}' must be a scalar Boolean for the binary classification trainer, not {label.Kind} of {label.ItemType}.");
        // SchemaShape.Column has no public constructor: borrow built-in estimators that produce the same shapes (Score and
        // Probability scalar Single, PredictedLabel Boolean like the label).
        var shape = ml.Transforms.Conversion.ConvertType(OnnxScoringChain.ScoreColumnName, labelColumnName, DataKind.Single).GetOutputSchema(inputSchema);
        shape = ml.Transforms.Conversion.ConvertType(OnnxScoringChain.ProbabilityColumnName, labelColumnName, DataKind.Single).GetOutputSchema(shape);
        return ml.Transforms.CopyColumns(OnnxScoringChain.PredictedLabelColumnName, labelColumnName).GetOutputSchema(shape);
    }

    /// <inheritdoc />
    public override IReadOnlyList<string> ChainOutputs(OnnxModelSignature signature) => [signature.ScoreName];

    /// <inheritdoc />
    /// <remarks>See <see cref="OnnxScoringChain.ScalarScore"/>: ML.NET's own binary scorer and Platt calibrator give the columns.</remarks>
    public override IReadOnlyList<IEstimator<ITransformer>> ChainConversions(MLContext ml, OnnxModelSignature signature, IReadOnlyList<string> classNames,
        List<string> temporaries) =>
        OnnxScoringChain.ScalarScore(ml, signature.ScoreName, binary: true, temporaries);

    /// <inheritdoc />
    public override IReadOnlyList<(string Name, int Width)> BatchedOutputs(OnnxModelSignature signature) => [(signature.ScoreName, 1)];

    /// <inheritdoc />
    /// <remarks>The same arithmetic as the saved chain's linear scorer and Platt calibrator, so both paths agree bit for bit.</remarks>
    public override IReadOnlyList<ScoredColumn> ScoredColumns(OnnxModelSignature signature, IReadOnlyList<string> classNames) =>
    [
        new ScoredColumn(OnnxScoringChain.ScoreColumnName, NumberDataViewType.Single, null,
            row => (ValueGetter<float>)((ref float dst) => dst = OnnxScoringChain.LinearScore(row()[0]))),
        new ScoredColumn(OnnxScoringChain.ProbabilityColumnName, NumberDataViewType.Single, null,
            row => (ValueGetter<float>)((ref float dst) => dst = OnnxScoringChain.SigmoidProbability(OnnxScoringChain.LinearScore(row()[0])))),
        new ScoredColumn(OnnxScoringChain.PredictedLabelColumnName, BooleanDataViewType.Instance, null,
            row => (ValueGetter<bool>)((ref bool dst) => dst = OnnxScoringChain.LinearScore(row()[0]) > 0)),
    ];
}
