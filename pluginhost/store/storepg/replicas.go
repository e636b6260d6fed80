package storepg

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

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
		return fmt.Errorf("storepg: %s: empty id", op)
	}
	startedAt, err := timeValue(r.StartedAt)
	if err != nil {
		return fmt.Errorf("storepg: %s %q: started at: %w", op, r.ID, err)
	}
	heartbeatAt, err := timeValue(r.HeartbeatAt)
	if err != nil {
		return fmt.Errorf("storepg: %s %q: heartbeat at: %w", op, r.ID, err)
	}
	text, ok, err := store.EncodeReplicaSessions(r.Sessions)
	if err != nil {
		return fmt.Errorf("storepg: %s %q: sessions: %w", op, r.ID, err)
	}
	sessions := pgtype.Text{String: text, Valid: ok}
	_, err = t.exec(op, `INSERT INTO replicas (`+replicaColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
	ON CONFLICT (id) DO UPDATE SET advertise_url = excluded.advertise_url, version = excluded.version,
		started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
		heartbeat_interval = excluded.heartbeat_interval, instances = excluded.instances, sessions = excluded.sessions`,
		r.ID, r.AdvertiseURL, r.Version, startedAt, heartbeatAt, int64(r.HeartbeatInterval), int64(r.Instances), sessions)
	return err
}

// Replicas implements store.Tx.
func (t *tx) Replicas() ([]store.Replica, error) {
	const op = "replicas"
	if err := t.use(op, false); err != nil {
		return nil, err
	}
	return list(t, op, `SELECT `+replicaColumns+` FROM replicas ORDER BY id`, nil,
		func(row rowScanner) (store.Replica, error) {
			var (
				r                      store.Replica
				startedAt, heartbeatAt pgtype.Int8
				interval, instances    int64
				sessions               pgtype.Text
			)
			if err := row.Scan(&r.ID, &r.AdvertiseURL, &r.Version, &startedAt, &heartbeatAt, &interval, &instances, &sessions); err != nil {
				return store.Replica{}, err
			}
			if sessions.Valid {
				var err error
				if r.Sessions, err = store.DecodeReplicaSessions(sessions.String); err != nil {
					return store.Replica{}, fmt.Errorf("sessions of replica %q: %w", r.ID, err)
				}
			}
			r.StartedAt, r.HeartbeatAt = timeFrom(startedAt), timeFrom(heartbeatAt)
			r.HeartbeatInterval, r.Instances = time.Duration(interval), int(instances)
			return r, nil
		})
}

// DeleteReplica implements store.Tx.
func (t *tx) DeleteReplica(id string) error {
	const op = "delete replica"
	if err := t.use(op, true); err != nil {
		return err
	}
	n, err := t.exec(op, `DELETE FROM replicas WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound("replica", id)
	}
	return nil
}
