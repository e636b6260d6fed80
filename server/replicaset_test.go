package server_test

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/bus/busredis/redistest"
	"github.com/nexus-platform/nexus/pluginhost/store/storepg/pgtest"
	"github.com/nexus-platform/nexus/server"
)

// replicaSet starts servers that are replicas of each other: one PostgreSQL database and one
// Redis (real, on loopback), and one secrets key, which the first server started in this
// process creates and the others are given (as the README asks of replicas).
type replicaSet struct {
	t      *testing.T
	DBURL  string
	prefix string
	redis  string
	// tune and vars configure every server alike: tune those in this process, vars (NEXUS_
	// variables) those started as processes.
	tune  func(*server.Config)
	vars  []string
	key   []byte
	first *env
}

// newReplicaSet starts PostgreSQL and Redis for servers whose Redis keys start with prefix.
func newReplicaSet(t *testing.T, prefix string, tune func(*server.Config), vars ...string) *replicaSet {
	t.Helper()
	pg := pgtest.Start(t, pgtest.Options{})
	rs := redistest.Start(t, redistest.Options{})
	if tune == nil {
		tune = func(*server.Config) {}
	}
	return &replicaSet{t: t, DBURL: pg.NewDatabase(t), prefix: prefix, redis: rs.URL(), tune: tune, vars: vars}
}

// dataDir is a new data directory holding the set's secrets key, once there is one.
func (s *replicaSet) dataDir() string {
	dir := searchableTempDir(s.t)
	if s.key != nil {
		if err := os.WriteFile(filepath.Join(dir, "secret.key"), s.key, 0o600); err != nil {
			s.t.Fatal(err)
		}
	}
	return dir
}

// inProcess starts replica id in this process (id "" lets the server generate its id).
func (s *replicaSet) inProcess(id string) *env {
	s.t.Helper()
	dir := s.dataDir()
	e := startServerWith(s.t, testLogSink(), slog.LevelDebug, func(c *server.Config) {
		c.DatabaseURL, c.RedisURL, c.RedisPrefix, c.ReplicaID, c.DataDir = s.DBURL, s.redis, s.prefix, id, dir
		s.tune(c)
	})
	if s.first == nil {
		key, err := os.ReadFile(filepath.Join(dir, "secret.key"))
		if err != nil {
			s.t.Fatal(err)
		}
		s.key, s.first = key, e
	}
	return e
}

// process starts replica id as a process of its own, so that it can be killed. A server in
// this process must have started first (tokens live in the shared database: its identity
// service issues the process's too).
func (s *replicaSet) process(id string) (*env, *exec.Cmd) {
	s.t.Helper()
	if s.first == nil {
		s.t.Fatal("replicaSet: start a server in this process first")
	}
	dir := s.dataDir()
	vars := append([]string{"NEXUS_DATABASE_URL=" + s.DBURL, "NEXUS_REDIS_URL=" + s.redis,
		"NEXUS_REDIS_PREFIX=" + s.prefix, "NEXUS_REPLICA_ID=" + id}, s.vars...)
	cmd, url := startProcessWith(s.t, dir, filepath.Join(s.t.TempDir(), "addr"), nil, vars)
	return &env{t: s.t, URL: url, DataDir: dir, Admin: testAdminToken, User: s.first.User, srv: s.first.srv}, cmd
}
