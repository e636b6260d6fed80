package storepg

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// The package files of installed plugins (store.PackageTx): kept by their sha256 so that a
// server can unpack a plugin installed through another one.

var _ store.PackageTx = (*tx)(nil)

// PutPackage implements store.PackageTx.
func (t *tx) PutPackage(data []byte) (string, error) {
	const op = "put package"
	if err := t.use(op, true); err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	_, err := t.exec(op, `INSERT INTO packages (sha256, data, stored_at) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING`,
		sha, data, time.Now().UnixNano())
	return sha, err
}

// Package implements store.PackageTx.
func (t *tx) Package(sha string) ([]byte, error) {
	const op = "package"
	if err := t.use(op, false); err != nil {
		return nil, err
	}
	var data []byte
	err := t.queryRow(`SELECT data FROM packages WHERE sha256 = $1`, sha).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("package", sha)
	}
	if err != nil {
		return nil, wrap(op, err)
	}
	return data, nil
}

// PrunePackages implements store.PackageTx.
func (t *tx) PrunePackages(storedBefore time.Time) (int, error) {
	const op = "prune packages"
	if err := t.use(op, true); err != nil {
		return 0, err
	}
	n, err := t.exec(op, `DELETE FROM packages p WHERE p.stored_at < $1 AND
	NOT EXISTS (SELECT 1 FROM plugins WHERE package_sha256 = p.sha256) AND
	NOT EXISTS (SELECT 1 FROM backups WHERE plugin->>'package_sha256' = p.sha256) AND
	NOT EXISTS (SELECT 1 FROM version_switches WHERE old->>'package_sha256' = p.sha256)`, storedBefore.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("storepg: %s: %w", op, err)
	}
	return int(n), nil
}
