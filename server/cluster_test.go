package server_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	nexus "github.com/nexus-platform/nexus/clients/go"
	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis/redistest"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storepg/pgtest"
	"github.com/nexus-platform/nexus/server"
)

// clusterView is GET /api/v1/cluster as e answers it: the id of the replica that answered,
// and the replicas by id.
func clusterView(e *env, token string) (self string, replicas map[string]map[string]any) {
	e.t.Helper()
	data := e.mustREST("GET", "/api/v1/cluster", token, nil)
	replicas = map[string]map[string]any{}
	for _, r := range data["replicas"].([]any) {
		m := r.(map[string]any)
		replicas[m["id"].(string)] = m
	}
	self, _ = data["self"].(string)
	return self, replicas
}

// connectedInstances is the runtime block's list of connected instances in GET
// /api/v1/plugins/{id} as e answers it: instance id → replica id; only those connected to
// replica when it is not empty.
func connectedInstances(e *env, id, replica string) map[string]string {
	e.t.Helper()
	p := e.mustREST("GET", "/api/v1/plugins/"+id, e.Admin, nil)["plugin"].(map[string]any)
	out := map[string]string{}
	for _, c := range p["runtime"].(map[string]any)["connected_instances"].([]any) {
		m := c.(map[string]any)
		if replica == "" || m["replica_id"] == replica {
			out[m["instance_id"].(string)] = m["replica_id"].(string)
		}
	}
	return out
}

// TestReplicasShareADatabase runs two servers on one PostgreSQL and one Redis: A in this
// process, B as a process of its own (so that it can be killed). Both list both in GET
// /api/v1/cluster, with the plugin instances each holds; the detail view lists each
// instance with its replica; B's start leaves A's launch token valid; B keeps its
// generated id across a restart; B killed is listed as down after three heartbeats; a
// server without Redis refuses to join them, naming A (and not the dead B); B stopped
// cleanly is no longer listed.
func TestReplicasShareADatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	pg := pgtest.Start(t, pgtest.Options{})
	dbURL := pg.NewDatabase(t)
	rs := redistest.Start(t, redistest.Options{})
	const beat = 200 * time.Millisecond
	a := startServerWith(t, testLogSink(), slog.LevelDebug, func(c *server.Config) {
		c.DatabaseURL, c.RedisURL, c.RedisPrefix = dbURL, rs.URL(), "test-cluster:"
		c.ReplicaID, c.HeartbeatInterval, c.HealthInterval = "alpha", beat, 300*time.Millisecond
	})
	if b, err := os.ReadFile(filepath.Join(a.DataDir, "replica-id")); err == nil {
		t.Errorf("a server given --replica-id kept a generated one: %q", b)
	}

	// Installed and enabled through A before B starts (B loads the plugins when it starts).
	installTestPlugin(a, "launched-plugin", "healthy", nil, nil)
	a.mustREST("POST", "/api/v1/plugins/launched-plugin/enable", a.Admin, map[string]any{})
	externalPlugin(a, "relay-plugin", nil)
	waitFor(t, "launched-plugin active on A", 20*time.Second, func() bool { s, _ := status(a, "launched-plugin"); return s == "active" })
	launchToken := func() store.Token {
		t.Helper()
		toks, err := a.srv.Identity().List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range toks {
			if tok.Name == runtime.LaunchTokenName("alpha", "launched-plugin") && tok.RevokedAt.IsZero() {
				return tok
			}
		}
		t.Fatalf("no valid launch token of launched-plugin on alpha among %d tokens", len(toks))
		return store.Token{}
	}
	before := launchToken()

	dirB := searchableTempDir(t)
	envB := []string{"NEXUS_DATABASE_URL=" + dbURL, "NEXUS_REDIS_URL=" + rs.URL(), "NEXUS_REDIS_PREFIX=test-cluster:",
		"NEXUS_HEARTBEAT_INTERVAL=" + beat.String(), "NEXUS_HEALTH_INTERVAL=300ms"}
	cmd, urlB := startProcessWith(t, dirB, filepath.Join(t.TempDir(), "addr"), nil, envB)
	idB, err := os.ReadFile(filepath.Join(dirB, "replica-id"))
	if err != nil {
		t.Fatalf("B keeps no generated replica id: %v", err)
	}
	beta := strings.TrimSpace(string(idB))
	// Tokens live in the shared database: A's identity service issues B's too.
	b := &env{t: t, URL: urlB, DataDir: dirB, Admin: testAdminToken, User: a.User, srv: a.srv}

	// B's start revoked only its own replica's launch tokens.
	if after := launchToken(); after.ID != before.ID {
		t.Errorf("A's launch token changed when B started: %s, then %s", before.ID, after.ID)
	}
	// alpha holds launched-plugin's lease: B does not start it, and says it is active.
	waitFor(t, "launched-plugin active as B says", 20*time.Second, func() bool { s, _ := status(b, "launched-plugin"); return s == "active" })

	runInstance(a, "relay-plugin", "ext-a", plugin.Plugin{})
	stopB1 := runInstance(b, "relay-plugin", "ext-b1", plugin.Plugin{})
	stopB2 := runInstance(b, "relay-plugin", "ext-b2", plugin.Plugin{})

	// Both list both, up, each with the instances it holds (A its launched plugin, which
	// runs on A alone, and the external ones), the user token as the admin's.
	want := map[string]struct {
		url       string
		instances float64
	}{"alpha": {a.URL, 2}, beta: {urlB, 2}}
	for _, e := range []*env{a, b} {
		for _, token := range []string{e.Admin, e.User} {
			waitFor(t, "both replicas listed with their instances by "+e.URL, 10*time.Second, func() bool {
				_, reps := clusterView(e, token)
				for id, w := range want {
					r := reps[id]
					if r == nil || r["status"] != "up" || r["instances"] != w.instances {
						return false
					}
				}
				return len(reps) == 2
			})
			self, reps := clusterView(e, token)
			if (e == a && self != "alpha") || (e == b && self != beta) {
				t.Errorf("%s answered self %q", e.URL, self)
			}
			for id, w := range want {
				r := reps[id]
				if r["advertise_url"] != w.url || r["version"] != "1.0.0" || r["started_at"] == nil || r["last_heartbeat"] == nil ||
					r["heartbeat_interval_seconds"] != beat.Seconds() {
					t.Errorf("replica %s as %s lists it: %v", id, e.URL, r)
				}
			}
		}
	}
	// The Connect protocol through the Go client answers the same.
	res, err := nexus.New(a.URL, nexus.WithToken(a.User)).Cluster.ListReplicas(context.Background(), connect.NewRequest(&pluginv1.ListReplicasRequest{}))
	if err != nil || res.Msg.GetSelf() != "alpha" || len(res.Msg.GetReplicas()) != 2 {
		t.Errorf("ListReplicas over Connect: %v, %v", res, err)
	}
	// A plugin token may not read it.
	if r := a.rest("GET", "/api/v1/cluster", a.token(store.RolePlugin, "relay-plugin"), nil); r.Status != 403 {
		t.Errorf("a plugin token reading the cluster: %d %s", r.Status, r.Raw)
	}

	// The detail view lists every instance with its replica: those connected to the replica
	// that answers now, the others' at their last heartbeat.
	for name, e := range map[string]*env{"A": a, "B": b} {
		waitFor(t, "relay-plugin's three instances as "+name+" lists them", 10*time.Second, func() bool {
			got := connectedInstances(e, "relay-plugin", "")
			return len(got) == 3 && got["ext-a"] == "alpha" && got["ext-b1"] == beta && got["ext-b2"] == beta
		})
	}
	for inst, rep := range connectedInstances(a, "launched-plugin", "alpha") {
		if rep != "alpha" {
			t.Errorf("launched-plugin's instance %s on A is listed on replica %s", inst, rep)
		}
	}

	// B is killed: its record stays, and shows it down after three heartbeats.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed := time.Now()
	stopB1()
	stopB2()
	waitFor(t, "B listed as down", 10*time.Second, func() bool {
		_, reps := clusterView(a, a.User)
		return reps[beta]["status"] == "down" && reps["alpha"]["status"] == "up"
	})
	if since := time.Since(killed); since < beat {
		t.Errorf("B listed as down %s after the kill; want after three heartbeat intervals (%s)", since, 3*beat)
	}

	// A server on the database without Redis: refused, naming A, not the dead B.
	cfg := server.DefaultConfig()
	cfg.Listen, cfg.DataDir, cfg.DatabaseURL, cfg.ReplicaID = "127.0.0.1:0", t.TempDir(), dbURL, "lonely"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg, server.NewLogger(testLogSink(), slog.LevelDebug))
	if err == nil {
		srv.Close()
		t.Fatal("a server without Redis joined replicas that use it")
	}
	if msg := err.Error(); !errors.Is(err, server.ErrNoSharedBus) || !strings.Contains(msg, "alpha ("+a.URL+")") ||
		strings.Contains(msg, beta) || !strings.Contains(msg, "--redis-url") {
		t.Errorf("refusal %q: want ErrNoSharedBus naming alpha at %s, not %s, and --redis-url", msg, a.URL, beta)
	}
	if _, reps := clusterView(a, a.User); reps["lonely"] != nil {
		t.Errorf("the refused server was recorded: %v", reps["lonely"])
	}

	// B restarts on its data directory: the same id, up again; stopped cleanly, it is no
	// longer listed.
	cmd, _ = startProcessWith(t, dirB, filepath.Join(t.TempDir(), "addr"), nil, envB)
	if again, _ := os.ReadFile(filepath.Join(dirB, "replica-id")); string(again) != string(idB) {
		t.Errorf("B's replica id changed across the restart: %q, then %q", idB, again)
	}
	waitFor(t, "B up again", 10*time.Second, func() bool {
		_, reps := clusterView(a, a.User)
		return reps[beta]["status"] == "up"
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("B after SIGTERM: %v", err)
	}
	if _, reps := clusterView(a, a.User); len(reps) != 1 || reps["alpha"] == nil {
		t.Errorf("after B stopped cleanly: %v; want alpha alone", reps)
	}
}

// TestReplicaIDKeptInDataDir: a server without --replica-id generates one on its first
// start, keeps it in its data directory and lists itself under it, alone; restarted, it has
// the same; --replica-id wins over the file; a damaged file stops the server with a clear
// message.
func TestReplicaIDKeptInDataDir(t *testing.T) {
	dir := searchableTempDir(t)
	e := startServerWith(t, testLogSink(), slog.LevelDebug, func(c *server.Config) { c.DataDir = dir })
	b, err := os.ReadFile(filepath.Join(dir, "replica-id"))
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(string(b))
	self, reps := clusterView(e, e.User)
	if self != id || len(reps) != 1 || reps[id]["status"] != "up" || reps[id]["instances"] != 0.0 || reps[id]["advertise_url"] != e.URL {
		t.Errorf("GET /api/v1/cluster on one server: self %q, %v; want %s alone, up, at %s", self, reps, id, e.URL)
	}
	// Also under the /v1 alias.
	if r := e.rest("GET", "/v1/cluster", e.User, nil); r.Status != 200 || r.data()["self"] != id {
		t.Errorf("GET /v1/cluster: %d %s", r.Status, r.Raw)
	}
	e.srv.Close()

	again := startServerWith(t, testLogSink(), slog.LevelDebug, func(c *server.Config) { c.DataDir = dir })
	if self, _ := clusterView(again, again.User); self != id {
		t.Errorf("after a restart the server is %q, want %q", self, id)
	}
	again.srv.Close()

	named := startServerWith(t, testLogSink(), slog.LevelDebug, func(c *server.Config) {
		c.DataDir, c.ReplicaID, c.AdvertiseURL = dir, "named", "https://nexus.example:8443/"
	})
	if self, reps := clusterView(named, named.User); self != "named" || reps["named"]["advertise_url"] != "https://nexus.example:8443" {
		t.Errorf("with --replica-id and --advertise-url: self %q, %v", self, reps)
	}
	named.srv.Close()
	if b, _ := os.ReadFile(filepath.Join(dir, "replica-id")); strings.TrimSpace(string(b)) != id {
		t.Errorf("--replica-id replaced the kept id: %q", b)
	}

	if err := os.WriteFile(filepath.Join(dir, "replica-id"), []byte("not:an id\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.DataDir = dir
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg, server.NewLogger(testLogSink(), slog.LevelDebug))
	if err == nil {
		srv.Close()
		t.Fatal("a server started with a damaged replica-id file")
	}
	if msg := err.Error(); !strings.Contains(msg, "replica-id") || !strings.Contains(msg, "not:an id") {
		t.Errorf("refusal %q: want it to name the file and what it holds", msg)
	}
}
