using Microsoft.ML;

namespace MLNet.Compression;

/// <summary>Crash-safe saving of ML.NET models, beside ML.NET's own <see cref="ModelOperationsCatalog.Save(ITransformer, DataViewSchema, string)"/>.</summary>
public static class ModelSavingExtensions
{
    /// <summary>
    /// Saves <paramref name="model"/> exactly as <c>mlContext.Model.Save(model, inputSchema, filePath)</c> does (the same
    /// zip, loadable with <c>mlContext.Model.Load</c>), but crash-safe: the zip is written to a temporary file in the same
    /// folder, flushed to disk and only then moved over <paramref name="filePath"/>. A crash, <c>kill -9</c> or exception
    /// at any moment leaves either the previous file or the new one, never a broken zip. Temporary files that an earlier,
    /// dead process left next to <paramref name="filePath"/> (<c>.&lt;name&gt;.&lt;pid&gt;.&lt;guid&gt;.tmp</c>) are removed.
    /// </summary>
    /// <remarks>In a distributed training job (<see cref="NeuralNetworkOptions.Distributed"/>) only rank 0 writes; the other ranks return at once.</remarks>
    /// <param name="catalog">The model catalog, <c>mlContext.Model</c>.</param>
    /// <param name="model">The trained model (any <see cref="ITransformer"/>).</param>
    /// <param name="inputSchema">The schema of the data the model was trained on (saved with it), or <see langword="null"/> as <c>Save</c> allows.</param>
    /// <param name="filePath">The destination zip; its folder is created if missing.</param>
    /// <exception cref="ArgumentNullException"><paramref name="catalog"/>, <paramref name="model"/> or <paramref name="filePath"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="filePath"/> is empty, white space or names an existing folder.</exception>
    public static void SaveAtomically(this ModelOperationsCatalog catalog, ITransformer model, DataViewSchema? inputSchema, string filePath)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrWhiteSpace(filePath);
        string full;
        try
        {
            full = Path.GetFullPath(filePath);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new ArgumentException($"'{filePath}' is not a valid file path ({e.Message}). Pass the path of the model zip to write.", nameof(filePath), e);
        }
        if (Directory.Exists(full))
            throw new ArgumentException(
                $"'{full}' is a folder. SaveAtomically needs the path of the model zip to write, e.g. '{Path.Combine(full, "model.zip")}'.", nameof(filePath));
        if (Distributed.MpiRuntime.SkipsWrites)
            return; // distributed training: only rank 0 writes files
        AtomicFile.Write(full, stream => catalog.Save(model, inputSchema, stream));
    }
}
