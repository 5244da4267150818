using System.Security.Cryptography;
using MLNet.Compression.Data;
using Xunit;

namespace MLNet.Compression.Tests.Reliability;

/// <summary>A verified MNIST file that another process replaces (same length, same modification time) is hashed again.</summary>
public sealed class MnistVerificationTests : IDisposable
{
    private readonly TestMnist.TempDirectory _dir = TestMnist.NewTempDirectory();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AFileReplacedWithTheSameLengthAndModificationTime_IsHashedAgain(bool byRename)
    {
        byte[] good = Enumerable.Range(0, 4096).Select(i => (byte)i).ToArray();
        byte[] bad = good.ToArray();
        bad[100] ^= 0xFF;
        var spec = new MnistFileSpec("t10k-labels-idx1-ubyte", good.Length, Convert.ToHexStringLower(SHA256.HashData(good)));
        string path = _dir["t10k-labels-idx1-ubyte"];
        File.WriteAllBytes(path, good);
        var written = File.GetLastWriteTimeUtc(path);
        Assert.Null(MnistDataset.Verify(path, spec));
        var identity = CachePaths.FileIdentity(new FileInfo(path));
        Assert.Equal(identity, CachePaths.FileIdentity(new FileInfo(path))); // unchanged file: the in-process shortcut applies
        if (OperatingSystem.IsLinux())
            Assert.NotEqual(0, identity.Inode);

        Thread.Sleep(20);
        if (byRename)
        {
            // What another process's download or cache write does: a new file moved over the old one.
            string temp = _dir["replacement.tmp"];
            File.WriteAllBytes(temp, bad);
            File.SetLastWriteTimeUtc(temp, written);
            File.Move(temp, path, overwrite: true);
        }
        else
        {
            File.WriteAllBytes(path, bad);
            File.SetLastWriteTimeUtc(path, written);
        }
        Assert.Equal(written, File.GetLastWriteTimeUtc(path));
        string? reason = MnistDataset.Verify(path, spec);
        Assert.NotNull(reason);
        Assert.Contains("checksum mismatch", reason);
    }
}
