package archive_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/archive"
)

// writeTree makes a plugin source tree in dir; reverse writes it in the opposite order.
func writeTree(t *testing.T, dir string, reverse bool) {
	t.Helper()
	steps := []func() error{
		func() error { return os.WriteFile(filepath.Join(dir, "plugin.json"), []byte(manifest), 0o600) },
		func() error { return os.MkdirAll(filepath.Join(dir, "bin"), 0o700) },
		func() error {
			return os.WriteFile(filepath.Join(dir, "bin", "analytics-plugin"), []byte("#!/bin/sh\necho hi\n"), 0o700)
		},
		func() error { return os.MkdirAll(filepath.Join(dir, "lib", "v1"), 0o750) },
		func() error { return os.WriteFile(filepath.Join(dir, "lib", "v1", "data.txt"), []byte("data"), 0o666) },
		func() error { return os.Symlink("v1", filepath.Join(dir, "lib", "current")) },
		func() error { return os.MkdirAll(filepath.Join(dir, "empty"), 0o755) },
		func() error { return os.WriteFile(filepath.Join(dir, "README.md"), nil, 0o644) },
	}
	if reverse {
		// Same tree, made in another order (parents still first), with other timestamps.
		steps = []func() error{steps[6], steps[3], steps[4], steps[5], steps[1], steps[2], steps[7], steps[0]}
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if reverse {
		old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
		for _, p := range []string{"plugin.json", "bin/analytics-plugin", "lib/v1/data.txt", "empty"} {
			if err := os.Chtimes(filepath.Join(dir, p), old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestCreateRoundTrip(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	writeTree(t, src, false)
	var buf bytes.Buffer
	if err := archive.Create(&buf, src); err != nil {
		t.Fatalf("Create: %v", err)
	}
	_, dest := newDest(t)
	res, err := archive.Extract(t.Context(), bytes.NewReader(buf.Bytes()), dest, archive.DefaultLimits())
	if err != nil {
		t.Fatalf("Extract: %v", err)
	}
	if string(res.Manifest) != manifest || res.Files != 4 || res.StrippedDir != "" {
		t.Errorf("got result %+v", res)
	}
	want := map[string]struct {
		mode   fs.FileMode
		body   string
		target string
	}{
		"plugin.json":          {mode: 0o644, body: manifest},
		"bin":                  {mode: fs.ModeDir | 0o755},
		"bin/analytics-plugin": {mode: 0o755, body: "#!/bin/sh\necho hi\n"},
		"lib":                  {mode: fs.ModeDir | 0o755},
		"lib/v1":               {mode: fs.ModeDir | 0o755},
		"lib/v1/data.txt":      {mode: 0o644, body: "data"},
		"lib/current":          {mode: fs.ModeSymlink, target: "v1"},
		"empty":                {mode: fs.ModeDir | 0o755},
		"README.md":            {mode: 0o644},
	}
	seen := 0
	err = filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dest {
			return err
		}
		rel, _ := filepath.Rel(dest, p)
		rel = filepath.ToSlash(rel)
		w, ok := want[rel]
		if !ok {
			t.Errorf("unexpected %s", rel)
			return nil
		}
		seen++
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		mode := info.Mode()
		if mode.Type() == fs.ModeSymlink {
			mode = fs.ModeSymlink
		}
		if mode != w.mode {
			t.Errorf("%s: got mode %v, want %v", rel, mode, w.mode)
		}
		switch {
		case w.mode.IsRegular():
			if b, err := os.ReadFile(p); err != nil || string(b) != w.body {
				t.Errorf("%s: got %q (%v), want %q", rel, b, err, w.body)
			}
		case w.mode == fs.ModeSymlink:
			if target, err := os.Readlink(p); err != nil || target != w.target {
				t.Errorf("%s: got target %q (%v), want %q", rel, target, err, w.target)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(want) {
		t.Errorf("found %d of %d paths", seen, len(want))
	}
}

func TestCreateIsDeterministic(t *testing.T) {
	t.Parallel()
	build := func(reverse bool) []byte {
		src := t.TempDir()
		writeTree(t, src, reverse)
		var buf bytes.Buffer
		if err := archive.Create(&buf, src); err != nil {
			t.Fatalf("Create: %v", err)
		}
		return buf.Bytes()
	}
	first, second, other := build(false), build(false), build(true)
	if !bytes.Equal(first, second) {
		t.Error("two builds of the same tree differ")
	}
	if !bytes.Equal(first, other) {
		t.Error("builds of the same tree made in another order, at other times, differ")
	}
}

func TestCreateRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		make func(t *testing.T, dir string)
		want error
	}{{
		name: "no manifest",
		make: func(t *testing.T, dir string) {},
		want: archive.ErrNoManifest,
	}, {
		name: "manifest is a directory",
		make: func(t *testing.T, dir string) { mustDo(t, os.Mkdir(filepath.Join(dir, "plugin.json"), 0o755)) },
		want: archive.ErrNoManifest,
	}, {
		name: "escaping symlink",
		make: func(t *testing.T, dir string) {
			writeTree(t, dir, false)
			mustDo(t, os.Symlink("../../etc", filepath.Join(dir, "bin", "etc")))
		},
		want: archive.ErrLinkEscape,
	}, {
		name: "absolute symlink",
		make: func(t *testing.T, dir string) {
			writeTree(t, dir, false)
			mustDo(t, os.Symlink("/etc/passwd", filepath.Join(dir, "passwd")))
		},
		want: archive.ErrLinkEscape,
	}, {
		name: "FIFO",
		make: func(t *testing.T, dir string) {
			writeTree(t, dir, false)
			mustDo(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
		},
		want: archive.ErrUnsupportedType,
	}, {
		name: "backslash in a name",
		make: func(t *testing.T, dir string) {
			writeTree(t, dir, false)
			mustDo(t, os.WriteFile(filepath.Join(dir, `a\b`), nil, 0o644))
		},
		want: archive.ErrUnsafePath,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			tc.make(t, dir)
			err := archive.Create(&bytes.Buffer{}, dir)
			assertArchiveError(t, err, tc.want, dir)
		})
	}
	t.Run("missing source directory", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "missing")
		assertArchiveError(t, archive.Create(&bytes.Buffer{}, dir), archive.ErrIO, dir)
	})
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
