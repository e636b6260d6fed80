package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// Placement: with a store several servers share (Options.Leases), a host-launched plugin runs
// as many copies as its instance count says (InstanceCount), each on a replica holding one of
// its lease slots, and each replica holds at most one slot of a plugin: the copies are spread
// over the live replicas, and a count above the number of live replicas leaves slots free
// until more replicas join. A lease is a setting (slotKey = JSON Lease: replica, expiry and
// the copy's launch token), taken and renewed in one store Write, so that the read, the
// check and the write are one step for every server sharing the store. Expiry is measured on the database's clock when
// the store has one (store.ClockTx), so that the servers' own clocks do not matter;
// otherwise on each server's clock. Without placement a server runs one copy of each
// enabled plugin.

// LeaseKeyPrefix starts the key of every lease setting.
const LeaseKeyPrefix = "lease/"

// LeaseKey is the key of the setting that holds plugin id's first lease slot; slot k > 0
// adds "/k".
func LeaseKey(id string) string { return LeaseKeyPrefix + id }

func slotKey(id string, slot int) string {
	if slot == 0 {
		return LeaseKey(id)
	}
	return LeaseKey(id) + "/" + strconv.Itoa(slot)
}

// InstancesKeyPrefix starts the key of the setting that holds the instance count an
// administrator set for a plugin (SetInstances); without it the manifest's count applies.
const InstancesKeyPrefix = "instances/"

// InstancesKey is the key of plugin id's instance count setting.
func InstancesKey(id string) string { return InstancesKeyPrefix + id }

// Lease is a lease slot as the store records it. A released lease has no replica.
type Lease struct {
	Replica   string    `json:"replica"`
	ExpiresAt time.Time `json:"expires_at"`
	// Token is the id of the launch token of the copy the lease holds, recorded by the
	// renewals once the copy is launched: a replica that takes the slot over revokes it.
	Token string `json:"token,omitempty"`
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

// Placed reports whether this server shares its store with replicas, which place the copies
// of host-launched plugins by lease; without, it runs one copy of each enabled plugin.
func (rt *Runtime) Placed() bool { return rt.placed() }

// readLease reads a lease slot in tx; a missing or unreadable one is free.
func readLease(tx store.Tx, key string) (Lease, error) {
	b, err := tx.Setting(key)
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

// instanceCount reads in tx how many copies of plugin id should run: the count an
// administrator set, or the manifest's.
func (rt *Runtime) instanceCount(tx store.Tx, id string) (int, error) {
	set, err := setCount(tx, id)
	if err != nil || set > 0 {
		return set, err
	}
	return rt.manifestCount(id), nil
}

// setCount reads in tx the instance count an administrator set for plugin id; 0: none.
func setCount(tx store.Tx, id string) (int, error) {
	b, err := tx.Setting(InstancesKey(id))
	switch {
	case err == nil:
		var n int
		if json.Unmarshal(b, &n) == nil && n >= 1 && n <= manifest.MaxInstances {
			return n, nil
		}
	case !errors.Is(err, store.ErrNotFound):
		return 0, err
	}
	return 0, nil
}

// manifestCount is the instance count of plugin id's manifest as installed now.
func (rt *Runtime) manifestCount(id string) int {
	if p, err := rt.reg.Get(id); err == nil {
		return p.Manifest().InstanceCount()
	}
	return manifest.DefaultInstances
}

// claimLease, in tx, extends the slot of plugin id's leases this replica holds, or takes a
// free or expired one. It returns the slot, or -1 when live replicas hold every slot, the
// other live replicas that hold one, and the expired lease of another replica it took, if any.
func (rt *Runtime) claimLease(tx store.Tx, id string) (slot int, others []string, expired Lease, err error) {
	n, err := rt.instanceCount(tx, id)
	if err != nil {
		return -1, nil, Lease{}, err
	}
	now, err := txNow(tx)
	if err != nil {
		return -1, nil, Lease{}, err
	}
	slot, free := -1, -1
	var leases []Lease
	for k := range n {
		l, err := readLease(tx, slotKey(id, k))
		if err != nil {
			return -1, nil, Lease{}, err
		}
		leases = append(leases, l)
		switch h, live := l.heldBy(rt.cfg.Replica, now); {
		case l.Replica == rt.cfg.Replica && slot < 0:
			slot = k
		case live:
			others = append(others, h)
		case free < 0 && l.Replica != rt.cfg.Replica:
			free = k
		}
	}
	if slot < 0 && free >= 0 {
		slot, expired = free, leases[free]
	}
	if slot < 0 {
		return -1, others, Lease{}, nil
	}
	return slot, others, expired, tx.PutSetting(slotKey(id, slot), mustJSON(Lease{Replica: rt.cfg.Replica, ExpiresAt: now.Add(rt.cfg.LeaseTTL)}))
}

// acquireLease takes a lease slot of plugin id for this replica (the one it holds already,
// or a free or expired one), and records it as held here. It returns the slot, or -1 when
// live replicas hold every slot, and the other live replicas that hold one.
func (rt *Runtime) acquireLease(ctx context.Context, id string) (slot int, others []string, err error) {
	var expired Lease
	err = rt.leases.Write(ctx, func(tx store.Tx) error {
		slot, others, expired, err = rt.claimLease(tx, id)
		return err
	})
	if err != nil {
		return -1, nil, err
	}
	if expired.Replica != "" {
		rt.fenceLaunchToken(ctx, expired, id)
	}
	if slot >= 0 {
		rt.mu.Lock()
		rt.held[id] = slot
		rt.mu.Unlock()
		rt.renewalOnce.Do(func() { rt.spawn(func() { rt.everyThirdTTL(rt.renewLeases) }) })
	}
	return slot, others, nil
}

// fenceLaunchToken revokes the launch token of the copy of plugin id that held l, which ran
// out and is taken here: a replica killed could not revoke it, and a copy that outlived its
// replica's lease (a replica cut off from the database) must not go on acting as the plugin
// (its sessions end with the token). The token is the one the lease records; a lease taken
// before a renewal recorded it (a copy launched less than a third of the TTL before its
// replica died) has its replica's launch tokens for the plugin revoked by name instead.
func (rt *Runtime) fenceLaunchToken(ctx context.Context, l Lease, id string) {
	ctx = context.WithoutCancel(ctx)
	var err error
	if l.Token != "" {
		if err = rt.tokens.Revoke(ctx, l.Token); errors.Is(err, store.ErrNotFound) {
			err = nil // gone already
		}
	} else if r, ok := rt.tokens.(namedRevoker); ok {
		name := LaunchTokenName(l.Replica, id)
		_, err = r.RevokeMatching(ctx, store.RolePlugin, func(n string) bool { return n == name })
	}
	if err != nil {
		rt.log.Warn("could not revoke the launch token of a copy whose lease ran out", "plugin_id", id, "replica", l.Replica, "error", err)
	}
}

// launchToken is the id of the launch token of the copy of plugin id running here ("").
func (rt *Runtime) launchToken(id string) string {
	rt.mu.Lock()
	r := rt.plugins[id]
	rt.mu.Unlock()
	if r == nil {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tokenID
}

// namedRevoker is implemented by a TokenIssuer that can revoke tokens by name.
type namedRevoker interface {
	RevokeMatching(ctx context.Context, role store.Role, match func(name string) bool) ([]string, error)
}

// renewLease extends the lease slot held here; a slot beyond a lowered instance count is
// traded for a free one below it. It returns why the plugin must stop here instead: another
// replica holds the slot now, or the count no longer has it and no slot below it is free. A
// lease released here meanwhile is not taken again.
func (rt *Runtime) renewLease(ctx context.Context, id string) (slot int, lost string, err error) {
	moved := -1
	var expired Lease // the expired lease of another replica that the move took over
	err = rt.leases.Write(ctx, func(tx store.Tx) error {
		moved, expired, lost = -1, Lease{}, ""
		// Read within the Write, which comes after any release's: a lease released since
		// the renewal began stays released.
		var ok bool
		slot, ok = rt.heldSlot(id)
		if !ok {
			return nil
		}
		n, err := rt.instanceCount(tx, id)
		if err != nil {
			return err
		}
		l, err := readLease(tx, slotKey(id, slot))
		if err != nil {
			return err
		}
		now, err := txNow(tx)
		if err != nil {
			return err
		}
		if h, live := l.heldBy(rt.cfg.Replica, now); live {
			lost = "replica " + h + " took its lease"
			return nil
		}
		mine := Lease{Replica: rt.cfg.Replica, ExpiresAt: now.Add(rt.cfg.LeaseTTL), Token: rt.launchToken(id)}
		if slot >= n {
			// Beyond a lowered count: the copy moves to a free slot below it if there is
			// one (it goes on running), or stops.
			if err := tx.PutSetting(slotKey(id, slot), mustJSON(Lease{})); err != nil {
				return err
			}
			for k := range n {
				l, err := readLease(tx, slotKey(id, k))
				if err != nil {
					return err
				}
				if _, live := l.heldBy(rt.cfg.Replica, now); !live && l.Replica != rt.cfg.Replica {
					moved, expired = k, l
					return tx.PutSetting(slotKey(id, k), mustJSON(mine))
				}
			}
			lost = "its instance count is " + strconv.Itoa(n)
			return nil
		}
		return tx.PutSetting(slotKey(id, slot), mustJSON(mine))
	})
	if err == nil && moved >= 0 {
		rt.mu.Lock()
		if cur, ok := rt.held[id]; ok && cur == slot {
			rt.held[id] = moved
		}
		rt.mu.Unlock()
		if expired.Replica != "" {
			rt.fenceLaunchToken(ctx, expired, id)
		}
	}
	return slot, lost, err
}

// releaseLease gives up the lease slot of plugin id this replica holds, if any: the record
// says released (no replica), so that another replica may take it at once.
func (rt *Runtime) releaseLease(ctx context.Context, id string) {
	if !rt.placed() {
		return
	}
	rt.mu.Lock()
	slot, had := rt.held[id]
	delete(rt.held, id)
	rt.mu.Unlock()
	if !had {
		return
	}
	err := rt.leases.Write(context.WithoutCancel(ctx), func(tx store.Tx) error {
		l, err := readLease(tx, slotKey(id, slot))
		if err != nil || l.Replica != rt.cfg.Replica {
			return err
		}
		return tx.PutSetting(slotKey(id, slot), mustJSON(Lease{}))
	})
	if err != nil {
		rt.log.Warn("could not release a plugin's lease; it expires on its own", "plugin_id", id, "error", err)
	}
}

// holds reports whether this replica holds a lease slot of plugin id.
func (rt *Runtime) holds(id string) bool {
	_, ok := rt.heldSlot(id)
	return ok
}

func (rt *Runtime) heldSlot(id string) (int, bool) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	slot, ok := rt.held[id]
	return slot, ok
}

// Slot is one lease slot of a plugin: the replica that holds it (empty when free) and until
// when.
type Slot struct {
	Slot      int
	Replica   string
	ExpiresAt time.Time
}

// Placement is where a plugin's copies run.
type Placement struct {
	// Instances is how many copies should run (InstanceCount).
	Instances int
	// Slots are the lease slots 0..Instances-1; nil without placement.
	Slots []Slot
	// set is the count an administrator set, as read; 0: none (the manifest's applies).
	set int
}

// elsewhere returns the live replicas other than this one that hold a slot.
func (p Placement) elsewhere(self string) []string {
	var out []string
	for _, s := range p.Slots {
		if s.Replica != "" && s.Replica != self {
			out = append(out, s.Replica)
		}
	}
	return out
}

// placements reads the placement of the given plugins (all installed ones when ids is
// empty). Expired slots are reported free.
func (rt *Runtime) placements(ctx context.Context, ids ...string) (map[string]Placement, error) {
	if len(ids) == 0 {
		for _, p := range rt.reg.Snapshot().All() {
			ids = append(ids, p.ID())
		}
	}
	out := make(map[string]Placement, len(ids))
	if rt.settings == nil { // a Runtime built without a store (tests): the manifests' counts
		for _, id := range ids {
			n := manifest.DefaultInstances
			if p, err := rt.reg.Get(id); err == nil {
				n = p.Manifest().InstanceCount()
			}
			out[id] = Placement{Instances: n}
		}
		return out, nil
	}
	err := rt.settings.Read(ctx, func(tx store.Tx) error {
		now, err := txNow(tx)
		if err != nil {
			return err
		}
		for _, id := range ids {
			set, err := setCount(tx, id)
			if err != nil {
				return err
			}
			n := set
			if n == 0 {
				n = rt.manifestCount(id)
			}
			pl := Placement{Instances: n, set: set}
			if rt.placed() {
				for k := range n {
					l, err := readLease(tx, slotKey(id, k))
					if err != nil {
						return err
					}
					s := Slot{Slot: k}
					if l.Replica != "" && now.Before(l.ExpiresAt) {
						s.Replica, s.ExpiresAt = l.Replica, l.ExpiresAt
					}
					pl.Slots = append(pl.Slots, s)
				}
			}
			out[id] = pl
		}
		return nil
	})
	if err == nil {
		rt.mu.Lock()
		maps.Copy(rt.placement, out)
		rt.mu.Unlock()
	}
	return out, err
}

// PlacementOf says how many copies of plugin id should run and, with placement, which
// replica holds each lease slot, as this replica last read them: at the server's start, at
// each takeover round (every third of the lease TTL) and after SetInstances. Views read it
// from memory.
// The count is the administrator's as last read, or the manifest's as installed now; an
// external plugin has none (zero).
func (rt *Runtime) PlacementOf(id string) Placement {
	p, err := rt.reg.Get(id)
	if err != nil || p.Manifest().External {
		return Placement{}
	}
	rt.mu.Lock()
	pl := rt.placement[id]
	rt.mu.Unlock()
	pl.Instances = pl.set
	if pl.Instances == 0 {
		pl.Instances = p.Manifest().InstanceCount()
	}
	if len(pl.Slots) > 0 { // slots read for another count: the new ones are free so far
		pl.Slots = slices.Clone(pl.Slots[:min(len(pl.Slots), pl.Instances)])
		for k := len(pl.Slots); k < pl.Instances; k++ {
			pl.Slots = append(pl.Slots, Slot{Slot: k})
		}
	}
	return pl
}

// SetInstances records that n copies (1..manifest.MaxInstances) of host-launched plugin id
// should run, on every replica sharing the store. Replicas take the new slots, and give up
// the slots beyond n, within a third of the lease TTL; this replica at once.
func (rt *Runtime) SetInstances(ctx context.Context, id string, n int) error {
	p, err := rt.reg.Get(id)
	if err != nil {
		return err
	}
	if p.Manifest().External {
		return errs.WithFields(errs.ValidationError, "plugin "+id+" is external: it runs as many instances as connect",
			[]errs.FieldViolation{{Field: "instances", Description: "applies only to host-launched plugins"}})
	}
	if n < 1 || n > manifest.MaxInstances {
		return errs.WithFields(errs.ValidationError, "invalid instance count",
			[]errs.FieldViolation{{Field: "instances", Description: fmt.Sprintf("must be between 1 and %d", manifest.MaxInstances)}})
	}
	if rt.settings == nil {
		return errs.New(errs.Internal, "this server keeps no instance counts")
	}
	if err := rt.settings.Write(ctx, func(tx store.Tx) error {
		if _, err := tx.Plugin(id); err != nil {
			return err // uninstalled meanwhile: no count is left behind
		}
		return tx.PutSetting(InstancesKey(id), mustJSON(n))
	}); errors.Is(err, store.ErrNotFound) {
		return errs.New(errs.PluginNotFound, "plugin %s is not installed", id)
	} else if err != nil {
		return errs.Wrap(errs.Internal, err, "could not record the instance count")
	}
	rt.mu.Lock()
	pl := rt.placement[id]
	pl.Instances, pl.set = n, n
	rt.placement[id] = pl
	rt.mu.Unlock()
	if rt.placed() {
		rt.spawn(func() {
			rt.renewLeases()
			rt.takeOver() // which reads the placements again
		})
	}
	return nil
}

// ForgetInstances drops, in tx, the instance count an administrator set for plugin id (as
// it is uninstalled): installed again, it runs its manifest's count. Settings are kept for
// good, so the count is overwritten with null, which reads as unset.
func ForgetInstances(tx store.Tx, id string) error {
	if _, err := tx.Setting(InstancesKey(id)); errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return tx.PutSetting(InstancesKey(id), []byte("null"))
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

// renewLeases renews every lease held here; a plugin whose lease another replica took, or
// whose lowered instance count no longer has the slot held here (and has no free one left),
// is stopped here.
func (rt *Runtime) renewLeases() {
	// One round at a time (the ticker, SetInstances and the change feed start them): a
	// verdict is not acted on while another round changes what is held.
	rt.renewMu.Lock()
	defer rt.renewMu.Unlock()
	rt.mu.Lock()
	ids := make([]string, 0, len(rt.held))
	for id := range rt.held {
		ids = append(ids, id)
	}
	rt.mu.Unlock()
	for _, id := range ids {
		slot, lost, err := rt.renewLease(rt.ctx, id)
		if err != nil {
			if rt.ctx.Err() == nil {
				rt.log.Warn("could not renew a plugin's lease", "plugin_id", id, "error", err)
			}
			continue
		}
		if lost == "" {
			continue
		}
		unlock := rt.locks.lock(id)
		// Under the lock, a start may have taken another slot since the verdict: that copy
		// stays.
		if now, ok := rt.heldSlot(id); !ok || now != slot {
			unlock()
			continue
		}
		rt.mu.Lock()
		delete(rt.held, id) // not to be released: another replica's now, or released already
		rt.mu.Unlock()
		rt.log.Warn("stopping a plugin here: "+lost, "plugin_id", id)
		rt.stop(rt.ctx, rt.get(id), DisableOptions{Reason: lost, Graceful: true, Timeout: rt.cfg.KillGrace})
		unlock()
	}
}

// takeOver starts here, in load order, the enabled host-launched plugins (not quarantined)
// not running here that have a lease slot free or run out.
func (rt *Runtime) takeOver() {
	placed, err := rt.placements(rt.ctx)
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
		pl := placed[rec.ID]
		if !rec.Enabled || rp.Manifest().External || rec.Status == registry.StatusError || rt.holds(rec.ID) ||
			len(pl.elsewhere(rt.cfg.Replica)) >= pl.Instances {
			continue
		}
		unlock := rt.locks.lock(rec.ID)
		// Checked again under the lock: a disable or a start may have come first.
		cur, err := rt.reg.Get(rec.ID)
		if err == nil && cur.Enabled() && cur.Status() != registry.StatusError && !rt.holds(rec.ID) {
			rt.log.Info("starting a plugin here: one of its lease slots is free", "plugin_id", rec.ID)
			if _, err := rt.StartLocked(rt.ctx, rec.ID); err != nil && rt.ctx.Err() == nil {
				rt.log.Warn("taking over a plugin failed", "plugin_id", rec.ID, "error", err)
			}
		}
		unlock()
	}
}

// RestartKeyPrefix starts the key of the setting through which a restart asked of one
// replica reaches the copies the other replicas run (see RestartRequested).
const RestartKeyPrefix = "restart/"

// restartRequest is the value of a restart setting: a restart of the plugin's copies asked
// of replica By.
type restartRequest struct {
	By     string    `json:"by"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// askRestartElsewhere asks the other replicas to restart the copies of plugin id they run.
func (rt *Runtime) askRestartElsewhere(ctx context.Context, id, reason string) error {
	if !rt.placed() {
		return nil
	}
	return rt.leases.Write(ctx, func(tx store.Tx) error {
		return tx.PutSetting(RestartKeyPrefix+id, mustJSON(restartRequest{By: rt.cfg.Replica, Reason: reason, At: time.Now().UTC()}))
	})
}

// RestartRequested restarts the copy of a plugin this replica runs, when key is the restart
// setting of that plugin (a change of the shared store) and another replica wrote it: a
// restart asked through any replica restarts every copy. The copy keeps its lease slot.
func (rt *Runtime) RestartRequested(ctx context.Context, key string) {
	id, ok := strings.CutPrefix(key, RestartKeyPrefix)
	if !ok || !rt.placed() || !rt.holds(id) {
		return
	}
	var req restartRequest
	err := rt.leases.Read(ctx, func(tx store.Tx) error {
		b, err := tx.Setting(key)
		if err == nil {
			err = json.Unmarshal(b, &req)
		}
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			rt.log.Warn("could not read a restart asked through another replica", "plugin_id", id, "error", err)
		}
		return
	}
	rt.mu.Lock()
	seen := rt.restartsSeen[id].Equal(req.At)
	rt.restartsSeen[id] = req.At
	rt.mu.Unlock()
	if seen || req.By == rt.cfg.Replica {
		return // applied already (notices of two requests may both read the last), or its own
	}
	rt.RestartHere(ctx, id, orDefault(req.Reason, "restart requested")+" (through replica "+req.By+")")
}

// RestartHere restarts the copy of plugin id this replica runs, if it runs one, keeping its
// lease slot: for a restart or an update made through another replica.
func (rt *Runtime) RestartHere(ctx context.Context, id, reason string) {
	unlock := rt.locks.lock(id)
	defer unlock()
	if !rt.holds(id) {
		return
	}
	rt.log.Info("restarting a plugin's copy here: "+reason, "plugin_id", id)
	rt.logs.Add(store.LogRecord{PluginID: id, Level: "INFO", Message: "Plugin restarting: " + reason})
	rt.stop(ctx, rt.get(id), DisableOptions{Reason: reason, Graceful: true, Timeout: rt.cfg.KillGrace, keepLease: true})
	// Checked again once stopped: a disable (or a quarantine) recorded meanwhile through
	// another replica stands; the copy is not started again over it.
	if cur, err := rt.reg.Get(id); err != nil || !cur.Enabled() || cur.Status() == registry.StatusError {
		rt.releaseLease(ctx, id)
		return
	}
	if _, err := rt.StartLocked(ctx, id); err != nil && ctx.Err() == nil {
		rt.log.Warn("restarting a plugin's copy failed", "plugin_id", id, "error", err)
	}
}

// InstancesChanged puts a new instance count in force here at once (rather than at the next
// renewal), when key is the instance count setting of a plugin (a change of the shared store).
func (rt *Runtime) InstancesChanged(key string) {
	if _, ok := strings.CutPrefix(key, InstancesKeyPrefix); !ok || !rt.placed() {
		return
	}
	rt.spawn(func() {
		rt.renewLeases()
		rt.takeOver()
	})
}
