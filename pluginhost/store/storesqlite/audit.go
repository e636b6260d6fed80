package storesqlite

import (
	"database/sql"
	"fmt"
	"strings"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// AppendAudit implements store.Tx. An entry needs an ID; reusing one is store.ErrConflict.
func (t *tx) AppendAudit(e store.AuditEntry) error {
	const op = "append audit"
	if err := t.use(op, true); err != nil {
		return err
	}
	if e.ID == "" {
		return fmt.Errorf("storesqlite: %s: empty id", op)
	}
	at, err := timeValue(e.Time)
	if err != nil {
		return fmt.Errorf("storesqlite: %s %q: %w", op, e.ID, err)
	}
	_, err = t.exec(op, `INSERT INTO audit
	(id, time, actor, actor_name, role, action, target, outcome, request_id, details)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, at, e.Actor, e.ActorName, string(e.Role), e.Action, e.Target, e.Outcome,
		e.RequestID, e.Details)
	return err
}

// Audit implements store.Tx. Since is inclusive; entries with the same time come newest
// appended first.
func (t *tx) Audit(f store.AuditFilter) ([]store.AuditEntry, error) {
	const op = "audit"
	if err := t.use(op, false); err != nil {
		return nil, err
	}
	var (
		where []string
		args  []any
	)
	if f.Target != "" {
		where = append(where, "target = ?")
		args = append(args, f.Target)
	}
	if !f.Since.IsZero() {
		since, err := timeValue(f.Since)
		if err != nil {
			return nil, fmt.Errorf("storesqlite: %s: since: %w", op, err)
		}
		where = append(where, "time >= ?")
		args = append(args, since)
	}
	q := `SELECT id, time, actor, actor_name, role, action, target, outcome, request_id, details
	FROM audit`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY time DESC, seq DESC"
	if f.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, f.Limit)
	}
	rows, err := t.sqlTx.QueryContext(t.ctx, q, args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []store.AuditEntry
	for rows.Next() {
		var (
			e    store.AuditEntry
			at   sql.NullInt64
			role string
		)
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.ActorName, &role, &e.Action, &e.Target,
			&e.Outcome, &e.RequestID, &e.Details); err != nil {
			return nil, wrap(op, err)
		}
		e.Time = timeFrom(at)
		e.Role = store.Role(role)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}
