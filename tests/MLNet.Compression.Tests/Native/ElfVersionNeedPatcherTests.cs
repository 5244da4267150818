using MLNet.Compression.Build;
using Xunit;

namespace MLNet.Compression.Tests.Native;

public sealed class ElfVersionNeedPatcherTests
{
    [Fact]
    public void ReadsTheVersionNeedsOfLibTorchSharp()
    {
        using var temp = new TempDirectory();
        string library = NativeLibraryFiles.CopyPristine(temp.Path);

        IReadOnlyList<ElfVersionNeed> needs = ElfVersionNeedPatcher.ReadVersionNeeds(library);

        // readelf -V: ld-linux-x86-64.so.2 (1), libm.so.6 (1), libgcc_s.so.1 (1), libc.so.6 (5), libstdc++.so.6 (20).
        Assert.Equal(28, needs.Count);
        Assert.Equal(20, needs.Count(n => n.File == "libstdc++.so.6"));
        Assert.Contains(needs, n => n.File == "libc.so.6" && n.Version == "GLIBC_2.34");
        Assert.Contains(needs, n => n.File == "libstdc++.so.6" && n.Version == "GLIBCXX_3.4.30");
        ElfVersionNeed need = Assert.Single(needs, n => n.Version == NativeLibraryFiles.NewGlibcxx);
        Assert.Equal(NativeLibraryFiles.LibStdCxx, need.File);
        Assert.Equal(18, need.Other);
        Assert.Equal(0, need.Flags);
        Assert.All(needs, n => Assert.False(n.IsWeak));
    }

    [Fact]
    public void MarkingWeakChangesOnlyTheFlagsOfThatNeedAndIsIdempotent()
    {
        using var temp = new TempDirectory();
        string library = NativeLibraryFiles.CopyPristine(temp.Path);
        byte[] before = File.ReadAllBytes(library);
        IReadOnlyList<ElfVersionNeed> needsBefore = ElfVersionNeedPatcher.ReadVersionNeeds(library);
        ElfVersionNeed target = needsBefore.Single(n => n.File == NativeLibraryFiles.LibStdCxx && n.Version == NativeLibraryFiles.NewGlibcxx);

        Assert.True(ElfVersionNeedPatcher.MarkVersionNeedWeak(library, NativeLibraryFiles.LibStdCxx, NativeLibraryFiles.NewGlibcxx));

        byte[] after = File.ReadAllBytes(library);
        Assert.Equal(before.Length, after.Length);
        int[] changed = Enumerable.Range(0, before.Length).Where(i => before[i] != after[i]).ToArray();
        Assert.NotEmpty(changed);
        Assert.All(changed, i => Assert.InRange(i, target.FlagsOffset, target.FlagsOffset + 1));
        Assert.Equal(target.Flags | ElfVersionNeedPatcher.VerFlagWeak, after[target.FlagsOffset] | (after[target.FlagsOffset + 1] << 8));

        IReadOnlyList<ElfVersionNeed> needsAfter = ElfVersionNeedPatcher.ReadVersionNeeds(library);
        Assert.Equal(needsBefore.Count, needsAfter.Count);
        for (int i = 0; i < needsBefore.Count; i++)
        {
            Assert.Equal(needsBefore[i].File, needsAfter[i].File);
            Assert.Equal(needsBefore[i].Version, needsAfter[i].Version);
            Assert.Equal(needsBefore[i].Other, needsAfter[i].Other);
            Assert.Equal(needsBefore[i].Hash, needsAfter[i].Hash);
            bool isTarget = needsBefore[i].FlagsOffset == target.FlagsOffset;
            Assert.Equal(isTarget, needsAfter[i].IsWeak);
            Assert.Equal(isTarget ? (ushort)(needsBefore[i].Flags | ElfVersionNeedPatcher.VerFlagWeak) : needsBefore[i].Flags, needsAfter[i].Flags);
        }

        // Second run: nothing to do, nothing written.
        DateTime stamp = File.GetLastWriteTimeUtc(library);
        Assert.False(ElfVersionNeedPatcher.MarkVersionNeedWeak(library, NativeLibraryFiles.LibStdCxx, NativeLibraryFiles.NewGlibcxx));
        Assert.Equal(after, File.ReadAllBytes(library));
        Assert.Equal(stamp, File.GetLastWriteTimeUtc(library));

        // No temporary files are left behind.
        Assert.Equal(new[] { library }, Directory.GetFiles(temp.Path));
    }

    [Fact]
    public void MarkingAnAbsentNeedChangesNothing()
    {
        using var temp = new TempDirectory();
        string library = NativeLibraryFiles.CopyPristine(temp.Path);
        byte[] before = File.ReadAllBytes(library);

        Assert.False(ElfVersionNeedPatcher.MarkVersionNeedWeak(library, NativeLibraryFiles.LibStdCxx, "GLIBCXX_9.9.99"));
        Assert.False(ElfVersionNeedPatcher.MarkVersionNeedWeak(library, "libfoo.so.1", NativeLibraryFiles.NewGlibcxx));

        Assert.Equal(before, File.ReadAllBytes(library));
    }

    [Fact]
    public void PatchingKeepsPermissionsAndTimestampAndNeverWritesThroughASymbolicLink()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS())
        {
            return;
        }

        using var temp = new TempDirectory();
        string cacheDirectory = Directory.CreateDirectory(Path.Combine(temp.Path, "cache")).FullName;
        string outputDirectory = Directory.CreateDirectory(Path.Combine(temp.Path, "out")).FullName;
        string cached = NativeLibraryFiles.CopyPristine(cacheDirectory);
        File.SetUnixFileMode(cached, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead);
        var stamp = new DateTime(2024, 1, 2, 3, 4, 5, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(cached, stamp);
        byte[] pristine = File.ReadAllBytes(cached);

        string copy = Path.Combine(outputDirectory, "libLibTorchSharp.so");
        File.Copy(cached, copy);
        File.SetLastWriteTimeUtc(copy, stamp);
        Assert.True(ElfVersionNeedPatcher.MarkVersionNeedWeak(copy, NativeLibraryFiles.LibStdCxx, NativeLibraryFiles.NewGlibcxx));
        Assert.Equal(File.GetUnixFileMode(cached), File.GetUnixFileMode(copy));
        Assert.Equal(stamp, File.GetLastWriteTimeUtc(copy));

        string link = Path.Combine(outputDirectory, "linked.so");
        File.CreateSymbolicLink(link, cached);
        Assert.True(ElfVersionNeedPatcher.MarkVersionNeedWeak(link, NativeLibraryFiles.LibStdCxx, NativeLibraryFiles.NewGlibcxx));
        Assert.Null(new FileInfo(link).LinkTarget);
        Assert.True(ElfVersionNeedPatcher.FindVersionNeed(link, NativeLibraryFiles.LibStdCxx, NativeLibraryFiles.NewGlibcxx)!.IsWeak);
        Assert.Equal(pristine, File.ReadAllBytes(cached));
    }

    [Fact]
    public void NonElfInputThrowsNamingTheFile()
    {
        using var temp = new TempDirectory();
        string path = Path.Combine(temp.Path, "not-elf.so");
        File.WriteAllText(path, "this is not a shared library");

        var error = Assert.Throws<ElfFormatException>(() => ElfVersionNeedPatcher.ReadVersionNeeds(path));
        Assert.Contains(path, error.Message);
        Assert.Contains("magic", error.Message);
        Assert.Equal(path, error.FilePath);

        error = Assert.Throws<ElfFormatException>(() => ElfVersionNeedPatcher.MarkVersionNeedWeak(path, NativeLibraryFiles.LibStdCxx, NativeLibraryFiles.NewGlibcxx));
        Assert.Contains(path, error.Message);
        Assert.Equal(new[] { path }, Directory.GetFiles(temp.Path));

        File.WriteAllBytes(path, Array.Empty<byte>());
        Assert.Contains(path, Assert.Throws<ElfFormatException>(() => ElfVersionNeedPatcher.ReadVersionNeeds(path)).Message);
    }

    [Theory]
    [InlineData(40)]
    [InlineData(64)]
    [InlineData(4096)]
    [InlineData(1_200_000)]
    public void TruncatedInputThrowsNamingTheFile(int length)
    {
        using var temp = new TempDirectory();
        string library = NativeLibraryFiles.CopyPristine(temp.Path);
        string path = Path.Combine(temp.Path, "truncated.so");
        File.WriteAllBytes(path, File.ReadAllBytes(library).AsSpan(0, length).ToArray());

        var error = Assert.Throws<ElfFormatException>(() => ElfVersionNeedPatcher.ReadVersionNeeds(path));
        Assert.Contains(path, error.Message);
        Assert.Contains("truncated", error.Message);
    }

    [Theory]
    [InlineData(4, 1, "EI_CLASS")]
    [InlineData(5, 2, "EI_DATA")]
    public void WrongClassOrByteOrderThrows(int index, byte value, string field)
    {
        using var temp = new TempDirectory();
        string library = NativeLibraryFiles.CopyPristine(temp.Path);
        byte[] data = File.ReadAllBytes(library);
        data[index] = value;
        File.WriteAllBytes(library, data);

        var error = Assert.Throws<ElfFormatException>(() => ElfVersionNeedPatcher.ReadVersionNeeds(library));
        Assert.Contains(library, error.Message);
        Assert.Contains(field, error.Message);
    }

    [Fact]
    public void GarbageAfterTheElfMagicThrowsOnlyElfFormatException()
    {
        var random = new Random(1234);
        for (int round = 0; round < 200; round++)
        {
            byte[] data = new byte[random.Next(64, 4096)];
            random.NextBytes(data);
            data[0] = 0x7f;
            data[1] = (byte)'E';
            data[2] = (byte)'L';
            data[3] = (byte)'F';
            data[4] = 2;
            data[5] = 1;
            try
            {
                ElfVersionNeedPatcher.ReadVersionNeeds("garbage.so", data);
            }
            catch (ElfFormatException error)
            {
                Assert.Contains("garbage.so", error.Message);
            }
        }
    }

    [Fact]
    public void CorruptedSectionHeadersOrVersionNeedsNeverCrashTheParser()
    {
        using var temp = new TempDirectory();
        byte[] pristine = File.ReadAllBytes(NativeLibraryFiles.CopyPristine(temp.Path));
        long sectionTable = BitConverter.ToInt64(pristine, 40);
        ElfVersionNeed first = ElfVersionNeedPatcher.ReadVersionNeeds("pristine", pristine)[0];
        long verneed = first.FlagsOffset - 4 - 16; // first Elf64_Vernaux follows the first Elf64_Verneed

        var random = new Random(42);
        for (int round = 0; round < 300; round++)
        {
            byte[] data = (byte[])pristine.Clone();
            long start = round % 2 == 0 ? sectionTable : verneed;
            long span = round % 2 == 0 ? pristine.Length - sectionTable : 0x210;
            for (int k = 0; k < 4; k++)
            {
                data[start + random.NextInt64(span)] = (byte)random.Next(256);
            }

            try
            {
                ElfVersionNeedPatcher.ReadVersionNeeds("corrupt.so", data);
            }
            catch (ElfFormatException error)
            {
                Assert.Contains("corrupt.so", error.Message);
            }
        }
    }

    [Fact]
    public void ParsesLdconfigOutputForTheRequestedArchitecture()
    {
        const string output = "1234 libs found in cache `/etc/ld.so.cache'\n"
            + "\tlibstdc++.so.6 (libc6) => /usr/lib/i386-linux-gnu/libstdc++.so.6\n"
            + "\tlibstdc++.so.6 (libc6,AArch64) => /usr/lib/aarch64-linux-gnu/libstdc++.so.6\n"
            + "\tlibstdc++.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libstdc++.so.6\n"
            + "\tlibstdc++.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libstdc++.so\n";

        Assert.Equal("/lib/x86_64-linux-gnu/libstdc++.so.6", ElfVersionNeedPatcher.ParseLdconfigOutput(output, "libstdc++.so.6", "x86-64", _ => true));
        Assert.Equal("/usr/lib/aarch64-linux-gnu/libstdc++.so.6", ElfVersionNeedPatcher.ParseLdconfigOutput(output, "libstdc++.so.6", "AArch64", _ => true));
        Assert.Equal("/usr/lib/i386-linux-gnu/libstdc++.so.6", ElfVersionNeedPatcher.ParseLdconfigOutput(output, "libstdc++.so.6", string.Empty, _ => true));
        Assert.Null(ElfVersionNeedPatcher.ParseLdconfigOutput(output, "libstdc++.so.6", "x86-64", _ => false));
        Assert.Null(ElfVersionNeedPatcher.ParseLdconfigOutput(output, "libfoo.so.1", "x86-64", _ => true));
    }

    [Fact]
    public void SystemLibStdCxxDefinesGlibcxx3430ButNot3432()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        string? system = ElfVersionNeedPatcher.FindSystemLibrary(NativeLibraryFiles.LibStdCxx);
        Assert.NotNull(system);
        IReadOnlyList<string> definitions = ElfVersionNeedPatcher.ReadVersionDefinitions(system);
        Assert.Contains("GLIBCXX_3.4", definitions);
        Assert.Contains("CXXABI_1.3", definitions);
        Assert.DoesNotContain(NativeLibraryFiles.LibStdCxx, definitions); // the base (soname) entry is excluded
        Assert.True(ElfVersionNeedPatcher.DefinesVersion(system, "GLIBCXX_3.4.30"));

        if (ElfVersionNeedPatcher.DefinesVersion(system, NativeLibraryFiles.NewGlibcxx))
        {
            return; // a GCC 13+ libstdc++ (not Debian 12): nothing more to check here
        }

        Assert.DoesNotContain(NativeLibraryFiles.NewGlibcxx, definitions);
    }
}
