// Package repository implements Nexus plugin repositories: a static, versioned index.json
// listing plugins, their versions and, per version, the package's URL, size, SHA-256 digest
// and ed25519 signature, next to the packages themselves.
//
// A repository is made from a folder of packages with GenerateKey and WritePrivateKey (once),
// BuildIndex and WriteIndex (after every change), and published by any static file server or
// by Handler. Clients read it with Fetch and ParseIndex, pick a version with Plugin.Resolve
// and check the downloaded bytes with VerifyPackage before installing them.
//
// Everything a repository serves is untrusted: ParseIndex is strict (unknown fields, trailing
// data, bad ids, versions, digests, URLs and oversized lists are refused, every problem listed
// with its path), Fetch bounds the bytes read and the time taken, and VerifyPackage refuses a
// package whose size, digest or signature does not match, unless the caller explicitly allows
// unsigned packages.
//
// Signatures bind the package's metadata, not only its bytes: the signed message is
//
//	"nexus-package-v1\n" + id + "\n" + version + "\n" + sha256hex + "\n" + size
//
// so that a signed package cannot be passed off as another plugin or another version. The
// nexus_version, os, arch and dependencies of an index entry are not signed: they are hints
// for resolution, and the installer checks the manifest inside the (verified) package again.
package repository
