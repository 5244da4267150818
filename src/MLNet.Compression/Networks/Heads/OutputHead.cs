using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Compression.Distillation;
using MLNet.Compression.Onnx;
using MLNet.Compression.Onnx.Proto;
using static TorchSharp.torch;

namespace MLNet.Compression.Networks.Heads;

/// <summary>
/// Which output head a network has. Stored with the model (<see cref="NetworkModel.HeadKind"/>) and, for every head but the
/// default, in the exported ONNX model's metadata (<see cref="OutputHead.MetadataKey"/>). The numeric values are persisted:
/// never renumber them.
/// </summary>
internal enum OutputHeadKind
{
    /// <summary>Softmax over K logits; cross-entropy; <c>Score</c> = probabilities, <c>PredictedLabel</c> = key&lt;K&gt;.</summary>
    Multiclass = 0,

    /// <summary>One logit, sigmoid; binary cross-entropy; <c>Score</c> (raw logit), <c>Probability</c>, <c>PredictedLabel</c> (Boolean).</summary>
    Binary = 1,

    /// <summary>One output in label units; mean squared error on standardized targets; <c>Score</c> (Single).</summary>
    Regression = 2,
}

/// <summary>
/// Reads the current row's label as the training target the head's loss takes (multiclass: the 0-based class index), or
/// -1 when the label is missing and the row must be skipped.
/// </summary>
internal delegate long LabelReader();

/// <summary>Reads the outputs of the current row of a scored block (one row of the head's batched ONNX outputs, concatenated).</summary>
internal delegate ReadOnlySpan<float> RowOutputs();

/// <summary>
/// A column the in-process batched scoring path (<see cref="BatchedScoringDataView"/>) adds, computed from one row of the
/// head's batched ONNX outputs.
/// </summary>
/// <param name="Name">The column name (e.g. <c>Score</c>).</param>
/// <param name="Type">Its ML.NET type; getters are requested with <c>Type.RawType</c>.</param>
/// <param name="Annotations">Its annotations (e.g. KeyValues), or null.</param>
/// <param name="MakeGetter">Builds the column's <c>ValueGetter&lt;Type.RawType&gt;</c> over the current row's outputs.</param>
internal sealed record ScoredColumn(string Name, DataViewType Type, DataViewSchema.Annotations? Annotations, Func<RowOutputs, Delegate> MakeGetter);

/// <summary>
/// The output head of a network: everything that depends on what the network predicts (the task) rather than on its
/// layers. It owns the training loss, the distillation loss, the ONNX graph outputs (and reading them back), and the
/// ML.NET scoring columns of both scoring paths (the saved chain of built-in transforms and the in-process batched view).
/// </summary>
/// <remarks>
/// Adding a head is one file deriving from this class plus one line in <see cref="Registered"/> (and its
/// <see cref="OutputHeadKind"/> member). Every user goes through <see cref="For"/> or <see cref="NetworkModel.Head"/>:
/// the trainer, the training session, distillation, learning without forgetting, the exporter, the scoring chain, the
/// batched scorer and <c>GetOutputSchema</c>.
/// </remarks>
internal abstract class OutputHead
{
    /// <summary>ONNX metadata key that names a non-default head (absent: <see cref="OutputHeadKind.Multiclass"/>).</summary>
    public const string MetadataKey = "mlnet_compression.head";

    private static readonly OutputHead[] Registered =
    [
        new SoftmaxMulticlassHead(),
        new SigmoidBinaryHead(),
        new RegressionHead(),
    ];

    /// <summary>The softmax multiclass head (today's default).</summary>
    public static OutputHead Multiclass { get; } = For(OutputHeadKind.Multiclass);

    /// <summary>The registered head of kind <paramref name="kind"/>.</summary>
    public static OutputHead For(OutputHeadKind kind) =>
        Array.Find(Registered, h => h.Kind == kind)
        ?? throw new ArgumentOutOfRangeException(nameof(kind), kind,
            $"No output head is registered for {kind}; the registered heads are {string.Join(", ", Registered.Select(h => h.Kind))}.");

    /// <summary>The head registered under <paramref name="name"/> (the ONNX metadata value), or null.</summary>
    public static OutputHead? ForName(string name) => Array.Find(Registered, h => string.Equals(h.Name, name, StringComparison.Ordinal));

    /// <summary>
    /// The head whose label type <paramref name="labelColumnName"/> has in <paramref name="schema"/>: Boolean = binary,
    /// Single = regression, anything else (a key, or a type no head takes, so that its check explains) = multiclass.
    /// Used where a stage trains a new network from a user's data (distillation's student).
    /// </summary>
    public static OutputHead ForLabel(DataViewSchema schema, string labelColumnName) =>
        schema.GetColumnOrNull(labelColumnName)?.Type switch
        {
            BooleanDataViewType => For(OutputHeadKind.Binary),
            NumberDataViewType n when n.RawType == typeof(float) => For(OutputHeadKind.Regression),
            _ => Multiclass,
        };

    /// <summary>The kind this head implements.</summary>
    public abstract OutputHeadKind Kind { get; }

    /// <summary>Stable name written to ONNX metadata (e.g. <c>multiclass</c>).</summary>
    public abstract string Name { get; }

    // ---- network -----------------------------------------------------------------------------------------------------

    /// <summary>Units of the dense output layer for a label with <paramref name="classCount"/> classes.</summary>
    public abstract int OutputUnits(int classCount);

    /// <summary>
    /// Checks the label column for this head and returns it with its class count; throws an
    /// <see cref="ArgumentOutOfRangeException"/> naming the column and what to add when its type does not fit.
    /// </summary>
    public abstract DataViewSchema.Column ValidateLabel(DataViewSchema schema, string labelColumnName, out int classCount);

    /// <summary>
    /// A reader of <paramref name="label"/> (checked by <see cref="ValidateLabel"/>) on <paramref name="cursor"/>; it throws an
    /// <see cref="InvalidDataException"/> naming the row and the column for a label outside the head's range.
    /// </summary>
    public abstract LabelReader CreateLabelReader(DataViewRowCursor cursor, DataViewSchema.Column label, int classCount);

    /// <summary>The names of the classes (the label's key values), for the scoring columns.</summary>
    public abstract IReadOnlyList<string> ClassNames(DataViewSchema.Column label, int classCount);

    // ---- training ----------------------------------------------------------------------------------------------------

    /// <summary>The training loss of a batch: float32 outputs [N, units] against the batch's labels (int64 [N]).</summary>
    public abstract Tensor Loss(Tensor outputs, Tensor labels);

    /// <summary>How many rows of the batch the outputs predict correctly (a scalar int64 tensor), for the epoch accuracy.</summary>
    public abstract Tensor CorrectCount(Tensor outputs, Tensor labels);

    /// <summary>
    /// The distillation loss of a batch: the student's outputs against the teacher's scores (soft targets, softened by
    /// <paramref name="temperature"/>), weighted by <paramref name="alpha"/> against <see cref="Loss"/> on the labels.
    /// Every tensor it creates belongs to the caller's dispose scope.
    /// </summary>
    public abstract Tensor DistillationLoss(Tensor studentOutputs, Tensor teacherScores, Tensor labels, double temperature, double alpha,
        TeacherScoreKind kind);

    /// <summary>
    /// EWC's Fisher information: per row, the gradient of the head's negative log-likelihood with respect to the float32
    /// <paramref name="outputs"/> [N, units] (no gradient attached), chosen so that its square is the row's Fisher weight of
    /// each output. The parameters' Fisher is then the mean over rows of (this · ∂outputs/∂θ)². Regression passes the run's
    /// <paramref name="scaling"/> (the model's outputs are in label units); null elsewhere.
    /// </summary>
    public abstract Tensor FisherOutputGradient(Tensor outputs, TargetScaling? scaling);

    /// <summary>
    /// The target scaling of one training run over <paramref name="data"/> (regression: the label's mean and standard
    /// deviation), or null when the head trains on its labels as they are (classification).
    /// </summary>
    public virtual TargetScaling? CreateTargetScaling(IDataView data, DataViewSchema.Column label) => null;

    /// <summary>
    /// The figure early stopping maximizes, from a validation pass's mean loss and accuracy (classification: the accuracy;
    /// regression: minus the loss).
    /// </summary>
    public virtual double ValidationScore(double loss, double accuracy) => accuracy;

    /// <summary>
    /// How to read a teacher's scores when <see cref="TeacherScoreKind.Auto"/> is asked for, from the first batch
    /// <paramref name="scores"/> of column <paramref name="columnName"/>.
    /// </summary>
    public virtual TeacherScoreKind ResolveTeacherScoreKind(Tensor scores, string columnName) =>
        Distillation.DistillationLoss.LooksLikeProbabilities(scores) ? TeacherScoreKind.Probabilities : TeacherScoreKind.Logits;

    // ---- ONNX --------------------------------------------------------------------------------------------------------

    /// <summary>The graph output names this head will produce (reserved before the layers are emitted).</summary>
    public abstract IReadOnlyList<string> OutputNames(OnnxExportOptions options);

    /// <summary>
    /// Makes the last layer's <paramref name="outputs"/> [N, units] NaN for a row with a NaN or infinite feature, whatever the
    /// weight encoding: each row's mean of (x_j − x_j) (exactly 0 for finite features, however large, NaN otherwise) is added
    /// to that row's outputs. For finite features the values are unchanged (x + 0 = x), so float exports score as before; but
    /// quantized encodings no longer turn a NaN row into a confident finite score (int8 dynamic quantization saturates NaN
    /// activations to finite codes). It adds no initializer, so the resident weights ONNX Runtime keeps are the layers' alone.
    /// Up to opset 17 (the default) the row mean is ReduceMean over axis 1 with keepdims ([N, 1], axes an attribute), added by
    /// broadcasting; from opset 18 a reduction's axes are an input (an initializer), so there the row sum is Einsum("ij->i")
    /// added through the transposed outputs ([units, N] + [N]). Issue 19: the first form, Einsum("ij,ik->ik", features,
    /// outputs − outputs), ran in ONNX Runtime as one tiny product per row; the Transpose form costs int8 static about a
    /// quarter of its scoring time more than the ReduceMean form in interleaved rounds.
    /// Returns the new value's name.
    /// </summary>
    protected static string PropagateNonFinite(OnnxGraphBuilder g, string outputs, OnnxExportOptions options)
    {
        if (options.Opset <= 17)
            return g.AddNode("Add", [outputs, g.NonFiniteRowProbe(options.InputName, "input_")], "outputs_nan_checked");
        var zero = g.AddNode("Sub", [options.InputName, options.InputName], "input_zero");
        var rowSum = g.AddNode("Einsum", [zero], "input_row_zero", new Dictionary<string, object> { ["equation"] = "ij->i" });
        var transposed = g.AddNode("Transpose", [outputs], "outputs_t");
        var checkedT = g.AddNode("Add", [transposed, rowSum], "outputs_t_checked");
        return g.AddNode("Transpose", [checkedT], "outputs_nan_checked");
    }

    /// <summary>
    /// int64 [N]: <paramref name="index"/> (int64 [N]), or -1 for a row whose <paramref name="scores"/> (float [N, K]) hold a
    /// NaN. Where(IsNaN(Einsum("ij->i", scores)), −Cast(IsNaN(...)), index); no initializer.
    /// </summary>
    protected static void MissingWhereNaN(OnnxGraphBuilder g, string scores, string index, string outputName)
    {
        var rowSum = g.AddNode("Einsum", [scores], "score_row_sum", new Dictionary<string, object> { ["equation"] = "ij->i" });
        var isNaN = g.AddNode("IsNaN", [rowSum], "score_is_nan");
        var minusOne = g.AddNode("Neg", [g.AddNode("Cast", [isNaN], "score_is_nan_int", new Dictionary<string, object> { ["to"] = (long)TensorProto.Types.DataType.Int64 })],
            "missing_class");
        g.AddNodeWithReservedOutput("Where", [isNaN, minusOne, index], outputName);
    }

    /// <summary>Adds the nodes after the last layer's <paramref name="outputs"/> and declares the graph outputs.</summary>
    public abstract void EmitOutputs(OnnxGraphBuilder g, string outputs, int classCount, OnnxExportOptions options);

    /// <summary>
    /// Reads this head's outputs back from <paramref name="graph"/> (the model's input already read); throws an
    /// <see cref="ArgumentException"/> for the parameter <c>onnx</c> of <see cref="OnnxExporter.ReadSignature"/> when they do not fit.
    /// </summary>
    public abstract OnnxModelSignature ReadSignature(GraphProto graph, string inputName, int inputLength);

    // ---- ML.NET scoring ----------------------------------------------------------------------------------------------

    /// <summary>
    /// The shape <c>GetOutputSchema</c> promises: <paramref name="inputSchema"/> with this head's columns added. Checks the
    /// label column's shape; the feature column is checked by the caller.
    /// </summary>
    public abstract SchemaShape GetOutputSchema(MLContext ml, SchemaShape inputSchema, string labelColumnName, string featureColumnName);

    /// <summary>The label column of <paramref name="schema"/>; when missing, an exception for the label column name listing the columns present.</summary>
    private protected static DataViewSchema.Column RequireLabel(DataViewSchema schema, string labelColumnName) =>
        schema.GetColumnOrNull(labelColumnName)
        ?? throw new ArgumentOutOfRangeException(nameof(labelColumnName),
            $"The input data has no label column '{labelColumnName}'. Columns present: " +
            $"{string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => $"'{c.Name}' ({c.Type})"))}. Set labelColumnName (or the options' LabelColumnName).");

    /// <summary>The label column of the promised <paramref name="inputSchema"/>; when missing, an exception for the input schema.</summary>
    private protected static SchemaShape.Column RequireLabel(SchemaShape inputSchema, string labelColumnName) =>
        inputSchema.FirstOrDefault(c => c.Name == labelColumnName) is { Name: not null } label
            ? label
            : throw new ArgumentOutOfRangeException(nameof(inputSchema), $"The input has no label column '{labelColumnName}'.");

    /// <summary>The ONNX outputs the saved chain's <c>OnnxTransformer</c> must produce.</summary>
    public abstract IReadOnlyList<string> ChainOutputs(OnnxModelSignature signature);

    /// <summary>
    /// The built-in conversions, in order, that follow the saved chain's <c>OnnxTransformer</c> and give the head's columns;
    /// adds the temporary columns to drop afterwards to <paramref name="temporaries"/>. Checks <paramref name="classNames"/>.
    /// At least one step.
    /// </summary>
    public abstract IReadOnlyList<IEstimator<ITransformer>> ChainConversions(MLContext ml, OnnxModelSignature signature, IReadOnlyList<string> classNames,
        List<string> temporaries);

    /// <summary>
    /// What the saved chain appends after <see cref="ChainConversions"/> (fitted, then <paramref name="chain"/>) so that a zip
    /// whose ONNX model was swapped for one with other outputs fails when loaded, not with wrong columns. The default adds
    /// nothing: ML.NET's own scalar columns need no guard.
    /// </summary>
    /// <param name="ml">The context.</param>
    /// <param name="chain">The fitted chain: the ONNX model, the conversions and the dropping of temporaries.</param>
    /// <param name="scored">The output schema of <paramref name="chain"/>.</param>
    /// <param name="signature">The exported model's inputs and outputs.</param>
    public virtual ITransformer GuardChain(MLContext ml, ITransformer chain, DataViewSchema scored, OnnxModelSignature signature) => chain;

    /// <summary>The float ONNX outputs the batched scorer fetches, with their values per row, in row order.</summary>
    public abstract IReadOnlyList<(string Name, int Width)> BatchedOutputs(OnnxModelSignature signature);

    /// <summary>The columns the batched scoring view adds, computed from one row of <see cref="BatchedOutputs"/>.</summary>
    public abstract IReadOnlyList<ScoredColumn> ScoredColumns(OnnxModelSignature signature, IReadOnlyList<string> classNames);
}
