package storesqlite

import (
	"database/sql"
	"fmt"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

const replicaColumns = `id, advertise_url, version, started_at, heartbeat_at, heartbeat_interval, instances, sessions`

// PutReplica implements store.Tx. A replica needs an id.
func (t *tx) PutReplica(r store.Replica) error {
	const op = "put replica"
	if err := t.use(op, true); err != nil {
		return err
	}
	if r.ID == "" {
		return fmt.Errorf("storesqlite: %s: empty id", op)
	}
	startedAt, err := timeValue(r.StartedAt)
	if err != nil {
		return fmt.Errorf("storesqlite: %s %q: started at: %w", op, r.ID, err)
	}
	heartbeatAt, err := timeValue(r.HeartbeatAt)
	if err != nil {
		return fmt.Errorf("storesqlite: %s %q: heartbeat at: %w", op, r.ID, err)
	}
	text, ok, err := store.EncodeReplicaSessions(r.Sessions)
	if err != nil {
		return fmt.Errorf("storesqlite: %s %q: sessions: %w", op, r.ID, err)
	}
	sessions := sql.NullString{String: text, Valid: ok}
	_, err = t.exec(op, `INSERT INTO replicas (`+replicaColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (id) DO UPDATE SET advertise_url = excluded.advertise_url, version = excluded.version,
		started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
		heartbeat_interval = excluded.heartbeat_interval, instances = excluded.instances, sessions = excluded.sessions`,
		r.ID, r.AdvertiseURL, r.Version, startedAt, heartbeatAt, int64(r.HeartbeatInterval), r.Instances, sessions)
	return err
}

// Replicas implements store.Tx.
func (t *tx) Replicas() ([]store.Replica, error) {
	const op = "replicas"
	if err := t.use(op, false); err != nil {
		return nil, err
	}
	rows, err := t.sqlTx.QueryContext(t.ctx, `SELECT `+replicaColumns+` FROM replicas ORDER BY id`)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []store.Replica
	for rows.Next() {
		var (
			r                      store.Replica
			startedAt, heartbeatAt sql.NullInt64
			interval               int64
			sessions               sql.NullString
		)
		if err := rows.Scan(&r.ID, &r.AdvertiseURL, &r.Version, &startedAt, &heartbeatAt, &interval, &r.Instances, &sessions); err != nil {
			return nil, wrap(op, err)
		}
		if sessions.Valid {
			if r.Sessions, err = store.DecodeReplicaSessions(sessions.String); err != nil {
				return nil, fmt.Errorf("storesqlite: %s: sessions of replica %q: %w", op, r.ID, err)
			}
		}
		r.StartedAt, r.HeartbeatAt, r.HeartbeatInterval = timeFrom(startedAt), timeFrom(heartbeatAt), time.Duration(interval)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// DeleteReplica implements store.Tx.
func (t *tx) DeleteReplica(id string) error {
	const op = "delete replica"
	if err := t.use(op, true); err != nil {
		return err
	}
	n, err := t.exec(op, `DELETE FROM replicas WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound("replica", id)
	}
	return nil
}
