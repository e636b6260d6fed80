package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/server"
)

// TestFailoverNothingAcknowledgedIsLost is issue 14's "must hold": three replicas on one
// PostgreSQL and one Redis, alpha a process of its own (so that it can be killed), beta and
// gamma in this process.
//
//  1. A host-launched plugin installed through alpha is listed by beta and gamma.
//  2. Enabled through alpha, it runs there alone: alpha holds its lease, and the cluster
//     and the plugin's detail say so.
//  3. A message sent through gamma reaches its instance on alpha, and the reply comes back.
//  4. An external plugin connected to beta subscribes to an event type; events are emitted
//     through alpha, beta and gamma in turn while alpha is SIGKILLed: every event the API
//     acknowledged reaches the subscriber (duplicates are allowed, and logged). A message
//     held by the instance on alpha when alpha dies is delivered again to the plugin's new
//     instance and answered; one sent right after the kill is answered by the new instance.
//  5. The plugin runs again on exactly one of beta and gamma, which holds its lease, within
//     the lease TTL plus its start time; no process of it is left from alpha.
//  6. Disabled through beta, it stops everywhere: no process left, inactive as beta and gamma
//     say, its lease released, and messages to it fail at once with PLUGIN_UNAVAILABLE.
func TestFailoverNothingAcknowledgedIsLost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	const (
		ttl       = 2 * time.Second
		plug      = "failover-plugin"
		sender    = "failover-sender"
		watcher   = "failover-watcher"
		maxEvents = 600
		emitFor   = 15 * time.Second
	)
	began := time.Now()
	set := newReplicaSet(t, "test-failover:", func(c *server.Config) {
		c.LeaseTTL, c.HealthInterval = ttl, 300*time.Millisecond
		c.HeartbeatInterval, c.ProcessingTimeout = 200*time.Millisecond, 2*time.Second
	}, "NEXUS_LEASE_TTL="+ttl.String(), "NEXUS_HEALTH_INTERVAL=300ms", "NEXUS_HEARTBEAT_INTERVAL=200ms", "NEXUS_PROCESSING_TIMEOUT=2s")
	dbURL := set.DBURL
	b, c := set.inProcess("beta"), set.inProcess("gamma")
	a, cmdA := set.process("alpha")
	all := map[string]*env{"alpha": a, "beta": b, "gamma": c}
	dirs := map[string]string{"alpha": a.DataDir, "beta": b.DataDir, "gamma": c.DataDir}
	t.Logf("three replicas up after %s", time.Since(began).Round(time.Millisecond))

	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// holder is the replica holding an unexpired lease on the plugin, or "".
	holder := func() string {
		l, now := leaseOf(t, conn, plug)
		if !now.Before(l.ExpiresAt) {
			return ""
		}
		return l.Replica
	}
	// runsOn is the replicas, among names, to which an instance of the plugin is connected.
	runsOn := func(names ...string) []string {
		var on []string
		for _, name := range names {
			for _, rep := range connectedInstances(all[name], plug, name) {
				if rep != name {
					t.Errorf("an instance connected to %s says replica %s", name, rep)
				}
				on = append(on, name)
			}
		}
		return on
	}
	// processes is the replicas whose data directories hold running processes of the plugin.
	processes := func() map[string]int { return pluginProcesses(t, plug, dirs) }
	message := func(data map[string]any, timeout int) map[string]any {
		return map[string]any{"target_plugin": plug, "message_type": "echo", "data": data, "timeout_seconds": timeout}
	}
	send := func(e *env, data map[string]any, timeout int) restResult {
		return e.rest(http.MethodPost, "/api/v1/plugins/"+sender+"/message", e.Admin, message(data, timeout))
	}
	// sendAsync is send for another goroutine: it reports a failed call instead of ending the test.
	sendAsync := func(e *env, data map[string]any, timeout int, to chan<- answer) {
		r, err := tryREST(&http.Client{}, e, http.MethodPost, "/api/v1/plugins/"+sender+"/message", message(data, timeout))
		to <- answer{r, err, time.Now()}
	}

	// 1. Installed through alpha, listed by beta and gamma.
	installTestPlugin(a, plug, "echo", nil, nil)
	externalPlugin(a, sender, map[string]any{"permissions": []string{"messages:send"}})
	for _, name := range []string{"beta", "gamma"} {
		e := all[name]
		waitFor(t, "the plugin listed by "+name, 5*time.Second, func() bool {
			for _, p := range e.mustREST("GET", "/api/v1/plugins", e.Admin, nil)["plugins"].([]any) {
				if p.(map[string]any)["id"] == plug {
					return true
				}
			}
			return false
		})
	}

	// 2. Enabled through alpha: it runs there alone, under alpha's lease.
	a.mustREST(http.MethodPost, "/api/v1/plugins/"+plug+"/enable", a.Admin, nil)
	waitFor(t, "the plugin on alpha", 10*time.Second, func() bool { return len(runsOn("alpha")) == 1 })
	var onA string
	for inst := range connectedInstances(a, plug, "alpha") {
		onA = inst
	}
	for end := time.Now().Add(ttl); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if on := runsOn("alpha", "beta", "gamma"); len(on) != 1 || on[0] != "alpha" {
			t.Fatalf("the plugin runs on %v; want alpha alone", on)
		}
		if h := holder(); h != "alpha" {
			t.Fatalf("the plugin's lease is held by %q; want alpha", h)
		}
	}
	if p := processes(); len(p) != 1 || p["alpha"] == 0 {
		t.Fatalf("processes of the plugin by replica: %v; want alpha's alone", p)
	}
	for name, e := range all {
		if st, _ := status(e, plug); st != "active" {
			t.Errorf("status as %s says: %s", name, st)
		}
		waitFor(t, "alpha's instance in the cluster as "+name+" lists it", 5*time.Second, func() bool {
			_, reps := clusterView(e, e.User)
			return reps["alpha"]["status"] == "up" && reps["alpha"]["instances"] == 1.0 &&
				reps["beta"]["instances"] == 0.0 && reps["gamma"]["instances"] == 0.0
		})
	}

	// 3. A message sent through gamma is answered by the instance on alpha.
	res := send(c, map[string]any{"tag": "through-gamma"}, 10)
	if res.Status != http.StatusOK {
		t.Fatalf("message through gamma: %d %s", res.Status, res.Raw)
	}
	if r := res.data()["response"].(map[string]any); r["status"] != "success" || r["data"].(map[string]any)["instance"] != onA {
		t.Fatalf("message through gamma answered %v; want success from %s (on alpha)", r, onA)
	}

	// 4. An external subscriber on beta; events emitted through every replica while alpha dies.
	externalPlugin(b, watcher, map[string]any{"permissions": []string{"events:subscribe"}})
	var (
		mu       sync.Mutex
		received = map[string]int{} // event id → deliveries
	)
	sessions := make(chan *plugin.Session, 1)
	runInstance(b, watcher, "watcher-on-beta", plugin.Plugin{
		OnStart: func(_ context.Context, s *plugin.Session) error { sessions <- s; return nil },
		OnEvent: func(_ context.Context, ev plugin.Event) error {
			mu.Lock()
			received[ev.ID]++
			mu.Unlock()
			return nil
		},
	})
	if err := (<-sessions).Subscribe(t.Context(), "failover.*"); err != nil {
		t.Fatal(err)
	}
	var acked []emitted
	client := &http.Client{Timeout: 5 * time.Second}
	for _, name := range []string{"alpha", "beta", "gamma"} {
		waitFor(t, "the subscription routing events emitted through "+name, 5*time.Second, func() bool {
			ev, err := emitEvent(client, all[name], name, "failover.warmup", 0)
			if err != nil {
				t.Fatalf("emit through %s: %v", name, err)
			}
			acked = append(acked, ev)
			return slices.Contains(ev.recipients, watcher)
		})
	}
	acked = acked[:0] // emitted before the subscription was seen everywhere

	// A message the instance on alpha holds (it answers only later deliveries).
	held := make(chan answer, 1)
	go sendAsync(c, map[string]any{"tag": "held-on-alpha", "hold": true}, 30, held)
	waitFor(t, "the message held by the instance on alpha", 10*time.Second, func() bool {
		return len(b.mustREST("GET", "/api/v1/plugins/"+plug+"/logs?search=holding+held-on-alpha", b.Admin, nil)["logs"].([]any)) > 0
	})

	var (
		emitMu   sync.Mutex
		emitting = make(chan struct{})
		tried    int
		failed   = map[string]int{} // replica → unacknowledged emits
	)
	emitterCtx, stopEmitter := context.WithTimeout(context.Background(), emitFor)
	defer stopEmitter()
	emitStart := time.Now()
	go func() {
		defer close(emitting)
		order := []string{"alpha", "beta", "gamma"}
		for i := 0; i < maxEvents && emitterCtx.Err() == nil; i++ {
			name := order[i%len(order)]
			ev, err := emitEvent(client, all[name], name, "failover.tick", i)
			emitMu.Lock()
			tried++
			if err != nil {
				failed[name]++
			} else {
				acked = append(acked, ev)
			}
			emitMu.Unlock()
		}
	}()
	ackedSoFar := func() int { emitMu.Lock(); defer emitMu.Unlock(); return len(acked) }
	// alpha dies once a third of the events are acknowledged (or 5s into the emitting, on a
	// slow machine).
	for end := time.Now().Add(5 * time.Second); ackedSoFar() < maxEvents/3 && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	// It dies without a word, with its plugin process (its parent-death signal).
	if err := cmdA.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmdA.Wait()
	killed := time.Now()
	ackedAtKill := ackedSoFar()
	// A message sent before the plugin's new instance is up waits for it.
	if on := runsOn("beta", "gamma"); len(on) != 0 {
		t.Fatalf("the plugin runs on %v straight after alpha's kill", on)
	}
	queued := make(chan answer, 1)
	go sendAsync(c, map[string]any{"tag": "sent-after-the-kill"}, 30, queued)
	// Meanwhile the plugin moves (checked in 5; timed here, while the events are emitted).
	var now string
	waitFor(t, "the plugin on beta or gamma", ttl+20*time.Second, func() bool {
		on := runsOn("beta", "gamma")
		if len(on) == 1 {
			now = on[0]
		}
		return len(on) > 0
	})
	moved := time.Since(killed)
	t.Logf("the plugin runs on %s %s after alpha was killed (lease TTL %s)", now, moved.Round(time.Millisecond), ttl)

	<-emitting
	emitMu.Lock()
	t.Logf("%d events emitted in %s, %d acknowledged (%d before alpha's kill), unacknowledged by replica: %v",
		tried, time.Since(emitStart).Round(time.Millisecond), len(acked), ackedAtKill, failed)
	ids := make([]string, 0, len(acked))
	for _, ev := range acked {
		if !slices.Contains(ev.recipients, watcher) {
			t.Errorf("event %s through %s was acknowledged without the subscriber among its recipients: %v", ev.id, ev.through, ev.recipients)
		}
		ids = append(ids, ev.id)
	}
	byReplica := map[string]int{}
	for _, ev := range acked {
		byReplica[ev.through]++
	}
	emitMu.Unlock()
	if byReplica["alpha"] == 0 || byReplica["beta"] == 0 || byReplica["gamma"] == 0 {
		t.Fatalf("acknowledged events by replica: %v; want some through each", byReplica)
	}
	if failed["beta"]+failed["gamma"] > 0 {
		t.Errorf("emits through the live replicas failed: %v", failed)
	}
	var missing []string
	waitStart := time.Now()
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		missing = missing[:0]
		mu.Lock()
		for _, id := range ids {
			if received[id] == 0 {
				missing = append(missing, id)
			}
		}
		mu.Unlock()
		if len(missing) == 0 || time.Now().After(end) {
			break
		}
	}
	mu.Lock()
	dups := 0
	for _, id := range ids {
		dups += max(received[id]-1, 0)
	}
	mu.Unlock()
	t.Logf("acknowledged events by replica %v; %d missing at the subscriber %s after the emitter stopped; %d duplicate deliveries",
		byReplica, len(missing), time.Since(waitStart).Round(time.Millisecond), dups)
	if len(missing) > 0 {
		t.Errorf("%d of %d acknowledged events never reached the subscriber (first %v)", len(missing), len(ids), missing[:min(5, len(missing))])
	}

	// 5. The plugin runs again on exactly one of beta and gamma, under its lease.
	if now == "" {
		t.Fatalf("the plugin runs on %v; want one replica", runsOn("beta", "gamma"))
	}
	if moved > ttl+10*time.Second {
		t.Errorf("the plugin took %s to move; want within the lease TTL (%s) plus its start time", moved, ttl)
	}
	var onNew string
	for inst := range connectedInstances(all[now], plug, now) {
		onNew = inst
	}
	waitFor(t, "the lease held by "+now, 5*time.Second, func() bool { return holder() == now })
	waitFor(t, "the processes of the plugin on "+now+" alone", 5*time.Second, func() bool {
		p := processes()
		return len(p) == 1 && p[now] > 0
	})
	for _, name := range []string{"beta", "gamma"} {
		e := all[name]
		waitFor(t, "the plugin active as "+name+" says", 10*time.Second, func() bool { st, _ := status(e, plug); return st == "active" })
	}
	e := all[now]
	wantHere := 1.0
	if now == "beta" {
		wantHere++ // the subscriber
	}
	waitFor(t, "the cluster as "+now+" lists it", 5*time.Second, func() bool {
		_, reps := clusterView(e, e.User)
		return reps["alpha"]["status"] == "down" && reps[now]["instances"] == wantHere
	})

	// The messages in flight at the kill are answered by the new instance.
	for what, ch := range map[string]chan answer{"the message held on alpha": held, "the message sent after the kill": queued} {
		select {
		case ans := <-ch:
			if ans.err != nil {
				t.Errorf("%s: %v", what, ans.err)
				continue
			}
			r, _ := ans.res.data()["response"].(map[string]any)
			d, _ := r["data"].(map[string]any)
			if ans.res.Status != http.StatusOK || r["status"] != "success" || d["instance"] != onNew {
				t.Errorf("%s: %d %s; want success from the new instance %s", what, ans.res.Status, ans.res.Raw, onNew)
				continue
			}
			t.Logf("%s answered by the new instance on %s %s after the kill, delivery attempt %v", what, now,
				ans.at.Sub(killed).Round(time.Millisecond), d["attempt"])
		case <-time.After(40 * time.Second):
			t.Errorf("%s had no answer 40s after the kill", what)
		}
	}
	res = send(c, map[string]any{"tag": "after-the-move"}, 10)
	if r, _ := res.data()["response"].(map[string]any); res.Status != http.StatusOK || r["data"].(map[string]any)["instance"] != onNew {
		t.Errorf("a message through gamma after the move: %d %s", res.Status, res.Raw)
	}

	// 6. Disabled through beta: stopped everywhere.
	b.mustREST(http.MethodPost, "/api/v1/plugins/"+plug+"/disable", b.Admin, nil)
	waitFor(t, "no process of the plugin left", 15*time.Second, func() bool { return len(processes()) == 0 })
	waitFor(t, "no instance connected", 5*time.Second, func() bool { return len(runsOn("beta", "gamma")) == 0 })
	for _, name := range []string{"beta", "gamma"} {
		e := all[name]
		waitFor(t, "the plugin inactive and disabled as "+name+" says", 5*time.Second, func() bool {
			st, p := status(e, plug)
			return st == "inactive" && p["enabled"] == false
		})
	}
	// Released by the replica that ran it once its process is gone (not merely run out).
	waitFor(t, "the lease released", 5*time.Second, func() bool { l, _ := leaseOf(t, conn, plug); return l.Replica == "" })
	if res := send(c, map[string]any{"tag": "after-the-disable"}, 10); res.Status != http.StatusServiceUnavailable || res.errorCode() != "PLUGIN_UNAVAILABLE" {
		t.Errorf("a message to the disabled plugin: %d %s", res.Status, res.Raw)
	}
	t.Logf("the whole test took %s", time.Since(began).Round(time.Millisecond))
}

// echoPlugin makes the test plugin (mode "echo") answer each message with the instance that
// handled it and the delivery attempt. A message whose data says hold=true is held on its
// first delivery (logged as "holding <tag>") until its handler is cancelled or the process
// dies; later deliveries of it are answered.
func echoPlugin(p *plugin.Plugin) {
	var sess atomic.Pointer[plugin.Session]
	p.OnStart = func(_ context.Context, s *plugin.Session) error { sess.Store(s); return nil }
	p.OnMessage = func(ctx context.Context, m plugin.Message) (map[string]any, error) {
		s := sess.Load()
		if s == nil {
			return nil, fmt.Errorf("a message before the start")
		}
		if m.Data["hold"] == true && m.Attempt == 1 {
			s.Logger().Info(fmt.Sprintf("holding %v", m.Data["tag"]))
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return map[string]any{"instance": s.InstanceID(), "attempt": float64(m.Attempt), "tag": m.Data["tag"]}, nil
	}
}

// answer is how a call made in another goroutine ended, and when.
type answer struct {
	res restResult
	err error
	at  time.Time
}

// tryREST is env.rest for other goroutines than the test's: it returns what failed instead
// of ending the test.
func tryREST(client *http.Client, e *env, method, path string, body any) (restResult, error) {
	js, err := json.Marshal(body)
	if err != nil {
		return restResult{}, err
	}
	req, err := http.NewRequest(method, e.URL+path, bytes.NewReader(js))
	if err != nil {
		return restResult{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.Admin)
	resp, err := client.Do(req)
	if err != nil {
		return restResult{}, err
	}
	defer resp.Body.Close()
	res := restResult{Status: resp.StatusCode, Header: resp.Header}
	if res.Raw, err = io.ReadAll(resp.Body); err != nil {
		return res, err
	}
	if err := json.Unmarshal(res.Raw, &res.Body); err != nil {
		return res, fmt.Errorf("%s %s: answer is not a JSON object (status %d): %q", method, path, res.Status, res.Raw)
	}
	return res, nil
}

// emitted is an event the API acknowledged.
type emitted struct {
	id, through string
	recipients  []string
}

// emitEvent posts an event of type typ through e, the replica named through. It fails unless the API acknowledged it
// (a 2xx answer carrying the event's id). It is safe to call from any goroutine.
func emitEvent(client *http.Client, e *env, through, typ string, n int) (emitted, error) {
	res, err := tryREST(client, e, http.MethodPost, "/api/v1/events", map[string]any{"type": typ, "data": map[string]any{"n": n}})
	if err != nil {
		return emitted{}, err
	}
	id, _ := res.data()["event_id"].(string)
	if res.Status/100 != 2 || id == "" {
		return emitted{}, fmt.Errorf("status %d: %s", res.Status, res.Raw)
	}
	ev := emitted{id: id, through: through}
	recipients, _ := res.data()["recipients"].([]any)
	for _, r := range recipients {
		name, _ := r.(string)
		ev.recipients = append(ev.recipients, name)
	}
	return ev, nil
}

// leaseOf reads plugin id's lease as the shared database has it (runtime.LeaseKey), with
// PostgreSQL's clock now; a missing lease is the zero Lease.
func leaseOf(t *testing.T, conn *pgx.Conn, id string) (l runtime.Lease, now time.Time) {
	t.Helper()
	var raw []byte
	err := conn.QueryRow(t.Context(), `SELECT value, clock_timestamp() FROM settings WHERE key = $1`, runtime.LeaseKey(id)).Scan(&raw, &now)
	if errors.Is(err, pgx.ErrNoRows) {
		return runtime.Lease{}, now
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		t.Fatalf("lease of %s: %v: %q", id, err, raw)
	}
	return l, now
}

// pluginProcesses counts, by replica, the running processes of plugin id launched by the
// replicas whose data directories dirs lists (a launched plugin has NEXUS_PLUGIN_ID=id and
// its HOME in its server's data directory). Zombies do not count.
func pluginProcesses(t *testing.T, id string, dirs map[string]string) map[string]int {
	t.Helper()
	out := map[string]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || processGone(pid) {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "environ"))
		if err != nil {
			continue // gone meanwhile, or not ours to read
		}
		vars := strings.Split(string(b), "\x00")
		if !slices.Contains(vars, "NEXUS_PLUGIN_ID="+id) {
			continue
		}
		for _, v := range vars {
			home, ok := strings.CutPrefix(v, "HOME=")
			if !ok {
				continue
			}
			for name, dir := range dirs {
				if strings.HasPrefix(home, dir+string(filepath.Separator)) {
					out[name]++
				}
			}
		}
	}
	return out
}
