package secrets

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// LoadOrCreateKey returns the key stored at path, creating it first when the file does not
// exist: 32 random bytes, file mode 0600, in a directory created with mode 0700 if missing.
// The file is written to a temporary file in the same directory, synced, then linked into
// place, so a crash never leaves a partial key and two processes starting at once end up
// with the same key. An existing key file must hold exactly 32 bytes and, except on Windows,
// must not be readable or writable by group or others.
func LoadOrCreateKey(path string) ([]byte, error) {
	key, err := readKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("secrets: create key directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".nexus-key-*") // created with mode 0600
	if err != nil {
		return nil, fmt.Errorf("secrets: create key file: %w", err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // after a successful link, removes only the temporary name
	key = make([]byte, KeySize)
	_, _ = rand.Read(key) // never fails; see crypto/rand.Read
	if err := writeAndClose(tmp, key); err != nil {
		return nil, fmt.Errorf("secrets: write key file: %w", err)
	}
	// Link fails if another process created the key meanwhile; then that key wins.
	switch err := os.Link(tmpName, path); {
	case err == nil:
	case errors.Is(err, fs.ErrExist):
		return readKey(path)
	default:
		// Hard links are unsupported on some file systems: fall back to rename.
		if err := os.Rename(tmpName, path); err != nil {
			return nil, fmt.Errorf("secrets: install key file: %w", err)
		}
	}
	syncDir(dir)
	return key, nil
}

func writeAndClose(f *os.File, data []byte) error {
	if err := f.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readKey(path string) ([]byte, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: key file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("secrets: key file %s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secrets: key file %s has mode %04o; it must not be accessible to group or others (chmod 600)",
			path, info.Mode().Perm())
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: read key file: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("secrets: key file %s holds %d bytes, want %d", path, len(key), KeySize)
	}
	return key, nil
}

// syncDir makes the new directory entry durable; failures only weaken durability, not
// correctness, so they are ignored.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}
