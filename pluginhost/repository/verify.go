package repository

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"

	"github.com/nexus-platform/nexus/pluginhost/archive"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
)

// Causes of the errors VerifyPackage returns; match them with errors.Is. They are wrapped in
// *errs.Error values with code errs.PluginInstallationFailed.
var (
	// ErrSizeMismatch reports a package whose size is not the index's.
	ErrSizeMismatch = errors.New("size mismatch")
	// ErrChecksumMismatch reports a package whose SHA-256 digest is not the index's.
	ErrChecksumMismatch = errors.New("checksum mismatch")
	// ErrUnsigned reports an index entry without a signature.
	ErrUnsigned = errors.New("package is not signed")
	// ErrUntrustedKey reports a signature by a key that is not among the trusted keys.
	ErrUntrustedKey = errors.New("signed by an untrusted key")
	// ErrBadSignature reports a signature that does not verify: the package, its id, its
	// version or its digest is not what the key signed.
	ErrBadSignature = errors.New("invalid signature")
	// ErrManifestMismatch reports a package whose plugin.json names another plugin or
	// version than the index.
	ErrManifestMismatch = errors.New("manifest does not match the index")
)

// VerifyPackage checks downloaded package bytes against index entry v of plugin pluginID, in
// this order: the size, the SHA-256 digest, the signature, then the package's own manifest.
//
// The signature must be present unless allowUnsigned; a signature that is present is always
// checked, even when allowUnsigned: it must name a key of trusted (by key id) and verify
// against SignedMessage(pluginID, v.Version, v.SHA256, v.Size). Finally the package's
// plugin.json must be readable (archive.ReadManifest with default limits) and name pluginID
// and v.Version, so that even an unsigned package cannot be installed under another name.
//
// Errors are *errs.Error values with code errs.PluginInstallationFailed whose message says
// which check failed and whose cause is one of the Err* variables above (or an archive or
// manifest error).
func VerifyPackage(v Version, pluginID string, data []byte, trusted []PublicKey, allowUnsigned bool) error {
	if int64(len(data)) != v.Size {
		return errs.Wrap(errs.PluginInstallationFailed, ErrSizeMismatch,
			"package %s %s: size mismatch: the index says %d bytes, the download has %d", pluginID, v.Version, v.Size, len(data))
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != v.SHA256 {
		return errs.Wrap(errs.PluginInstallationFailed, ErrChecksumMismatch,
			"package %s %s: checksum mismatch: the index says sha256 %s, the download has %s", pluginID, v.Version, v.SHA256, got)
	}
	if err := verifySignature(v, pluginID, trusted, allowUnsigned); err != nil {
		return err
	}
	raw, _, err := archive.ReadManifest(bytes.NewReader(data), archive.DefaultLimits())
	if err != nil {
		return errs.Wrap(errs.PluginInstallationFailed, err, "package %s %s is not a valid package: %v", pluginID, v.Version, err)
	}
	m, err := manifest.Parse(raw)
	if err != nil {
		return errs.Wrap(errs.PluginInstallationFailed, err, "package %s %s has an invalid manifest: %v", pluginID, v.Version, err)
	}
	if m.ID != pluginID || m.Version != v.Version {
		return errs.Wrap(errs.PluginInstallationFailed, ErrManifestMismatch,
			"package %s %s: manifest mismatch: its plugin.json is %s %s", pluginID, v.Version, m.ID, m.Version)
	}
	return nil
}

func verifySignature(v Version, pluginID string, trusted []PublicKey, allowUnsigned bool) error {
	if v.Signature == nil {
		if allowUnsigned {
			return nil
		}
		return errs.Wrap(errs.PluginInstallationFailed, ErrUnsigned,
			"package %s %s is not signed, and the repository does not allow unsigned packages", pluginID, v.Version)
	}
	var key *PublicKey
	for i := range trusted {
		if !trusted[i].IsZero() && trusted[i].KeyID() == v.Signature.KeyID {
			key = &trusted[i]
			break
		}
	}
	if key == nil {
		return errs.Wrap(errs.PluginInstallationFailed, ErrUntrustedKey,
			"package %s %s is signed by key %s, which the repository does not trust", pluginID, v.Version, v.Signature.KeyID)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(v.Signature.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize ||
		!ed25519.Verify(key.key[:], SignedMessage(pluginID, v.Version, v.SHA256, v.Size), sig) {
		return errs.Wrap(errs.PluginInstallationFailed, ErrBadSignature,
			"package %s %s: invalid signature by key %s: it does not cover this plugin id, version, checksum and size",
			pluginID, v.Version, v.Signature.KeyID)
	}
	return nil
}
