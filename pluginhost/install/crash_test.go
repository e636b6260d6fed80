package install_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/archive"
	"github.com/nexus-platform/nexus/pluginhost/install"
	"github.com/nexus-platform/nexus/pluginhost/presence"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// The environment of the process TestUpdateKilled runs and kills (TestHelperUpdateKilled):
// the step to die at, the directory holding its data directory and database, and whether
// the version it updates to becomes healthy.
const (
	crashStepEnv    = "NEXUS_INSTALL_TEST_CRASH_STEP"
	crashDirEnv     = "NEXUS_INSTALL_TEST_CRASH_DIR"
	crashHealthyEnv = "NEXUS_INSTALL_TEST_CRASH_HEALTHY"
	// crashStarting is not a pipeline step: the process dies while the new version is
	// launched and has not become healthy yet.
	crashStarting = "starting"
	crashPlugin   = "crash-plugin"
)

// pluginData is the data directory of the launched plugin (HOME and TMPDIR).
var pluginData = []string{"plugin-data", "plugin-data/" + crashPlugin, "plugin-data/" + crashPlugin + "/tmp"}

// crashKey seals secrets in the killed process and in the one that starts after it.
var crashKey = bytes.Repeat([]byte{7}, 32)

// A server killed at any step of an update to a running plugin starts again with the
// plugin's record exactly the old version or exactly the new one (the new one only once the
// update was committed, after the new version became active), its package directory
// complete, no directory that no record refers to, no update left in flight, and the plugin
// starts. Each case runs the update in a child process that SIGKILLs itself at the step.
func TestUpdateKilled(t *testing.T) {
	cases := []struct {
		step    string
		healthy bool // the new version becomes healthy
		wantNew bool // the update was committed: the new version stays
		undone  bool // an update in flight was undone at the start
	}{
		{step: "fetched", healthy: true},
		{step: "inspected", healthy: true},
		{step: "planned", healthy: true},
		{step: "staged", healthy: true},
		{step: "backed-up", healthy: true},
		{step: "stopped", healthy: true},
		{step: "switched", healthy: true, undone: true},
		{step: "started", healthy: true, undone: true},
		{step: "committed", healthy: true, wantNew: true},
		{step: "cleaned", healthy: true, wantNew: true},
		// The new version never becomes healthy.
		{step: "switched", undone: true},
		{step: crashStarting, undone: true},
		{step: "start-failed", undone: true},
		{step: "restored"},
	}
	for _, c := range cases {
		name := c.step
		if !c.healthy {
			name = "never healthy/" + name
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperUpdateKilled$", "-test.count=1", "-test.v")
			healthy := "0"
			if c.healthy {
				healthy = "1"
			}
			cmd.Env = append(os.Environ(), crashStepEnv+"="+c.step, crashDirEnv+"="+dir, crashHealthyEnv+"="+healthy)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || !exit.Sys().(syscall.WaitStatus).Signaled() || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("the server was not killed at %s: %v\n%s", c.step, err, out)
			}

			// The server starts again on the same state.
			f := newFixtureWith(t, fixtureOptions{dataDir: filepath.Join(dir, "data"), dbPath: filepath.Join(dir, "nexus.db"),
				key: crashKey, tokens: &scriptTokens{}})
			f.playStreams(t, crashPlugin)
			want := "1.0.0"
			if c.wantNew {
				want = "2.0.0"
			}
			f.wantPackage(t, crashPlugin, want)
			p := f.get(t, crashPlugin)
			if !p.Enabled() || p.Status() != registry.StatusInactive {
				t.Fatalf("after the restart: enabled %v, status %s (%s)", p.Enabled(), p.Status(), p.StatusReason())
			}
			if cfg := p.Config(); !maps.Equal(cfg, map[string]any{"token": "s3cret", "level": "info"}) {
				t.Fatalf("configuration %v", cfg)
			}
			// The backup the update made stays only with the update.
			wantDirs := append([]string{"plugins/" + crashPlugin, "plugins/" + crashPlugin + "/" + want + "-*"}, pluginData...)
			bs := f.backups(t, crashPlugin)
			if c.wantNew {
				if len(bs) != 1 || bs[0].Version != "1.0.0" || bs[0].Reason != "update" {
					t.Fatalf("backups %+v", bs)
				}
				wantDirs = append(wantDirs, "backups/"+crashPlugin, "backups/"+crashPlugin+"/"+bs[0].ID)
			} else if len(bs) != 0 {
				t.Fatalf("backups of an update that did not happen: %+v", bs)
			}
			f.wantContents(t, wantDirs...)
			if sw := f.switches(t); len(sw) != 0 {
				t.Fatalf("updates still in flight: %+v", sw)
			}
			const undoneLine = "The update to 2.0.0 did not finish before the server stopped; version 1.0.0 restored"
			if logs := f.storedLogs(t, crashPlugin); slices.Contains(logs, undoneLine) != c.undone {
				t.Fatalf("stored logs %q; want the line %q: %v", logs, undoneLine, c.undone)
			}

			// And the plugin runs.
			f.mustEnable(t, crashPlugin)
		})
	}
}

// TestHelperUpdateKilled is the server TestUpdateKilled kills: it installs and starts the
// plugin, then updates it to version 2.0.0 and kills itself at the step the environment
// names. It does nothing in a normal run.
func TestHelperUpdateKilled(t *testing.T) {
	step := os.Getenv(crashStepEnv)
	if step == "" {
		t.Skip("the server process of TestUpdateKilled")
	}
	die := func() {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	dir := os.Getenv(crashDirEnv)
	f := newFixtureWith(t, fixtureOptions{dataDir: filepath.Join(dir, "data"), dbPath: filepath.Join(dir, "nexus.db"),
		key: crashKey, tokens: &scriptTokens{}, onStep: func(op, s string) {
			if op == "update" && s == step {
				die()
			}
		}})
	f.playStreams(t, crashPlugin)
	f.install(t, scriptPackage(t, crashPlugin, "1.0.0", true), map[string]any{"token": "s3cret"})
	f.mustEnable(t, crashPlugin)
	if step == crashStarting {
		// Killed as soon as the new version's process runs, before it can be healthy.
		go func() {
			for {
				if p, err := f.reg.Get(crashPlugin); err == nil && p.Record().Version == "2.0.0" && f.rt.Info(crashPlugin).Running {
					die()
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	_, err := f.inst.Update(context.Background(), install.UpdateRequest{PluginID: crashPlugin, Source: "file",
		PackageData: scriptPackage(t, crashPlugin, "2.0.0", os.Getenv(crashHealthyEnv) == "1"), BackupCurrent: true, RestartPlugin: true})
	t.Fatalf("the update ended (%v) before step %s", err, step)
}

// An update to a version that never becomes healthy answers with the failure, and the old
// version runs again from its own, intact directory.
func TestUpdateNeverHealthy(t *testing.T) {
	f := newFixtureWith(t, fixtureOptions{tokens: &scriptTokens{}})
	f.playStreams(t, crashPlugin)
	f.install(t, scriptPackage(t, crashPlugin, "1.0.0", true), nil)
	f.mustEnable(t, crashPlugin)
	_, err := f.inst.Update(context.Background(), install.UpdateRequest{PluginID: crashPlugin, Source: "file",
		PackageData: scriptPackage(t, crashPlugin, "2.0.0", false), BackupCurrent: true, RestartPlugin: true})
	e := wantCode(t, err, "PLUGIN_STARTUP_FAILED")
	if e.Details["restored_version"] != "1.0.0" {
		t.Fatalf("details %v", e.Details)
	}
	f.wantPackage(t, crashPlugin, "1.0.0")
	if p := f.get(t, crashPlugin); p.Status() != registry.StatusActive || !f.rt.Info(crashPlugin).Running {
		t.Fatalf("after the failed update: status %s (%s)", p.Status(), p.StatusReason())
	}
	f.wantContents(t, append([]string{"plugins/" + crashPlugin, "plugins/" + crashPlugin + "/1.0.0-*"}, pluginData...)...)
	if bs := f.backups(t, crashPlugin); len(bs) != 0 {
		t.Fatalf("backups of a failed update: %+v", bs)
	}
	if sw := f.switches(t); len(sw) != 0 {
		t.Fatalf("updates still in flight: %+v", sw)
	}

	// A healthy version is switched to, and the old one's files go.
	res, err := f.inst.Update(context.Background(), install.UpdateRequest{PluginID: crashPlugin, Source: "file",
		PackageData: scriptPackage(t, crashPlugin, "2.0.0", true), BackupCurrent: true, RestartPlugin: true})
	if err != nil {
		t.Fatal(err)
	}
	f.wantPackage(t, crashPlugin, "2.0.0")
	if p := f.get(t, crashPlugin); p.Status() != registry.StatusActive {
		t.Fatalf("after the update: status %s (%s)", p.Status(), p.StatusReason())
	}
	f.wantContents(t, append([]string{"plugins/" + crashPlugin, "plugins/" + crashPlugin + "/2.0.0-*", "backups/" + crashPlugin,
		"backups/" + crashPlugin + "/" + res.BackupID}, pluginData...)...)
	if sw := f.switches(t); len(sw) != 0 {
		t.Fatalf("updates still in flight: %+v", sw)
	}
}

// scriptPackage builds a host-launched plugin whose entry point is a shell script. A healthy
// one prints its ready line (see playStreams) and waits; the other never does, and its
// start times out after a second.
func scriptPackage(t *testing.T, id, version string, healthy bool) []byte {
	t.Helper()
	script := "#!/bin/sh\necho \"ready pid=$$ plugin=$NEXUS_PLUGIN_ID\"\nexec sleep 600\n"
	m := manifest(id, version)
	if !healthy {
		script = "#!/bin/sh\necho 'loading, forever'\nexec sleep 600\n"
		m["start_timeout_seconds"] = 1
	}
	dir := t.TempDir()
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plugin.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "run"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := archive.Create(&buf, dir); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// mustEnable enables a plugin and fails the test unless it becomes active and runs.
func (f *fixture) mustEnable(t *testing.T, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	status, err := f.rt.Enable(ctx, id, runtime.EnableOptions{})
	if err != nil || status != registry.StatusActive || !f.rt.Info(id).Running {
		t.Fatalf("Enable(%s) = %q, %v; want active and running", id, status, err)
	}
}

// switches returns the updates in flight.
func (f *fixture) switches(t *testing.T) []store.VersionSwitch {
	t.Helper()
	var out []store.VersionSwitch
	err := f.st.Read(context.Background(), func(tx store.Tx) error {
		var err error
		out, err = tx.VersionSwitches()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// playStreams plays the plugin side of the stream for launched script plugins until the
// test ends: when the current process of one of ids has printed its ready line, an
// instance that reports itself healthy is attached for it, as the stream server does once
// a plugin has said hello; instances of processes the runtime no longer runs are ended.
// The runtime exposes no launch hook, so this polls.
func (f *fixture) playStreams(t *testing.T, ids ...string) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() {
		attached := map[string]*scriptInstance{}
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for _, id := range ids {
				info := f.rt.Info(id)
				if inst := attached[id]; inst != nil {
					if inst.pid == info.PID {
						continue
					}
					inst.End(errors.New("the plugin's process is gone"))
					delete(attached, id)
				}
				if info.PID == 0 || !slices.Contains(info.LastOutput, fmt.Sprintf("ready pid=%d plugin=%s", info.PID, id)) {
					continue
				}
				inst := &scriptInstance{pres: f.pres, id: id, pid: info.PID, done: make(chan struct{})}
				attached[id] = inst
				f.pres.Attach(inst)
			}
		}
	})
}

// scriptInstance is a connected instance of a script plugin. Its shutdown frame is SIGTERM
// to the process.
type scriptInstance struct {
	pres *presence.Presence
	id   string
	pid  int
	done chan struct{}
	once sync.Once
}

var _ presence.Instance = (*scriptInstance)(nil)

func (i *scriptInstance) SessionID() string                     { return fmt.Sprintf("session-%s-%d", i.id, i.pid) }
func (i *scriptInstance) InstanceID() string                    { return fmt.Sprintf("instance-%d", i.pid) }
func (i *scriptInstance) PluginID() string                      { return i.id }
func (i *scriptInstance) TokenID() string                       { return "" }
func (i *scriptInstance) Announced() (services, types []string) { return nil, nil }
func (i *scriptInstance) Done() <-chan struct{}                 { return i.done }

func (i *scriptInstance) AskHealth(context.Context) ([]presence.Check, error) {
	return []presence.Check{{Name: "main", Status: "pass"}}, nil
}

func (i *scriptInstance) PushConfig(context.Context, map[string]any, []string, bool) (presence.ConfigAck, error) {
	return presence.ConfigAck{Accepted: true}, nil
}

func (i *scriptInstance) AskShutdown(context.Context, string, time.Duration) error {
	return syscall.Kill(i.pid, syscall.SIGTERM)
}

func (i *scriptInstance) End(error) {
	i.once.Do(func() {
		close(i.done)
		i.pres.Detach(i)
	})
}

// scriptTokens issues the tokens of launched plugins (nothing checks them here).
type scriptTokens struct{}

func (*scriptTokens) Create(_ context.Context, name string, role store.Role, pluginID string) (string, store.Token, error) {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	return "token-" + id, store.Token{ID: id, Name: name, Role: role, PluginID: pluginID}, nil
}

func (*scriptTokens) Revoke(context.Context, string) error { return nil }
