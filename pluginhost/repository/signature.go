package repository

import (
	"crypto/ed25519"
	"encoding/base64"
	"strconv"

	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// signatureDomain starts every signed message, so that a repository signature can never be
// mistaken for a signature of anything else.
const signatureDomain = "nexus-package-v1\n"

// Signature is an ed25519 signature of one package version, as an index stores it.
type Signature struct {
	// KeyID is the id of the public key that made the signature (PublicKey.KeyID).
	KeyID string `json:"key_id"`
	// Signature is the 64-byte signature in standard base64.
	Signature string `json:"signature"`
}

// SignedMessage returns the message a package signature covers:
// "nexus-package-v1\n" + id + "\n" + version + "\n" + sha256hex + "\n" + size.
func SignedMessage(pluginID, version, sha256hex string, size int64) []byte {
	msg := make([]byte, 0, len(signatureDomain)+len(pluginID)+len(version)+len(sha256hex)+24)
	msg = append(msg, signatureDomain...)
	msg = append(msg, pluginID...)
	msg = append(msg, '\n')
	msg = append(msg, version...)
	msg = append(msg, '\n')
	msg = append(msg, sha256hex...)
	msg = append(msg, '\n')
	return strconv.AppendInt(msg, size, 10)
}

// Sign signs version v of plugin pluginID (its Version, SHA256 and Size) with key.
func Sign(key PrivateKey, pluginID string, v Version) (*Signature, error) {
	if key.IsZero() {
		return nil, errs.New(errs.ValidationError, "no signing key")
	}
	sig := ed25519.Sign(key.key, SignedMessage(pluginID, v.Version, v.SHA256, v.Size))
	return &Signature{KeyID: key.KeyID(), Signature: base64.StdEncoding.EncodeToString(sig)}, nil
}
