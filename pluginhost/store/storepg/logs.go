package storepg

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// AppendLogs implements store.Tx. The records go in one statement, in order. Messages are
// stored as cleanText makes them (they are the plugin's output).
func (t *tx) AppendLogs(recs []store.LogRecord) error {
	const op = "append logs"
	if err := t.use(op, true); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	var (
		ids      = make([]string, len(recs))
		times    = make([]pgtype.Int8, len(recs))
		levels   = make([]string, len(recs))
		ranks    = make([]int16, len(recs))
		messages = make([]string, len(recs))
		folded   = make([]pgtype.Text, len(recs))
		metadata = make([][]byte, len(recs))
	)
	for i, r := range recs {
		at, err := timeValue(r.Time)
		if err != nil {
			return fmt.Errorf("storepg: %s: record %d: %w", op, i, err)
		}
		msg := cleanText(r.Message)
		ids[i], times[i], levels[i], ranks[i], messages[i], metadata[i] =
			r.PluginID, at, r.Level, int16(store.LevelRank(r.Level)), msg, r.Metadata
		if lower := strings.ToLower(msg); lower != msg {
			folded[i] = pgtype.Text{String: lower, Valid: true}
		}
	}
	_, err := t.exec(op, `INSERT INTO logs (plugin_id, time, level, level_rank, message, message_folded, metadata)
	SELECT plugin_id, time, level, level_rank, message, message_folded, metadata FROM unnest($1::text[], $2::bigint[], $3::text[], $4::smallint[], $5::text[], $6::text[], $7::bytea[])
		WITH ORDINALITY AS r(plugin_id, time, level, level_rank, message, message_folded, metadata, n)
	ORDER BY n`, ids, times, levels, ranks, messages, folded, metadata)
	return err
}

// Logs implements store.Tx. Records with the same time come newest appended first, and
// records without a time last. The filter needs Page >= 1 and PerPage >= 1.
func (t *tx) Logs(f store.LogFilter) ([]store.LogRecord, int, error) {
	const op = "logs"
	if err := t.use(op, false); err != nil {
		return nil, 0, err
	}
	if f.Page < 1 || f.PerPage < 1 {
		return nil, 0, fmt.Errorf("storepg: %s: page %d, per page %d: both must be at least 1", op, f.Page, f.PerPage)
	}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	where := []string{"plugin_id = " + arg(f.PluginID)}
	if f.MinLevel != "" {
		// Unknown levels rank 0, so an unknown MinLevel keeps every record.
		where = append(where, "level_rank >= "+arg(store.LevelRank(f.MinLevel)))
	}
	if !f.Start.IsZero() {
		v, err := timeValue(f.Start)
		if err != nil {
			return nil, 0, fmt.Errorf("storepg: %s: start: %w", op, err)
		}
		where = append(where, "time >= "+arg(v))
	}
	if !f.End.IsZero() {
		v, err := timeValue(f.End)
		if err != nil {
			return nil, 0, fmt.Errorf("storepg: %s: end: %w", op, err)
		}
		where = append(where, "time <= "+arg(v))
	}
	if f.Search != "" {
		// strpos, not LIKE: no character of the search is a wildcard.
		where = append(where, "strpos(coalesce(message_folded, message), "+arg(strings.ToLower(cleanText(f.Search)))+") > 0")
	}
	cond := strings.Join(where, " AND ")

	var total int
	if err := t.queryRow(`SELECT count(*) FROM logs WHERE `+cond, args...).Scan(&total); err != nil {
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
	q := `SELECT plugin_id, time, level, message, metadata FROM logs WHERE ` + cond +
		` ORDER BY time DESC NULLS LAST, seq DESC LIMIT ` + arg(f.PerPage) + ` OFFSET ` + arg(offset)
	out, err := list(t, op, q, args, func(r rowScanner) (store.LogRecord, error) {
		var (
			rec store.LogRecord
			at  pgtype.Int8
		)
		if err := r.Scan(&rec.PluginID, &at, &rec.Level, &rec.Message, &rec.Metadata); err != nil {
			return store.LogRecord{}, err
		}
		rec.Time = timeFrom(at)
		return rec, nil
	})
	if err != nil {
		return nil, 0, err
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
		return fmt.Errorf("storepg: %s %q: negative keep %d", op, pluginID, keep)
	}
	_, err := t.exec(op, `DELETE FROM logs WHERE seq IN (
	SELECT seq FROM logs WHERE plugin_id = $1 ORDER BY time DESC NULLS LAST, seq DESC OFFSET $2)`,
		pluginID, keep)
	return err
}

// DeleteLogs implements store.Tx.
func (t *tx) DeleteLogs(pluginID string) error {
	const op = "delete logs"
	if err := t.use(op, true); err != nil {
		return err
	}
	_, err := t.exec(op, `DELETE FROM logs WHERE plugin_id = $1`, pluginID)
	return err
}
