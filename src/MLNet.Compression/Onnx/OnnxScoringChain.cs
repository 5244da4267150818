using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using MLNet.Compression.Networks.Heads;

namespace MLNet.Compression.Onnx;

/// <summary>
/// Builds the ML.NET chain that scores an exported network with built-in components only, so that
/// <c>mlContext.Model.Save/Load</c> handles it and a consumer needs just Microsoft.ML, Microsoft.ML.OnnxTransformer and ONNX Runtime:
/// The columns after the ONNX model are its output head's (<see cref="OutputHead.ChainConversions"/>); for the multiclass head:
/// <code>
/// OnnxTransformer (Stream overload)    Features ──► Score: vector&lt;float, 1, K&gt;, PredictedLabelIndex: vector&lt;long, 1&gt;
/// Expression "x => x"                  Score ──► Score: vector&lt;float, K&gt; (1-D)
/// Hash (Combine = true)                PredictedLabelIndex ──► scalar key&lt;uint, 2^31&gt; (collapses the 1-slot vector)
/// ConvertType (UInt32)                 key ──► its raw uint value
/// MapValue (uint → class name)         hash value ──► text class name (exact table for the K class indices)
/// MapValueToKey (keyData = names)      class name ──► PredictedLabel: key&lt;uint, K&gt; with KeyValues = class names
/// DropColumns                          temporaries
/// ApproximatedKernelMap, DropColumns   shape guard on Score (OutputHead.GuardChain): binding fails unless it is vector&lt;float, K&gt;
/// </code>
/// </summary>
/// <remarks>
/// Why not a scalar ONNX output: ML.NET 5.0's OnnxTransformer maps every tensor output with at least one dimension to a
/// vector column (the [N] arg-max becomes vector&lt;long, 1&gt;), and a rank-0 output gets a scalar column type whose getter
/// (OnnxTransform.MakeObjectGetter) first calls <c>AsEnumerable&lt;NamedOnnxValue&gt;()</c> on the tensor, gets null and throws
/// ArgumentNullException ("source"); its later cast of the tensor object to T would fail as well
/// (see OnnxScoringChainTests.RankZeroOnnxOutput_IsNotReadableThroughOnnxTransformer). ML.NET's only built-in
/// transform that turns a vector into a scalar is Hash with Combine; the hash of each class index is computed here
/// and mapped back exactly (the table is checked to be collision-free).
/// </remarks>
internal static class OnnxScoringChain
{
    /// <summary>Name of the probabilities column.</summary>
    public const string ScoreColumnName = "Score";

    /// <summary>Name of the predicted label column.</summary>
    public const string PredictedLabelColumnName = "PredictedLabel";

    /// <summary>Name of the binary head's probability column.</summary>
    public const string ProbabilityColumnName = "Probability";

    /// <summary>Slope of the fixed Platt calibrator that turns the binary head's logit into its probability: P = 1 / (1 + exp(slope · s + offset)).</summary>
    public const double SigmoidSlope = -1;

    /// <summary>Offset of that calibrator.</summary>
    public const double SigmoidOffset = 0;

    private const string ScoreVectorColumn = TempPrefix + "ScoreVector";

    private const string TempPrefix = "__mlnc_";
    private const string HashColumn = TempPrefix + "LabelHash";
    private const string HashValueColumn = TempPrefix + "LabelHashValue";
    private const string LabelTextColumn = TempPrefix + "LabelText";
    private const string ScoreSizeCheckColumn = TempPrefix + "ScoreSizeCheck";
    private const int HashBits = 31;

    /// <summary>
    /// Builds and fits the chain on <paramref name="inputSchema"/>: the ONNX model, then the built-in conversions of its
    /// output head (<see cref="OutputHead.ChainConversions"/>). For the multiclass head the result adds <c>Score</c>
    /// (vector&lt;float, K&gt;) and <c>PredictedLabel</c> (key&lt;uint, K&gt;, 1-based, KeyValues = <paramref name="classNames"/>).
    /// The ONNX session honours <see cref="MLContext.GpuDeviceId"/> and <see cref="MLContext.FallbackToCpu"/>.
    /// </summary>
    /// <param name="ml">The context (GPU settings, environment).</param>
    /// <param name="onnx">An exported network (see <see cref="OnnxExporter"/>).</param>
    /// <param name="inputSchema">Schema of the data the chain will transform.</param>
    /// <param name="featureColumnName">The known-size vector&lt;float&gt; column fed to the model.</param>
    /// <param name="classNames">One name per class, in class-index order (the label's key values).</param>
    public static ITransformer Build(MLContext ml, byte[] onnx, DataViewSchema inputSchema, string featureColumnName, IReadOnlyList<string> classNames)
    {
        ArgumentNullException.ThrowIfNull(ml);
        ArgumentNullException.ThrowIfNull(onnx);
        ArgumentNullException.ThrowIfNull(inputSchema);
        ArgumentException.ThrowIfNullOrWhiteSpace(featureColumnName);
        ArgumentNullException.ThrowIfNull(classNames);
        var sig = OnnxExporter.ReadSignature(onnx);
        var head = sig.OutputHead;
        OnnxScoringColumns.ValidateFeatureColumn(inputSchema, featureColumnName, sig.InputLength);

        var temps = new List<string>();
        var conversions = head.ChainConversions(ml, sig, classNames, temps);
        IEstimator<ITransformer> chain = new EstimatorChain<ITransformer>();
        if (!string.Equals(featureColumnName, sig.InputName, StringComparison.Ordinal))
        {
            chain = chain.Append(ml.Transforms.CopyColumns(sig.InputName, featureColumnName));
            temps.Add(sig.InputName);
        }
        chain = chain.Append(ml.Transforms.ApplyOnnxModel(
            head.ChainOutputs(sig).ToArray(), [sig.InputName], new MemoryStream(onnx, writable: false), ml.GpuDeviceId, ml.FallbackToCpu));
        // The nesting of the saved chain is kept as it was before output heads existed, so saved zips are byte for byte the
        // same: [[ONNX model], first conversion], then the other conversions and the DropColumns flat after it.
        var scored = new EstimatorChain<ITransformer>().Append(chain).Append(conversions[0]);
        EstimatorChain<ITransformer> flat = new EstimatorChain<ITransformer>().Append<ITransformer>(scored);
        foreach (var step in conversions.Skip(1))
            flat = flat.Append(step);
        var fitted = flat.Append(ml.Transforms.DropColumns(temps.Distinct().ToArray())).Fit(new EmptyDataView(inputSchema));
        return head.GuardChain(ml, fitted, fitted.GetOutputSchema(inputSchema), sig);
    }

    /// <summary>
    /// Built-in conversions from an ONNX class index output (int64 [N], read by OnnxTransformer as vector&lt;long, 1&gt;) to
    /// <paramref name="outputColumn"/>: key&lt;uint, K&gt; with KeyValues = <paramref name="classNames"/> (see the class remarks
    /// for why it goes through Hash). Adds its temporary columns, the index column first, to <paramref name="temporaries"/>.
    /// </summary>
    /// <param name="ml">The context.</param>
    /// <param name="indexColumn">The ONNX index output column.</param>
    /// <param name="outputColumn">The key column to produce.</param>
    /// <param name="classNames">One name per class index.</param>
    /// <param name="temporaries">Receives the columns to drop afterwards.</param>
    /// <param name="valueTypeName">
    /// The numeric type of the label's key values (<see cref="OnnxModelSignature.ClassValueType"/>), or null for text: the
    /// key values of <paramref name="outputColumn"/> get this type, so <c>MapKeyToValue</c> gives back what the label was.
    /// </param>
    public static IReadOnlyList<IEstimator<ITransformer>> IndexToKey(MLContext ml, string indexColumn, string outputColumn, IReadOnlyList<string> classNames,
        List<string> temporaries, string? valueTypeName = null)
    {
        temporaries.AddRange([indexColumn, HashColumn, HashValueColumn, LabelTextColumn]);
        if (OnnxScoringColumns.ParseClassValues(valueTypeName, classNames) is { } values)
        {
            var make = typeof(OnnxScoringChain).GetMethod(nameof(TypedIndexToKey), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
                .MakeGenericMethod(values.GetType().GetElementType()!);
            if (make.Invoke(null, [ml, indexColumn, outputColumn, values]) is IReadOnlyList<IEstimator<ITransformer>> typed)
                return typed;
        }
        var (seed, table) = HashTable(ml, indexColumn, classNames.Count);
        return
        [
            ml.Transforms.Conversion.Hash(new HashingEstimator.ColumnOptions(
                HashColumn, indexColumn, HashBits, seed, useOrderedHashing: false, maximumNumberOfInverts: 0, combine: true)),
            ml.Transforms.Conversion.ConvertType(HashValueColumn, HashColumn, DataKind.UInt32),
            ml.Transforms.Conversion.MapValue(LabelTextColumn,
                table.Select((h, i) => new KeyValuePair<uint, string>(h, classNames[i])), HashValueColumn),
            ml.Transforms.Conversion.MapValueToKey(outputColumn, LabelTextColumn,
                keyData: ml.Data.LoadFromEnumerable(classNames.Select(n => new ClassNameRow { Name = n }))),
        ];
    }

    /// <summary>
    /// The typed form of <see cref="IndexToKey"/>: hash ──► MapValue (uint → class value, and the hash of index -1, a NaN
    /// row, to a value that is no class) ──► MapValueToKey (keyData = the class values), so the key values have the label's
    /// type and the NaN row gets the missing key 0. Null when no value outside the classes exists (then the text form is used).
    /// </summary>
    private static IReadOnlyList<IEstimator<ITransformer>>? TypedIndexToKey<T>(MLContext ml, string indexColumn, string outputColumn, T[] values)
        where T : notnull
    {
        if (NotAClass(values) is not { } missing)
            return null;
        var (seed, table) = HashTable(ml, indexColumn, values.Length, includeMissing: true);
        var pairs = values.Select((v, i) => new KeyValuePair<uint, T>(table[i], v)).Append(new KeyValuePair<uint, T>(table[^1], missing));
        var keyData = ml.Data.LoadFromEnumerable(values.Select(v => new ClassValueRow<T> { Value = v }));
        return
        [
            ml.Transforms.Conversion.Hash(new HashingEstimator.ColumnOptions(
                HashColumn, indexColumn, HashBits, seed, useOrderedHashing: false, maximumNumberOfInverts: 0, combine: true)),
            ml.Transforms.Conversion.ConvertType(HashValueColumn, HashColumn, DataKind.UInt32),
            ml.Transforms.Conversion.MapValue(LabelTextColumn, pairs, HashValueColumn),
            ml.Transforms.Conversion.MapValueToKey(outputColumn, LabelTextColumn, keyData: keyData),
        ];
    }

    /// <summary>A value of T that is none of <paramref name="values"/> (one below the smallest, or one above the largest), or null.</summary>
    private static T? NotAClass<T>(T[] values) where T : notnull
    {
        var numbers = values.Select(v => Convert.ToDecimal(v, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        foreach (var candidate in new[] { numbers.Min() - 1, numbers.Max() + 1 })
        {
            try
            {
                var value = (T)Convert.ChangeType(candidate, typeof(T), System.Globalization.CultureInfo.InvariantCulture);
                if (!values.Contains(value))
                    return value;
            }
            catch (OverflowException)
            {
            }
        }
        return default;
    }

    private sealed class ClassValueRow<T>
    {
        public T Value { get; set; } = default!;
    }

    /// <summary>
    /// Built-in conversions from a one-value ONNX output (float [N, 1], read by OnnxTransformer as vector&lt;float, 1, 1&gt;) to
    /// the scalar columns of ML.NET's regression or binary convention, made by ML.NET's own scorers so that a process with
    /// only Microsoft.ML and Microsoft.ML.OnnxTransformer loads and scores them:
    /// <code>
    /// Expression "x => x"                 Score (ONNX) ──► __mlnc_ScoreVector: vector&lt;float, 1&gt; (1-D)
    /// RegressionPredictionTransformer     __mlnc_ScoreVector ──► Score: Single        (linear model, weight 1, bias 0)
    ///   or BinaryPredictionTransformer    __mlnc_ScoreVector ──► Score: Single, PredictedLabel: Boolean (Score &gt; 0)
    /// PlattCalibratorTransformer (binary) Score ──► Probability: Single = 1 / (1 + exp(−Score)) (ml.BinaryClassification.Calibrators.Platt)
    /// </code>
    /// </summary>
    /// <remarks>
    /// Why: ML.NET 5.0's OnnxTransformer gives every tensor output a vector column (see the class remarks; a rank-0 output's
    /// scalar getter throws), and no built-in transform turns a float vector of one slot into a Single: Expression,
    /// ConvertType, DropSlots, normalizers and Concatenate keep the vector shape, and Hash (which does give a scalar) cannot be
    /// inverted for a continuous value. ML.NET's prediction transformers do: their linear model scores a known-size feature
    /// vector to a scalar Score (0 + 1·x, exact in float; NaN stays NaN), and the binary one adds PredictedLabel with the
    /// same rule as every ML.NET binary trainer (score &gt; 0, so NaN gives false). Their constructors and the linear model
    /// parameters' constructors are internal to Microsoft.ML, so they are created by reflection here
    /// (<see cref="CreateLinearScorer"/>); what is saved is the ordinary transformer, which ML.NET saves and loads itself.
    /// The linear model also checks its input type when the saved chain is bound, so a zip whose ONNX was swapped for one
    /// with another output size fails at first use ("Schema mismatch for feature column"), as the multiclass shape guard does.
    /// </remarks>
    /// <param name="ml">The context.</param>
    /// <param name="scoreColumn">The ONNX score output column (float [N, 1]).</param>
    /// <param name="binary">Binary (Score, PredictedLabel, Probability) rather than regression (Score).</param>
    /// <param name="temporaries">Receives the columns to drop afterwards.</param>
    public static IReadOnlyList<IEstimator<ITransformer>> ScalarScore(MLContext ml, string scoreColumn, bool binary, List<string> temporaries)
    {
        // The ONNX output named Score is shadowed by the scorer's Score; it must not be dropped by name.
        if (!string.Equals(scoreColumn, ScoreColumnName, StringComparison.Ordinal))
            temporaries.Add(scoreColumn);
        temporaries.Add(ScoreVectorColumn);
        var steps = new List<IEstimator<ITransformer>>
        {
            ml.Transforms.Expression(ScoreVectorColumn, "x => x", scoreColumn),
            new FixedTransformerEstimator(schema => CreateLinearScorer(ml, schema, ScoreVectorColumn, binary)),
        };
        if (binary)
            steps.Add(ml.BinaryClassification.Calibrators.Platt(SigmoidSlope, SigmoidOffset, ScoreColumnName));
        return steps;
    }

    /// <summary>What the saved chain's linear scorer computes from the network's output <paramref name="x"/>: 0 + 1·x.</summary>
    public static float LinearScore(float x) => 0f + 1f * x;

    /// <summary>What the saved chain's Platt calibrator computes from a score (ML.NET's formula; NaN stays NaN).</summary>
    public static float SigmoidProbability(float score) =>
        float.IsNaN(score) ? score : (float)(1 / (1 + Math.Exp(SigmoidSlope * score + SigmoidOffset)));

    /// <summary>
    /// ML.NET's regression or binary prediction transformer over a linear model with one weight of 1 and a bias of 0, reading
    /// the known-size vector&lt;float, 1&gt; <paramref name="featureColumn"/> of <paramref name="schema"/>. Created through the
    /// internal constructors of Microsoft.ML 5.0 (see <see cref="ScalarScore"/>); throws an <see cref="InvalidOperationException"/>
    /// that names the missing member if another Microsoft.ML version has changed them.
    /// </summary>
    private static ITransformer CreateLinearScorer(MLContext ml, DataViewSchema schema, string featureColumn, bool binary)
    {
        const System.Reflection.BindingFlags flags = System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Public;
        var env = (Microsoft.ML.Runtime.IHostEnvironment)ml;
        Type modelType = binary ? typeof(Microsoft.ML.Trainers.LinearBinaryModelParameters) : typeof(Microsoft.ML.Trainers.LinearRegressionModelParameters);
        Type transformerType = binary
            ? typeof(BinaryPredictionTransformer<>).MakeGenericType(modelType)
            : typeof(RegressionPredictionTransformer<>).MakeGenericType(modelType);
        var modelCtor = modelType.GetConstructors(flags).FirstOrDefault(c => c.GetParameters() is { Length: >= 3 } p
                && p[0].ParameterType == typeof(Microsoft.ML.Runtime.IHostEnvironment) && p[1].ParameterType == typeof(VBuffer<float>).MakeByRefType()
                && p[2].ParameterType == typeof(float))
            ?? throw new InvalidOperationException(
                $"This version of Microsoft.ML has no {modelType.Name}(IHostEnvironment, in VBuffer<float>, float, ...) constructor, which the {(binary ? "binary" : "regression")} " +
                "scoring chain needs. Use the Microsoft.ML version MLNet.Compression was built against.");
        var modelArgs = new object?[modelCtor.GetParameters().Length];
        modelArgs[0] = env;
        modelArgs[1] = new VBuffer<float>(1, [1f]);
        modelArgs[2] = 0f;
        var model = modelCtor.Invoke(modelArgs);
        var expected = binary
            ? new[] { typeof(Microsoft.ML.Runtime.IHostEnvironment), modelType, typeof(DataViewSchema), typeof(string), typeof(float), typeof(string) }
            : new[] { typeof(Microsoft.ML.Runtime.IHostEnvironment), modelType, typeof(DataViewSchema), typeof(string) };
        var transformerCtor = transformerType.GetConstructor(flags, expected)
            ?? throw new InvalidOperationException(
                $"This version of Microsoft.ML has no {transformerType.Name}({string.Join(", ", expected.Select(t => t.Name))}) constructor, which the " +
                $"{(binary ? "binary" : "regression")} scoring chain needs. Use the Microsoft.ML version MLNet.Compression was built against.");
        object?[] args = binary ? [env, model, schema, featureColumn, 0f, ScoreColumnName] : [env, model, schema, featureColumn];
        return (ITransformer)transformerCtor.Invoke(args);
    }

    /// <summary>An estimator that "fits" a transformer made for the input schema (a scorer with fixed parameters).</summary>
    private sealed class FixedTransformerEstimator(Func<DataViewSchema, ITransformer> create) : IEstimator<ITransformer>
    {
        public ITransformer Fit(IDataView input) => create(input.Schema);

        /// <summary>The input shape plus the columns the transformer adds (built over the vector&lt;float, 1&gt; it reads).</summary>
        public SchemaShape GetOutputSchema(SchemaShape inputSchema)
        {
            var builder = new DataViewSchema.Builder();
            builder.AddColumn(ScoreVectorColumn, new VectorDataViewType(NumberDataViewType.Single, 1));
            var probe = builder.ToSchema();
            // SchemaShape.Create(DataViewSchema) is internal to Microsoft.ML, like the scorers themselves.
            var toShape = typeof(SchemaShape).GetMethod("Create", System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic,
                    [typeof(DataViewSchema)])
                ?? throw new InvalidOperationException("This version of Microsoft.ML has no SchemaShape.Create(DataViewSchema), which the scoring chain needs.");
            var shape = (SchemaShape)toShape.Invoke(null, [create(probe).GetOutputSchema(probe)])!;
            var added = shape.Where(c => c.Name != ScoreVectorColumn).ToArray();
            return new SchemaShape(inputSchema.Where(c => !added.Any(a => a.Name == c.Name)).Concat(added));
        }
    }

    /// <summary>
    /// Appends a shape guard: ML.NET's built-in random Fourier feature map (ApproximatedKernelMap, rank 1) records its input
    /// type (vector&lt;float, K&gt;) in the saved zip and refuses to bind to any other type (min-max normalizers, Lp
    /// normalizers and count-based slot selection do not check; PCA and this map do), so a zip whose ONNX was swapped for a model with another class count fails at first use
    /// with "Schema mismatch for input column 'Score': expected Vector&lt;Single, K&gt;, got Vector&lt;Single, K'&gt;". Its output
    /// column is dropped right away and never computed. (Fitted apart from the chain: fitting through OnnxTransformer on an
    /// empty view fails inside ML.NET's parallel cursor.)
    /// </summary>
    /// <param name="ml">The context.</param>
    /// <param name="chain">The fitted chain, ending with the head's conversions.</param>
    /// <param name="scored">The chain's output schema.</param>
    /// <param name="classCount">K, the length of the <c>Score</c> vector.</param>
    public static ITransformer AppendScoreShapeGuard(MLContext ml, ITransformer chain, DataViewSchema scored, int classCount)
    {
        var rows = ml.Data.LoadFromEnumerable(
            [new GuardRow { Score = new float[classCount] }, new GuardRow { Score = Enumerable.Repeat(1f, classCount).ToArray() }],
            SchemaDefinition.Create(typeof(GuardRow)).Also(d => d[0].ColumnType = new VectorDataViewType(NumberDataViewType.Single, classCount)));
        var guard = ml.Transforms.ApproximatedKernelMap(ScoreSizeCheckColumn, ScoreColumnName, rank: 1).Fit(rows);
        var drop = ml.Transforms.DropColumns(ScoreSizeCheckColumn).Fit(new EmptyDataView(guard.GetOutputSchema(scored)));
        return new TransformerChain<ITransformer>(chain, guard, drop);
    }

    private static SchemaDefinition Also(this SchemaDefinition definition, Action<SchemaDefinition> change)
    {
        change(definition);
        return definition;
    }

    private sealed class GuardRow
    {
        public float[] Score { get; set; } = [];
    }

    /// <summary>
    /// The uint that Hash(Combine)+ConvertType gives for each class index 0..K-1 (as the vector&lt;long, 1&gt; OnnxTransformer
    /// produces), for the first seed that gives K distinct values.
    /// </summary>
    private static (uint Seed, uint[] Table) HashTable(MLContext ml, string indexColumn, int classCount, bool includeMissing = false)
    {
        var definition = SchemaDefinition.Create(typeof(IndexRow));
        definition[0].ColumnName = indexColumn;
        var indices = Enumerable.Range(0, classCount).Select(i => (long)i);
        if (includeMissing)
            indices = indices.Append(-1L); // the NaN row's index, last
        classCount += includeMissing ? 1 : 0;
        var rows = ml.Data.LoadFromEnumerable(indices.Select(i => new IndexRow { Index = [i] }), definition);
        const uint firstSeed = 314489979; // HashingEstimator's default seed
        for (uint seed = firstSeed; seed < firstSeed + 64; seed++)
        {
            var hashed = ml.Transforms.Conversion.Hash(new HashingEstimator.ColumnOptions(
                    HashColumn, indexColumn, HashBits, seed, useOrderedHashing: false, maximumNumberOfInverts: 0, combine: true))
                .Append(ml.Transforms.Conversion.ConvertType(HashValueColumn, HashColumn, DataKind.UInt32))
                .Fit(rows).Transform(rows);
            var table = hashed.GetColumn<uint>(HashValueColumn).ToArray();
            if (table.Distinct().Count() == classCount)
                return (seed, table);
        }
        throw new InvalidOperationException($"Could not find a hash seed that maps the {classCount} class indices to distinct values.");
    }

    private sealed class IndexRow
    {
        [VectorType(1)]
        public long[] Index { get; set; } = [];
    }

    private sealed class ClassNameRow
    {
        public string Name { get; set; } = "";
    }
}
