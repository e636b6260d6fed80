package repository

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// keyPrefix starts the text form of a key: the algorithm.
const keyPrefix = "ed25519:"

// privateKeyHeader is the first word of a private key file.
const privateKeyHeader = "nexus-repo-private-key"

// maxPrivateKeyFile bounds what ReadPrivateKey reads.
const maxPrivateKeyFile = 4096

// PublicKey is an ed25519 public key that a client trusts to sign a repository's packages.
// The zero PublicKey is no key. Its text form is "ed25519:" followed by the standard base64
// encoding of the 32 key bytes.
type PublicKey struct {
	key [ed25519.PublicKeySize]byte
	set bool
}

// PrivateKey is the ed25519 key a repository signs its packages with. The zero PrivateKey is
// no key.
type PrivateKey struct {
	key ed25519.PrivateKey
}

// GenerateKey returns a new key pair from crypto/rand.
func GenerateKey() (PublicKey, PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return PublicKey{}, PrivateKey{}, fmt.Errorf("generating an ed25519 key: %w", err)
	}
	return publicKeyFrom(pub), PrivateKey{key: priv}, nil
}

// ParsePublicKey parses the text form of a public key ("ed25519:<base64>").
func ParsePublicKey(s string) (PublicKey, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(s), keyPrefix)
	if !ok {
		return PublicKey{}, errs.New(errs.ValidationError, "public key must start with %q", keyPrefix)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return PublicKey{}, errs.New(errs.ValidationError,
			"public key must be %q followed by %d bytes in standard base64", keyPrefix, ed25519.PublicKeySize)
	}
	return publicKeyFrom(raw), nil
}

// String returns the text form of k, "ed25519:<base64>", or "" for the zero key.
func (k PublicKey) String() string {
	if !k.set {
		return ""
	}
	return keyPrefix + base64.StdEncoding.EncodeToString(k.key[:])
}

// IsZero reports whether k is the zero PublicKey.
func (k PublicKey) IsZero() bool { return !k.set }

// KeyID returns the key's id: the hex encoding of the first 8 bytes of the SHA-256 digest of
// the key bytes. Signatures name the key that made them by this id.
func (k PublicKey) KeyID() string {
	sum := sha256.Sum256(k.key[:])
	return hex.EncodeToString(sum[:8])
}

// Equal reports whether k and o are the same key.
func (k PublicKey) Equal(o PublicKey) bool { return k == o }

// MarshalText implements encoding.TextMarshaler with the text form.
func (k PublicKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParsePublicKey.
func (k *PublicKey) UnmarshalText(text []byte) error {
	p, err := ParsePublicKey(string(text))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// Public returns the public half of k.
func (k PrivateKey) Public() PublicKey {
	if k.key == nil {
		return PublicKey{}
	}
	return publicKeyFrom(k.key.Public().(ed25519.PublicKey))
}

// IsZero reports whether k is the zero PrivateKey.
func (k PrivateKey) IsZero() bool { return k.key == nil }

// KeyID returns the id of the public half of k.
func (k PrivateKey) KeyID() string { return k.Public().KeyID() }

// WritePrivateKey writes key to a new file at path, readable by its owner only (mode 0600),
// as one line "nexus-repo-private-key ed25519:<base64 seed>". The file appears whole or not at
// all, and an existing file is never replaced: losing a signing key is worse than a failed
// keygen.
func WritePrivateKey(path string, key PrivateKey) error {
	if key.IsZero() {
		return errs.New(errs.ValidationError, "no private key to write")
	}
	line := privateKeyHeader + " " + keyPrefix + base64.StdEncoding.EncodeToString(key.key.Seed()) + "\n"
	tmp, err := os.CreateTemp(filepath.Dir(path), ".nexus-key-*") // CreateTemp uses mode 0600
	if err != nil {
		return fmt.Errorf("writing private key: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the link below, this only drops the temporary name
	if err := tmp.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		tmp.Close()
		return fmt.Errorf("writing private key: %w", err)
	}
	if _, err := io.WriteString(tmp, line); err != nil {
		tmp.Close()
		return fmt.Errorf("writing private key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing private key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing private key: %w", err)
	}
	// Link, unlike Rename, fails when path exists.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("writing private key: %s already exists", path)
		}
		return fmt.Errorf("writing private key: %w", err)
	}
	return nil
}

// ReadPrivateKey reads a key written by WritePrivateKey. It refuses a file that its group or
// other users may read (on systems with Unix permissions), since anyone who reads it can sign
// packages.
func ReadPrivateKey(path string) (PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("reading private key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return PrivateKey{}, fmt.Errorf("reading private key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return PrivateKey{}, fmt.Errorf("reading private key: %s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return PrivateKey{}, fmt.Errorf("reading private key: %s has mode %04o; it must not be accessible to group or others (chmod 600)",
			path, fi.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPrivateKeyFile+1))
	if err != nil {
		return PrivateKey{}, fmt.Errorf("reading private key: %w", err)
	}
	if len(data) > maxPrivateKeyFile {
		return PrivateKey{}, fmt.Errorf("reading private key: %s is not a private key file (too large)", path)
	}
	key, err := parsePrivateKey(data)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("reading private key: %s: %w", path, err)
	}
	return key, nil
}

// publicKeyFrom copies raw, which must hold ed25519.PublicKeySize bytes.
func publicKeyFrom(raw []byte) PublicKey {
	var k PublicKey
	copy(k.key[:], raw)
	k.set = true
	return k
}

// parsePrivateKey parses the content of a private key file: one line, optionally followed by
// a newline.
func parsePrivateKey(data []byte) (PrivateKey, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	if !sc.Scan() {
		return PrivateKey{}, errors.New("empty file")
	}
	header, key, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
	if !ok || header != privateKeyHeader {
		return PrivateKey{}, fmt.Errorf("not a private key file (it must start with %q)", privateKeyHeader)
	}
	if sc.Scan() && strings.TrimSpace(sc.Text()) != "" {
		return PrivateKey{}, errors.New("unexpected data after the key")
	}
	b64, ok := strings.CutPrefix(key, keyPrefix)
	if !ok {
		return PrivateKey{}, fmt.Errorf("the key must start with %q", keyPrefix)
	}
	seed, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(seed) != ed25519.SeedSize {
		return PrivateKey{}, fmt.Errorf("the key must be %d bytes in standard base64", ed25519.SeedSize)
	}
	return PrivateKey{key: ed25519.NewKeyFromSeed(seed)}, nil
}
