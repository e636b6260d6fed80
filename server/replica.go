package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/cluster"
)

// ErrNoSharedBus is matched (with errors.Is) by the error New returns when a server on a
// shared database without --redis-url finds other replicas running on it.
var ErrNoSharedBus = errors.New("other replicas run on this database and this server has no --redis-url")

// replicaIDFile keeps a generated replica id in the data directory.
const replicaIDFile = "replica-id"

// replicaIDPattern is the form of a replica id: it is part of Redis keys, of the names of
// launch tokens ("runtime:<replica>:<plugin>") and of bus consumers ("<instance>@<replica>"),
// so it holds neither ':' nor '@'.
var replicaIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func validReplicaID(id string) bool { return replicaIDPattern.MatchString(id) }

// checkAdvertiseURL checks that u is an absolute http(s) URL with a host, and nothing a
// base URL cannot hold (credentials, a query, a fragment).
func checkAdvertiseURL(u string) error {
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL", u)
	case p.Scheme != "http" && p.Scheme != "https":
		return fmt.Errorf("%q: want an http:// or https:// URL", u)
	case p.Host == "" || p.Hostname() == "":
		return fmt.Errorf("%q has no host", u)
	case p.User != nil || p.RawQuery != "" || p.Fragment != "" || p.ForceQuery:
		return fmt.Errorf("%q: want no credentials, query or fragment", u)
	}
	return nil
}

// replicaID returns cfg.ReplicaID, or else the id kept in the data directory, which it
// generates and keeps on the first start. The caller holds the data directory's lock.
func replicaID(cfg Config) (string, error) {
	if cfg.ReplicaID != "" {
		return cfg.ReplicaID, nil
	}
	path := filepath.Join(cfg.DataDir, replicaIDFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		id := strings.TrimSpace(string(b))
		if !validReplicaID(id) {
			return "", fmt.Errorf("%s holds %q, not a replica id (1 to 64 letters, digits, - or _): correct it, or remove the file to have a new id generated", path, id)
		}
		return id, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("read the replica id: %w", err)
	}
	id := newReplicaID()
	// Written whole or not at all: a crash must not leave a half id for the next start.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keep the replica id: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("keep the replica id: %w", err)
	}
	return id, nil
}

// newReplicaID returns the machine's hostname, made a slug, and six random hex digits:
// readable in GET /api/v1/cluster, and unique for servers on one machine.
func newReplicaID() string {
	var suffix [3]byte
	_, _ = rand.Read(suffix[:]) // crypto/rand.Read never fails
	host, _ := os.Hostname()
	host, _, _ = strings.Cut(host, ".")
	slug := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, host)
	if len(slug) > 40 {
		slug = slug[:40]
	}
	if slug = strings.Trim(slug, "-"); slug == "" {
		slug = "nexus"
	}
	return slug + "-" + hex.EncodeToString(suffix[:])
}

// advertiseURL is where other replicas and users reach this server: --advertise-url, or
// else http(s)://host:port of the address listened on (of --listen before the server
// listens), with the machine's hostname for a wildcard host.
func (s *Server) advertiseURL() string {
	if s.cfg.AdvertiseURL != "" {
		return strings.TrimRight(s.cfg.AdvertiseURL, "/")
	}
	if u, ok := s.advertised.Load().(string); ok {
		return u
	}
	return s.listenURL(s.cfg.Listen, hostnameOrLoopback)
}

// listenURL is the URL of the listen address addr, with wildcard(host) for a wildcard host.
func (s *Server) listenURL(addr string, wildcard func() string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = wildcard()
	}
	scheme := "http"
	if s.cfg.TLSCert != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// hostnameOrLoopback is the machine's hostname, which other machines may resolve, or
// loopback when it has none.
func hostnameOrLoopback() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "127.0.0.1"
}

// checkReplicas refuses a server on a shared database without a shared bus when other
// replicas are up on it (the in-memory bus cannot reach the plugins connected to them),
// and warns when a record of this server's own id is up (a previous run killed moments
// ago, or another server given the same --replica-id).
func (s *Server) checkReplicas(ctx context.Context) error {
	if s.cfg.DatabaseURL != "" && s.cfg.RedisURL == "" {
		others, err := s.cluster.LiveOthers(ctx)
		if err != nil {
			return fmt.Errorf("read the replicas of the database: %w", err)
		}
		if len(others) > 0 {
			return fmt.Errorf("%w: %s; without a shared bus this server could not reach the plugins connected to them, "+
				"nor they this server's: give every server of the database the same --redis-url (and --redis-prefix), "+
				"or stop the others first", ErrNoSharedBus, cluster.Describe(others))
		}
	}
	rec, up, found, err := s.cluster.Previous(ctx)
	if err != nil {
		return fmt.Errorf("read the replicas of the database: %w", err)
	}
	if found && up {
		s.log.Warn("this replica id recorded a heartbeat moments ago: either this server's previous run was killed, "+
			"or another running server has the same --replica-id (give each server its own)",
			"replica", s.cluster.ID(), "advertise_url", rec.AdvertiseURL, "last_heartbeat", rec.HeartbeatAt)
	}
	return nil
}

// joinCluster records this server in the replicas table now and then at every heartbeat
// interval, until the returned function is called: that stops the heartbeats and removes
// the record (a clean stop; a killed server's record stays, and shows it down).
func (s *Server) joinCluster(ctx context.Context) (leave func()) {
	bctx, cancel := context.WithTimeout(ctx, max(s.cfg.HeartbeatInterval, 5*time.Second))
	if err := s.cluster.Beat(bctx); err != nil {
		s.log.Warn("recording this replica in the database failed; retrying at every heartbeat", "replica", s.cluster.ID(), "error", err)
	}
	cancel()
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { s.cluster.Run(runCtx) })
	return func() {
		stop()
		wg.Wait()
		lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.cluster.Leave(lctx); err != nil {
			s.log.Warn("removing this replica from the database failed; the others will list it as down", "replica", s.cluster.ID(), "error", err)
		}
	}
}
