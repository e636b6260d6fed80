package storepg

import (
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

const tokenColumns = `id, name, role, plugin_id, hash, created_at, revoked_at, expires_at`

// PutToken implements store.Tx. A token needs an ID and a non-empty Hash. A used ID or Hash
// is store.ErrConflict, found without failing a statement, so the transaction goes on.
func (t *tx) PutToken(tok store.Token) error {
	const op = "put token"
	if err := t.use(op, true); err != nil {
		return err
	}
	if tok.ID == "" {
		return fmt.Errorf("storepg: %s: empty id", op)
	}
	if len(tok.Hash) == 0 {
		return fmt.Errorf("storepg: %s %q: empty hash", op, tok.ID)
	}
	createdAt, err := timeValue(tok.CreatedAt)
	if err != nil {
		return fmt.Errorf("storepg: %s %q: created at: %w", op, tok.ID, err)
	}
	revokedAt, err := timeValue(tok.RevokedAt)
	if err != nil {
		return fmt.Errorf("storepg: %s %q: revoked at: %w", op, tok.ID, err)
	}
	expiresAt, err := timeValue(tok.ExpiresAt)
	if err != nil {
		return fmt.Errorf("storepg: %s %q: expires at: %w", op, tok.ID, err)
	}
	n, err := t.exec(op, `INSERT INTO tokens (`+tokenColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
	ON CONFLICT DO NOTHING`,
		tok.ID, tok.Name, string(tok.Role), tok.PluginID, tok.Hash, createdAt, revokedAt, expiresAt)
	if err != nil {
		return err
	}
	if n == 0 {
		return conflict("token (id or hash)", tok.ID)
	}
	return nil
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
	tok, err := scanToken(t.queryRow(`SELECT `+tokenColumns+` FROM tokens WHERE hash = $1`, hash))
	if errors.Is(err, pgx.ErrNoRows) {
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
	return list(t, op, `SELECT `+tokenColumns+` FROM tokens ORDER BY created_at DESC NULLS LAST, seq DESC`, nil, scanToken)
}

// RevokeToken implements store.Tx. Revoking a revoked token moves its revocation time.
func (t *tx) RevokeToken(id string, at time.Time) error {
	const op = "revoke token"
	if err := t.use(op, true); err != nil {
		return err
	}
	if at.IsZero() {
		return fmt.Errorf("storepg: %s %q: zero revocation time", op, id)
	}
	v, err := timeValue(at)
	if err != nil {
		return fmt.Errorf("storepg: %s %q: %w", op, id, err)
	}
	n, err := t.exec(op, `UPDATE tokens SET revoked_at = $1 WHERE id = $2`, v, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound("token", id)
	}
	t.notify(noticeToken + id)
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
		return fmt.Errorf("storepg: %s: empty plugin id", op)
	}
	_, err := t.exec(op, `DELETE FROM tokens WHERE plugin_id = $1`, pluginID)
	return err
}

// scanToken reads one row of tokenColumns.
func scanToken(r rowScanner) (store.Token, error) {
	var (
		tok                             store.Token
		role                            string
		createdAt, revokedAt, expiresAt pgtype.Int8
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
	return fmt.Errorf("storepg: token with that hash: %w", store.ErrNotFound)
}
