package storesqlite

import (
	"database/sql"
	"fmt"
	"strings"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// AppendLogs implements store.Tx.
func (t *tx) AppendLogs(recs []store.LogRecord) error {
	const op = "append logs"
	if err := t.use(op, true); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	stmt, err := t.sqlTx.PrepareContext(t.ctx, `INSERT INTO logs
	(plugin_id, time, level, level_rank, message, metadata) VALUES (?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return wrap(op, err)
	}
	defer stmt.Close()
	for i, r := range recs {
		at, err := timeValue(r.Time)
		if err != nil {
			return fmt.Errorf("storesqlite: %s: record %d: %w", op, i, err)
		}
		if _, err := stmt.ExecContext(t.ctx, r.PluginID, at, r.Level, store.LevelRank(r.Level),
			r.Message, r.Metadata); err != nil {
			return wrap(op, err)
		}
	}
	return nil
}

// Logs implements store.Tx. Records with the same time come newest appended first. The
// filter needs Page >= 1 and PerPage >= 1.
func (t *tx) Logs(f store.LogFilter) ([]store.LogRecord, int, error) {
	const op = "logs"
	if err := t.use(op, false); err != nil {
		return nil, 0, err
	}
	if f.Page < 1 || f.PerPage < 1 {
		return nil, 0, fmt.Errorf("storesqlite: %s: page %d, per page %d: both must be at least 1", op, f.Page, f.PerPage)
	}
	where := []string{"plugin_id = ?"}
	args := []any{f.PluginID}
	if f.MinLevel != "" {
		// Unknown levels rank 0, so an unknown MinLevel keeps every record.
		where = append(where, "level_rank >= ?")
		args = append(args, store.LevelRank(f.MinLevel))
	}
	if !f.Start.IsZero() {
		v, err := timeValue(f.Start)
		if err != nil {
			return nil, 0, fmt.Errorf("storesqlite: %s: start: %w", op, err)
		}
		where = append(where, "time >= ?")
		args = append(args, v)
	}
	if !f.End.IsZero() {
		v, err := timeValue(f.End)
		if err != nil {
			return nil, 0, fmt.Errorf("storesqlite: %s: end: %w", op, err)
		}
		where = append(where, "time <= ?")
		args = append(args, v)
	}
	if f.Search != "" {
		where = append(where, "instr("+lowerFunc+"(message), ?) > 0")
		args = append(args, strings.ToLower(f.Search))
	}
	cond := strings.Join(where, " AND ")

	var total int
	if err := t.sqlTx.QueryRowContext(t.ctx, `SELECT count(*) FROM logs WHERE `+cond, args...).Scan(&total); err != nil {
		return nil, 0, wrap(op, err)
	}
	pages := total / f.PerPage
	if total%f.PerPage != 0 {
		pages++
	}
	if f.Page > pages {
		return nil, total, nil // past the last page (and no overflow below)
	}
	offset := (f.Page - 1) * f.PerPage

	rows, err := t.sqlTx.QueryContext(t.ctx, `SELECT plugin_id, time, level, message, metadata
	FROM logs WHERE `+cond+` ORDER BY time DESC, seq DESC LIMIT ? OFFSET ?`,
		append(args, f.PerPage, offset)...)
	if err != nil {
		return nil, 0, wrap(op, err)
	}
	defer rows.Close()
	var out []store.LogRecord
	for rows.Next() {
		var (
			r  store.LogRecord
			at sql.NullInt64
		)
		if err := rows.Scan(&r.PluginID, &at, &r.Level, &r.Message, &r.Metadata); err != nil {
			return nil, 0, wrap(op, err)
		}
		r.Time = timeFrom(at)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, wrap(op, err)
	}
	return out, total, nil
}

// TrimLogs implements store.Tx. keep 0 removes every record of the plugin; a negative keep
// is refused.
func (t *tx) TrimLogs(pluginID string, keep int) error {
	const op = "trim logs"
	if err := t.use(op, true); err != nil {
		return err
	}
	if keep < 0 {
		return fmt.Errorf("storesqlite: %s %q: negative keep %d", op, pluginID, keep)
	}
	_, err := t.exec(op, `DELETE FROM logs WHERE plugin_id = ?1 AND seq NOT IN (
	SELECT seq FROM logs WHERE plugin_id = ?1 ORDER BY time DESC, seq DESC LIMIT ?2)`,
		pluginID, keep)
	return err
}

// DeleteLogs implements store.Tx.
func (t *tx) DeleteLogs(pluginID string) error {
	const op = "delete logs"
	if err := t.use(op, true); err != nil {
		return err
	}
	_, err := t.exec(op, `DELETE FROM logs WHERE plugin_id = ?`, pluginID)
	return err
}
