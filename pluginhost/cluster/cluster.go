// Package cluster keeps the membership of the replicas: the Nexus servers that share one
// store. Each replica records itself in the store's replicas table (store.Replica) when it
// joins and again at every heartbeat, with where it is reached, its version and how many
// plugin instances are connected to it, and removes its record when it stops cleanly. A
// replica whose last heartbeat is older than DownAfter of its heartbeat intervals counts
// as down: it was killed, lost its store, or is stuck.
//
// Times are each replica's own clock: replicas whose clocks disagree by more than a few
// heartbeat intervals see each other wrongly up or down.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// DownAfter is how many of its heartbeat intervals a replica may stay silent before it
// counts as down.
const DownAfter = 3

// ForgetAfter is how long a replica may stay silent before its record is removed (by the
// next heartbeat of any replica): until then it is listed as down.
const ForgetAfter = 24 * time.Hour

// DefaultInterval is the heartbeat interval of a Config without one.
const DefaultInterval = 5 * time.Second

// Config configures a Membership. Store and ID are required.
type Config struct {
	Store store.Store
	// ID is this replica's id.
	ID string
	// AdvertiseURL returns where other replicas and users reach this replica; it is called
	// at each heartbeat, so it may be known only once the server listens. Nil: "".
	AdvertiseURL func() string
	// Version is the Nexus version this replica runs.
	Version string
	// Interval is how often this replica records itself (DefaultInterval).
	Interval time.Duration
	// Instances returns how many plugin instances are connected to this replica. Nil: 0.
	Instances func() int
	// Sessions returns the plugin instances connected to this replica, recorded with each
	// heartbeat so that other replicas can list them. Nil: none.
	Sessions func() []store.ReplicaSession
	// Logger receives the heartbeats that fail. Nil discards.
	Logger *slog.Logger
}

// Replica is a replica as the store last recorded it, and its state as seen now.
type Replica struct {
	store.Replica
	// Up is false once the replica's heartbeat is older than DownAfter of its intervals.
	Up bool
	// Self marks the replica that looked.
	Self bool
}

// Membership is this replica's membership of the cluster. It is safe for concurrent use.
type Membership struct {
	// Set once by New, read-only afterwards.
	cfg       Config
	startedAt time.Time

	mu sync.Mutex
	// last are the other replicas' records as the last heartbeat read them.
	last []store.Replica
}

// New returns the membership of the replica cfg describes. It does no I/O: Beat records
// the replica, Run keeps it recorded, Leave removes it.
func New(cfg Config) (*Membership, error) {
	if cfg.Store == nil || cfg.ID == "" {
		return nil, errors.New("cluster: Store and ID are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.AdvertiseURL == nil {
		cfg.AdvertiseURL = func() string { return "" }
	}
	if cfg.Instances == nil {
		cfg.Instances = func() int { return 0 }
	}
	if cfg.Sessions == nil {
		cfg.Sessions = func() []store.ReplicaSession { return nil }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Membership{cfg: cfg, startedAt: time.Now()}, nil
}

// ID is this replica's id.
func (m *Membership) ID() string { return m.cfg.ID }

// Interval is this replica's heartbeat interval.
func (m *Membership) Interval() time.Duration { return m.cfg.Interval }

// Beat records this replica now, and removes the records of replicas silent for longer
// than ForgetAfter.
func (m *Membership) Beat(ctx context.Context) error {
	now := time.Now()
	self := m.record(now)
	self.Sessions = m.cfg.Sessions()
	var others []store.Replica
	err := m.cfg.Store.Write(ctx, func(tx store.Tx) error {
		all, err := tx.Replicas()
		if err != nil {
			return err
		}
		others = others[:0]
		for _, r := range all {
			switch {
			case r.ID == self.ID:
			case now.Sub(r.HeartbeatAt) > ForgetAfter:
				if err := tx.DeleteReplica(r.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
			default:
				others = append(others, r)
			}
		}
		return tx.PutReplica(self)
	})
	if err == nil {
		m.mu.Lock()
		m.last = others
		m.mu.Unlock()
	}
	return err
}

// Session is a plugin instance connected to another replica.
type Session struct {
	InstanceID string
	Replica    string
}

// RemoteSessions returns the instances of plugin id connected to the other replicas that
// are up, as this replica's last heartbeat read them (at most one heartbeat interval old,
// and as old as those replicas' last heartbeats), ordered by replica and instance id. It
// reads nothing from the store.
func (m *Membership) RemoteSessions(id string) []Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	var out []Session
	for _, r := range m.last {
		if !Up(r, now) {
			continue
		}
		for _, s := range r.Sessions {
			if s.PluginID == id {
				out = append(out, Session{InstanceID: s.InstanceID, Replica: r.ID})
			}
		}
	}
	return out
}

// Run records this replica every interval until ctx ends. A heartbeat that fails is
// logged and tried again at the next tick.
func (m *Membership) Run(ctx context.Context) {
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// One interval bounds each heartbeat: a late one is worth less than the next.
		bctx, cancel := context.WithTimeout(ctx, m.cfg.Interval)
		err := m.Beat(bctx)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			m.cfg.Logger.Warn("recording this replica's heartbeat failed; the others will see it down if this goes on",
				"replica", m.cfg.ID, "error", err)
		case err == nil && failing:
			failing = false
			m.cfg.Logger.Info("recording this replica's heartbeat works again", "replica", m.cfg.ID)
		}
	}
}

// Leave removes this replica's record (a clean stop). A record already gone is not an
// error.
func (m *Membership) Leave(ctx context.Context) error {
	err := m.cfg.Store.Write(ctx, func(tx store.Tx) error { return tx.DeleteReplica(m.cfg.ID) })
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// Replicas returns every recorded replica, ordered by id, with its state now. This replica
// is always listed, up, with the instances connected to it now, even before its first
// heartbeat is recorded.
func (m *Membership) Replicas(ctx context.Context) ([]Replica, error) {
	var recs []store.Replica
	err := m.cfg.Store.Read(ctx, func(tx store.Tx) error {
		var err error
		recs, err = tx.Replicas()
		return err
	})
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]Replica, 0, len(recs)+1)
	found := false
	for _, r := range recs {
		rep := Replica{Replica: r, Up: Up(r, now)}
		if r.ID == m.cfg.ID {
			found = true
			rep.Self, rep.Up = true, true
			rep.Instances = m.cfg.Instances()
			if !rep.StartedAt.Equal(m.startedAt) {
				// The record of an earlier run with this id, not rewritten yet.
				rep.Replica = m.record(time.Time{})
			}
		}
		out = append(out, rep)
	}
	if !found {
		out = append(out, Replica{Replica: m.record(time.Time{}), Up: true, Self: true})
		slices.SortFunc(out, func(a, b Replica) int { return strings.Compare(a.ID, b.ID) })
	}
	return out, nil
}

// LiveOthers returns the replicas other than this one that are up.
func (m *Membership) LiveOthers(ctx context.Context) ([]Replica, error) {
	all, err := m.Replicas(ctx)
	if err != nil {
		return nil, err
	}
	var out []Replica
	for _, r := range all {
		if !r.Self && r.Up {
			out = append(out, r)
		}
	}
	return out, nil
}

// Previous returns the record of this replica's id that an earlier run left, and whether it
// is still up: a server killed moments ago, or another live server given the same id.
func (m *Membership) Previous(ctx context.Context) (rec store.Replica, up, found bool, err error) {
	err = m.cfg.Store.Read(ctx, func(tx store.Tx) error {
		all, err := tx.Replicas()
		for _, r := range all {
			if r.ID == m.cfg.ID {
				rec, found = r, true
			}
		}
		return err
	})
	if err != nil || !found {
		return store.Replica{}, false, false, err
	}
	return rec, Up(rec, time.Now()), true, nil
}

// Up reports whether the replica r recorded counts as up at now: its last heartbeat is at
// most DownAfter of its intervals old.
func Up(r store.Replica, now time.Time) bool {
	interval := r.HeartbeatInterval
	if interval <= 0 {
		interval = DefaultInterval
	}
	return !r.HeartbeatAt.IsZero() && now.Sub(r.HeartbeatAt) <= DownAfter*interval
}

// Describe names replicas for a message: "id (url)", comma-separated.
func Describe(rs []Replica) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.ID
		if r.AdvertiseURL != "" {
			parts[i] = fmt.Sprintf("%s (%s)", r.ID, r.AdvertiseURL)
		}
	}
	return strings.Join(parts, ", ")
}

// record is this replica's record with the heartbeat at.
func (m *Membership) record(at time.Time) store.Replica {
	return store.Replica{ID: m.cfg.ID, AdvertiseURL: m.cfg.AdvertiseURL(), Version: m.cfg.Version, StartedAt: m.startedAt,
		HeartbeatAt: at, HeartbeatInterval: m.cfg.Interval, Instances: m.cfg.Instances()}
}
