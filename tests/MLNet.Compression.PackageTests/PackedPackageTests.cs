using System.Globalization;
using System.IO.Compression;
using System.Reflection;
using System.Xml.Linq;
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

    // A version no cache can already hold, so a stale package never stands in for the one packed here.
    private readonly string _version = $"0.0.0-test-{DateTime.UtcNow:yyyyMMddHHmmss}-{Guid.NewGuid().ToString("N")[..8]}";

    // Outside the repository: its Directory.Build.props and Directory.Packages.props must not reach the fresh project.
    private readonly string _root = Path.Combine(Path.GetTempPath(), "mlnet-compression-package-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public void Package_HasDocsReadmeLicenseAndBuildTransitiveFix_AndTrainsInAFreshProject()
    {
        string repositoryRoot = Metadata("RepositoryRoot");
        Assert.True(File.Exists(Path.Combine(repositoryRoot, "src", PackageId, PackageId + ".csproj")), $"'{repositoryRoot}' is not this repository's root.");
        string feed = Path.Combine(_root, "feed");
        string app = Path.Combine(_root, "app");
        Directory.CreateDirectory(feed);
        Directory.CreateDirectory(app);

        // 1. Pack, with a build folder of its own (not the repository's bin/obj, which a parallel build may be using).
        Dotnet(repositoryRoot, TimeSpan.FromMinutes(6),
            "pack", Path.Combine(repositoryRoot, "src", PackageId), "-c", "Release", "-o", feed,
            "--artifacts-path", Path.Combine(_root, "pack-build"), $"-p:Version={_version}");
        string nupkg = Path.Combine(feed, $"{PackageId}.{_version}.nupkg");
        Assert.True(File.Exists(nupkg), $"dotnet pack did not write '{nupkg}'; the feed has: {string.Join(", ", Directory.GetFiles(feed).Select(Path.GetFileName))}");

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
            Assert.Equal(_version, metadata.Element(ns + "version")?.Value);
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

        // 3. A fresh console project that knows nothing of this repository.
        WriteFreshProject(app, feed);
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
        // The library that ran is the packed one, from the package (copied next to the app), with the packed version.
        Assert.Contains($"MLNET_COMPRESSION_VERSION={_version}", run);
    }

    public void Dispose()
    {
        TryDelete(_root);
        // The unique version is of no use to anyone afterwards: take it out of the global packages folder again.
        string packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } configured
            ? configured
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        TryDelete(Path.Combine(packages, PackageId.ToLowerInvariant(), _version.ToLowerInvariant()));
    }

    private void WriteFreshProject(string app, string feed)
    {
        // An empty Directory.Build.props / .targets / Directory.Packages.props at the top of the temporary tree stops
        // MSBuild from looking further up for ones that might sit in the temp folder's parents.
        foreach (string name in new[] { "Directory.Build.props", "Directory.Build.targets", "Directory.Packages.props" })
            File.WriteAllText(Path.Combine(_root, name), "<Project />\n");

        // The local feed is added to the sources already configured on this machine (the user's NuGet.Config, as the
        // repository's own restore uses them), so the package's dependencies come from the usual registry.
        File.WriteAllText(Path.Combine(_root, "nuget.config"), $"""
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
                <PackageReference Include="{PackageId}" Version="[{_version}]" />
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
            """);
    }

    /// <summary>Runs the dotnet CLI, logs what it printed, and fails the test on a non-zero exit code or a timeout.</summary>
    private string Dotnet(string workingDirectory, TimeSpan timeout, params string[] arguments)
    {
        // No MSBuild node reuse and no compiler server: they would outlive the command (and this test) and hold its pipes.
        string[] extra = arguments[0] is "build" or "pack" ? ["-nodeReuse:false", "-p:UseSharedCompilation=false"] : [];
        ProcessResult result = ProcessRunner.Run(DotnetHost(), [.. arguments, .. extra], workingDirectory, timeout);
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

    /// <summary>The dotnet host: the one that runs this process when it is dotnet itself, else DOTNET_HOST_PATH, DOTNET_ROOT, PATH.</summary>
    private static string DotnetHost()
    {
        string hostName = OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet";
        if (Environment.ProcessPath is { } processPath && string.Equals(Path.GetFileName(processPath), hostName, StringComparison.OrdinalIgnoreCase))
            return processPath;
        if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } hostPath && File.Exists(hostPath))
            return hostPath;
        if (Environment.GetEnvironmentVariable("DOTNET_ROOT") is { Length: > 0 } root && File.Exists(Path.Combine(root, hostName)))
            return Path.Combine(root, hostName);
        return "dotnet";
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
