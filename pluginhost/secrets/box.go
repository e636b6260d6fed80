// Package secrets seals secret configuration values at rest with AES-256-GCM.
//
// A sealed value is a self-describing string, "nxs1:" followed by the standard base64
// (with padding) of a random 12-byte nonce and the GCM ciphertext with its 16-byte tag.
// The version prefix lets a later format or key rotation coexist with values already stored.
// Opening a value that was changed, or sealed under another key, fails.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
)

// KeySize is the length of a key in bytes (AES-256).
const KeySize = 32

// Prefix starts every sealed string; it names the format version.
const Prefix = "nxs1:"

const (
	nonceSize = 12
	tagSize   = 16
)

// Error is the type of the package's sentinel errors; match them with errors.Is.
type Error string

// Error implements error.
func (e Error) Error() string { return string(e) }

const (
	// ErrMalformed reports a string that is not a sealed value of this format.
	ErrMalformed Error = "secrets: not a sealed value"
	// ErrDecrypt reports a sealed value that fails authentication: it was tampered with or
	// sealed under another key.
	ErrDecrypt Error = "secrets: sealed value cannot be decrypted (tampered or wrong key)"
)

// Box seals and opens values with one key. It is safe for concurrent use: the AEAD is created
// once by New and only read afterwards.
type Box struct {
	aead cipher.AEAD
}

// New returns a Box for a 32-byte key.
func New(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("secrets: key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext under a fresh random nonce and returns the sealed string. Sealing
// the same plaintext twice gives different strings.
func (b *Box) Seal(plaintext []byte) string {
	buf := make([]byte, nonceSize, nonceSize+len(plaintext)+tagSize)
	// crypto/rand.Read never fails: it aborts the program if the OS source is broken.
	_, _ = rand.Read(buf)
	buf = b.aead.Seal(buf, buf[:nonceSize], plaintext, nil)
	return Prefix + base64.StdEncoding.EncodeToString(buf)
}

// Open decrypts a sealed string. It returns an error wrapping ErrMalformed when s is not a
// sealed value and ErrDecrypt when it fails authentication.
func (b *Box) Open(s string) ([]byte, error) {
	raw, err := decode(s)
	if err != nil {
		return nil, err
	}
	plaintext, err := b.aead.Open(nil, raw[:nonceSize], raw[nonceSize:], nil)
	if err != nil {
		return nil, ErrDecrypt
	}
	if plaintext == nil {
		plaintext = []byte{}
	}
	return plaintext, nil
}

// IsSealed reports whether s has the form of a sealed value (prefix, valid base64, room for
// a nonce and a tag). It does not check that s opens under any key.
func IsSealed(s string) bool {
	_, err := decode(s)
	return err == nil
}

// decode returns the nonce and ciphertext of a sealed string.
func decode(s string) ([]byte, error) {
	body, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return nil, fmt.Errorf("%w: missing %q prefix", ErrMalformed, Prefix)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("%w: bad base64", ErrMalformed)
	}
	if len(raw) < nonceSize+tagSize {
		return nil, fmt.Errorf("%w: too short", ErrMalformed)
	}
	return raw, nil
}
