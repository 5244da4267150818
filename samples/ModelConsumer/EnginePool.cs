using System.Collections.Concurrent;
using Microsoft.ML;

namespace ModelConsumer;

/// <summary>
/// Thread-safe scoring over one loaded model: a <see cref="PredictionEngine{TSrc,TDst}"/> is not thread-safe, the model
/// (<see cref="ITransformer"/>) is, so each caller borrows an engine and hands it back. This is what
/// <c>PredictionEnginePool</c> of Microsoft.Extensions.ML does for ASP.NET Core apps; that package is not on the package
/// mirror this project builds from, and a deployed model needs no more than these few lines (Microsoft.Extensions.ObjectPool
/// would do as well, at the cost of a fourth package reference).
/// </summary>
/// <remarks>
/// Every engine is created with <c>OwnsTransformer = false</c>: by default an engine disposes the model it was made from
/// when the engine is disposed, which would break every other engine. The pool owns the model instead and disposes it last.
/// </remarks>
public sealed class EnginePool<TInput, TOutput> : IDisposable
    where TInput : class
    where TOutput : class, new()
{
    private static readonly PredictionEngineOptions EngineOptions = new() { OwnsTransformer = false };

    private readonly MLContext ml;
    private readonly ITransformer model;
    private readonly ConcurrentBag<PredictionEngine<TInput, TOutput>> idle = [];
    private readonly int maxIdle;
    private readonly Lock createLock = new();
    private int created;
    private bool disposed;

    /// <param name="ml">The context the model was loaded with.</param>
    /// <param name="model">The loaded model; the pool owns it from now on and disposes it in <see cref="Dispose"/>.</param>
    /// <param name="maxIdle">How many idle engines are kept for reuse (more callers at once get engines that are disposed on return).</param>
    public EnginePool(MLContext ml, ITransformer model, int maxIdle)
    {
        ArgumentNullException.ThrowIfNull(ml);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxIdle, 1);
        this.ml = ml;
        this.model = model;
        this.maxIdle = maxIdle;
    }

    /// <summary>Engines created so far (for the console report).</summary>
    public int EnginesCreated => Volatile.Read(ref created);

    /// <summary>Scores one row on a borrowed engine; safe to call from any number of threads.</summary>
    public TOutput Predict(TInput input)
    {
        PredictionEngine<TInput, TOutput> engine = Rent();
        try
        {
            return engine.Predict(input); // a new output object per call, so nothing is shared between callers
        }
        finally
        {
            Return(engine);
        }
    }

    private PredictionEngine<TInput, TOutput> Rent()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed), this);
        if (idle.TryTake(out var engine))
            return engine;
        lock (createLock)
        {
            created++;
            return ml.Model.CreatePredictionEngine<TInput, TOutput>(model, EngineOptions);
        }
    }

    private void Return(PredictionEngine<TInput, TOutput> engine)
    {
        if (Volatile.Read(ref disposed) || idle.Count >= maxIdle)
            engine.Dispose(); // does not touch the model (OwnsTransformer = false)
        else
            idle.Add(engine);
    }

    /// <summary>Disposes the idle engines, then the model (and with it the ONNX Runtime session).</summary>
    public void Dispose()
    {
        if (disposed)
            return;
        Volatile.Write(ref disposed, true);
        while (idle.TryTake(out var engine))
            engine.Dispose();
        (model as IDisposable)?.Dispose();
    }
}
