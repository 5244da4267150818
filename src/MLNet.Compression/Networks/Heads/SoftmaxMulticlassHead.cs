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
/// The multiclass head: K logits, softmax. Training loss: cross-entropy on the logits. Distillation (Hinton, Vinyals and
/// Dean): alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha) · cross-entropy. ONNX: Softmax(axis=1) into
/// the score output float [N, K] and ArgMax(axis=1) into the label index output int64 [N]. ML.NET: <c>Score</c>
/// vector&lt;float, K&gt; (probabilities) and <c>PredictedLabel</c> key&lt;uint, K&gt; with the class names as key values, so
/// <c>MulticlassClassification.Evaluate</c> works.
/// </summary>
internal sealed class SoftmaxMulticlassHead : OutputHead
{
    /// <inheritdoc />
    public override OutputHeadKind Kind => OutputHeadKind.Multiclass;

    /// <inheritdoc />
    public override string Name => "multiclass";

    /// <inheritdoc />
    public override int OutputUnits(int classCount) => classCount;

    /// <inheritdoc />
    /// <remarks>A Single label is sent to the regression trainer and a Boolean one to the binary trainer, before the generic key advice.</remarks>
    public override DataViewSchema.Column ValidateLabel(DataViewSchema schema, string labelColumnName, out int classCount)
    {
        var type = schema.GetColumnOrNull(labelColumnName)?.Type;
        if (type == NumberDataViewType.Single || type == NumberDataViewType.Double)
            throw new ArgumentOutOfRangeException(nameof(labelColumnName),
                $"The label column '{labelColumnName}' has type {type}, a number: to predict a number use ml.Regression.Trainers.NeuralNetwork. " +
                $"Only if the numbers are class codes (a few distinct values), add ml.Transforms.Conversion.MapValueToKey(\"{labelColumnName}\") before this multiclass trainer.");
        if (type is BooleanDataViewType)
            throw new ArgumentOutOfRangeException(nameof(labelColumnName),
                $"The label column '{labelColumnName}' is Boolean: use ml.BinaryClassification.Trainers.NeuralNetwork, which gives Score, Probability and PredictedLabel " +
                "for ml.BinaryClassification.Evaluate.");
        return SchemaValidation.LabelColumn(schema, labelColumnName, out classCount);
    }

    /// <inheritdoc />
    /// <remarks>Key 0 (missing) gives -1; keys 1..K give the class index key − 1.</remarks>
    public override LabelReader CreateLabelReader(DataViewRowCursor cursor, DataViewSchema.Column label, int classCount)
    {
        var getter = cursor.GetGetter<uint>(label);
        uint key = 0;
        return () =>
        {
            getter(ref key);
            if (key == 0)
                return -1;
            if (key > classCount)
                throw new InvalidDataException($"Row {cursor.Position} has label key {key}, outside the {classCount} classes of column '{label.Name}'.");
            return key - 1;
        };
    }

    /// <inheritdoc />
    public override IReadOnlyList<string> ClassNames(DataViewSchema.Column label, int classCount) => SchemaValidation.ClassNames(label, classCount);

    /// <inheritdoc />
    public override Tensor Loss(Tensor outputs, Tensor labels) => nn.functional.cross_entropy(outputs, labels);

    /// <inheritdoc />
    /// <remarks>
    /// The empirical-predictive Fisher (van de Ven &amp; Tolias): −log softmax(z)[ŷ] at the predicted class ŷ = arg max, whose
    /// gradient is softmax(z) − onehot(ŷ).
    /// </remarks>
    public override Tensor FisherOutputGradient(Tensor outputs, TargetScaling? scaling)
    {
        using var minusOne = (-1.0).ToScalar();
        var probabilities = nn.functional.softmax(outputs, 1);
        var onehot = nn.functional.one_hot(probabilities.argmax(1), outputs.size(1)).to(ScalarType.Float32);
        return probabilities.add(onehot, minusOne);
    }

    /// <inheritdoc />
    public override Tensor CorrectCount(Tensor outputs, Tensor labels) => outputs.argmax(1).eq(labels).sum();

    /// <inheritdoc />
    /// <remarks>
    /// Teacher probabilities are clamped at <see cref="Distillation.DistillationLoss.ProbabilityFloor"/> before their logarithm
    /// is taken; <paramref name="kind"/> Auto decides per call with <see cref="Distillation.DistillationLoss.LooksLikeProbabilities"/>.
    /// </remarks>
    public override Tensor DistillationLoss(Tensor studentOutputs, Tensor teacherScores, Tensor labels, double temperature, double alpha,
        TeacherScoreKind kind)
    {
        using var invT = (1.0 / temperature).ToScalar();
        using var softWeight = (alpha * temperature * temperature).ToScalar();
        using var hardWeight = (1 - alpha).ToScalar();
        using var floor = Distillation.DistillationLoss.ProbabilityFloor.ToScalar();
        bool probabilities = kind switch
        {
            TeacherScoreKind.Probabilities => true,
            TeacherScoreKind.Logits => false,
            _ => Distillation.DistillationLoss.LooksLikeProbabilities(teacherScores),
        };
        var teacherLogits = probabilities ? teacherScores.clamp_min(floor).log() : teacherScores;
        var teacherLogP = nn.functional.log_softmax(teacherLogits.mul(invT), 1);
        var studentLogP = nn.functional.log_softmax(studentOutputs.mul(invT), 1);
        var kl = teacherLogP.exp().mul(teacherLogP.add(studentLogP.neg(), Scalars.One)).sum(1).mean();
        var loss = kl.mul(softWeight);
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
        g.AddNodeWithReservedOutput("Softmax", [outputs], options.ScoreName, new Dictionary<string, object> { ["axis"] = 1L });
        var argMax = g.AddNode("ArgMax", [options.ScoreName], "class_index",
            new Dictionary<string, object> { ["axis"] = 1L, ["keepdims"] = 0L, ["select_last_index"] = 0L });
        // A row whose scores are NaN (a NaN or infinite feature) gets class index -1, which the scoring columns turn into the
        // missing key 0, never a confident class.
        MissingWhereNaN(g, options.ScoreName, argMax, options.LabelIndexName);
        g.AddOutput(options.ScoreName, TensorProto.Types.DataType.Float, [null, classCount]);
        g.AddOutput(options.LabelIndexName, TensorProto.Types.DataType.Int64, [null]);
    }

    /// <inheritdoc />
    public override OnnxModelSignature ReadSignature(GraphProto graph, string inputName, int inputLength)
    {
        var score = graph.Output.Where(o => o.Type?.TensorType?.ElemType == (int)TensorProto.Types.DataType.Float).ToArray();
        var label = graph.Output.Where(o => o.Type?.TensorType?.ElemType == (int)TensorProto.Types.DataType.Int64).ToArray();
        if (graph.Output.Count != 2 || score.Length != 1 || label.Length != 1)
            throw new ArgumentException("The ONNX model must have two outputs: float scores [N, classes] and int64 class indices [N].", "onnx");
        var classDim = score[0].Type.TensorType.Shape?.Dim.LastOrDefault();
        if (classDim is null || !classDim.HasDimValue)
            throw new ArgumentException("The ONNX model's input and score output must have a fixed last dimension.", "onnx");
        return new OnnxModelSignature(inputName, inputLength, score[0].Name, label[0].Name, checked((int)classDim.DimValue));
    }

    /// <inheritdoc />
    public override SchemaShape GetOutputSchema(MLContext ml, SchemaShape inputSchema, string labelColumnName, string featureColumnName)
    {
        var label = RequireLabel(inputSchema, labelColumnName);
        if (!label.IsKey || label.Kind != SchemaShape.Column.VectorKind.Scalar)
            throw new ArgumentOutOfRangeException(nameof(inputSchema),
                $"The label column '{labelColumnName}' must be a scalar key; add ml.Transforms.Conversion.MapValueToKey(\"{labelColumnName}\").");
        // SchemaShape.Column has no public constructor: borrow built-in estimators that produce the same shapes.
        // Score is a float vector like the features; PredictedLabel has exactly the label's key type and key values.
        var withScore = ml.Transforms.Concatenate(OnnxScoringChain.ScoreColumnName, featureColumnName).GetOutputSchema(inputSchema);
        return ml.Transforms.CopyColumns(OnnxScoringChain.PredictedLabelColumnName, labelColumnName).GetOutputSchema(withScore);
    }

    /// <inheritdoc />
    public override IReadOnlyList<string> ChainOutputs(OnnxModelSignature signature) => [signature.ScoreName, signature.LabelIndexName];

    /// <inheritdoc />
    public override IReadOnlyList<IEstimator<ITransformer>> ChainConversions(MLContext ml, OnnxModelSignature signature, IReadOnlyList<string> classNames,
        List<string> temporaries)
    {
        OnnxScoringColumns.ValidateClassNames(classNames, signature.ClassCount);
        // OnnxTransformer types the [N, K] output as a 2-D vector<float, 1, K>. The identity expression gives the
        // conventional 1-D vector<float, K> with the same values (Concatenate of one column keeps the 2-D type).
        var score = ml.Transforms.Expression(OnnxScoringChain.ScoreColumnName, "x => x", signature.ScoreName);
        var toKey = OnnxScoringChain.IndexToKey(ml, signature.LabelIndexName, OnnxScoringChain.PredictedLabelColumnName, classNames, temporaries,
            signature.ClassValueType);
        if (!string.Equals(signature.ScoreName, OnnxScoringChain.ScoreColumnName, StringComparison.Ordinal))
            temporaries.Add(signature.ScoreName);
        return [score, .. toKey];
    }

    /// <inheritdoc />
    /// <remarks>The <c>Score</c> vector's length is guarded (see <see cref="OnnxScoringChain.AppendScoreShapeGuard"/>).</remarks>
    public override ITransformer GuardChain(MLContext ml, ITransformer chain, DataViewSchema scored, OnnxModelSignature signature) =>
        OnnxScoringChain.AppendScoreShapeGuard(ml, chain, scored, signature.ClassCount);

    /// <inheritdoc />
    public override IReadOnlyList<(string Name, int Width)> BatchedOutputs(OnnxModelSignature signature) => [(signature.ScoreName, signature.ClassCount)];

    /// <inheritdoc />
    public override IReadOnlyList<ScoredColumn> ScoredColumns(OnnxModelSignature signature, IReadOnlyList<string> classNames)
    {
        OnnxScoringColumns.ValidateClassNames(classNames, signature.ClassCount);
        int classes = signature.ClassCount;
        return
        [
            new ScoredColumn(OnnxScoringChain.ScoreColumnName, new VectorDataViewType(NumberDataViewType.Single, classes), null,
                row => (ValueGetter<VBuffer<float>>)((ref VBuffer<float> dst) =>
                {
                    var editor = VBufferEditor.Create(ref dst, classes);
                    row().CopyTo(editor.Values);
                    dst = editor.Commit();
                })),
            new ScoredColumn(OnnxScoringChain.PredictedLabelColumnName, new KeyDataViewType(typeof(uint), classes),
                OnnxScoringColumns.KeyValuesAnnotations(classNames, signature.ClassValueType),
                row => (ValueGetter<uint>)((ref uint dst) => dst = PredictedKey(row()))),
        ];
    }

    /// <summary>The 1-based key of the first largest score, or the missing key 0 when a score is NaN (as the exported graph does).</summary>
    private static uint PredictedKey(ReadOnlySpan<float> scores)
    {
        foreach (var v in scores)
            if (float.IsNaN(v))
                return 0;
        return (uint)ArgMax(scores) + 1;
    }

    /// <summary>First index of the largest value, like ONNX ArgMax with select_last_index = 0.</summary>
    internal static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
            if (values[i] > values[best])
                best = i;
        return best;
    }
}
