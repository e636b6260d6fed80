package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/archive"
)

// hostileCase is a package that Extract and ReadManifest must refuse.
type hostileCase struct {
	name  string
	data  func(t testing.TB) []byte
	lim   archive.Limits // zero means smallLimits
	want  error
	entry string // when set, the error message must quote this entry name
}

// entries returns a data function for a package of entries.
func entries(es ...entry) func(testing.TB) []byte {
	return func(t testing.TB) []byte { return pkg(t, es...) }
}

// randomBytes returns n incompressible bytes.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(b)
	return b
}

func hostileCases() []hostileCase {
	return []hostileCase{
		// Paths.
		{name: "absolute path", data: entries(manifestEntry(), file("/etc/passwd", "x")),
			want: archive.ErrUnsafePath, entry: "/etc/passwd"},
		{name: "dot-dot", data: entries(manifestEntry(), file("../evil", "x")),
			want: archive.ErrUnsafePath, entry: "../evil"},
		{name: "dot-dot inside the name", data: entries(manifestEntry(), file("bin/../../evil", "x")),
			want: archive.ErrUnsafePath, entry: "bin/../../evil"},
		{name: "dot-dot that stays inside", data: entries(manifestEntry(), file("bin/../evil", "x")),
			want: archive.ErrUnsafePath},
		{name: "backslash", data: entries(manifestEntry(), file(`..\..\evil`, "x")),
			want: archive.ErrUnsafePath},
		{name: "drive letter", data: entries(manifestEntry(), file("C:/Windows/evil", "x")),
			want: archive.ErrUnsafePath},
		{name: "empty name", data: func(t testing.TB) []byte {
			return gzipBytes(t, rawTar(rawHeader("", '0', 0)))
		}, want: archive.ErrUnsafePath},
		{name: "file named dot", data: entries(manifestEntry(), file(".", "x")),
			want: archive.ErrUnsafePath},
		{name: "NUL byte in a PAX path", data: func(t testing.TB) []byte {
			rec := paxRecord("path", "bin/x\x00/../../evil")
			return gzipBytes(t, rawTar(rawHeader("PaxHeaders/x", 'x', int64(len(rec))), []byte(rec),
				rawHeader("x", '0', 0)))
		}, want: archive.ErrCorrupt},
		{name: "long element", data: entries(manifestEntry(), file(strings.Repeat("a", 256), "x")),
			want: archive.ErrUnsafePath},

		// Symlinks.
		{name: "symlink absolute", data: entries(manifestEntry(), symlink("etc", "/etc")),
			want: archive.ErrLinkEscape, entry: "etc"},
		{name: "symlink relative escape", data: entries(manifestEntry(), symlink("bin/up", "../../etc")),
			want: archive.ErrLinkEscape, entry: "bin/up"},
		{name: "symlink to parent of root", data: entries(manifestEntry(), symlink("up", "..")),
			want: archive.ErrLinkEscape},
		{name: "symlink dot-dot after a name", data: entries(manifestEntry(), dir("d/"),
			symlink("d/link", "."), symlink("esc", "d/link/../..")),
			want: archive.ErrLinkEscape, entry: "esc"},
		{name: "symlink through a later symlink", data: entries(manifestEntry(), dir("d/"),
			symlink("esc", "d/x/../.."), symlink("d/x", ".")),
			want: archive.ErrLinkEscape, entry: "esc"},
		{name: "write through symlink", data: entries(manifestEntry(), dir("bin/"),
			symlink("link", "bin"), file("link/x", "x")),
			want: archive.ErrUnsafePath, entry: "link/x"},
		{name: "write through escaping symlink", data: func(t testing.TB) []byte {
			// tar.Writer writes it; Extract must refuse the link before anything goes through it.
			return pkg(t, manifestEntry(), symlink("link", "../.."), file("link/x", "x"))
		}, want: archive.ErrLinkEscape, entry: "link"},
		{name: "write through dir/link to dot", data: entries(manifestEntry(), dir("dir/"),
			symlink("dir/link", "."), file("dir/link/x", "x")),
			want: archive.ErrUnsafePath, entry: "dir/link/x"},
		{name: "file replaces symlink", data: entries(manifestEntry(), symlink("bin", "lib"),
			file("bin", "x")),
			want: archive.ErrDuplicateEntry, entry: "bin"},
		{name: "symlink in stripped wrapper climbs to its level", data: entries(
			file("wrap/plugin.json", manifest), symlink("wrap/l", "../wrap/bin")),
			want: archive.ErrLinkEscape, entry: "wrap/l"},

		// Hard links.
		{name: "hard link absolute", data: entries(manifestEntry(), hardlink("passwd", "/etc/passwd")),
			want: archive.ErrLinkEscape, entry: "passwd"},
		{name: "hard link escape", data: entries(manifestEntry(), hardlink("passwd", "../../etc/passwd")),
			want: archive.ErrLinkEscape, entry: "passwd"},
		{name: "hard link to a missing file", data: entries(manifestEntry(), hardlink("x", "nowhere")),
			want: archive.ErrLinkEscape},
		{name: "hard link to a symlink", data: entries(manifestEntry(), symlink("l", "plugin.json"),
			hardlink("x", "l")),
			want: archive.ErrLinkEscape},
		{name: "hard link to a later file", data: entries(manifestEntry(), hardlink("x", "y"),
			file("y", "y")),
			want: archive.ErrLinkEscape},
		{name: "hard link through a symlink", data: entries(manifestEntry(), dir("d/"), file("d/f", "f"),
			symlink("s", "d"), hardlink("x", "s/f")),
			want: archive.ErrLinkEscape},

		// Types.
		{name: "character device", data: entries(manifestEntry(), special("null", tar.TypeChar)),
			want: archive.ErrUnsupportedType, entry: "null"},
		{name: "block device", data: entries(manifestEntry(), special("sda", tar.TypeBlock)),
			want: archive.ErrUnsupportedType},
		{name: "FIFO", data: entries(manifestEntry(), special("fifo", tar.TypeFifo)),
			want: archive.ErrUnsupportedType, entry: "fifo"},
		{name: "contiguous file", data: func(t testing.TB) []byte {
			return gzipBytes(t, rawTar(rawHeader("plugin.json", '0', 0), rawHeader("c", tar.TypeCont, 0)))
		}, want: archive.ErrUnsupportedType},

		// Duplicates and conflicts.
		{name: "duplicate file", data: entries(manifestEntry(), file("a", "1"), file("a", "2")),
			want: archive.ErrDuplicateEntry, entry: "a"},
		{name: "duplicate after cleaning", data: entries(manifestEntry(), file("a", "1"), file("./a", "2")),
			want: archive.ErrDuplicateEntry},
		{name: "duplicate manifest", data: entries(manifestEntry(), manifestEntry()),
			want: archive.ErrDuplicateEntry},
		{name: "file where a directory is", data: entries(manifestEntry(), dir("bin/"), file("bin", "x")),
			want: archive.ErrDuplicateEntry},
		{name: "directory where a file is", data: entries(manifestEntry(), file("bin", "x"), dir("bin/")),
			want: archive.ErrDuplicateEntry},
		{name: "file below a file", data: entries(manifestEntry(), file("bin", "x"), file("bin/x", "x")),
			want: archive.ErrUnsafePath},
		{name: "duplicate directory", data: entries(manifestEntry(), dir("bin/"), dir("bin/")),
			want: archive.ErrDuplicateEntry},

		// Limits.
		{name: "too many files", data: func(t testing.TB) []byte {
			es := []entry{manifestEntry()}
			for i := range 10 {
				es = append(es, file("f"+string(rune('a'+i)), "x"))
			}
			return pkg(t, es...)
		}, lim: archive.Limits{MaxFiles: 5}, want: archive.ErrTooManyFiles},
		{name: "too many implied directories", data: entries(manifestEntry(), file("a/b/c/d/e/f/g/h", "x")),
			lim: archive.Limits{MaxFiles: 5}, want: archive.ErrTooManyFiles},
		{name: "file too large", data: entries(manifestEntry(), file("big", string(make([]byte, 600<<10)))),
			want: archive.ErrTooLarge, entry: "big"},
		{name: "file too large behind a lying ustar size", data: func(t testing.TB) []byte {
			// The ustar size field says 0; a PAX record says 600 KiB, which is what follows.
			rec := paxRecord("size", "614400")
			return gzipBytes(t, rawTar(
				rawHeader("plugin.json", '0', 0),
				rawHeader("PaxHeaders/big", 'x', int64(len(rec))), []byte(rec),
				rawHeader("big", '0', 0), make([]byte, 600<<10)))
		}, want: archive.ErrTooLarge, entry: "big"},
		{name: "total too large", data: func(t testing.TB) []byte {
			es := []entry{manifestEntry()}
			for _, name := range []string{"a", "b", "c"} {
				es = append(es, file(name, string(make([]byte, 400<<10))))
			}
			return pkg(t, es...)
		}, want: archive.ErrTooLarge, entry: "c"},
		{name: "hard links beyond the total", data: entries(manifestEntry(),
			file("a", string(make([]byte, 400<<10))), hardlink("b", "a"), hardlink("c", "a")),
			want: archive.ErrTooLarge, entry: "c"},
		{name: "compressed package too large", data: entries(manifestEntry(),
			file("random", string(randomBytes(64<<10)))),
			lim: archive.Limits{MaxPackageBytes: 16 << 10}, want: archive.ErrTooLarge},
		{name: "manifest too large", data: entries(file("plugin.json", strings.Repeat(" ", 5<<10))),
			want: archive.ErrTooLarge, entry: "plugin.json"},
		{name: "wrapped manifest too large", data: entries(file("w/plugin.json", strings.Repeat(" ", 5<<10))),
			want: archive.ErrTooLarge, entry: "w/plugin.json"},

		// Manifest.
		{name: "missing plugin.json", data: entries(file("bin/analytics-plugin", "x")),
			want: archive.ErrNoManifest},
		{name: "empty archive", data: entries(),
			want: archive.ErrNoManifest},
		{name: "plugin.json is a directory", data: entries(dir("plugin.json/"), file("plugin.json/x", "x")),
			want: archive.ErrNoManifest},
		{name: "plugin.json is a symlink", data: entries(file("m.json", manifest), symlink("plugin.json", "m.json")),
			want: archive.ErrNoManifest},
		{name: "plugin.json is a hard link", data: entries(file("m.json", manifest), hardlink("plugin.json", "m.json")),
			want: archive.ErrNoManifest},
		{name: "plugin.json nested without a single wrapper", data: entries(file("a/plugin.json", manifest),
			file("b/x", "x")),
			want: archive.ErrNoManifest},
		{name: "plugin.json two levels down", data: entries(file("a/b/plugin.json", manifest)),
			want: archive.ErrNoManifest},

		// Compression and framing.
		{name: "not gzip", data: func(t testing.TB) []byte { return tarBytes(t, manifestEntry()) },
			want: archive.ErrCorrupt},
		{name: "empty input", data: func(testing.TB) []byte { return nil },
			want: archive.ErrCorrupt},
		{name: "random bytes", data: func(testing.TB) []byte { return randomBytes(4096) },
			want: archive.ErrCorrupt},
		{name: "truncated gzip", data: func(t testing.TB) []byte {
			p := pkg(t, manifestEntry(), file("x", string(randomBytes(8<<10))))
			return p[:len(p)/2]
		}, want: archive.ErrCorrupt},
		{name: "bad gzip checksum", data: func(t testing.TB) []byte {
			p := pkg(t, manifestEntry())
			p[len(p)-6] ^= 0xff // in the CRC-32 of the trailer
			return p
		}, want: archive.ErrCorrupt},
		{name: "not tar inside gzip", data: func(t testing.TB) []byte {
			return gzipBytes(t, []byte(strings.Repeat("not a tar archive ", 100)))
		}, want: archive.ErrCorrupt},
		{name: "garbage after gzip", data: func(t testing.TB) []byte {
			return append(pkg(t, manifestEntry()), "trailing garbage"...)
		}, want: archive.ErrCorrupt},
		{name: "second package concatenated", data: func(t testing.TB) []byte {
			return append(pkg(t, manifestEntry()), pkg(t, file("evil", "x"))...)
		}, want: archive.ErrCorrupt},
		{name: "data after the tar end marker", data: func(t testing.TB) []byte {
			return gzipBytes(t, append(tarBytes(t, manifestEntry()), "hidden"...))
		}, want: archive.ErrCorrupt},
	}
}

func TestExtractRefusesHostilePackages(t *testing.T) {
	t.Parallel()
	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lim := tc.lim
			if lim == (archive.Limits{}) {
				lim = smallLimits()
			}
			data := tc.data(t)
			parent, dest := newDest(t)
			res, err := archive.Extract(t.Context(), bytes.NewReader(data), dest, lim)
			if res != nil {
				t.Errorf("got a result with an error")
			}
			assertArchiveError(t, err, tc.want, parent)
			if tc.entry != "" && !strings.Contains(err.Error(), `"`+tc.entry+`"`) {
				t.Errorf("error %q does not name entry %q", err, tc.entry)
			}
			assertFailedCleanly(t, parent, dest)

			// ReadManifest applies the same rules.
			m, sum, err := archive.ReadManifest(bytes.NewReader(data), lim)
			if m != nil || sum != "" {
				t.Errorf("ReadManifest returned a manifest or digest with an error")
			}
			assertArchiveError(t, err, tc.want, "")
		})
	}
}

func TestExtract(t *testing.T) {
	t.Parallel()
	type want struct {
		path   string
		mode   fs.FileMode // type and permission bits
		body   string      // for files
		target string      // for symlinks
	}
	tests := []struct {
		name     string
		entries  []entry
		files    int
		stripped string
		want     []want
	}{{
		name: "plain package",
		entries: []entry{manifestEntry(), dir("bin/"), fileMode("bin/analytics-plugin", "#!/bin/sh\n", 0o755),
			file("README.md", "hello")},
		files: 3,
		want: []want{
			{path: "plugin.json", mode: 0o644, body: manifest},
			{path: "bin", mode: fs.ModeDir | 0o755},
			{path: "bin/analytics-plugin", mode: 0o755, body: "#!/bin/sh\n"},
			{path: "README.md", mode: 0o644, body: "hello"},
		},
	}, {
		name: "dangerous mode bits are dropped",
		entries: []entry{manifestEntry(), fileMode("setuid", "x", 0o4755), fileMode("setgid", "x", 0o2711),
			fileMode("sticky", "x", 0o1644), fileMode("world-writable", "x", 0o666),
			fileMode("all", "x", 0o7777), fileMode("private", "x", 0o600),
			{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o7777}}},
		files: 7,
		want: []want{
			{path: "setuid", mode: 0o755, body: "x"},
			{path: "setgid", mode: 0o755, body: "x"},
			{path: "sticky", mode: 0o644, body: "x"},
			{path: "world-writable", mode: 0o644, body: "x"},
			{path: "all", mode: 0o755, body: "x"},
			{path: "private", mode: 0o644, body: "x"},
			{path: "d", mode: fs.ModeDir | 0o755},
		},
	}, {
		name: "dot-slash prefixes as tar -C dir . writes them",
		entries: []entry{dir("./"), file("./plugin.json", manifest), dir("./bin/"),
			fileMode("./bin/analytics-plugin", "x", 0o755)},
		files: 2,
		want: []want{
			{path: "plugin.json", mode: 0o644, body: manifest},
			{path: "bin/analytics-plugin", mode: 0o755, body: "x"},
		},
	}, {
		name: "single top-level directory is stripped",
		entries: []entry{dir("analytics-plugin/"), file("analytics-plugin/plugin.json", manifest),
			fileMode("analytics-plugin/bin/analytics-plugin", "x", 0o755),
			symlink("analytics-plugin/bin/current", "analytics-plugin")},
		files:    2,
		stripped: "analytics-plugin",
		want: []want{
			{path: "plugin.json", mode: 0o644, body: manifest},
			{path: "bin/analytics-plugin", mode: 0o755, body: "x"},
			{path: "bin/current", mode: fs.ModeSymlink, target: "analytics-plugin"},
		},
	}, {
		name: "symlinks that stay inside",
		entries: []entry{manifestEntry(), file("lib/v1/data", "d"), symlink("lib/current", "v1"),
			symlink("bin/data", "../lib/current/data"), symlink("lib/v1/self", "."),
			symlink("lib/v1/up", "./../v1/"), symlink("dangling", "nowhere")},
		files: 2,
		want: []want{
			{path: "lib/current", mode: fs.ModeSymlink, target: "v1"},
			{path: "bin/data", mode: fs.ModeSymlink, target: "../lib/current/data"},
			{path: "lib/v1/self", mode: fs.ModeSymlink, target: "."},
			{path: "lib/v1/up", mode: fs.ModeSymlink, target: "../v1"},
			{path: "dangling", mode: fs.ModeSymlink, target: "nowhere"},
		},
	}, {
		name: "hard link to an earlier file is copied",
		entries: []entry{manifestEntry(), fileMode("bin/a", "tool", 0o755), hardlink("bin/b", "bin/a"),
			hardlink("c", "./bin/a")},
		files: 4,
		want: []want{
			{path: "bin/a", mode: 0o755, body: "tool"},
			{path: "bin/b", mode: 0o755, body: "tool"},
			{path: "c", mode: 0o755, body: "tool"},
		},
	}, {
		name:    "directory entry after its contents",
		entries: []entry{manifestEntry(), file("bin/x", "x"), dir("bin/")},
		files:   2,
		want:    []want{{path: "bin", mode: fs.ModeDir | 0o755}},
	}, {
		name:    "PAX global header is ignored",
		entries: []entry{{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "git"}}}, manifestEntry()},
		files:   1,
		want:    []want{{path: "plugin.json", mode: 0o644, body: manifest}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data := pkg(t, tc.entries...)
			_, dest := newDest(t)
			res, err := archive.Extract(t.Context(), bytes.NewReader(data), dest, smallLimits())
			if err != nil {
				t.Fatalf("Extract: %v", err)
			}
			digest := sha256.Sum256(data)
			if res.SHA256 != hex.EncodeToString(digest[:]) || res.Size != int64(len(data)) {
				t.Errorf("got digest %s of %d bytes, want %x of %d", res.SHA256, res.Size, digest, len(data))
			}
			if string(res.Manifest) != manifest {
				t.Errorf("got manifest %q", res.Manifest)
			}
			if res.Files != tc.files || res.StrippedDir != tc.stripped {
				t.Errorf("got %d files, stripped %q; want %d, %q", res.Files, res.StrippedDir, tc.files, tc.stripped)
			}
			for _, w := range tc.want {
				p := filepath.Join(dest, filepath.FromSlash(w.path))
				info, err := os.Lstat(p)
				if err != nil {
					t.Errorf("%s: %v", w.path, err)
					continue
				}
				if got := info.Mode() & (fs.ModeType | fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky); got&^fs.ModePerm == fs.ModeSymlink {
					if w.mode != fs.ModeSymlink {
						t.Errorf("%s: got a symlink, want mode %v", w.path, w.mode)
					}
				} else if got != w.mode {
					t.Errorf("%s: got mode %v, want %v", w.path, got, w.mode)
				}
				switch {
				case w.mode.IsRegular():
					b, err := os.ReadFile(p)
					if err != nil || string(b) != w.body {
						t.Errorf("%s: got %q (%v), want %q", w.path, b, err, w.body)
					}
				case w.mode == fs.ModeSymlink:
					target, err := os.Readlink(p)
					if err != nil || target != w.target {
						t.Errorf("%s: got target %q (%v), want %q", w.path, target, err, w.target)
					}
				}
			}
			m, sum, err := archive.ReadManifest(bytes.NewReader(data), smallLimits())
			if err != nil || string(m) != manifest || sum != res.SHA256 {
				t.Errorf("ReadManifest: got %q, %s, %v", m, sum, err)
			}
		})
	}
}

func TestExtractDestination(t *testing.T) {
	t.Parallel()
	data := pkg(t, manifestEntry())
	t.Run("exists", func(t *testing.T) {
		t.Parallel()
		parent, dest := newDest(t)
		if err := os.Mkdir(dest, 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := archive.Extract(t.Context(), bytes.NewReader(data), dest, smallLimits())
		assertArchiveError(t, err, archive.ErrIO, parent)
		if !errors.Is(err, fs.ErrExist) {
			t.Errorf("got %v, want fs.ErrExist", err)
		}
		if left, _ := os.ReadDir(parent); len(left) != 1 {
			t.Errorf("got %d entries in the parent, want only dest", len(left))
		}
	})
	t.Run("exists as a dangling symlink", func(t *testing.T) {
		t.Parallel()
		parent, dest := newDest(t)
		if err := os.Symlink("nowhere", dest); err != nil {
			t.Fatal(err)
		}
		_, err := archive.Extract(t.Context(), bytes.NewReader(data), dest, smallLimits())
		assertArchiveError(t, err, archive.ErrIO, parent)
	})
	t.Run("parent missing", func(t *testing.T) {
		t.Parallel()
		parent := t.TempDir()
		_, err := archive.Extract(t.Context(), bytes.NewReader(data), filepath.Join(parent, "no", "dest"), smallLimits())
		assertArchiveError(t, err, archive.ErrIO, parent)
	})
	t.Run("trailing slash", func(t *testing.T) {
		t.Parallel()
		parent, dest := newDest(t)
		if _, err := archive.Extract(t.Context(), bytes.NewReader(data), dest+"/", smallLimits()); err != nil {
			t.Fatal(err)
		}
		if left, _ := os.ReadDir(parent); len(left) != 1 || left[0].Name() != filepath.Base(dest) {
			t.Errorf("got %v in the parent, want only dest", left)
		}
		info, err := os.Stat(dest)
		if err != nil || info.Mode().Perm() != 0o755 {
			t.Errorf("dest: %v, %v; want mode 0755", info, err)
		}
	})
}

// cancellingReader cancels a context once it has been read from.
type cancellingReader struct {
	r      *bytes.Reader
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.cancel()
	return n, err
}

func TestExtractCancellation(t *testing.T) {
	t.Parallel()
	es := []entry{manifestEntry()}
	for i := range 16 {
		es = append(es, file("data/"+string(rune('a'+i)), string(randomBytes(32<<10))))
	}
	data := pkg(t, es...)
	t.Run("before the start", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		parent, dest := newDest(t)
		_, err := archive.Extract(ctx, bytes.NewReader(data), dest, archive.DefaultLimits())
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		assertFailedCleanly(t, parent, dest)
	})
	t.Run("midway", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		parent, dest := newDest(t)
		r := &cancellingReader{r: bytes.NewReader(data), cancel: cancel}
		_, err := archive.Extract(ctx, r, dest, archive.DefaultLimits())
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		if r.r.Len() == 0 {
			t.Errorf("the whole input was read despite the cancellation")
		}
		assertFailedCleanly(t, parent, dest)
	})
}
