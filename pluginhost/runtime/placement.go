package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// Placement: with a store several servers share (Options.Leases), a host-launched plugin runs
// on one replica at a time, the one holding its lease. A lease is a setting
// (LeaseKey(plugin) = JSON {replica, expires_at}), taken and renewed in one store Write, so
// that the read, the check and the write are one step for every server sharing the store.
// Expiry is measured on the database's clock when the store has one (store.ClockTx), so that
// the servers' own clocks do not matter; otherwise on each server's clock.

// LeaseKeyPrefix starts the key of every lease setting.
const LeaseKeyPrefix = "lease/"

// LeaseKey is the key of the setting that holds plugin id's lease.
func LeaseKey(id string) string { return LeaseKeyPrefix + id }

// Lease is a plugin's lease as the store records it. A released lease has no replica.
type Lease struct {
	Replica   string    `json:"replica"`
	ExpiresAt time.Time `json:"expires_at"`
}

// heldBy reports whether the lease is held, unexpired at now, by a replica other than self.
func (l Lease) heldBy(self string, now time.Time) (string, bool) {
	if l.Replica == "" || l.Replica == self || !now.Before(l.ExpiresAt) {
		return "", false
	}
	return l.Replica, true
}

// txNow is the time now on the store's clock (store.ClockTx), or this server's.
func txNow(tx store.Tx) (time.Time, error) {
	if c, ok := tx.(store.ClockTx); ok {
		return c.Now()
	}
	return time.Now().UTC(), nil
}

// placed reports whether placement is on: leases decide where host-launched plugins run.
func (rt *Runtime) placed() bool { return rt.leases != nil }

// readLease reads a plugin's lease in tx; a missing or unreadable one is free.
func readLease(tx store.Tx, id string) (Lease, error) {
	b, err := tx.Setting(LeaseKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return Lease{}, nil
	}
	if err != nil {
		return Lease{}, err
	}
	var l Lease
	if json.Unmarshal(b, &l) != nil {
		return Lease{}, nil
	}
	return l, nil
}

// claimLease, in tx, takes or extends plugin id's lease for this replica, unless another
// replica holds it unexpired: then it returns that holder and writes nothing.
func (rt *Runtime) claimLease(tx store.Tx, id string) (holder string, err error) {
	l, err := readLease(tx, id)
	if err != nil {
		return "", err
	}
	now, err := txNow(tx)
	if err != nil {
		return "", err
	}
	if h, ok := l.heldBy(rt.cfg.Replica, now); ok {
		return h, nil
	}
	return "", tx.PutSetting(LeaseKey(id), mustJSON(Lease{Replica: rt.cfg.Replica, ExpiresAt: now.Add(rt.cfg.LeaseTTL)}))
}

// acquireLease takes plugin id's lease for this replica when it is free, expired or already
// this replica's, and records it as held here; otherwise it returns the live holder.
func (rt *Runtime) acquireLease(ctx context.Context, id string) (holder string, err error) {
	err = rt.leases.Write(ctx, func(tx store.Tx) error {
		holder, err = rt.claimLease(tx, id)
		return err
	})
	if err == nil && holder == "" {
		rt.mu.Lock()
		rt.held[id] = true
		rt.mu.Unlock()
		rt.renewalOnce.Do(func() { rt.spawn(func() { rt.everyThirdTTL(rt.renewLeases) }) })
	}
	return holder, err
}

// renewLease extends a lease held here. It reports lost when another replica holds it now;
// a lease released here meanwhile is not taken again.
func (rt *Runtime) renewLease(ctx context.Context, id string) (lost bool, err error) {
	err = rt.leases.Write(ctx, func(tx store.Tx) error {
		// Read within the Write, which comes after any release's: a lease released since
		// the renewal began stays released.
		if !rt.holds(id) {
			return nil
		}
		holder, err := rt.claimLease(tx, id)
		lost = holder != ""
		return err
	})
	return lost, err
}

// releaseLease gives up plugin id's lease if this replica holds it: the record says released
// (no replica), so that another replica may take it at once.
func (rt *Runtime) releaseLease(ctx context.Context, id string) {
	if !rt.placed() {
		return
	}
	rt.mu.Lock()
	had := rt.held[id]
	delete(rt.held, id)
	rt.mu.Unlock()
	if !had {
		return
	}
	err := rt.leases.Write(context.WithoutCancel(ctx), func(tx store.Tx) error {
		l, err := readLease(tx, id)
		if err != nil || l.Replica != rt.cfg.Replica {
			return err
		}
		return tx.PutSetting(LeaseKey(id), mustJSON(Lease{}))
	})
	if err != nil {
		rt.log.Warn("could not release a plugin's lease; it expires on its own", "plugin_id", id, "error", err)
	}
}

// holds reports whether this replica holds plugin id's lease.
func (rt *Runtime) holds(id string) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.held[id]
}

// LeaseHolders returns the plugins whose lease a live replica other than this one holds,
// with the holder; nil without placement.
func (rt *Runtime) LeaseHolders(ctx context.Context) (map[string]string, error) {
	if !rt.placed() {
		return nil, nil
	}
	out := map[string]string{}
	err := rt.leases.Read(ctx, func(tx store.Tx) error {
		now, err := txNow(tx)
		if err != nil {
			return err
		}
		for _, p := range rt.reg.Snapshot().All() {
			l, err := readLease(tx, p.ID())
			if err != nil {
				return err
			}
			if h, ok := l.heldBy(rt.cfg.Replica, now); ok {
				out[p.ID()] = h
			}
		}
		return nil
	})
	return out, err
}

// startTakeovers starts, once, the takeover of the plugins whose lease is free or ran out
// (as the server starts its plugins: not before it listens). It runs every third of the
// lease TTL until Shutdown.
func (rt *Runtime) startTakeovers() {
	if !rt.placed() {
		return
	}
	rt.takeoverOnce.Do(func() { rt.spawn(func() { rt.everyThirdTTL(rt.takeOver) }) })
}

func (rt *Runtime) everyThirdTTL(fn func()) {
	t := time.NewTicker(rt.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-rt.ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// renewLeases renews every lease held here; a plugin whose lease another replica took is
// stopped here.
func (rt *Runtime) renewLeases() {
	rt.mu.Lock()
	ids := make([]string, 0, len(rt.held))
	for id := range rt.held {
		ids = append(ids, id)
	}
	rt.mu.Unlock()
	for _, id := range ids {
		lost, err := rt.renewLease(rt.ctx, id)
		if err != nil {
			if rt.ctx.Err() == nil {
				rt.log.Warn("could not renew a plugin's lease", "plugin_id", id, "error", err)
			}
			continue
		}
		if !lost {
			continue
		}
		rt.mu.Lock()
		delete(rt.held, id) // not released: it is another replica's now
		rt.mu.Unlock()
		rt.log.Warn("another replica took a plugin's lease; stopping it here", "plugin_id", id)
		unlock := rt.locks.lock(id)
		rt.stop(rt.ctx, rt.get(id), DisableOptions{Reason: "another replica runs it", Graceful: true, Timeout: rt.cfg.KillGrace})
		unlock()
	}
}

// takeOver starts here, in load order, the enabled host-launched plugins (not quarantined)
// whose lease is free or ran out.
func (rt *Runtime) takeOver() {
	holders, err := rt.LeaseHolders(rt.ctx)
	if err != nil {
		if rt.ctx.Err() == nil {
			rt.log.Warn("could not read the plugins' leases", "error", err)
		}
		return
	}
	for _, rp := range rt.reg.Snapshot().LoadOrder() {
		rec := rp.Record()
		if rt.ctx.Err() != nil || rt.shuttingDown.Load() {
			return
		}
		if !rec.Enabled || rp.Manifest().External || rec.Status == registry.StatusError || holders[rec.ID] != "" || rt.holds(rec.ID) {
			continue
		}
		unlock := rt.locks.lock(rec.ID)
		// Checked again under the lock: a disable or a start may have come first.
		cur, err := rt.reg.Get(rec.ID)
		if err == nil && cur.Enabled() && cur.Status() != registry.StatusError && !rt.holds(rec.ID) {
			rt.log.Info("taking over a plugin whose lease is free", "plugin_id", rec.ID)
			if _, err := rt.StartLocked(rt.ctx, rec.ID); err != nil && rt.ctx.Err() == nil {
				rt.log.Warn("taking over a plugin failed", "plugin_id", rec.ID, "error", err)
			}
		}
		unlock()
	}
}
