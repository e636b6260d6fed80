package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nexus-platform/nexus/pluginhost/store/storepg/pgtest"
)

// The host over Redis with two replicas: two `nexus serve` on one PostgreSQL database and
// one Redis (the same default --redis-prefix), sharing the secrets key and the bootstrap
// admin token. The plugins are installed, enabled and given their tokens through replica A
// only (replica B learns of them from the shared database); bench-sender connects to A and
// bench-echo to B, so every message goes sender → A → B's inbox in Redis → B → echo, and
// its reply echo → B → A's reply stream in Redis → A → sender.

// runHostReplicas runs the two-replica scenario, with a PostgreSQL server and a
// redis-server of its own.
func (b *bench) runHostReplicas(ctx context.Context) (m Measurement, err error) {
	rs, err := startRedis()
	if err != nil {
		return m, err
	}
	defer rs.Close()
	pg, err := startPostgres()
	if err != nil {
		return m, err
	}
	defer pg.Close()
	dbURL, err := pg.CreateDatabase(ctx)
	if err != nil {
		return m, fmt.Errorf("create the database: %w", err)
	}

	ps := newProcs(b.stderr)
	defer ps.stopAll()
	a, err := b.startHost(ctx, ps, hostOptions{name: "nexus serve A", redisURL: rs.URL(), databaseURL: dbURL})
	if err != nil {
		return m, err
	}
	var replicaB *hostServer
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w%s", err, a.logTail())
			if replicaB != nil {
				err = fmt.Errorf("%w%s", err, replicaB.logTail())
			}
		}
	}()
	key, err := os.ReadFile(filepath.Join(a.dataDir, secretKeyFile))
	if err != nil {
		return m, fmt.Errorf("read replica A's secrets key: %w", err)
	}
	replicaB, err = b.startHost(ctx, ps, hostOptions{name: "nexus serve B", redisURL: rs.URL(), databaseURL: dbURL, admin: a.admin, secretKey: key})
	if err != nil {
		return m, err
	}
	return b.runPlugins(ctx, ps, a, replicaB)
}

// startPostgres starts a PostgreSQL server of the scenario's own (initdb in a temporary
// directory, a free port); a missing PostgreSQL is a failure of the scenario.
func startPostgres() (*pgtest.Server, error) {
	srv, err := pgtest.StartServer(pgtest.Options{})
	if err != nil {
		return nil, fmt.Errorf("start PostgreSQL: %w", err)
	}
	return srv, nil
}
