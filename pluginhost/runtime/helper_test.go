package runtime_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/logsink"
	"github.com/nexus-platform/nexus/pluginhost/metrics"
	"github.com/nexus-platform/nexus/pluginhost/presence"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

// helperArg, as the first argument, switches the test binary into a helper process that
// plays a plugin's process; the second argument names its behaviour (see runHelper). The
// runtime gives a plugin an environment of its own (NEXUS_PLUGIN_ID, NEXUS_HOST, ...), so
// the switch is that variable being set together with this argument, which the manifest's
// args carry.
const helperArg = "runtime-test-helper"

func TestMain(m *testing.M) {
	if os.Getenv("NEXUS_PLUGIN_ID") != "" && len(os.Args) > 2 && os.Args[1] == helperArg {
		// syscall.Exit, not os.Exit: a binary built with -race sleeps a second in os.Exit
		// (ThreadSanitizer's atexit_sleep_ms), and the plugin's environment is the
		// runtime's, so GORACE cannot turn that off.
		syscall.Exit(runHelper(os.Args[2], os.Args[3:]))
	}
	// The runtime's own tests enforce limits without cgroups, as on a host without usable
	// ones (the host's watching of memory, rlimits); the server's tests run the same
	// plugins under cgroups.
	supervisor.DisableCgroups()
	os.Exit(m.Run())
}

// runHelper is the main function of the helper processes. Modes that become ready print
// "ready pid=<pid> plugin=<id> token=<token>" once their signal handlers are in place;
// the test's fake stream server (see fakePlugin) connects an instance for the process
// when it sees that line. SIGUSR1 is the fake's shutdown frame.
func runHelper(mode string, args []string) int {
	ready := func() {
		// The token goes to a file: the host hides it in the plugin's output.
		if err := os.WriteFile(filepath.Join(os.Getenv("HOME"), "launch-token"), []byte(os.Getenv("NEXUS_PLUGIN_TOKEN")), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "write the token:", err)
		}
		fmt.Printf("ready pid=%d plugin=%s token=%s\n", os.Getpid(), os.Getenv("NEXUS_PLUGIN_ID"), os.Getenv("NEXUS_PLUGIN_TOKEN"))
	}
	switch mode {
	case "serve": // SIGUSR1: exit 0 (a graceful shutdown); SIGUSR2: crash with code 3
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGUSR1, syscall.SIGUSR2)
		ready()
		if <-c == syscall.SIGUSR1 {
			fmt.Println("shutdown requested; bye")
			return 0
		}
		fmt.Fprintln(os.Stderr, "panic: crashing on purpose")
		return 3
	case "stubborn": // ignores the shutdown frame and SIGTERM: only SIGKILL ends it
		signal.Ignore(syscall.SIGTERM, syscall.SIGUSR1)
		ready()
		select {}
	case "fork-hog": // ready, then forks a child that allocates memory as fast as it can
		ready()
		child := exec.Command(os.Args[0], helperArg, "hog-child")
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "fork:", err)
			return 1
		}
		fmt.Printf("child pid=%d\n", child.Process.Pid)
		select {}
	case "hog-child": // touches 16 MiB blocks up to 1 GiB, then holds them
		var keep [][]byte
		for range 64 {
			b := make([]byte, 16<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			keep = append(keep, b)
		}
		fmt.Println("holding 1 GiB")
		select {}
	case "leak": // prints the secret args[0] as text and in a JSON line, then exits with code 3 before it is ready
		fmt.Println("connecting with password " + args[0])
		b, _ := json.Marshal(map[string]any{"event": "login", "password": args[0]})
		fmt.Fprintln(os.Stderr, string(b))
		return 3
	case "leaky-serve": // as serve, but SIGUSR2 prints the secret args[0] before the crash
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGUSR1, syscall.SIGUSR2)
		ready()
		if <-c == syscall.SIGUSR1 {
			return 0
		}
		b, _ := json.Marshal(map[string]any{"msg": "giving up", "password": args[0]})
		fmt.Println(string(b))
		fmt.Fprintln(os.Stderr, "panic: wrong password "+args[0])
		return 3
	case "exit": // exits with args[0] before it is ready, after a few lines
		code, _ := strconv.Atoi(args[0])
		fmt.Println("loading configuration")
		fmt.Fprintln(os.Stderr, "fatal: the database is unreachable")
		return code
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

// fixture is a runtime over real dependencies: a registry over SQLite in a temporary
// directory, the log sink with its writer running, the metrics store and the supervisor.
// Only the plugin's side of the stream (fakePlugin, fakeInstance) and the token issuer
// are fakes.
type fixture struct {
	t       *testing.T
	dir     string
	st      store.Store
	box     *secrets.Box
	reg     *registry.Registry
	pres    *presence.Presence
	logs    *logsink.Sink
	metrics *metrics.Store
	tokens  *fakeTokens
	rt      *runtime.Runtime

	ctx    context.Context // ends the fixture's own goroutines (the fake connectors)
	cancel context.CancelFunc
	wg     sync.WaitGroup // the fake connectors

	mu        sync.Mutex // guards the fields below
	events    []event
	shutdowns []string // plugin ids, in the order their instances were asked to shut down
}

// event is one host event the runtime emitted through Options.Notify.
type event struct {
	typ  string
	data map[string]any
}

// newFixture returns a fixture whose runtime has cfg (health checks every minute unless
// cfg says otherwise, so that they stay out of tests that are not about them). Everything
// it starts is stopped when the test ends, the runtime first.
func newFixture(t *testing.T, cfg runtime.Config) *fixture {
	t.Helper()
	return newFixtureP(t, cfg, false)
}

func newFixtureP(t *testing.T, cfg runtime.Config, placed bool) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := storesqlite.Open(context.Background(), filepath.Join(dir, "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	box, err := secrets.New(key)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, dir: dir, st: st, box: box, pres: presence.New(), metrics: metrics.New(), tokens: &fakeTokens{}}
	f.reg = registry.New(st, box, nil)
	if err := f.reg.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.logs = logsink.New(st, nil, 1000)
	logCtx, stopLogs := context.WithCancel(context.Background())
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		f.logs.Run(logCtx)
	}()
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = time.Minute
	}
	var leases store.Store
	if placed {
		leases = st
	}
	f.rt = runtime.New(runtime.Options{
		Leases: leases,
		Config: cfg, Registry: f.reg, Presence: f.pres, Logs: f.logs, Metrics: f.metrics, Tokens: f.tokens,
		DataDir: dir, Notify: f.notify,
	})
	f.ctx, f.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		f.rt.Shutdown(context.Background(), 5*time.Second)
		f.cancel()
		f.wg.Wait()
		stopLogs()
		<-logsDone
		st.Close()
	})
	return f
}

func (f *fixture) notify(_ context.Context, typ string, data map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, event{typ, data})
}

// eventsOf returns the events of one type emitted for a plugin, as their data.
func (f *fixture) eventsOf(typ, pluginID string) []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []map[string]any
	for _, e := range f.events {
		if e.typ == typ && e.data["plugin_id"] == pluginID {
			out = append(out, e.data)
		}
	}
	return out
}

// enabledOrder returns the plugins in the order plugin.enabled was emitted for them.
func (f *fixture) enabledOrder() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.events {
		if e.typ == "plugin.enabled" {
			out = append(out, e.data["plugin_id"].(string))
		}
	}
	return out
}

func (f *fixture) shutdownOrder() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.shutdowns)
}

// spec describes a plugin to install in a fixture.
type spec struct {
	id string
	// mode is the helper mode its process runs (see runHelper), with args.
	mode string
	args []string
	deps []string
	// startTimeout is start_timeout_seconds (10 when zero).
	startTimeout int
	external     bool
	enabled      bool
	status       string // the recorded status (inactive when empty)
	// configuration is the manifest's configuration schema, as JSON.
	configuration string
	// config is the plugin's configuration; the fields configuration marks secret are
	// sealed.
	config map[string]any
	limits store.ResourceLimits
}

// install writes the record of a plugin whose entry point is this test binary, linked into
// the plugin's package directory, and returns the fake that plays its connected instances.
func (f *fixture) install(s spec) *fakePlugin {
	f.t.Helper()
	rel := filepath.Join("plugins", s.id)
	m := map[string]any{
		"id": s.id, "name": s.id, "version": "1.0.0", "description": "a test plugin", "author": "tests",
		"category": "utility", "nexus_version": ">=1.0.0", "start_timeout_seconds": 10,
	}
	if s.startTimeout > 0 {
		m["start_timeout_seconds"] = s.startTimeout
	}
	if s.external {
		m["external"] = true
	} else {
		m["entry_point"] = "bin/plugin"
		m["args"] = append([]string{helperArg, s.mode}, s.args...)
		exe, err := os.Executable()
		if err != nil {
			f.t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(f.dir, rel, "bin"), 0o755); err != nil {
			f.t.Fatal(err)
		}
		if err := os.Symlink(exe, filepath.Join(f.dir, rel, "bin", "plugin")); err != nil {
			f.t.Fatal(err)
		}
	}
	if len(s.deps) > 0 {
		deps := map[string]string{}
		for _, d := range s.deps {
			deps[d] = ">=1.0.0"
		}
		m["dependencies"] = map[string]any{"plugins": deps}
	}
	if s.configuration != "" {
		m["configuration"] = json.RawMessage(s.configuration)
	}
	man, err := json.Marshal(m)
	if err != nil {
		f.t.Fatal(err)
	}
	rec := store.Plugin{ID: s.id, Version: "1.0.0", Manifest: man, Dir: rel, Source: "file",
		Enabled: s.enabled, Status: orDefault(s.status, registry.StatusInactive), SecurityLevel: "medium", Limits: s.limits}
	if s.config != nil {
		var schema map[string]struct {
			Secret bool `json:"secret"`
		}
		if err := json.Unmarshal([]byte(s.configuration), &schema); err != nil {
			f.t.Fatal(err)
		}
		var secret []string
		for name, field := range schema {
			if field.Secret {
				secret = append(secret, name)
			}
		}
		sealed, err := f.box.SealFields(s.config, secret)
		if err != nil {
			f.t.Fatal(err)
		}
		if rec.Config, err = json.Marshal(sealed); err != nil {
			f.t.Fatal(err)
		}
	}
	err = f.reg.Update(context.Background(), func(tx *registry.Tx) error {
		_, err := tx.Put(rec)
		return err
	})
	if err != nil {
		f.t.Fatalf("install %s: %v", s.id, err)
	}
	p := &fakePlugin{id: s.id, f: f, checks: []presence.Check{{Name: "main", Status: "pass"}}}
	if !s.external {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			p.connect()
		}()
	}
	return p
}

// record returns a plugin's record as the registry holds it.
func (f *fixture) record(id string) store.Plugin {
	f.t.Helper()
	p, err := f.reg.Get(id)
	if err != nil {
		f.t.Fatal(err)
	}
	return p.Record()
}

// enable enables a plugin, bounded by a timeout.
func (f *fixture) enable(id string, opts runtime.EnableOptions) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return f.rt.Enable(ctx, id, opts)
}

// mustEnable enables a plugin and fails the test unless it becomes active.
func (f *fixture) mustEnable(id string) {
	f.t.Helper()
	status, err := f.enable(id, runtime.EnableOptions{})
	if err != nil || status != registry.StatusActive {
		f.t.Fatalf("Enable(%s) = %q, %v; want active", id, status, err)
	}
}

// disable disables a plugin, bounded by a timeout.
func (f *fixture) disable(id string, opts runtime.DisableOptions) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return f.rt.Disable(ctx, id, opts)
}

// fakePlugin plays the plugin side of the stream for one plugin: when the runtime has
// launched the plugin's process and the process has reported itself ready (see
// runHelper), it attaches a connected instance for that process to the presence, as the
// stream server does once a plugin has said hello. An instance ends when the runtime
// ends it or no longer runs its process (its connection would drop with the process).
type fakePlugin struct {
	id string
	f  *fixture

	mu sync.Mutex // guards the fields below
	// gate, when not nil, holds back attaching until it is closed: a plugin slow to
	// connect.
	gate      chan struct{}
	checks    []presence.Check // what AskHealth answers
	reject    string           // why PushConfig refuses a configuration; "" accepts it
	pushed    []map[string]any // the configurations pushed, in order
	instances []*fakeInstance  // every instance attached, oldest first
}

// hold makes the plugin's next instances wait before connecting; the returned function
// lets them connect.
func (p *fakePlugin) hold() (release func()) {
	gate := make(chan struct{})
	p.mu.Lock()
	p.gate = gate
	p.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(gate) }) }
}

// answer sets the checks the plugin's instances report.
func (p *fakePlugin) answer(checks ...presence.Check) {
	p.mu.Lock()
	p.checks = checks
	p.mu.Unlock()
}

// all returns every instance attached so far.
func (p *fakePlugin) all() []*fakeInstance {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.instances)
}

// current returns the newest instance, or nil.
func (p *fakePlugin) current() *fakeInstance {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.instances) == 0 {
		return nil
	}
	return p.instances[len(p.instances)-1]
}

// connect watches the runtime's view of the plugin until the fixture ends: each new
// process that reports itself ready gets an instance, and instances whose process is no
// longer the runtime's are ended. The runtime exposes no launch hook, so it polls.
func (p *fakePlugin) connect() {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.f.ctx.Done():
			return
		case <-tick.C:
		}
		info := p.f.rt.Info(p.id)
		for _, inst := range p.all() {
			if inst.pid != info.PID {
				inst.End(errors.New("the plugin's process is gone"))
			}
		}
		if info.PID == 0 || slices.ContainsFunc(p.all(), func(i *fakeInstance) bool { return i.pid == info.PID }) {
			continue
		}
		token, ok := readyLine(info.LastOutput, info.PID, p.id, filepath.Join(p.f.dir, "plugin-data", p.id, "launch-token"))
		if !ok {
			continue
		}
		p.mu.Lock()
		gate := p.gate
		p.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-p.f.ctx.Done():
				return
			}
			if p.f.rt.Info(p.id).PID != info.PID {
				continue // it did not wait for us
			}
		}
		p.attach(info.PID, token)
	}
}

// readyLine finds the ready line of process pid among a plugin's last output lines and
// returns the token it was launched with, from tokenFile (in the output the host hides it:
// the line must say ***hidden***).
func readyLine(lines []string, pid int, pluginID, tokenFile string) (token string, ok bool) {
	prefix := fmt.Sprintf("ready pid=%d plugin=%s token=", pid, pluginID)
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(l, prefix); ok && rest == "***hidden***" {
			b, err := os.ReadFile(tokenFile)
			return string(b), err == nil && len(b) > 0
		}
	}
	return "", false
}

// attach connects an instance for process pid, authenticated by its token as the stream
// server would: a process with a token the issuer never minted for the plugin does not
// connect.
func (p *fakePlugin) attach(pid int, token string) {
	tok, ok := p.f.tokens.lookup(token)
	if !ok || tok.PluginID != p.id || tok.Role != store.RolePlugin {
		return
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return
	}
	inst := &fakeInstance{p: p, pid: pid, proc: proc, session: fmt.Sprintf("session-%s-%d", p.id, pid), tokenID: tok.ID, done: make(chan struct{})}
	p.mu.Lock()
	p.instances = append(p.instances, inst)
	p.mu.Unlock()
	p.f.pres.Attach(inst)
}

// fakeInstance is a connected instance of a plugin, the plugin's side of a stream session.
// Its shutdown frame is SIGUSR1 to its process.
type fakeInstance struct {
	p       *fakePlugin
	pid     int
	proc    *os.Process // a pidfd: signals cannot reach another process reusing pid
	session string
	tokenID string

	mu        sync.Mutex // guards the fields below
	shutdowns []string   // the reasons of the shutdown frames received
	sick      bool       // AskHealth does not answer (until its context ends)

	done    chan struct{}
	endOnce sync.Once
}

var _ presence.Instance = (*fakeInstance)(nil)

func (i *fakeInstance) SessionID() string                     { return i.session }
func (i *fakeInstance) InstanceID() string                    { return "instance-" + strconv.Itoa(i.pid) }
func (i *fakeInstance) PluginID() string                      { return i.p.id }
func (i *fakeInstance) TokenID() string                       { return i.tokenID }
func (i *fakeInstance) Announced() (services, types []string) { return nil, nil }
func (i *fakeInstance) Done() <-chan struct{}                 { return i.done }

func (i *fakeInstance) AskHealth(ctx context.Context) ([]presence.Check, error) {
	i.mu.Lock()
	sick := i.sick
	i.mu.Unlock()
	if sick {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-i.done:
			return nil, errors.New("session ended")
		}
	}
	i.p.mu.Lock()
	defer i.p.mu.Unlock()
	return slices.Clone(i.p.checks), nil
}

func (i *fakeInstance) PushConfig(_ context.Context, cfg map[string]any, _ []string, _ bool) (presence.ConfigAck, error) {
	i.p.mu.Lock()
	defer i.p.mu.Unlock()
	i.p.pushed = append(i.p.pushed, cfg)
	return presence.ConfigAck{Accepted: i.p.reject == "", Reason: i.p.reject}, nil
}

func (i *fakeInstance) AskShutdown(_ context.Context, reason string, _ time.Duration) error {
	i.mu.Lock()
	i.shutdowns = append(i.shutdowns, reason)
	i.mu.Unlock()
	i.p.f.mu.Lock()
	i.p.f.shutdowns = append(i.p.f.shutdowns, i.p.id)
	i.p.f.mu.Unlock()
	return i.proc.Signal(syscall.SIGUSR1)
}

func (i *fakeInstance) End(error) {
	i.endOnce.Do(func() {
		close(i.done)
		i.p.f.pres.Detach(i)
		if i.proc != nil {
			_ = i.proc.Release()
		}
	})
}

// shutdownReasons returns the reasons of the shutdown frames the instance received.
func (i *fakeInstance) shutdownReasons() []string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.shutdowns)
}

// setSick makes the instance stop answering health checks.
func (i *fakeInstance) setSick() {
	i.mu.Lock()
	i.sick = true
	i.mu.Unlock()
}

// crash makes the instance's process crash (exit code 3).
func (i *fakeInstance) crash(t *testing.T) {
	t.Helper()
	if err := i.proc.Signal(syscall.SIGUSR2); err != nil {
		t.Fatalf("crash process %d: %v", i.pid, err)
	}
}

// ended reports whether the session has ended.
func (i *fakeInstance) ended() bool {
	select {
	case <-i.done:
		return true
	default:
		return false
	}
}

// fakeTokens is the token issuer: it mints tokens and records revocations.
type fakeTokens struct {
	mu sync.Mutex // guards the fields below
	// hook, when set, runs first in each Create, outside the lock: a test holds a launch
	// there (Create is the first thing a launch does).
	hook    func(pluginID string)
	minted  map[string]store.Token
	created []string // the plugin ids tokens were created for, in order
	revoked []string // token ids
}

func (ft *fakeTokens) Create(_ context.Context, name string, role store.Role, pluginID string) (string, store.Token, error) {
	ft.mu.Lock()
	hook := ft.hook
	ft.mu.Unlock()
	if hook != nil {
		hook(pluginID)
	}
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if ft.minted == nil {
		ft.minted = map[string]store.Token{}
	}
	n := len(ft.minted) + 1
	tok := store.Token{ID: fmt.Sprintf("tok-%d", n), Name: name, Role: role, PluginID: pluginID, CreatedAt: time.Now()}
	secret := fmt.Sprintf("secret-%d", n)
	ft.minted[secret] = tok
	ft.created = append(ft.created, pluginID)
	return secret, tok, nil
}

func (ft *fakeTokens) Revoke(_ context.Context, id string) error {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.revoked = append(ft.revoked, id)
	return nil
}

// setHook sets the hook run first in each Create.
func (ft *fakeTokens) setHook(fn func(pluginID string)) {
	ft.mu.Lock()
	ft.hook = fn
	ft.mu.Unlock()
}

// last returns the token minted last.
func (ft *fakeTokens) last() store.Token {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	for _, tok := range ft.minted {
		if tok.ID == fmt.Sprintf("tok-%d", len(ft.minted)) {
			return tok
		}
	}
	return store.Token{}
}

// lookup returns the token a secret stands for.
func (ft *fakeTokens) lookup(secret string) (store.Token, bool) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	tok, ok := ft.minted[secret]
	return tok, ok
}

// creations returns the plugin ids tokens were created for, in order.
func (ft *fakeTokens) creations() []string {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return slices.Clone(ft.created)
}

// isRevoked reports whether a token was revoked.
func (ft *fakeTokens) isRevoked(id string) bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return slices.Contains(ft.revoked, id)
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// gone reports whether process pid has exited: it no longer exists or is a zombie.
func gone(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || strings.HasPrefix(string(b[i+1:]), " Z") || strings.HasPrefix(string(b[i+1:]), " X")
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// logLines returns the messages of the plugin's recent log records.
func (f *fixture) logLines(id string) []string {
	var out []string
	for _, r := range f.logs.Recent(id) {
		out = append(out, r.Message)
	}
	return out
}
