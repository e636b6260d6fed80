package storesqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

const tokenColumns = `id, name, role, plugin_id, hash, created_at, revoked_at, expires_at`

// PutToken implements store.Tx. A token needs an ID and a non-empty Hash.
func (t *tx) PutToken(tok store.Token) error {
	const op = "put token"
	if err := t.use(op, true); err != nil {
		return err
	}
	if tok.ID == "" {
		return fmt.Errorf("storesqlite: %s: empty id", op)
	}
	if len(tok.Hash) == 0 {
		return fmt.Errorf("storesqlite: %s %q: empty hash", op, tok.ID)
	}
	createdAt, err := timeValue(tok.CreatedAt)
	if err != nil {
		return fmt.Errorf("storesqlite: %s %q: created at: %w", op, tok.ID, err)
	}
	revokedAt, err := timeValue(tok.RevokedAt)
	if err != nil {
		return fmt.Errorf("storesqlite: %s %q: revoked at: %w", op, tok.ID, err)
	}
	expiresAt, err := timeValue(tok.ExpiresAt)
	if err != nil {
		return fmt.Errorf("storesqlite: %s %q: expires at: %w", op, tok.ID, err)
	}
	_, err = t.exec(op, `INSERT INTO tokens (`+tokenColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		tok.ID, tok.Name, string(tok.Role), tok.PluginID, tok.Hash, createdAt, revokedAt, expiresAt)
	return err
}

// TokenByHash implements store.Tx.
func (t *tx) TokenByHash(hash []byte) (store.Token, error) {
	const op = "token by hash"
	if err := t.use(op, false); err != nil {
		return store.Token{}, err
	}
	if len(hash) == 0 {
		return store.Token{}, errNoTokenWithHash()
	}
	row := t.sqlTx.QueryRowContext(t.ctx, `SELECT `+tokenColumns+` FROM tokens WHERE hash = ?`, hash)
	tok, err := scanToken(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Token{}, errNoTokenWithHash()
	}
	if err != nil {
		return store.Token{}, wrap(op, err)
	}
	return tok, nil
}

// Tokens implements store.Tx.
func (t *tx) Tokens() ([]store.Token, error) {
	const op = "tokens"
	if err := t.use(op, false); err != nil {
		return nil, err
	}
	rows, err := t.sqlTx.QueryContext(t.ctx,
		`SELECT `+tokenColumns+` FROM tokens ORDER BY created_at DESC, rowid DESC`)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []store.Token
	for rows.Next() {
		tok, err := scanToken(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, tok)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// RevokeToken implements store.Tx. Revoking a revoked token moves its revocation time.
func (t *tx) RevokeToken(id string, at time.Time) error {
	const op = "revoke token"
	if err := t.use(op, true); err != nil {
		return err
	}
	if at.IsZero() {
		return fmt.Errorf("storesqlite: %s %q: zero revocation time", op, id)
	}
	v, err := timeValue(at)
	if err != nil {
		return fmt.Errorf("storesqlite: %s %q: %w", op, id, err)
	}
	n, err := t.exec(op, `UPDATE tokens SET revoked_at = ? WHERE id = ?`, v, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound("token", id)
	}
	return nil
}

// DeletePluginTokens implements store.Tx. An empty pluginID is refused: it would match
// every admin and user token.
func (t *tx) DeletePluginTokens(pluginID string) error {
	const op = "delete plugin tokens"
	if err := t.use(op, true); err != nil {
		return err
	}
	if pluginID == "" {
		return fmt.Errorf("storesqlite: %s: empty plugin id", op)
	}
	_, err := t.exec(op, `DELETE FROM tokens WHERE plugin_id = ?`, pluginID)
	return err
}

// scanToken reads one row of tokenColumns.
func scanToken(r rowScanner) (store.Token, error) {
	var (
		tok                             store.Token
		role                            string
		createdAt, revokedAt, expiresAt sql.NullInt64
	)
	if err := r.Scan(&tok.ID, &tok.Name, &role, &tok.PluginID, &tok.Hash, &createdAt, &revokedAt, &expiresAt); err != nil {
		return store.Token{}, err
	}
	tok.Role = store.Role(role)
	tok.CreatedAt = timeFrom(createdAt)
	tok.RevokedAt = timeFrom(revokedAt)
	tok.ExpiresAt = timeFrom(expiresAt)
	return tok, nil
}

// errNoTokenWithHash is TokenByHash's store.ErrNotFound; it leaves the hash out.
func errNoTokenWithHash() error {
	return fmt.Errorf("storesqlite: token with that hash: %w", store.ErrNotFound)
}
