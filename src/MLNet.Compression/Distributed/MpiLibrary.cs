using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;

namespace MLNet.Compression.Distributed;

/// <summary>
/// Finds and loads the native MPI library for MPI.NET, whose P/Invokes name <c>msmpi.dll</c> (MS-MPI). MS-MPI, MPICH,
/// Intel MPI and Cray MPICH share the MPICH ABI (integer handles, the same constants), so on Linux the name is mapped to
/// <c>libmpich.so.12</c> (or <c>libmpi.so.12</c>) with a DllImport resolver on MPI.NET's assembly. Open MPI is refused.
/// </summary>
internal static class MpiLibrary
{
    /// <summary>The names MPI.NET's P/Invokes use (MS-MPI, and MPICH2 in its MPICH2 build).</summary>
    private static readonly string[] ImportedNames = ["msmpi.dll", "msmpi", "mpich2.dll", "mpich2"];

    /// <summary>The MPICH-ABI libraries tried in order when none is named.</summary>
    internal static string[] DefaultCandidates()
    {
        if (OperatingSystem.IsWindows())
            return ["msmpi.dll"];
        if (OperatingSystem.IsMacOS())
            return ["libmpich.12.dylib", "libmpi.12.dylib", "libmpich.dylib"];
        return ["libmpich.so.12", "libmpi.so.12", "libmpich.so", "libmpich_intel.so.3"];
    }

    /// <summary>Loads the library (named, from the environment variable, or the defaults), checks its ABI and maps MPI.NET to it.</summary>
    /// <returns>The library's name as loaded and its version string.</returns>
    public static (string Name, string Version) LoadAndMap(string? requested)
    {
        string? fromEnvironment = System.Environment.GetEnvironmentVariable(DistributedOptions.LibraryEnvironmentVariable);
        string[] candidates = !string.IsNullOrWhiteSpace(requested) ? [requested!]
            : !string.IsNullOrWhiteSpace(fromEnvironment) ? [fromEnvironment!]
            : DefaultCandidates();
        IntPtr handle = IntPtr.Zero;
        string? loaded = null;
        var failures = new List<string>();
        foreach (var name in candidates)
        {
            try
            {
                handle = NativeLibrary.Load(name);
                loaded = name;
                break;
            }
            catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
            {
                failures.Add($"{name}: {e.Message}");
            }
        }
        if (loaded is null)
        {
            string source = !string.IsNullOrWhiteSpace(requested) ? "DistributedOptions.LibraryPath"
                : !string.IsNullOrWhiteSpace(fromEnvironment) ? $"the environment variable {DistributedOptions.LibraryEnvironmentVariable}"
                : "the default names";
            throw new DllNotFoundException(
                $"No MPI library could be loaded for distributed training (tried {source}: {string.Join("; ", failures)}). " +
                "Install MPICH (Debian/Ubuntu: apt-get install mpich libmpich-dev; Windows: MS-MPI), or name an MPICH-ABI library " +
                $"(MPICH, Intel MPI, Cray MPICH) with DistributedOptions.Mpi(libraryPath) or {DistributedOptions.LibraryEnvironmentVariable}.");
        }
        string version = CheckAbi(handle, loaded);
        Map(handle);
        return (loaded, version);
    }

    /// <summary>Refuses Open MPI and libraries that are not MPI; returns the library's version string.</summary>
    internal static string CheckAbi(IntPtr handle, string name)
    {
        if (!NativeLibrary.TryGetExport(handle, "MPI_Init_thread", out _) || !NativeLibrary.TryGetExport(handle, "MPI_Allreduce", out _))
            throw new NotSupportedException($"'{name}' loaded but does not export MPI_Init_thread and MPI_Allreduce: it is not an MPI library. " +
                $"Name MPICH's library (for example libmpich.so.12) with DistributedOptions.Mpi(libraryPath) or {DistributedOptions.LibraryEnvironmentVariable}.");
        string version = string.Empty;
        if (NativeLibrary.TryGetExport(handle, "MPI_Get_library_version", out var getVersion))
        {
            // MPI-3: callable before MPI_Init. MPI_MAX_LIBRARY_VERSION_STRING is 8192 in MPICH; leave room for others.
            var buffer = new byte[16384];
            var call = Marshal.GetDelegateForFunctionPointer<GetLibraryVersion>(getVersion);
            if (call(buffer, out int length) == 0 && length > 0)
                version = Encoding.ASCII.GetString(buffer, 0, Math.Min(length, buffer.Length)).TrimEnd('\0', '\n', ' ');
        }
        bool openMpi = NativeLibrary.TryGetExport(handle, "ompi_mpi_comm_world", out _) || version.Contains("Open MPI", StringComparison.OrdinalIgnoreCase);
        if (openMpi)
            throw new NotSupportedException(
                $"'{name}' is Open MPI ({FirstLine(version)}), which does not share the MPICH ABI that MPI.NET is built for: its handles and " +
                "constants differ, so collectives would corrupt memory. Install MPICH (Debian/Ubuntu: apt-get install mpich libmpich-dev), " +
                "start the program with MPICH's launcher (mpiexec.mpich), and, if Open MPI's libmpi is found first, name MPICH's library " +
                $"with {DistributedOptions.LibraryEnvironmentVariable}=libmpich.so.12.");
        return FirstLine(version);
    }

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate int GetLibraryVersion([Out] byte[] version, out int length);

    private static string FirstLine(string text)
    {
        int end = text.IndexOfAny(['\n', '\r']);
        return end < 0 ? text.Trim() : text[..end].Trim();
    }

    private static IntPtr mapped;

    /// <summary>Points MPI.NET's DllImports at <paramref name="handle"/>; once per process.</summary>
    private static void Map(IntPtr handle)
    {
        if (mapped != IntPtr.Zero)
            return;
        mapped = handle;
        try
        {
            NativeLibrary.SetDllImportResolver(typeof(MPI.Unsafe).Assembly, Resolve);
        }
        catch (InvalidOperationException)
        {
            // The application set its own resolver for MPI.NET: it decides which library MPI.NET uses.
        }
    }

    private static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath) =>
        Array.Exists(ImportedNames, n => string.Equals(n, libraryName, StringComparison.OrdinalIgnoreCase)) ? mapped : IntPtr.Zero;
}
