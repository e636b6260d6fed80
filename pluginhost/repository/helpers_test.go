package repository_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/archive"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/repository"
)

// fixedClock is the clock of deterministic builds.
func fixedClock() time.Time { return time.Date(2024, 1, 1, 10, 0, 0, 0, time.UTC) }

// writePackage builds a real package of plugin id at version into dir, named
// id-version.tar.gz, from a plugin.json holding extra fields too and an executable bin/x.
func writePackage(t testing.TB, dir, id, version string, extra map[string]any) string {
	t.Helper()
	src := t.TempDir()
	m := map[string]any{
		"id": id, "name": id + " name", "version": version, "entry_point": "bin/x",
		"description": "the " + id, "author": "Test Author", "category": "testing", "tags": []string{"a", "b"},
	}
	for k, v := range extra {
		m[k] = v
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "plugin.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(src, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "bin", "x"), []byte("#!/bin/sh\necho "+id+" "+version+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := archive.Create(&buf, src); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, id+"-"+version+".tar.gz")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// newKey returns a fresh key pair.
func newKey(t testing.TB) (repository.PublicKey, repository.PrivateKey) {
	t.Helper()
	pub, priv, err := repository.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// buildRepo writes packages of analytics-plugin 1.0.0, 1.2.0 and 2.0.0 (which needs Nexus
// >=3.0.0) and auth-plugin 0.1.0 (linux/arm64 only) into a new directory, builds and writes
// its index signed by key, and returns the directory and the index.
func buildRepo(t testing.TB, key repository.PrivateKey) (string, *repository.Index) {
	t.Helper()
	dir := t.TempDir()
	writePackage(t, dir, "analytics-plugin", "1.0.0", nil)
	writePackage(t, dir, "analytics-plugin", "1.2.0", map[string]any{
		"nexus_version": ">=1.0.0", "dependencies": map[string]any{"plugins": map[string]string{"auth-plugin": "^0.1.0"}},
	})
	writePackage(t, dir, "analytics-plugin", "2.0.0", map[string]any{"nexus_version": ">=3.0.0"})
	writePackage(t, dir, "auth-plugin", "0.1.0", map[string]any{"os": []string{"linux"}, "arch": []string{"arm64"}})
	idx, err := repository.BuildIndex(dir, key, repository.BuildOptions{Name: "test", Now: fixedClock})
	if err != nil {
		t.Fatalf("BuildIndex: %v", err)
	}
	if err := repository.WriteIndex(dir, idx); err != nil {
		t.Fatalf("WriteIndex: %v", err)
	}
	return dir, idx
}

// wantCode fails t unless err is an *errs.Error with code.
func wantCode(t testing.TB, err error, code errs.Code) *errs.Error {
	t.Helper()
	var e *errs.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want an *errs.Error with code %s", err, err, code)
	}
	if e.Code != code {
		t.Fatalf("error code = %s (%v), want %s", e.Code, err, code)
	}
	return e
}
