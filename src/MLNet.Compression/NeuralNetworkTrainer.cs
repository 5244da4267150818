using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.Compression.Networks;
using MLNet.Compression.Networks.Heads;
using MLNet.Compression.Native;
using MLNet.Compression.Training;

namespace MLNet.Compression;

/// <summary>
/// Trains a neural network with TorchSharp on the CPU or CUDA, streaming batches from the input <see cref="IDataView"/>, for
/// the task its output head gives: multiclass (key label; <c>Score</c> = class probabilities, <c>PredictedLabel</c> = key with
/// the label's key values), binary (Boolean label; <c>Score</c>, <c>Probability</c>, <c>PredictedLabel</c>) or regression
/// (Single label; <c>Score</c>), so ML.NET's own <c>Evaluate</c> of that task works unchanged. Create it from ML.NET's
/// catalogs (<c>ml.MulticlassClassification.Trainers.NeuralNetwork(...)</c>, <c>ml.BinaryClassification.Trainers...</c>,
/// <c>ml.Regression.Trainers...</c>; see <see cref="NeuralNetworkCatalogExtensions"/>) or, for multiclass,
/// <c>mlContext.Compression().NeuralNetwork(options)</c>.
/// </summary>
public sealed class NeuralNetworkTrainer : IEstimator<NeuralNetworkTransformer>, IHasMLContext
{
    private readonly MLContext ml;
    private readonly NeuralNetworkOptions options;
    private readonly OutputHead head;

    /// <param name="ml">The context.</param>
    /// <param name="options">The training options (copied).</param>
    /// <param name="head">The task: which output head the network gets.</param>
    internal NeuralNetworkTrainer(MLContext ml, NeuralNetworkOptions options, OutputHeadKind head = OutputHeadKind.Multiclass)
    {
        ArgumentNullException.ThrowIfNull(ml);
        ArgumentNullException.ThrowIfNull(options);
        options.ValidateForTraining();
        this.ml = ml;
        this.options = options.Clone();
        this.head = OutputHead.For(head);
    }

    /// <summary>A copy of the options this trainer uses.</summary>
    public NeuralNetworkOptions Options => options.Clone();

    internal MLContext Context => ml;

    /// <summary>The output head the trained network gets (what the task is: its loss and its scoring columns).</summary>
    internal OutputHeadKind HeadKind => head.Kind;

    MLContext? IHasMLContext.Context => ml;

    /// <summary>Trains a network on <paramref name="input"/>.</summary>
    /// <param name="input">Training data with the label and feature columns named in the options.</param>
    public NeuralNetworkTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        options.CancellationToken.ThrowIfCancellationRequested();
        var architecture = options.Architecture.ForFeatures(input.Schema, options.FeatureColumnName);
        EnsureHasRows(input);
        var label = head.ValidateLabel(input.Schema, options.LabelColumnName, out int classCount);
        var classNames = head.ClassNames(label, classCount);
        int seed = options.Seed ?? DrawSeed(ml);
        var model = NetworkModel.Create(architecture, classCount, head.Kind);
        InitializeWeights(model, seed);
        var resolved = options.Clone();
        resolved.Architecture = architecture;
        var budget = Memory.MemoryBudget.Choose(resolved, classCount); // null without MemoryBudgetBytes
        if (budget is not null)
        {
            new ContextLog(ml, nameof(NeuralNetworkTrainer)).Info(budget.Message);
            resolved = budget.Options;
        }
        // Inside a student pipeline being distilled, the teacher's scores came through the pipeline's transforms with the rows.
        var distilled = Distillation.TeacherGuidance.ForStudentTrainer(input, head, options.FeatureColumnName, options.LabelColumnName, classCount);
        var result = new TrainingSession(ml, resolved, cancellation: options.CancellationToken).Run(input, model, seed, null, distilled);
        var trained = resolved.Clone();
        trained.CancellationToken = default;
        return NeuralNetworkTransformer.Create(ml, result.Model, classNames, trained, input.Schema, result, seed);
    }

    /// <summary>Throws when <paramref name="input"/> has no rows, before the label's key count (1 for an empty view) is judged.</summary>
    internal static void EnsureHasRows(IDataView input)
    {
        if (input.GetRowCount() is long count)
        {
            if (count > 0)
                return;
        }
        else
        {
            using var cursor = input.GetRowCursor([]);
            if (cursor.MoveNext())
                return;
        }
        throw new ArgumentException(
            "The training data has no rows. Check the file or collection it was loaded from, and any filters (e.g. FilterRowsByColumn) before the trainer.",
            nameof(input));
    }

    /// <summary>Initialises weights the way PyTorch does for Linear and Conv2d layers, from <paramref name="seed"/>.</summary>
    internal static void InitializeWeights(NetworkModel model, int seed)
    {
        TorchNative.EnsureLoaded();
        TorchSharp.torch.manual_seed(seed);
        using var net = new TorchNetwork(model);
        net.StoreWeights(model);
    }

    /// <summary>A seed drawn from the context's random source, so <c>new MLContext(seed: n)</c> makes training repeatable.</summary>
    internal static int DrawSeed(MLContext ml)
    {
        var host = ((IHostEnvironment)ml).Register(nameof(NeuralNetworkTrainer));
        return host.Rand.Next();
    }

    /// <summary>
    /// Adds the output head's columns to the input shape: <c>Score</c> (vector of Single) and <c>PredictedLabel</c> (the
    /// label's key type) for the multiclass head.
    /// </summary>
    /// <param name="inputSchema">The shape of the training data.</param>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        if (inputSchema.FirstOrDefault(c => c.Name == options.FeatureColumnName) is not { Name: not null } features)
            throw new ArgumentOutOfRangeException(nameof(inputSchema), $"The input has no feature column '{options.FeatureColumnName}'.");
        if (features.Kind != SchemaShape.Column.VectorKind.Vector || features.ItemType.RawType != typeof(float))
            throw new ArgumentOutOfRangeException(nameof(inputSchema),
                $"The feature column '{options.FeatureColumnName}' must be a known-size vector of Single, not {features.Kind} of {features.ItemType}.");
        return head.GetOutputSchema(ml, inputSchema, options.LabelColumnName, options.FeatureColumnName);
    }
}
