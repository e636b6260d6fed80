package storepg

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// AppendAudit implements store.Tx. An entry needs an ID; reusing one is store.ErrConflict,
// found without failing a statement.
func (t *tx) AppendAudit(e store.AuditEntry) error {
	const op = "append audit"
	if err := t.use(op, true); err != nil {
		return err
	}
	if e.ID == "" {
		return fmt.Errorf("storepg: %s: empty id", op)
	}
	// The target and the names come from callers (a plugin id in a request's path may hold
	// a NUL): kept with U+FFFD rather than losing the entry (see the package doc).
	at, err := timeValue(e.Time)
	if err != nil {
		return fmt.Errorf("storepg: %s %q: %w", op, e.ID, err)
	}
	n, err := t.exec(op, `INSERT INTO audit
	(id, time, actor, actor_name, role, action, target, outcome, request_id, details)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
	ON CONFLICT DO NOTHING`,
		e.ID, at, e.Actor, cleanText(e.ActorName), string(e.Role), cleanText(e.Action), cleanText(e.Target), e.Outcome,
		cleanText(e.RequestID), e.Details)
	if err != nil {
		return err
	}
	if n == 0 {
		return conflict("audit entry", e.ID)
	}
	return nil
}

// Audit implements store.Tx. Since is inclusive; entries with the same time come newest
// appended first, and entries without a time last.
func (t *tx) Audit(f store.AuditFilter) ([]store.AuditEntry, error) {
	const op = "audit"
	if err := t.use(op, false); err != nil {
		return nil, err
	}
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Target != "" {
		where = append(where, "target = "+arg(f.Target))
	}
	if !f.Since.IsZero() {
		since, err := timeValue(f.Since)
		if err != nil {
			return nil, fmt.Errorf("storepg: %s: since: %w", op, err)
		}
		where = append(where, "time >= "+arg(since))
	}
	q := `SELECT id, time, actor, actor_name, role, action, target, outcome, request_id, details
	FROM audit`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY time DESC NULLS LAST, seq DESC"
	if f.Limit > 0 {
		q += " LIMIT " + arg(f.Limit)
	}
	return list(t, op, q, args, func(r rowScanner) (store.AuditEntry, error) {
		var (
			e    store.AuditEntry
			at   pgtype.Int8
			role string
		)
		if err := r.Scan(&e.ID, &at, &e.Actor, &e.ActorName, &role, &e.Action, &e.Target,
			&e.Outcome, &e.RequestID, &e.Details); err != nil {
			return store.AuditEntry{}, err
		}
		e.Time = timeFrom(at)
		e.Role = store.Role(role)
		return e, nil
	})
}
