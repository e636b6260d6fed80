// Package archive reads, extracts and builds Nexus plugin packages.
//
// A package is a gzip-compressed tar archive (.tar.gz) whose root holds plugin.json, the
// manifest, next to the plugin's files (for example bin/analytics-plugin, the entry point).
// Packages come from untrusted sources, so Extract and ReadManifest treat every byte as
// hostile and refuse, with an *Error naming the entry, anything that could write outside the
// destination or exhaust the host:
//
//   - entry names that are empty, absolute, hold "..", a backslash, a drive letter ("C:"),
//     a NUL byte, or are longer than 4096 bytes (255 per element); "./" prefixes and "."
//     elements are accepted and dropped, as tar -C dir . writes them;
//   - entries of any type but regular file, directory, symlink and hard link (devices,
//     FIFOs, old GNU sparse files, ...); PAX and GNU metadata headers are understood;
//   - a path that appears twice, or an entry written below a file or a symlink of the package
//     (nothing is ever written through a symlink);
//   - symlinks whose target is absolute or climbs above the package root. A target must be
//     canonical: its ".." elements, if any, come first (../../lib/x is accepted, a/../b is
//     not), so that checking it does not depend on which other entries are symlinks;
//   - packages, files and extracted totals beyond Limits, counted on the bytes actually read
//     and written (a header's size is only used to fail early), and more entries than
//     Limits.MaxFiles;
//   - input that is not one well-formed gzip stream of one tar archive: bytes after the end
//     of the tar archive must be zero padding, and bytes after the gzip stream must be more
//     gzip members (their contents count as padding) or nothing.
//
// Decisions worth knowing:
//
//   - Hard links are accepted only when they name a regular file that an earlier entry of
//     the same package created. They are extracted as independent copies, which count
//     against the size limits like any other file.
//   - When plugin.json is not at the root but the whole package is wrapped in one top-level
//     directory holding it (analytics-plugin/plugin.json, analytics-plugin/bin/...), that
//     directory is stripped: its contents become the root. A symlink in such a package may
//     then not climb up to the wrapper's level.
//   - Extracted files get mode 0755 when the archive gives them any execute bit and 0644
//     otherwise; directories get 0755. Setuid, setgid, sticky and group or world write bits
//     are never kept, nor owners, modification times or extended attributes.
//
// Extract unpacks into a new temporary directory next to the destination, named
// ".extract-*", and renames it into place only when everything succeeded, so a failure leaves
// nothing behind. A process that dies mid-extraction leaves that temporary directory; the
// caller that owns the parent directory may remove stale ".extract-*" entries at start-up.
// Extract does not fsync what it writes: the rename protects against a process that dies,
// not against a power loss.
//
// Create builds a package from a directory, deterministically, with the same rules.
package archive

// Limits bounds the resources that reading one package may use. A zero or negative field
// means the value from DefaultLimits.
type Limits struct {
	// MaxPackageBytes bounds the compressed input, as read.
	MaxPackageBytes int64
	// MaxTotalBytes bounds the sum of the sizes of all extracted files. The uncompressed
	// stream as a whole is bounded by MaxTotalBytes plus an allowance per entry for tar
	// headers and padding.
	MaxTotalBytes int64
	// MaxFileBytes bounds the size of any one extracted file.
	MaxFileBytes int64
	// MaxFiles bounds the number of entries of any kind (files, directories, links, global
	// metadata headers), counting too the directories that entry names imply without an
	// entry of their own.
	MaxFiles int
	// MaxManifestBytes bounds the size of plugin.json.
	MaxManifestBytes int64
}

// DefaultLimits returns limits suited to plugin packages: 64 MiB compressed, 512 MiB
// extracted, 256 MiB per file, 10000 entries and a 1 MiB manifest.
func DefaultLimits() Limits {
	return Limits{
		MaxPackageBytes:  64 << 20,
		MaxTotalBytes:    512 << 20,
		MaxFileBytes:     256 << 20,
		MaxFiles:         10000,
		MaxManifestBytes: 1 << 20,
	}
}

// withDefaults returns l with every unset field taken from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxPackageBytes <= 0 {
		l.MaxPackageBytes = d.MaxPackageBytes
	}
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = d.MaxTotalBytes
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = d.MaxFileBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxManifestBytes <= 0 {
		l.MaxManifestBytes = d.MaxManifestBytes
	}
	return l
}

// Result describes a package that Extract unpacked.
type Result struct {
	// Manifest is the raw content of plugin.json.
	Manifest []byte
	// SHA256 is the lower-case hex SHA-256 digest of the compressed input, as read.
	SHA256 string
	// Size is the number of bytes of compressed input read.
	Size int64
	// Files is the number of regular files extracted (hard links included).
	Files int
	// TotalBytes is the sum of the sizes of the extracted files.
	TotalBytes int64
	// StrippedDir is the name of the top-level directory that wrapped the package and was
	// stripped, or empty when plugin.json was at the root.
	StrippedDir string
}
