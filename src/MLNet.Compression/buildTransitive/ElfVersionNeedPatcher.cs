// ELF symbol-version tooling used to make TorchSharp's native library load on Linux systems whose
// libstdc++ is older than the one it was linked against (see DESIGN.md, "Packages and the native backend").
//
// This one source file has two consumers:
//  * the MLNet.Compression library compiles it (MLNET_COMPRESSION_LIBRARY is defined there) so that the
//    parser can be unit-tested as internal code;
//  * MLNet.Compression.targets compiles it with RoslynCodeTaskFactory (Type="Class") into an inline MSBuild
//    task; that compilation references only netstandard 2.0 and MSBuild, so the code below sticks to
//    netstandard 2.0 APIs and does not depend on implicit global usings.
#nullable enable

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Runtime.InteropServices;
using System.Text;

namespace MLNet.Compression.Build
{
    /// <summary>Thrown when a file is not a well-formed 64-bit little-endian ELF object.</summary>
    internal sealed class ElfFormatException : Exception
    {
        /// <summary>Creates the exception for <paramref name="filePath"/>.</summary>
        public ElfFormatException(string filePath, string problem)
            : base("'" + filePath + "' is not a usable ELF64 little-endian file: " + problem)
        {
            FilePath = filePath;
        }

        /// <summary>The file that could not be parsed.</summary>
        public string FilePath { get; }
    }

    /// <summary>One <c>Elf64_Vernaux</c> entry of a <c>.gnu.version_r</c> section.</summary>
    internal sealed class ElfVersionNeed
    {
        /// <summary>Creates an entry.</summary>
        public ElfVersionNeed(string file, string version, ushort flags, ushort other, uint hash, long flagsOffset)
        {
            File = file;
            Version = version;
            Flags = flags;
            Other = other;
            Hash = hash;
            FlagsOffset = flagsOffset;
        }

        /// <summary>The needed shared object, e.g. <c>libstdc++.so.6</c>.</summary>
        public string File { get; }

        /// <summary>The needed version, e.g. <c>GLIBCXX_3.4.32</c>.</summary>
        public string Version { get; }

        /// <summary>The <c>vna_flags</c> field.</summary>
        public ushort Flags { get; }

        /// <summary>The <c>vna_other</c> field (version index used by <c>.gnu.version</c>).</summary>
        public ushort Other { get; }

        /// <summary>The <c>vna_hash</c> field.</summary>
        public uint Hash { get; }

        /// <summary>File offset of the two-byte <c>vna_flags</c> field.</summary>
        public long FlagsOffset { get; }

        /// <summary>Whether <c>VER_FLG_WEAK</c> is set.</summary>
        public bool IsWeak { get { return (Flags & ElfVersionNeedPatcher.VerFlagWeak) != 0; } }

        /// <inheritdoc />
        public override string ToString()
        {
            return File + " " + Version + " flags=0x" + Flags.ToString("x") + " index=" + Other;
        }
    }

    /// <summary>
    /// Reads the version needs (<c>.gnu.version_r</c>) and version definitions (<c>.gnu.version_d</c>) of
    /// ELF64 little-endian files, and marks one version need as weak (<c>VER_FLG_WEAK</c>) so that the
    /// dynamic loader only warns instead of failing when the providing library lacks that version.
    /// </summary>
    internal static class ElfVersionNeedPatcher
    {
        /// <summary><c>VER_FLG_BASE</c>.</summary>
        public const ushort VerFlagBase = 0x1;

        /// <summary><c>VER_FLG_WEAK</c>.</summary>
        public const ushort VerFlagWeak = 0x2;

        private const uint ShtStrtab = 3;
        private const uint ShtGnuVerdef = 0x6ffffffd;
        private const uint ShtGnuVerneed = 0x6ffffffe;
        private const int ElfHeaderSize = 64;
        private const int SectionHeaderSize = 64;
        private const int VerneedSize = 16;
        private const int VernauxSize = 16;
        private const int VerdefSize = 20;
        private const int VerdauxSize = 8;

        /// <summary>Lists every version need of the file at <paramref name="path"/> (empty when it has none).</summary>
        public static IReadOnlyList<ElfVersionNeed> ReadVersionNeeds(string path)
        {
            return ReadVersionNeeds(path, System.IO.File.ReadAllBytes(path));
        }

        /// <summary>Lists every version need of the ELF image <paramref name="data"/>; <paramref name="path"/> names it in errors.</summary>
        public static IReadOnlyList<ElfVersionNeed> ReadVersionNeeds(string path, byte[] data)
        {
            var elf = new ElfImage(path, data);
            var result = new List<ElfVersionNeed>();
            SectionHeader? section = elf.FindSection(ShtGnuVerneed);
            if (section == null)
            {
                return result;
            }

            SectionHeader strings = elf.LinkedStringTable(section, ".gnu.version_r");
            long sectionEnd = section.Offset + section.Size;
            long entry = section.Offset;
            long remaining = section.Info;
            int guard = 0;
            while (remaining > 0)
            {
                if (++guard > 100000)
                {
                    throw elf.Error(".gnu.version_r entries form a cycle");
                }

                elf.RequireRange(entry, VerneedSize, sectionEnd, "Elf64_Verneed entry");
                ushort version = elf.U16(entry);
                if (version != 1)
                {
                    throw elf.Error("Elf64_Verneed at 0x" + entry.ToString("x") + " has unsupported vn_version " + version);
                }

                ushort count = elf.U16(entry + 2);
                string file = elf.ReadString(strings, elf.U32(entry + 4), "vn_file");
                uint auxOffset = elf.U32(entry + 8);
                uint next = elf.U32(entry + 12);

                long aux = entry + auxOffset;
                for (int i = 0; i < count; i++)
                {
                    elf.RequireRange(aux, VernauxSize, sectionEnd, "Elf64_Vernaux entry");
                    uint hash = elf.U32(aux);
                    ushort flags = elf.U16(aux + 4);
                    ushort other = elf.U16(aux + 6);
                    string name = elf.ReadString(strings, elf.U32(aux + 8), "vna_name");
                    uint auxNext = elf.U32(aux + 12);
                    result.Add(new ElfVersionNeed(file, name, flags, other, hash, aux + 4));
                    if (auxNext == 0)
                    {
                        break;
                    }

                    aux += auxNext;
                }

                remaining--;
                if (next == 0)
                {
                    break;
                }

                entry += next;
            }

            return result;
        }

        /// <summary>Lists the version names the file at <paramref name="path"/> defines (excluding the base entry).</summary>
        public static IReadOnlyList<string> ReadVersionDefinitions(string path)
        {
            var elf = new ElfImage(path, System.IO.File.ReadAllBytes(path));
            var result = new List<string>();
            SectionHeader? section = elf.FindSection(ShtGnuVerdef);
            if (section == null)
            {
                return result;
            }

            SectionHeader strings = elf.LinkedStringTable(section, ".gnu.version_d");
            long sectionEnd = section.Offset + section.Size;
            long entry = section.Offset;
            long remaining = section.Info;
            int guard = 0;
            while (remaining > 0)
            {
                if (++guard > 100000)
                {
                    throw elf.Error(".gnu.version_d entries form a cycle");
                }

                elf.RequireRange(entry, VerdefSize, sectionEnd, "Elf64_Verdef entry");
                ushort version = elf.U16(entry);
                if (version != 1)
                {
                    throw elf.Error("Elf64_Verdef at 0x" + entry.ToString("x") + " has unsupported vd_version " + version);
                }

                ushort flags = elf.U16(entry + 2);
                ushort count = elf.U16(entry + 6);
                uint auxOffset = elf.U32(entry + 12);
                uint next = elf.U32(entry + 16);
                if (count > 0)
                {
                    long aux = entry + auxOffset;
                    elf.RequireRange(aux, VerdauxSize, sectionEnd, "Elf64_Verdaux entry");
                    string name = elf.ReadString(strings, elf.U32(aux), "vda_name");
                    if ((flags & VerFlagBase) == 0)
                    {
                        result.Add(name);
                    }
                }

                remaining--;
                if (next == 0)
                {
                    break;
                }

                entry += next;
            }

            return result;
        }

        /// <summary>Whether the shared library at <paramref name="path"/> defines the symbol version <paramref name="version"/>.</summary>
        public static bool DefinesVersion(string path, string version)
        {
            foreach (string name in ReadVersionDefinitions(path))
            {
                if (string.Equals(name, version, StringComparison.Ordinal))
                {
                    return true;
                }
            }

            return false;
        }

        /// <summary>Returns the need of <paramref name="path"/> on <paramref name="file"/> for <paramref name="version"/>, or null.</summary>
        public static ElfVersionNeed? FindVersionNeed(string path, string file, string version)
        {
            return Find(ReadVersionNeeds(path), file, version);
        }

        /// <summary>
        /// Sets <c>VER_FLG_WEAK</c> on the need of <paramref name="path"/> on <paramref name="file"/> for
        /// <paramref name="version"/>. The patched file is written next to the target under a temporary name
        /// and renamed over it (so hard links or symbolic links into a package cache are never written through),
        /// keeping the target's permissions and last-write time. Returns true when the file changed, false when
        /// the need is absent or already weak (idempotent).
        /// </summary>
        public static bool MarkVersionNeedWeak(string path, string file, string version)
        {
            ElfVersionNeed? need = Find(ReadVersionNeeds(path), file, version);
            if (need == null || need.IsWeak)
            {
                return false;
            }

            string fullPath = Path.GetFullPath(path);
            string directory = Path.GetDirectoryName(fullPath) ?? ".";
            string temporary = Path.Combine(directory, "." + Path.GetFileName(fullPath) + "." + Guid.NewGuid().ToString("N") + ".tmp");
            DateTime lastWrite = System.IO.File.GetLastWriteTimeUtc(fullPath);
            try
            {
                // File.Copy keeps the permission bits and follows a symbolic link to its target's content.
                System.IO.File.Copy(fullPath, temporary, false);
                byte[] data = System.IO.File.ReadAllBytes(temporary);
                ElfVersionNeed? copy = Find(ReadVersionNeeds(temporary, data), file, version);
                if (copy == null || copy.IsWeak)
                {
                    return false;
                }

                ushort flags = (ushort)(copy.Flags | VerFlagWeak);
                using (var stream = new FileStream(temporary, FileMode.Open, FileAccess.Write, FileShare.None))
                {
                    stream.Seek(copy.FlagsOffset, SeekOrigin.Begin);
                    stream.WriteByte((byte)(flags & 0xff));
                    stream.WriteByte((byte)(flags >> 8));
                }

                // Same size and timestamp as the package's copy: MSBuild's incremental copy then keeps the patched file.
                System.IO.File.SetLastWriteTimeUtc(temporary, lastWrite);
                System.IO.File.Replace(temporary, fullPath, null);
                return true;
            }
            finally
            {
                if (System.IO.File.Exists(temporary))
                {
                    System.IO.File.Delete(temporary);
                }
            }
        }

        /// <summary>
        /// Finds the <paramref name="libraryName"/> (e.g. <c>libstdc++.so.6</c>) the dynamic loader would use for a
        /// process of the current architecture: <c>LD_LIBRARY_PATH</c>, then the <c>ldconfig -p</c> cache, then
        /// the usual library directories. Returns null when none is found.
        /// </summary>
        public static string? FindSystemLibrary(string libraryName)
        {
            string? ldLibraryPath = Environment.GetEnvironmentVariable("LD_LIBRARY_PATH");
            if (!string.IsNullOrEmpty(ldLibraryPath))
            {
                foreach (string directory in ldLibraryPath!.Split(new[] { ':' }, StringSplitOptions.RemoveEmptyEntries))
                {
                    string candidate = Path.Combine(directory, libraryName);
                    if (System.IO.File.Exists(candidate))
                    {
                        return candidate;
                    }
                }
            }

            string? fromCache = FindInLdconfigCache(libraryName);
            if (fromCache != null)
            {
                return fromCache;
            }

            string multiarch = MultiarchTriplet();
            string[] directories =
            {
                "/lib/" + multiarch,
                "/usr/lib/" + multiarch,
                "/lib64",
                "/usr/lib64",
                "/usr/lib",
                "/lib",
            };
            foreach (string directory in directories)
            {
                string candidate = Path.Combine(directory, libraryName);
                if (System.IO.File.Exists(candidate))
                {
                    return candidate;
                }
            }

            return null;
        }

        /// <summary>
        /// Picks <paramref name="libraryName"/> for the current architecture out of <c>ldconfig -p</c> output;
        /// returns null when it is not listed. <paramref name="fileExists"/> filters out stale cache entries.
        /// </summary>
        public static string? ParseLdconfigOutput(string output, string libraryName, string architectureTag, Func<string, bool> fileExists)
        {
            foreach (string rawLine in output.Split(new[] { '\n' }, StringSplitOptions.RemoveEmptyEntries))
            {
                string line = rawLine.Trim();
                if (!line.StartsWith(libraryName + " (", StringComparison.Ordinal))
                {
                    continue;
                }

                int arrow = line.IndexOf(" => ", StringComparison.Ordinal);
                int close = line.IndexOf(')');
                if (arrow < 0 || close < 0 || close > arrow)
                {
                    continue;
                }

                // e.g. "libc6,x86-64" or "libc6,AArch64"; 32-bit x86 entries carry no architecture tag.
                string tags = line.Substring(libraryName.Length + 2, close - libraryName.Length - 2);
                bool matches = architectureTag.Length > 0
                    ? tags.IndexOf(architectureTag, StringComparison.Ordinal) >= 0
                    : tags.IndexOf(',') < 0;
                string candidate = line.Substring(arrow + 4).Trim();
                if (matches && fileExists(candidate))
                {
                    return candidate;
                }
            }

            return null;
        }

        private static string? FindInLdconfigCache(string libraryName)
        {
            string[] programs = { "/sbin/ldconfig", "/usr/sbin/ldconfig", "/usr/bin/ldconfig", "/bin/ldconfig" };
            foreach (string program in programs)
            {
                if (!System.IO.File.Exists(program))
                {
                    continue;
                }

                try
                {
                    var start = new ProcessStartInfo(program, "-p")
                    {
                        RedirectStandardOutput = true,
                        RedirectStandardError = true,
                        UseShellExecute = false,
                        CreateNoWindow = true,
                    };
                    using (Process? process = Process.Start(start))
                    {
                        if (process == null)
                        {
                            continue;
                        }

                        process.ErrorDataReceived += (sender, e) => { };
                        process.BeginErrorReadLine();
                        string output = process.StandardOutput.ReadToEnd();
                        if (!process.WaitForExit(10000))
                        {
                            try
                            {
                                process.Kill();
                            }
                            catch (InvalidOperationException)
                            {
                            }

                            continue;
                        }

                        return ParseLdconfigOutput(output, libraryName, LdconfigArchitectureTag(), System.IO.File.Exists);
                    }
                }
                catch (Exception exception) when (exception is IOException || exception is InvalidOperationException || exception is System.ComponentModel.Win32Exception || exception is UnauthorizedAccessException)
                {
                    // Fall back to the usual directories.
                }
            }

            return null;
        }

        /// <summary>The tag <c>ldconfig -p</c> prints for libraries of the current process architecture.</summary>
        public static string LdconfigArchitectureTag()
        {
            switch (RuntimeInformation.ProcessArchitecture)
            {
                case Architecture.X64: return "x86-64";
                case Architecture.Arm64: return "AArch64";
                default: return string.Empty;
            }
        }

        /// <summary>The Debian multiarch directory name of the current process architecture.</summary>
        public static string MultiarchTriplet()
        {
            switch (RuntimeInformation.ProcessArchitecture)
            {
                case Architecture.Arm64: return "aarch64-linux-gnu";
                case Architecture.Arm: return "arm-linux-gnueabihf";
                case Architecture.X86: return "i386-linux-gnu";
                default: return "x86_64-linux-gnu";
            }
        }

        private static ElfVersionNeed? Find(IReadOnlyList<ElfVersionNeed> needs, string file, string version)
        {
            foreach (ElfVersionNeed need in needs)
            {
                if (string.Equals(need.File, file, StringComparison.Ordinal) && string.Equals(need.Version, version, StringComparison.Ordinal))
                {
                    return need;
                }
            }

            return null;
        }

        private sealed class SectionHeader
        {
            public SectionHeader(int index, uint type, long offset, long size, uint link, uint info)
            {
                Index = index;
                Type = type;
                Offset = offset;
                Size = size;
                Link = link;
                Info = info;
            }

            public int Index { get; }

            public uint Type { get; }

            public long Offset { get; }

            public long Size { get; }

            public uint Link { get; }

            public uint Info { get; }
        }

        /// <summary>Bounds-checked little-endian reader over a whole ELF64 image.</summary>
        private sealed class ElfImage
        {
            private readonly string _path;
            private readonly byte[] _data;
            private readonly List<SectionHeader> _sections = new List<SectionHeader>();

            public ElfImage(string path, byte[] data)
            {
                _path = path;
                _data = data;
                if (data.Length < 4 || data[0] != 0x7f || data[1] != (byte)'E' || data[2] != (byte)'L' || data[3] != (byte)'F')
                {
                    throw Error("missing ELF magic (\\x7fELF)");
                }

                if (data.Length < ElfHeaderSize)
                {
                    throw Error("file is truncated: " + data.Length + " bytes, shorter than the 64-byte ELF64 header");
                }

                if (data[4] != 2)
                {
                    throw Error("EI_CLASS is " + data[4] + ", expected 2 (ELFCLASS64)");
                }

                if (data[5] != 1)
                {
                    throw Error("EI_DATA is " + data[5] + ", expected 1 (ELFDATA2LSB, little endian)");
                }

                ulong rawSectionTable = U64(40);
                int entrySize = U16(58);
                if (rawSectionTable == 0)
                {
                    throw Error("no section header table (e_shoff is 0)");
                }

                if (rawSectionTable >= (ulong)data.Length)
                {
                    throw Error("section header table offset 0x" + rawSectionTable.ToString("x") + " is past the end of the file ("
                        + data.Length + " bytes); the file is truncated or corrupt");
                }

                long sectionTable = (long)rawSectionTable;

                if (entrySize < SectionHeaderSize)
                {
                    throw Error("e_shentsize is " + entrySize + ", expected at least " + SectionHeaderSize);
                }

                RequireRange(sectionTable, entrySize, data.Length, "section header 0");
                ulong count = U16(60);
                if (count == 0)
                {
                    // Extended numbering: the real count is in sh_size of section 0.
                    count = U64(sectionTable + 32);
                }

                if (count == 0 || count > (ulong)((data.Length - sectionTable) / entrySize))
                {
                    throw Error("section header table at 0x" + sectionTable.ToString("x") + " with " + count + " entries of " + entrySize
                        + " bytes extends past the end of the file (" + data.Length + " bytes); the file is truncated or corrupt");
                }

                for (int i = 0; i < (int)count; i++)
                {
                    long header = sectionTable + ((long)i * entrySize);
                    uint type = U32(header + 4);
                    ulong offset = U64(header + 24);
                    ulong size = U64(header + 32);
                    uint link = U32(header + 40);
                    uint info = U32(header + 44);
                    _sections.Add(new SectionHeader(i, type, offset > long.MaxValue ? long.MaxValue : (long)offset, size > long.MaxValue ? long.MaxValue : (long)size, link, info));
                }
            }

            public SectionHeader? FindSection(uint type)
            {
                foreach (SectionHeader section in _sections)
                {
                    if (section.Type == type)
                    {
                        RequireRange(section.Offset, section.Size, _data.Length, "section " + section.Index + " (type 0x" + type.ToString("x") + ")");
                        return section;
                    }
                }

                return null;
            }

            public SectionHeader LinkedStringTable(SectionHeader section, string name)
            {
                if (section.Link == 0 || section.Link >= _sections.Count)
                {
                    throw Error(name + " links to section " + section.Link + ", which does not exist");
                }

                SectionHeader strings = _sections[(int)section.Link];
                if (strings.Type != ShtStrtab)
                {
                    throw Error(name + " links to section " + section.Link + ", which is not a string table");
                }

                RequireRange(strings.Offset, strings.Size, _data.Length, "string table (section " + strings.Index + ")");
                return strings;
            }

            public string ReadString(SectionHeader strings, uint offset, string field)
            {
                if (offset >= strings.Size)
                {
                    throw Error(field + " offset " + offset + " is outside its string table (" + strings.Size + " bytes)");
                }

                long start = strings.Offset + offset;
                long end = strings.Offset + strings.Size;
                for (long i = start; i < end; i++)
                {
                    if (_data[i] == 0)
                    {
                        return Encoding.UTF8.GetString(_data, (int)start, (int)(i - start));
                    }
                }

                throw Error(field + " at string table offset " + offset + " is not NUL-terminated");
            }

            public void RequireRange(long offset, long length, long limit, string what)
            {
                if (offset < 0 || length < 0 || offset > limit || length > limit - offset || limit > _data.Length)
                {
                    throw Error(what + " at 0x" + offset.ToString("x") + " (" + length + " bytes) extends past its bounds (0x"
                        + limit.ToString("x") + "); the file is truncated or corrupt");
                }
            }

            public ushort U16(long offset)
            {
                RequireRange(offset, 2, _data.Length, "field");
                return (ushort)(_data[offset] | (_data[offset + 1] << 8));
            }

            public uint U32(long offset)
            {
                RequireRange(offset, 4, _data.Length, "field");
                return (uint)(_data[offset] | (_data[offset + 1] << 8) | (_data[offset + 2] << 16) | (_data[offset + 3] << 24));
            }

            public ulong U64(long offset)
            {
                return U32(offset) | ((ulong)U32(offset + 4) << 32);
            }

            public ElfFormatException Error(string problem)
            {
                return new ElfFormatException(_path, problem);
            }
        }
    }

#if !MLNET_COMPRESSION_LIBRARY
    /// <summary>
    /// MSBuild task: marks a libstdc++ symbol-version need of native libraries in the build or publish output as
    /// weak when the system libstdc++ does not define that version (Mode auto), always, or never.
    /// </summary>
    public sealed class MLNetCompressionPatchElfVersionNeed : Microsoft.Build.Utilities.Task
    {
        /// <summary>The native libraries to inspect (files that do not exist are ignored).</summary>
        [Microsoft.Build.Framework.Required]
        public Microsoft.Build.Framework.ITaskItem[] Files { get; set; } = new Microsoft.Build.Framework.ITaskItem[0];

        /// <summary><c>auto</c> (default), <c>always</c> or <c>never</c>.</summary>
        public string Mode { get; set; } = "auto";

        /// <summary>The needed library whose version need is made weak.</summary>
        public string LibraryName { get; set; } = "libstdc++.so.6";

        /// <summary>The version whose need is made weak.</summary>
        public string VersionName { get; set; } = "GLIBCXX_3.4.32";

        /// <summary>Overrides the system library probed in auto mode (for diagnostics and tests).</summary>
        public string SystemLibrary { get; set; } = string.Empty;

        /// <summary>The files this run changed.</summary>
        [Microsoft.Build.Framework.Output]
        public Microsoft.Build.Framework.ITaskItem[] PatchedFiles { get; set; } = new Microsoft.Build.Framework.ITaskItem[0];

        /// <inheritdoc />
        public override bool Execute()
        {
            string mode = (Mode ?? string.Empty).Trim().ToLowerInvariant();
            if (mode.Length == 0)
            {
                mode = "auto";
            }

            if (mode != "auto" && mode != "always" && mode != "never")
            {
                Log.LogError("MLNetCompressionPatchTorchSharp must be 'auto', 'always' or 'never', not '" + Mode + "'.");
                return false;
            }

            var patched = new List<Microsoft.Build.Framework.ITaskItem>();
            string? reason = null;
            bool? shouldPatch = null;
            foreach (Microsoft.Build.Framework.ITaskItem item in Files)
            {
                string path = item.GetMetadata("FullPath");
                if (path.Length == 0 || !System.IO.File.Exists(path))
                {
                    continue;
                }

                ElfVersionNeed? need;
                try
                {
                    need = ElfVersionNeedPatcher.FindVersionNeed(path, LibraryName, VersionName);
                }
                catch (ElfFormatException exception)
                {
                    Log.LogWarning("MLNet.Compression: cannot inspect " + path + ": " + exception.Message);
                    continue;
                }

                if (need == null)
                {
                    Log.LogMessage(Microsoft.Build.Framework.MessageImportance.Normal,
                        "MLNet.Compression: " + path + " does not need " + LibraryName + " " + VersionName + "; left unchanged.");
                    continue;
                }

                if (need.IsWeak)
                {
                    Log.LogMessage(Microsoft.Build.Framework.MessageImportance.Normal,
                        "MLNet.Compression: " + path + " already has a weak need on " + LibraryName + " " + VersionName + "; left unchanged.");
                    continue;
                }

                if (shouldPatch == null)
                {
                    shouldPatch = Decide(mode, out reason);
                }

                if (shouldPatch != true)
                {
                    Log.LogMessage(Microsoft.Build.Framework.MessageImportance.Normal,
                        "MLNet.Compression: not patching " + path + ": " + reason);
                    continue;
                }

                try
                {
                    if (ElfVersionNeedPatcher.MarkVersionNeedWeak(path, LibraryName, VersionName))
                    {
                        patched.Add(new Microsoft.Build.Utilities.TaskItem(path));
                        Log.LogMessage(Microsoft.Build.Framework.MessageImportance.Normal,
                            "MLNet.Compression: marked the " + LibraryName + " " + VersionName + " version need of " + path
                            + " as weak (" + reason + "); the symbol needing it, std::ios_base_library_init(), is a link-time marker that is never called.");
                    }
                }
                catch (Exception exception) when (exception is ElfFormatException || exception is IOException || exception is UnauthorizedAccessException)
                {
                    Log.LogWarning("MLNet.Compression: could not patch " + path + ": " + exception.Message);
                }
            }

            PatchedFiles = patched.ToArray();
            return !Log.HasLoggedErrors;
        }

        private bool Decide(string mode, out string reason)
        {
            if (mode == "never")
            {
                reason = "MLNetCompressionPatchTorchSharp is 'never'";
                return false;
            }

            if (mode == "always")
            {
                reason = "MLNetCompressionPatchTorchSharp is 'always'";
                return true;
            }

            string? system = SystemLibrary.Length > 0 ? SystemLibrary : ElfVersionNeedPatcher.FindSystemLibrary(LibraryName);
            if (system == null || !System.IO.File.Exists(system))
            {
                Log.LogWarning("MLNet.Compression: could not find the system " + LibraryName + "; marking the " + VersionName
                    + " need of TorchSharp's native library as weak anyway (harmless where that version exists). Set MLNetCompressionPatchTorchSharp to 'never' to turn this off.");
                reason = "the system " + LibraryName + " was not found";
                return true;
            }

            try
            {
                if (ElfVersionNeedPatcher.DefinesVersion(system, VersionName))
                {
                    reason = "the system " + system + " defines " + VersionName;
                    return false;
                }
            }
            catch (ElfFormatException exception)
            {
                Log.LogWarning("MLNet.Compression: cannot read " + system + " (" + exception.Message + "); patching anyway.");
                reason = "the system " + LibraryName + " could not be read";
                return true;
            }

            reason = "the system " + system + " does not define " + VersionName;
            return true;
        }
    }
#endif
}
