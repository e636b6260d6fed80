package archive_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/archive"
)

// manifest is a minimal plugin.json for test packages.
const manifest = `{"id":"analytics-plugin","version":"1.0.0","entry_point":"bin/analytics-plugin"}`

// entry is one entry of a test archive.
type entry struct {
	hdr  tar.Header
	body []byte
}

func file(name, body string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, body: []byte(body)}
}

func fileMode(name, body string, mode int64) entry {
	e := file(name, body)
	e.hdr.Mode = mode
	return e
}

func dir(name string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

func symlink(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

func hardlink(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}}
}

func special(name string, flag byte) entry {
	return entry{hdr: tar.Header{Typeflag: flag, Name: name, Mode: 0o644, Devmajor: 1, Devminor: 3}}
}

// manifestEntry is plugin.json at the root.
func manifestEntry() entry { return file("plugin.json", manifest) }

// tarBytes returns an uncompressed tar archive of entries.
func tarBytes(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := e.hdr
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatalf("writing header %q: %v", hdr.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatalf("writing %q: %v", hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gzipBytes compresses data.
func gzipBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pkg returns a package (.tar.gz) of entries.
func pkg(t testing.TB, entries ...entry) []byte {
	t.Helper()
	return gzipBytes(t, tarBytes(t, entries...))
}

// rawHeader returns a hand-made ustar header block, for headers that tar.Writer refuses to
// write. size is written to the size field as given.
func rawHeader(name string, flag byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], fmt.Sprintf("%011o\x00", 0))
	b[156] = flag
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// paxRecord returns one PAX extended header record.
func paxRecord(key, value string) string {
	rec := " " + key + "=" + value + "\n"
	n := len(rec)
	for {
		s := strconv.Itoa(n) + rec
		if len(s) == n {
			return s
		}
		n = len(s)
	}
}

// padBlock pads data to a multiple of the tar block size.
func padBlock(data []byte) []byte {
	if r := len(data) % 512; r != 0 {
		data = append(data, make([]byte, 512-r)...)
	}
	return data
}

// rawTar joins hand-made blocks and ends the archive.
func rawTar(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, padBlock(p)...)
	}
	return append(out, make([]byte, 1024)...)
}

// smallLimits are limits that tests can exceed cheaply.
func smallLimits() archive.Limits {
	return archive.Limits{
		MaxPackageBytes:  1 << 20,
		MaxTotalBytes:    1 << 20,
		MaxFileBytes:     512 << 10,
		MaxFiles:         64,
		MaxManifestBytes: 4 << 10,
	}
}

// assertFailedCleanly checks that a failed extraction left nothing in parent: no dest, no
// temporary directory.
func assertFailedCleanly(t testing.TB, parent, dest string) {
	t.Helper()
	if _, err := os.Lstat(dest); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("destination exists after a failed extraction (Lstat: %v)", err)
	}
	left, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("left behind in the parent directory: %s", e.Name())
	}
}

// assertArchiveError checks that err is an *archive.Error of kind want whose message holds
// no host path.
func assertArchiveError(t testing.TB, err, want error, hostPath string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want kind %v", err, want)
	}
	var ae *archive.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T) is not an *archive.Error", err, err)
	}
	if hostPath != "" && strings.Contains(err.Error(), hostPath) {
		t.Errorf("error message %q holds the host path %q", err, hostPath)
	}
}

// newDest returns a fresh parent directory and a destination inside it.
func newDest(t testing.TB) (parent, dest string) {
	t.Helper()
	parent = t.TempDir()
	return parent, filepath.Join(parent, "analytics-plugin")
}
