using System.Security.Cryptography;
using MLNet.Compression.Tooling;
using Xunit;

namespace MLNet.Compression.SampleTests;

/// <summary>The tabular data tooling: the source files pass their checksums, the CSV split is fixed by the seed and loses no row.</summary>
public sealed class VegaDatasetsTests
{
    [Theory]
    [InlineData(VegaTask.SeattleRain, 1461, "Date,Month,TempMax,TempMin,Wind,Rain")]
    [InlineData(VegaTask.PenguinSpecies, 344, "Species,Island,BeakLength,BeakDepth,FlipperLength,BodyMass,Sex")]
    [InlineData(VegaTask.CarMilesPerGallon, 406, "Name,MilesPerGallon,Cylinders,Displacement,Horsepower,Weight,Acceleration,Year,Origin")]
    public void WriteCsv_SplitsEveryRowOnce_TheSameWayForTheSameSeed(VegaTask task, int rows, string header)
    {
        string dir = MainJobProcess.NewTempDirectory();
        try
        {
            var first = VegaDatasets.WriteCsv(task, seed: 7, directory: Path.Combine(dir, "a"));
            var again = VegaDatasets.WriteCsv(task, seed: 7, directory: Path.Combine(dir, "b"));
            var other = VegaDatasets.WriteCsv(task, seed: 8, directory: Path.Combine(dir, "c"));

            string[] train = File.ReadAllLines(first.TrainPath), test = File.ReadAllLines(first.TestPath);
            Assert.Equal(header, train[0]);
            Assert.Equal(header, test[0]);
            Assert.Equal(rows, first.TrainRows + first.TestRows);
            Assert.Equal((int)Math.Round(rows * 0.2), first.TestRows);
            Assert.Equal(first.TrainRows, train.Length - 1);
            Assert.Equal(first.TestRows, test.Length - 1);
            Assert.All(train.Concat(test), line => Assert.Equal(header.Count(c => c == ','), line.Count(c => c == ',')));

            Assert.Equal(File.ReadAllBytes(first.TrainPath), File.ReadAllBytes(again.TrainPath));
            Assert.Equal(File.ReadAllBytes(first.TestPath), File.ReadAllBytes(again.TestPath));
            // Another seed: the same rows (a penguin data set has a few identical lines, hence the multiset), another split.
            string[] otherLines = File.ReadAllLines(other.TrainPath).Skip(1).Concat(File.ReadAllLines(other.TestPath).Skip(1)).Order().ToArray();
            Assert.Equal(train.Skip(1).Concat(test.Skip(1)).Order().ToArray(), otherLines);
            Assert.NotEqual(test.Skip(1).ToArray(), File.ReadAllLines(other.TestPath).Skip(1).ToArray());
            Assert.Empty(Directory.GetFiles(dir, "*.tmp", SearchOption.AllDirectories));
        }
        finally
        {
            MainJobProcess.DeleteDirectory(dir);
        }
    }

    [Fact]
    public void WriteCsv_KeepsMissingValuesAsEmptyFields_AndTheLabelsOfEachTask()
    {
        string dir = MainJobProcess.NewTempDirectory();
        try
        {
            string[] Lines(VegaTask task)
            {
                var files = VegaDatasets.WriteCsv(task, directory: dir);
                return File.ReadAllLines(files.TrainPath).Skip(1).Concat(File.ReadAllLines(files.TestPath).Skip(1)).ToArray();
            }

            var cars = Lines(VegaTask.CarMilesPerGallon).Select(l => l.Split(',')).ToArray();
            Assert.Equal(8, cars.Count(f => f[1].Length == 0));   // no miles per gallon
            Assert.Equal(6, cars.Count(f => f[4].Length == 0));   // no horsepower
            Assert.Equal(["Europe", "Japan", "USA"], cars.Select(f => f[8]).Distinct().Order().ToArray());

            var penguins = Lines(VegaTask.PenguinSpecies).Select(l => l.Split(',')).ToArray();
            Assert.Equal([("Adelie", 152), ("Chinstrap", 68), ("Gentoo", 124)],
                penguins.GroupBy(f => f[0]).OrderBy(g => g.Key).Select(g => (g.Key, g.Count())).ToArray());
            Assert.Equal(2, penguins.Count(f => f[2].Length == 0));
            Assert.Equal(11, penguins.Count(f => f[6].Length == 0)); // 10 unknown and one "."

            var days = Lines(VegaTask.SeattleRain).Select(l => l.Split(',')).ToArray();
            Assert.Equal(623, days.Count(f => f[5] == "true"));
            Assert.Equal(12, days.Select(f => f[1]).Distinct().Count());
        }
        finally
        {
            MainJobProcess.DeleteDirectory(dir);
        }
    }

    [Fact]
    public void EnsureSourceFiles_ReplacesAnAlteredFile_AndRefusesATarballWithTheWrongChecksum()
    {
        string real = VegaDatasets.EnsureSourceFiles();
        string cache = MainJobProcess.NewTempDirectory();
        try
        {
            // A cache holding the right tarball and a tampered penguins.json: the file is extracted again and checked.
            File.Copy(VegaDatasets.EnsureTarball(), Path.Combine(cache, VegaDatasets.TarballName));
            Directory.CreateDirectory(Path.Combine(cache, "3.2.1"));
            File.WriteAllText(Path.Combine(cache, "3.2.1", "penguins.json"), "[]");
            string folder = VegaDatasets.EnsureSourceFiles(cacheDirectory: cache, npmExecutable: "/nonexistent/npm");
            foreach (var (name, sha256) in VegaDatasets.Files)
            {
                Assert.Equal(sha256, Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(folder, name)))));
                Assert.Equal(File.ReadAllBytes(Path.Combine(real, name)), File.ReadAllBytes(Path.Combine(folder, name)));
            }

            // A tarball with other bytes is not used: it would be fetched again, and here npm cannot be run, which the error says.
            File.WriteAllText(Path.Combine(cache, VegaDatasets.TarballName), "not the package");
            File.Delete(Path.Combine(folder, "cars.json"));
            var e = Assert.Throws<InvalidOperationException>(() => VegaDatasets.EnsureSourceFiles(cacheDirectory: cache, npmExecutable: "/nonexistent/npm"));
            Assert.Contains("the npm executable '/nonexistent/npm' does not exist", e.Message);
            Assert.Contains(VegaDatasets.TarballSha256, e.Message);
            Assert.False(File.Exists(Path.Combine(folder, "cars.json")));
        }
        finally
        {
            MainJobProcess.DeleteDirectory(cache);
        }
    }
}
