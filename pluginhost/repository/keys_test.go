package repository_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/repository"
)

func TestPublicKeyText(t *testing.T) {
	pub, priv := newKey(t)
	if !priv.Public().Equal(pub) {
		t.Fatal("Public() is not the generated public key")
	}
	s := pub.String()
	if !strings.HasPrefix(s, "ed25519:") {
		t.Fatalf("String() = %q", s)
	}
	got, err := repository.ParsePublicKey(s)
	if err != nil || !got.Equal(pub) {
		t.Fatalf("ParsePublicKey(String()) = %v, %v", got, err)
	}
	if id := pub.KeyID(); len(id) != 16 || id != priv.KeyID() {
		t.Fatalf("KeyID() = %q, private KeyID() = %q", id, priv.KeyID())
	}
	for _, bad := range []string{"", "ed25519:", "rsa:" + s[8:], s[:len(s)-4], s + "AAAA", "ed25519:!!!!"} {
		if _, err := repository.ParsePublicKey(bad); !errs.Is(err, errs.ValidationError) {
			t.Errorf("ParsePublicKey(%q) error = %v, want a validation error", bad, err)
		}
	}
}

func TestPrivateKeyFile(t *testing.T) {
	_, priv := newKey(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "repo.key")
	if err := repository.WritePrivateKey(path, priv); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %04o, want 0600", fi.Mode().Perm())
	}
	got, err := repository.ReadPrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Public().Equal(priv.Public()) {
		t.Fatal("read key differs from the written one")
	}
	if err := repository.WritePrivateKey(path, priv); err == nil {
		t.Error("WritePrivateKey replaced an existing file")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the key", len(entries))
	}

	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := repository.ReadPrivateKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("ReadPrivateKey of a group-readable file: %v, want a refusal", err)
	}

	for name, content := range map[string]string{
		"empty":    "",
		"header":   "some-other-key ed25519:AAAA\n",
		"short":    "nexus-repo-private-key ed25519:AAAA\n",
		"trailing": "nexus-repo-private-key ed25519:" + strings.Repeat("A", 43) + "=\nmore\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := repository.ReadPrivateKey(p); err == nil {
			t.Errorf("ReadPrivateKey(%s) accepted %q", name, content)
		}
	}
}
