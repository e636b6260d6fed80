package secrets_test

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/secrets"
)

func TestLoadOrCreateKeyCreatesThenLoads(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "data", "secret.key")
	key, err := secrets.LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != secrets.KeySize || bytes.Equal(key, make([]byte, secrets.KeySize)) {
		t.Fatalf("key = %x", key)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, want 0600", info.Mode().Perm())
	}
	again, err := secrets.LoadOrCreateKey(path)
	if err != nil || !bytes.Equal(again, key) {
		t.Fatalf("second load = %x, %v; want the same key", again, err)
	}
	// No temporary files are left behind.
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory holds %v (%v), want only the key", entries, err)
	}
	if _, err := secrets.New(key); err != nil {
		t.Fatal(err)
	}
}

func TestLoadOrCreateKeyRefuses(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		content []byte
		mode    os.FileMode
		want    string
	}{
		{"too short", make([]byte, 31), 0o600, "holds 31 bytes"},
		{"too long", make([]byte, 33), 0o600, "holds 33 bytes"},
		{"empty", nil, 0o600, "holds 0 bytes"},
		{"world readable", make([]byte, 32), 0o644, "must not be accessible"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if c.mode&0o077 != 0 && runtime.GOOS == "windows" {
				t.Skip("file modes are not enforced on Windows")
			}
			path := filepath.Join(t.TempDir(), "secret.key")
			if err := os.WriteFile(path, c.content, c.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, c.mode); err != nil { // umask may have narrowed it
				t.Fatal(err)
			}
			_, err := secrets.LoadOrCreateKey(path)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, c.content) {
				t.Fatal("a refused key file was overwritten")
			}
		})
	}
	t.Run("directory", func(t *testing.T) {
		t.Parallel()
		if _, err := secrets.LoadOrCreateKey(t.TempDir()); err == nil {
			t.Fatal("a directory was accepted as a key file")
		}
	})
}

func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "secret.key")
	const n = 8
	keys := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { keys[i], errs[i] = secrets.LoadOrCreateKey(path) })
	}
	wg.Wait()
	stored, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if errs[i] != nil || !bytes.Equal(keys[i], stored) {
			t.Fatalf("caller %d got %x, %v; the file holds %x", i, keys[i], errs[i], stored)
		}
	}
}
