package archive_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/archive"
)

// fuzzLimits keeps each fuzz run cheap.
func fuzzLimits() archive.Limits {
	return archive.Limits{
		MaxPackageBytes:  256 << 10,
		MaxTotalBytes:    256 << 10,
		MaxFileBytes:     64 << 10,
		MaxFiles:         32,
		MaxManifestBytes: 4 << 10,
	}
}

// fuzzSeeds adds a valid package and hostile ones, each both compressed and as a bare tar
// archive (which the targets compress, so that mutations reach the tar layer).
func fuzzSeeds(f *testing.F) {
	seeds := [][]entry{
		{manifestEntry(), dir("bin/"), fileMode("bin/analytics-plugin", "#!/bin/sh\n", 0o755),
			symlink("bin/current", "analytics-plugin"), hardlink("bin/copy", "bin/analytics-plugin")},
		{dir("w/"), file("w/plugin.json", manifest), symlink("w/l", "../w/x")},
		{manifestEntry(), file("/etc/passwd", "x")},
		{manifestEntry(), file("../evil", "x")},
		{manifestEntry(), symlink("link", "../.."), file("link/x", "x")},
		{manifestEntry(), dir("d/"), symlink("d/link", "."), symlink("esc", "d/link/../..")},
		{manifestEntry(), hardlink("passwd", "../../etc/passwd")},
		{manifestEntry(), special("fifo", '6')},
		{manifestEntry(), file("a", "1"), file("a", "2")},
		{manifestEntry(), fileMode("s", "x", 0o4777)},
	}
	for _, es := range seeds {
		raw := tarBytes(f, es...)
		f.Add(raw)
		f.Add(gzipBytes(f, raw))
	}
	f.Add([]byte{})
	f.Add([]byte{0x1f, 0x8b})
}

// fuzzInput returns data if it looks compressed, and data compressed otherwise.
func fuzzInput(t *testing.T, data []byte) []byte {
	if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
		return data
	}
	return gzipBytes(t, data)
}

func FuzzExtract(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		input := fuzzInput(t, data)
		parent, dest := newDest(t)
		res, err := archive.Extract(t.Context(), bytes.NewReader(input), dest, fuzzLimits())
		manifest, digest, rmErr := archive.ReadManifest(bytes.NewReader(input), fuzzLimits())

		if err != nil {
			var ae *archive.Error
			if !errors.As(err, &ae) {
				t.Fatalf("error %v (%T) is not an *archive.Error", err, err)
			}
			if errors.Is(err, archive.ErrIO) {
				t.Fatalf("host error on package input: %v", err)
			}
			if strings.Contains(err.Error(), parent) {
				t.Fatalf("error %q holds the host path", err)
			}
			if rmErr == nil || !errors.Is(rmErr, ae.Kind) {
				t.Fatalf("Extract failed with %v but ReadManifest gave %v", err, rmErr)
			}
			assertFailedCleanly(t, parent, dest)
			return
		}
		if rmErr != nil {
			t.Fatalf("Extract succeeded but ReadManifest failed: %v", rmErr)
		}
		if !bytes.Equal(manifest, res.Manifest) || digest != res.SHA256 {
			t.Fatalf("ReadManifest and Extract disagree")
		}
		sum := sha256.Sum256(input)
		if res.SHA256 != hex.EncodeToString(sum[:]) || res.Size != int64(len(input)) {
			t.Fatalf("digest %s of %d bytes does not cover the input", res.SHA256, res.Size)
		}
		if int64(len(res.Manifest)) > fuzzLimits().MaxManifestBytes || res.TotalBytes > fuzzLimits().MaxTotalBytes {
			t.Fatalf("limits exceeded: %+v", res)
		}
		left, err := os.ReadDir(parent)
		if err != nil || len(left) != 1 {
			t.Fatalf("parent holds %v (%v), want only dest", left, err)
		}
		assertInside(t, dest)
	})
}

func FuzzReadManifest(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		input := fuzzInput(t, data)
		manifest, digest, err := archive.ReadManifest(bytes.NewReader(input), fuzzLimits())
		if err != nil {
			var ae *archive.Error
			if !errors.As(err, &ae) || errors.Is(err, archive.ErrIO) {
				t.Fatalf("unexpected error %v (%T)", err, err)
			}
			if manifest != nil || digest != "" {
				t.Fatal("got a manifest with an error")
			}
			return
		}
		sum := sha256.Sum256(input)
		if digest != hex.EncodeToString(sum[:]) {
			t.Fatalf("digest %s does not cover the input", digest)
		}
		if int64(len(manifest)) > fuzzLimits().MaxManifestBytes {
			t.Fatalf("manifest of %d bytes is beyond the limit", len(manifest))
		}
	})
}

// assertInside checks an extracted tree: only directories, regular files and symlinks, with
// safe modes, and no symlink that leads outside dest.
func assertInside(t *testing.T, dest string) {
	t.Helper()
	realDest, err := filepath.EvalSymlinks(dest)
	if err != nil {
		t.Fatal(err)
	}
	inside := func(p string) bool {
		rel, err := filepath.Rel(realDest, p)
		return err == nil && (rel == "." || filepath.IsLocal(rel))
	}
	err = filepath.WalkDir(realDest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch mode := info.Mode(); {
		case mode.IsDir():
			if mode.Perm() != 0o755 {
				t.Errorf("%s: directory mode %v", p, mode)
			}
		case mode.IsRegular():
			if mode.Perm() != 0o755 && mode.Perm() != 0o644 || mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
				t.Errorf("%s: file mode %v", p, mode)
			}
		case mode.Type() == fs.ModeSymlink:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if filepath.IsAbs(target) {
				t.Errorf("%s: absolute symlink target %q", p, target)
			}
			resolved, err := filepath.EvalSymlinks(p)
			if err != nil { // dangling or a loop: check the target as written
				resolved = filepath.Join(filepath.Dir(p), target)
			}
			if !inside(resolved) {
				t.Errorf("%s: symlink %q leads outside the package, to %s", p, target, resolved)
			}
		default:
			t.Errorf("%s: unexpected type %v", p, mode)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
