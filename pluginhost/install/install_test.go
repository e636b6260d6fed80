package install_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/archive"
	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busmem"
	"github.com/nexus-platform/nexus/pluginhost/catalog"
	"github.com/nexus-platform/nexus/pluginhost/configschema"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/install"
	"github.com/nexus-platform/nexus/pluginhost/kv"
	"github.com/nexus-platform/nexus/pluginhost/logsink"
	"github.com/nexus-platform/nexus/pluginhost/metrics"
	"github.com/nexus-platform/nexus/pluginhost/permission"
	"github.com/nexus-platform/nexus/pluginhost/presence"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/router"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

// hostVersion is the server version the installer checks manifests against.
const hostVersion = "1.0.0"

// fixture is an installer wired as the host wires it: a registry over SQLite, the catalog,
// the log sink (its writer running), metrics, key-value data, presence, a router over the
// in-memory bus and a runtime. The plugins most tests enable are external; the tests of
// killed updates (crash_test.go) launch shell-script plugins and play their streams.
type fixture struct {
	dataDir string
	st      store.Store
	reg     *registry.Registry
	logs    *logsink.Sink
	kv      *kv.Store
	bus     *busmem.Bus
	router  *router.Router
	pres    *presence.Presence
	rt      *runtime.Runtime
	inst    *install.Installer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, fixtureOptions{})
}

// fixtureOptions change what newFixtureWith builds.
type fixtureOptions struct {
	// dataDir and dbPath reopen a server's state (a restart); new ones when empty.
	dataDir, dbPath string
	// key seals secrets; a random one when nil.
	key []byte
	// tokens issues plugin tokens (launched plugins need one); noTokens when nil.
	tokens runtime.TokenIssuer
	// onStep is the installer's Options.OnStep.
	onStep func(op, step string)
}

// newFixtureWith builds a fixture and starts it as the host starts: the registry loaded,
// the installer's sweep, the statuses of plugins that ran reset.
func newFixtureWith(t *testing.T, opts fixtureOptions) *fixture {
	t.Helper()
	ctx := context.Background()
	if opts.dataDir == "" {
		opts.dataDir = t.TempDir()
	}
	if opts.dbPath == "" {
		opts.dbPath = filepath.Join(t.TempDir(), "nexus.db") // outside the data directory
	}
	if opts.tokens == nil {
		opts.tokens = noTokens{}
	}
	f := &fixture{dataDir: opts.dataDir}
	st, err := storesqlite.Open(ctx, opts.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f.st = st
	key := opts.key
	if key == nil {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	}
	box, err := secrets.New(key)
	if err != nil {
		t.Fatal(err)
	}
	f.reg = registry.New(st, box, nil)
	if err := f.reg.Load(ctx); err != nil {
		t.Fatal(err)
	}
	repos, err := catalog.New(st, nil, hostVersion)
	if err != nil {
		t.Fatal(err)
	}
	f.logs = logsink.New(st, nil, 1000)
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { f.logs.Run(runCtx) })
	t.Cleanup(func() { stop(); wg.Wait() })
	met := metrics.New()
	f.kv = kv.New(st, kv.Options{})
	pres := presence.New()
	f.bus = busmem.New(bus.Options{})
	f.router = router.New(router.Options{Registry: f.reg, Presence: pres, Bus: f.bus})
	f.router.Start()
	t.Cleanup(f.router.Close)
	f.pres = pres
	f.rt = runtime.New(runtime.Options{Registry: f.reg, Presence: pres, Logs: f.logs, Metrics: met, Tokens: opts.tokens,
		DataDir: f.dataDir, Notify: f.router.System})
	t.Cleanup(func() { f.rt.Shutdown(context.Background(), time.Second) })
	f.inst = install.New(install.Options{
		Registry: f.reg, Catalog: repos, Runtime: f.rt, Router: f.router, Logs: f.logs, KV: f.kv, Metrics: met,
		DataDir: f.dataDir, Policy: permission.DefaultPolicy(), Limits: archive.DefaultLimits(),
		HostVersion: hostVersion, OnStep: opts.onStep,
	})
	if err := f.inst.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.rt.ResetStatuses(ctx); err != nil {
		t.Fatal(err)
	}
	return f
}

// noTokens is the token issuer of a runtime that launches no plugin.
type noTokens struct{}

func (noTokens) Create(context.Context, string, store.Role, string) (string, store.Token, error) {
	return "", store.Token{}, errors.New("these tests launch no plugin")
}

func (noTokens) Revoke(context.Context, string) error { return nil }

// manifest returns the manifest of a host-launched plugin with an entry point, a secret and
// a plain configuration field, and two requested permissions (the default policy grants the
// first and denies the second). mods change it.
func manifest(id, version string, mods ...func(m map[string]any)) map[string]any {
	m := map[string]any{
		"id": id, "name": "Plugin " + id, "version": version, "description": "a test plugin", "author": "tests",
		"category": "testing", "entry_point": "bin/run", "nexus_version": ">=1.0.0",
		"permissions": []string{"events:emit", "http:external"},
		"configuration": map[string]any{
			"token": map[string]any{"type": "string", "secret": true},
			"level": map[string]any{"type": "string", "enum": []string{"debug", "info"}, "default": "info"},
		},
	}
	for _, mod := range mods {
		mod(m)
	}
	return m
}

// external makes a manifest's plugin external (no entry point: it connects by itself).
func external(m map[string]any) {
	delete(m, "entry_point")
	m["external"] = true
}

func dependsOn(deps map[string]string) func(map[string]any) {
	return func(m map[string]any) { m["dependencies"] = map[string]any{"plugins": deps} }
}

// build packs a manifest, with an executable bin/run when it has an entry point, and extra
// files, with archive.Create.
func build(t *testing.T, m map[string]any, files map[string]string) []byte {
	t.Helper()
	dir := t.TempDir()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, content string, mode os.FileMode) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("plugin.json", string(b), 0o644)
	if _, ok := m["entry_point"]; ok {
		write("bin/run", "#!/bin/sh\nexit 0\n", 0o755)
	}
	for name, content := range files {
		write(name, content, 0o644)
	}
	var buf bytes.Buffer
	if err := archive.Create(&buf, dir); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (f *fixture) install(t *testing.T, pkg []byte, cfg map[string]any) install.InstallResult {
	t.Helper()
	res, err := f.inst.Install(context.Background(), install.InstallRequest{Source: "file", PackageData: pkg, Config: cfg})
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	return res
}

func (f *fixture) get(t *testing.T, id string) *registry.Plugin {
	t.Helper()
	p, err := f.reg.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) backups(t *testing.T, id string) []store.Backup {
	t.Helper()
	var out []store.Backup
	err := f.st.Read(context.Background(), func(tx store.Tx) error {
		var err error
		out, err = tx.Backups(id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// storedLogs returns the messages of a plugin's stored log records, newest first.
func (f *fixture) storedLogs(t *testing.T, id string) []string {
	t.Helper()
	var recs []store.LogRecord
	err := f.st.Read(context.Background(), func(tx store.Tx) error {
		var err error
		recs, _, err = tx.Logs(store.LogFilter{PluginID: id, Page: 1, PerPage: 100})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.Message)
	}
	return out
}

// packageDir matches the name of an installed version's directory: <version>-<12 hex>.
var packageDir = regexp.MustCompile(`^(.+)-[0-9a-f]{12}$`)

// contents lists the data directory three levels deep, sorted, with each package
// directory's random suffix replaced by "*" (plugins/<id>/<version>-*). Backup directories
// keep their names. Anything left by an unfinished operation (".extract-*", ".tmp") shows.
func (f *fixture) contents(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(f.dataDir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(f.dataDir, path)
		if err != nil || rel == "." {
			return err
		}
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if len(parts) == 3 && parts[0] == "plugins" {
			if m := packageDir.FindStringSubmatch(parts[2]); m != nil {
				parts[2] = m[1] + "-*"
			}
		}
		out = append(out, strings.Join(parts, "/"))
		if len(parts) == 3 && d.IsDir() {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func (f *fixture) wantContents(t *testing.T, want ...string) {
	t.Helper()
	want = append([]string{"backups", "plugins"}, want...)
	slices.Sort(want)
	if got := f.contents(t); !slices.Equal(got, want) {
		t.Fatalf("data directory holds\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// wantPackage checks that a plugin's recorded directory holds the package of version.
func (f *fixture) wantPackage(t *testing.T, id, version string) {
	t.Helper()
	rec := f.get(t, id).Record()
	if filepath.IsAbs(rec.Dir) || !strings.HasPrefix(rec.Dir, filepath.Join("plugins", id, version+"-")) {
		t.Fatalf("recorded directory %q; want plugins/%s/%s-* relative to the data directory", rec.Dir, id, version)
	}
	raw, err := os.ReadFile(filepath.Join(f.dataDir, rec.Dir, "plugin.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ ID, Version string }
	if err := json.Unmarshal(raw, &m); err != nil || m.ID != id || m.Version != version {
		t.Fatalf("the package directory holds %s %s (%v); want %s %s", m.ID, m.Version, err, id, version)
	}
	if !bytes.Equal(raw, rec.Manifest) {
		t.Fatal("the recorded manifest is not the package's")
	}
	if !f.get(t, id).Manifest().External {
		st, err := os.Stat(filepath.Join(f.dataDir, rec.Dir, "bin", "run"))
		if err != nil || st.Mode().Perm()&0o100 == 0 {
			t.Fatalf("entry point: %v, %v", st, err)
		}
	}
}

func wantCode(t *testing.T, err error, code errs.Code) *errs.Error {
	t.Helper()
	var e *errs.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("err = %v; want %s", err, code)
	}
	return e
}

func TestInstall(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	events, _ := f.router.WatchEvents(ctx, []string{"plugin.installed"})
	pkg := build(t, manifest("alpha-plugin", "1.0.0"), map[string]string{"lib/helper.txt": "help"})
	before := time.Now().UTC()
	res := f.install(t, pkg, map[string]any{"token": "s3cret", "level": "debug"})
	if res.PluginID != "alpha-plugin" || res.Name != "Plugin alpha-plugin" || res.Version != "1.0.0" || res.Status != registry.StatusInactive ||
		res.Enabled || res.InstalledAt.Before(before) || res.Duration <= 0 {
		t.Fatalf("result %+v", res)
	}
	p := f.get(t, "alpha-plugin")
	rec := p.Record()
	sum := sha256.Sum256(pkg)
	if rec.Version != "1.0.0" || rec.Source != "file" || rec.PackageSHA256 != hex.EncodeToString(sum[:]) || rec.Enabled ||
		rec.Status != registry.StatusInactive || !rec.InstalledAt.Equal(res.InstalledAt) {
		t.Fatalf("record %+v", rec)
	}
	if !slices.Equal(rec.Requested, []string{"events:emit", "http:external"}) || !slices.Equal(rec.Granted, []string{"events:emit"}) ||
		!slices.Equal(rec.Denied, []string{"http:external"}) {
		t.Fatalf("requested %v, granted %v, denied %v", rec.Requested, rec.Granted, rec.Denied)
	}
	if cfg := p.Config(); !maps.Equal(cfg, map[string]any{"token": "s3cret", "level": "debug"}) {
		t.Fatalf("configuration %v", cfg)
	}
	if strings.Contains(string(rec.Config), "s3cret") {
		t.Fatal("the secret is stored in the clear")
	}
	f.wantPackage(t, "alpha-plugin", "1.0.0")
	if b, err := os.ReadFile(filepath.Join(f.dataDir, rec.Dir, "lib", "helper.txt")); err != nil || string(b) != "help" {
		t.Fatalf("package file: %q, %v", b, err)
	}
	f.wantContents(t, "plugins/alpha-plugin", "plugins/alpha-plugin/1.0.0-*")
	if logs := f.storedLogs(t, "alpha-plugin"); len(logs) != 1 || logs[0] != "Plugin installed (version 1.0.0)" {
		t.Fatalf("stored logs %q", logs)
	}
	if recent := f.logs.Recent("alpha-plugin"); len(recent) != 1 || recent[0].Message != "Plugin installed (version 1.0.0)" {
		t.Fatalf("recent logs %+v", recent)
	}
	select {
	case e := <-events:
		if e.Source != "system" {
			t.Fatalf("event %+v", e)
		}
	case <-ctx.Done():
		t.Fatal("no plugin.installed event")
	}

	// From a file on the server, too.
	path := filepath.Join(t.TempDir(), "beta.tar.gz")
	if err := os.WriteFile(path, build(t, manifest("beta-plugin", "2.0.0", external), nil), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.inst.Install(ctx, install.InstallRequest{Source: "file", FilePath: path}); err != nil {
		t.Fatal(err)
	}
	f.wantPackage(t, "beta-plugin", "2.0.0")
	if cfg := f.get(t, "beta-plugin").Config(); !maps.Equal(cfg, map[string]any{"level": "info"}) {
		t.Fatalf("configuration from the defaults %v", cfg)
	}
	f.wantContents(t, "plugins/alpha-plugin", "plugins/alpha-plugin/1.0.0-*", "plugins/beta-plugin", "plugins/beta-plugin/2.0.0-*")

	// Installed already.
	snap := f.reg.Snapshot()
	_, err := f.inst.Install(ctx, install.InstallRequest{Source: "file", PackageData: build(t, manifest("alpha-plugin", "1.1.0"), nil)})
	e := wantCode(t, err, errs.PluginAlreadyInstalled)
	if e.Details["installed_version"] != "1.0.0" {
		t.Fatalf("details %v", e.Details)
	}
	if f.reg.Snapshot() != snap {
		t.Fatal("a refused install changed the registry")
	}
	f.wantContents(t, "plugins/alpha-plugin", "plugins/alpha-plugin/1.0.0-*", "plugins/beta-plugin", "plugins/beta-plugin/2.0.0-*")
	if n := len(f.backups(t, "alpha-plugin")); n != 0 {
		t.Fatalf("%d backups", n)
	}
}

// A refused install leaves nothing behind: no record, no directory, no log.
func TestInstallRefused(t *testing.T) {
	f := newFixture(t)
	f.install(t, build(t, manifest("base-plugin", "1.0.0"), nil), nil)
	good := build(t, manifest("new-plugin", "1.0.0"), nil)
	noEntry := func(m map[string]any) { m["entry_point"] = "bin/missing" }
	for _, c := range []struct {
		name   string
		req    install.InstallRequest
		code   errs.Code
		fields []string
		detail map[string]any
	}{
		{"missing dependency",
			install.InstallRequest{PackageData: build(t, manifest("new-plugin", "1.0.0", dependsOn(map[string]string{"auth-plugin": ">=1.0.0", "base-plugin": ">=1.0.0"})), nil)},
			errs.PluginDependencyError, []string{"dependencies.plugins.auth-plugin"}, map[string]any{"missing": []string{"auth-plugin"}}},
		{"dependency of another version",
			install.InstallRequest{PackageData: build(t, manifest("new-plugin", "1.0.0", dependsOn(map[string]string{"base-plugin": ">=2.0.0"})), nil)},
			errs.PluginDependencyError, []string{"dependencies.plugins.base-plugin"}, nil},
		{"incompatible nexus_version",
			install.InstallRequest{PackageData: build(t, manifest("new-plugin", "1.0.0", func(m map[string]any) { m["nexus_version"] = ">=2.0.0" }), nil)},
			errs.PluginIncompatible, nil, map[string]any{"nexus_version": ">=2.0.0", "server_version": hostVersion}},
		{"another platform",
			install.InstallRequest{PackageData: build(t, manifest("new-plugin", "1.0.0", func(m map[string]any) { m["os"] = []string{"plan9"} }), nil)},
			errs.PluginIncompatible, nil, nil},
		{"configuration of the wrong type",
			install.InstallRequest{PackageData: good, Config: map[string]any{"level": 3}},
			errs.PluginConfigurationError, []string{"level"}, nil},
		{"configuration outside its enum",
			install.InstallRequest{PackageData: good, Config: map[string]any{"level": "loud", "token": "fine"}},
			errs.PluginConfigurationError, []string{"level"}, nil},
		{"unknown configuration field",
			install.InstallRequest{PackageData: good, Config: map[string]any{"colour": "blue"}},
			errs.PluginConfigurationError, []string{"colour"}, nil},
		{"not a package", install.InstallRequest{PackageData: []byte("this is not a gzip stream")}, errs.PluginInstallationFailed, nil, nil},
		{"truncated package", install.InstallRequest{PackageData: good[:len(good)/2]}, errs.PluginInstallationFailed, nil, nil},
		{"flipped bytes", install.InstallRequest{PackageData: flip(good)}, errs.PluginInstallationFailed, nil, nil},
		{"entry point missing",
			install.InstallRequest{PackageData: build(t, manifest("new-plugin", "1.0.0", noEntry), nil)},
			errs.PluginInstallationFailed, nil, nil},
		{"entry point not executable",
			install.InstallRequest{PackageData: build(t, manifest("new-plugin", "1.0.0", noEntry), map[string]string{"bin/missing": "#!/bin/sh\n"})},
			errs.PluginInstallationFailed, nil, nil},
		{"invalid manifest",
			install.InstallRequest{PackageData: build(t, manifest("new-plugin", "not-semver"), nil)}, errs.ValidationError, []string{"version"}, nil},
		{"file and data", install.InstallRequest{PackageData: good, FilePath: "/tmp/x.tar.gz"}, errs.ValidationError, nil, nil},
		{"relative file path", install.InstallRequest{FilePath: "x.tar.gz"}, errs.ValidationError, []string{"file_path"}, nil},
		{"no such file", install.InstallRequest{FilePath: filepath.Join(t.TempDir(), "absent.tar.gz")}, errs.PluginInstallationFailed, nil, nil},
		{"a directory", install.InstallRequest{FilePath: t.TempDir()}, errs.PluginInstallationFailed, nil, nil},
		{"nothing to install", install.InstallRequest{}, errs.ValidationError, nil, nil},
		{"unknown source", install.InstallRequest{Source: "ftp", PackageData: good}, errs.ValidationError, nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := c.req
			if req.Source == "" {
				req.Source = "file"
			}
			snap := f.reg.Snapshot()
			_, err := f.inst.Install(context.Background(), req)
			e := wantCode(t, err, c.code)
			var fields []string
			for _, v := range e.Fields {
				fields = append(fields, v.Field)
			}
			for _, want := range c.fields {
				if !slices.Contains(fields, want) {
					t.Fatalf("fields %v; want %s among them (%v)", fields, want, err)
				}
			}
			for k, v := range c.detail {
				if got, err := json.Marshal(e.Details[k]); err != nil || string(got) != string(mustJSON(t, v)) {
					t.Fatalf("detail %s = %v; want %v", k, e.Details[k], v)
				}
			}
			if f.reg.Snapshot() != snap {
				t.Fatal("a refused install changed the registry")
			}
			if logs := f.storedLogs(t, "new-plugin"); len(logs) != 0 {
				t.Fatalf("logs of a refused install: %q", logs)
			}
			f.wantContents(t, "plugins/base-plugin", "plugins/base-plugin/1.0.0-*")
		})
	}
	// The package that was refused for its configuration installs with a valid one.
	f.install(t, good, map[string]any{"level": "debug"})
	f.wantContents(t, "plugins/base-plugin", "plugins/base-plugin/1.0.0-*", "plugins/new-plugin", "plugins/new-plugin/1.0.0-*")
}

// flip returns data with its middle bytes inverted.
func flip(data []byte) []byte {
	out := slices.Clone(data)
	for i := len(out) / 3; i < len(out)/3+16 && i < len(out); i++ {
		out[i] ^= 0xff
	}
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A forced reinstall replaces the package, keeps the configuration (checked against the new
// schema) and the administrator's permission decisions, and backs up what it replaced.
func TestForceReinstall(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	v1 := manifest("alpha-plugin", "1.0.0", external, func(m map[string]any) {
		m["permissions"] = []string{"events:emit", "http:external", "kv:read"}
	})
	first := f.install(t, build(t, v1, nil), map[string]any{"token": "s3cret", "level": "debug"})
	// The administrator grants http:external and revokes kv:read.
	if _, err := f.reg.Modify(ctx, "alpha-plugin", func(rec *store.Plugin) error {
		rec.Granted, rec.Denied = []string{"events:emit", "http:external"}, []string{"kv:read"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	old := f.get(t, "alpha-plugin").Record()

	// Not while it is enabled.
	if _, err := f.rt.Enable(ctx, "alpha-plugin", runtime.EnableOptions{}); err != nil {
		t.Fatal(err)
	}
	v11 := manifest("alpha-plugin", "1.1.0", external, func(m map[string]any) {
		m["permissions"] = []string{"events:emit", "http:external", "kv:read", "kv:write"}
		m["configuration"].(map[string]any)["retries"] = map[string]any{"type": "integer", "default": 3}
	})
	pkg := build(t, v11, nil)
	_, err := f.inst.Install(ctx, install.InstallRequest{Source: "file", PackageData: pkg, ForceReinstall: true})
	wantCode(t, err, errs.PluginDependencyError)
	f.wantContents(t, "plugins/alpha-plugin", "plugins/alpha-plugin/1.0.0-*")
	if err := f.rt.Disable(ctx, "alpha-plugin", runtime.DisableOptions{Reason: "reinstall"}); err != nil {
		t.Fatal(err)
	}

	res, err := f.inst.Install(ctx, install.InstallRequest{Source: "file", PackageData: pkg, ForceReinstall: true})
	if err != nil {
		t.Fatal(err)
	}
	p := f.get(t, "alpha-plugin")
	rec := p.Record()
	if res.Version != "1.1.0" || rec.Version != "1.1.0" || !rec.InstalledAt.Equal(first.InstalledAt) || rec.Enabled {
		t.Fatalf("result %+v, record %+v", res, rec)
	}
	if cfg := p.Config(); !maps.Equal(cfg, map[string]any{"token": "s3cret", "level": "debug", "retries": 3.0}) {
		t.Fatalf("configuration %v", cfg)
	}
	if !slices.Equal(rec.Granted, []string{"events:emit", "http:external", "kv:write"}) || !slices.Equal(rec.Denied, []string{"kv:read"}) {
		t.Fatalf("granted %v, denied %v", rec.Granted, rec.Denied)
	}
	f.wantPackage(t, "alpha-plugin", "1.1.0")
	bs := f.backups(t, "alpha-plugin")
	if len(bs) != 1 || bs[0].Reason != "reinstall" || bs[0].Version != "1.0.0" || bs[0].Plugin.Version != "1.0.0" ||
		!slices.Equal(bs[0].Plugin.Granted, old.Granted) || bs[0].Dir != filepath.Join("backups", "alpha-plugin", bs[0].ID) {
		t.Fatalf("backups %+v", bs)
	}
	raw, err := os.ReadFile(filepath.Join(f.dataDir, bs[0].Dir, "plugin.json"))
	if err != nil || !bytes.Equal(raw, old.Manifest) {
		t.Fatalf("the backup does not hold the replaced package: %v", err)
	}
	f.wantContents(t, "plugins/alpha-plugin", "plugins/alpha-plugin/1.1.0-*", "backups/alpha-plugin", "backups/alpha-plugin/"+bs[0].ID)
	if logs := f.storedLogs(t, "alpha-plugin"); len(logs) == 0 || logs[0] != "Plugin reinstalled (version 1.1.0)" {
		t.Fatalf("stored logs %q", logs)
	}

	// A reinstall whose schema no longer accepts a value drops it; a patch goes on top.
	v12 := manifest("alpha-plugin", "1.2.0", external, func(m map[string]any) {
		m["configuration"].(map[string]any)["level"] = map[string]any{"type": "string", "enum": []string{"warn", "error"}, "default": "warn"}
	})
	if _, err := f.inst.Install(ctx, install.InstallRequest{Source: "file", PackageData: build(t, v12, nil), ForceReinstall: true,
		Config: map[string]any{"token": configschema.Hidden}}); err != nil {
		t.Fatal(err)
	}
	if cfg := f.get(t, "alpha-plugin").Config(); !maps.Equal(cfg, map[string]any{"token": "s3cret", "level": "warn"}) {
		t.Fatalf("configuration carried to 1.2.0: %v", cfg)
	}
	if n := len(f.backups(t, "alpha-plugin")); n != 2 {
		t.Fatalf("%d backups after two reinstalls", n)
	}
}

// Update moves to a new version beside the old one, backs the old one up when asked and
// removes its directory; Rollback brings the backed-up version back.
func TestUpdateAndRollback(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.install(t, build(t, manifest("alpha-plugin", "1.0.0"), nil), map[string]any{"token": "s3cret", "level": "debug"})
	f.install(t, build(t, manifest("other-plugin", "1.0.0"), nil), nil)
	v11 := build(t, manifest("alpha-plugin", "1.1.0"), map[string]string{"NEW": "in 1.1.0"})

	// Refused updates change nothing.
	for _, c := range []struct {
		name string
		req  install.UpdateRequest
		code errs.Code
	}{
		{"not installed", install.UpdateRequest{PluginID: "ghost-plugin", Source: "file",
			PackageData: build(t, manifest("ghost-plugin", "1.0.0"), nil)}, errs.PluginNotFound},
		{"the package of another plugin", install.UpdateRequest{PluginID: "other-plugin", Source: "file", PackageData: v11}, errs.ValidationError},
		{"a corrupt package", install.UpdateRequest{PluginID: "alpha-plugin", Source: "file", PackageData: flip(v11)}, errs.PluginInstallationFailed},
		{"a configuration the new version refuses", install.UpdateRequest{PluginID: "alpha-plugin", Source: "file",
			PackageData: build(t, manifest("alpha-plugin", "1.2.0", func(m map[string]any) {
				m["configuration"].(map[string]any)["level"] = map[string]any{"type": "integer"}
			}), nil)}, errs.PluginConfigurationError},
	} {
		t.Run(c.name, func(t *testing.T) {
			snap := f.reg.Snapshot()
			_, err := f.inst.Update(ctx, c.req)
			wantCode(t, err, c.code)
			if f.reg.Snapshot() != snap {
				t.Fatal("a refused update changed the registry")
			}
			f.wantContents(t, "plugins/alpha-plugin", "plugins/alpha-plugin/1.0.0-*", "plugins/other-plugin", "plugins/other-plugin/1.0.0-*")
		})
	}

	res, err := f.inst.Update(ctx, install.UpdateRequest{PluginID: "alpha-plugin", Source: "file", PackageData: v11, BackupCurrent: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.PluginID != "alpha-plugin" || res.OldVersion != "1.0.0" || res.NewVersion != "1.1.0" || res.BackupID == "" {
		t.Fatalf("result %+v", res)
	}
	f.wantPackage(t, "alpha-plugin", "1.1.0")
	if cfg := f.get(t, "alpha-plugin").Config(); !maps.Equal(cfg, map[string]any{"token": "s3cret", "level": "debug"}) {
		t.Fatalf("configuration after the update %v", cfg)
	}
	bs := f.backups(t, "alpha-plugin")
	if len(bs) != 1 || bs[0].ID != res.BackupID || bs[0].Reason != "update" || bs[0].Version != "1.0.0" {
		t.Fatalf("backups %+v", bs)
	}
	f.wantContents(t, "plugins/alpha-plugin", "plugins/alpha-plugin/1.1.0-*", "backups/alpha-plugin", "backups/alpha-plugin/"+res.BackupID,
		"plugins/other-plugin", "plugins/other-plugin/1.0.0-*")
	if logs := f.storedLogs(t, "alpha-plugin"); len(logs) == 0 || logs[0] != "Plugin updated from 1.0.0 to 1.1.0" {
		t.Fatalf("stored logs %q", logs)
	}

	// Rollback: unknown backups, and another plugin's, are refused.
	for _, c := range []struct{ id, backup string }{{"alpha-plugin", "backup_nope"}, {"other-plugin", res.BackupID}} {
		if _, err := f.inst.Rollback(ctx, c.id, c.backup); !errs.Is(err, errs.PluginNotFound) {
			t.Fatalf("rollback of %s to %s: %v", c.id, c.backup, err)
		}
	}
	rb, err := f.inst.Rollback(ctx, "alpha-plugin", res.BackupID)
	if err != nil {
		t.Fatal(err)
	}
	if rb.OldVersion != "1.1.0" || rb.NewVersion != "1.0.0" || rb.BackupID != res.BackupID {
		t.Fatalf("rollback result %+v", rb)
	}
	f.wantPackage(t, "alpha-plugin", "1.0.0")
	if _, err := os.Stat(filepath.Join(f.dataDir, f.get(t, "alpha-plugin").Record().Dir, "NEW")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file of 1.1.0 is in the restored package: %v", err)
	}
	if cfg := f.get(t, "alpha-plugin").Config(); !maps.Equal(cfg, map[string]any{"token": "s3cret", "level": "debug"}) {
		t.Fatalf("configuration after the rollback %v", cfg)
	}
	// The backup stays, for another rollback.
	f.wantContents(t, "plugins/alpha-plugin", "plugins/alpha-plugin/1.0.0-*", "backups/alpha-plugin", "backups/alpha-plugin/"+res.BackupID,
		"plugins/other-plugin", "plugins/other-plugin/1.0.0-*")

	// An update without a backup keeps none.
	res2, err := f.inst.Update(ctx, install.UpdateRequest{PluginID: "alpha-plugin", Source: "file", PackageData: v11})
	if err != nil || res2.BackupID != "" {
		t.Fatalf("update without a backup: %+v, %v", res2, err)
	}
	f.wantContents(t, "plugins/alpha-plugin", "plugins/alpha-plugin/1.1.0-*", "backups/alpha-plugin", "backups/alpha-plugin/"+res.BackupID,
		"plugins/other-plugin", "plugins/other-plugin/1.0.0-*")
}

// An uninstall that kept a backup can be undone: the plugin comes back from it, disabled.
func TestRollbackAfterUninstall(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.install(t, build(t, manifest("alpha-plugin", "1.0.0", external), nil), map[string]any{"token": "s3cret"})
	if _, err := f.rt.Enable(ctx, "alpha-plugin", runtime.EnableOptions{}); err != nil {
		t.Fatal(err)
	}
	un, err := f.inst.Uninstall(ctx, "alpha-plugin", install.UninstallOptions{Backup: true})
	if err != nil {
		t.Fatal(err)
	}
	if !un.BackupCreated || un.BackupID == "" || un.DataRemoved {
		t.Fatalf("result %+v", un)
	}
	if _, err := f.reg.Get("alpha-plugin"); !errs.Is(err, errs.PluginNotFound) {
		t.Fatalf("after the uninstall: %v", err)
	}
	f.wantContents(t, "backups/alpha-plugin", "backups/alpha-plugin/"+un.BackupID)
	if bs := f.backups(t, "alpha-plugin"); len(bs) != 1 || bs[0].Reason != "uninstall" || !bs[0].Plugin.Enabled {
		t.Fatalf("backups %+v", bs)
	}

	rb, err := f.inst.Rollback(ctx, "alpha-plugin", un.BackupID)
	if err != nil {
		t.Fatal(err)
	}
	if rb.NewVersion != "1.0.0" || rb.OldVersion != "" {
		t.Fatalf("result %+v", rb)
	}
	p := f.get(t, "alpha-plugin")
	if p.Enabled() || p.Status() != registry.StatusInactive || p.StatusReason() != "restored from "+un.BackupID {
		t.Fatalf("restored plugin: enabled %v, status %s (%s)", p.Enabled(), p.Status(), p.StatusReason())
	}
	if cfg := p.Config(); cfg["token"] != "s3cret" {
		t.Fatalf("configuration %v", cfg)
	}
	f.wantPackage(t, "alpha-plugin", "1.0.0")
	f.wantContents(t, "plugins/alpha-plugin", "plugins/alpha-plugin/1.0.0-*", "backups/alpha-plugin", "backups/alpha-plugin/"+un.BackupID)
	if logs := f.storedLogs(t, "alpha-plugin"); len(logs) == 0 || logs[0] != "Plugin reinstalled from backup "+un.BackupID+" (version 1.0.0)" {
		t.Fatalf("stored logs %q", logs)
	}
}

func TestUninstall(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.install(t, build(t, manifest("base-plugin", "1.0.0"), nil), nil)
	f.install(t, build(t, manifest("leaf-plugin", "1.0.0", dependsOn(map[string]string{"base-plugin": ">=1.0.0"})), nil), nil)

	t.Run("refused while plugins depend on it", func(t *testing.T) {
		snap := f.reg.Snapshot()
		_, err := f.inst.Uninstall(ctx, "base-plugin", install.UninstallOptions{Backup: true})
		e := wantCode(t, err, errs.PluginDependencyError)
		if string(mustJSON(t, e.Details["dependents"])) != `["leaf-plugin"]` {
			t.Fatalf("details %v", e.Details)
		}
		if f.reg.Snapshot() != snap {
			t.Fatal("a refused uninstall changed the registry")
		}
		f.wantContents(t, "plugins/base-plugin", "plugins/base-plugin/1.0.0-*", "plugins/leaf-plugin", "plugins/leaf-plugin/1.0.0-*")
		if _, err := f.inst.Uninstall(ctx, "ghost-plugin", install.UninstallOptions{}); !errs.Is(err, errs.PluginNotFound) {
			t.Fatalf("uninstall of an unknown plugin: %v", err)
		}
	})

	t.Run("forced, keeping the data", func(t *testing.T) {
		if _, err := f.kv.Put(ctx, "base-plugin", "k", []byte(`"v"`), 0); err != nil {
			t.Fatal(err)
		}
		res, err := f.inst.Uninstall(ctx, "base-plugin", install.UninstallOptions{Force: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.BackupCreated || res.DataRemoved || res.PluginID != "base-plugin" {
			t.Fatalf("result %+v", res)
		}
		if _, err := f.reg.Get("base-plugin"); !errs.Is(err, errs.PluginNotFound) {
			t.Fatalf("after the uninstall: %v", err)
		}
		f.get(t, "leaf-plugin") // its dependent stays
		f.wantContents(t, "plugins/leaf-plugin", "plugins/leaf-plugin/1.0.0-*")
		if logs := f.storedLogs(t, "base-plugin"); len(logs) != 2 || logs[0] != "Plugin uninstalled (version 1.0.0)" {
			t.Fatalf("stored logs %q", logs)
		}
		if _, ok, err := f.kv.Get(ctx, "base-plugin", "k"); err != nil || !ok {
			t.Fatalf("key-value data: %v, %v", ok, err)
		}
	})

	t.Run("cleaning up its data", func(t *testing.T) {
		if _, err := f.kv.Put(ctx, "leaf-plugin", "k", []byte(`"v"`), 0); err != nil {
			t.Fatal(err)
		}
		f.logs.Add(store.LogRecord{PluginID: "leaf-plugin", Level: "INFO", Message: "a line still queued"})
		if err := f.bus.Publish(ctx, bus.Envelope{ID: "evt_1", Kind: bus.KindEvent, Source: "admin", Target: "leaf-plugin", Type: "note"}); err != nil {
			t.Fatal(err)
		}
		res, err := f.inst.Uninstall(ctx, "leaf-plugin", install.UninstallOptions{CleanupData: true})
		if err != nil {
			t.Fatal(err)
		}
		if !res.DataRemoved || res.BackupCreated {
			t.Fatalf("result %+v", res)
		}
		if logs := f.storedLogs(t, "leaf-plugin"); len(logs) != 0 {
			t.Fatalf("stored logs %q", logs)
		}
		if recent := f.logs.Recent("leaf-plugin"); len(recent) != 0 {
			t.Fatalf("recent logs %+v", recent)
		}
		if _, ok, err := f.kv.Get(ctx, "leaf-plugin", "k"); err != nil || ok {
			t.Fatalf("key-value data left: %v, %v", ok, err)
		}
		if n, err := f.bus.Depth(ctx, "leaf-plugin"); err != nil || n != 0 {
			t.Fatalf("inbox left with %d entries: %v", n, err)
		}
		f.wantContents(t)
	})
}

// Sweep removes what no record references (interrupted operations' leftovers) and keeps what
// records and backups reference.
func TestSweep(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.install(t, build(t, manifest("alpha-plugin", "1.0.0"), nil), nil)
	res, err := f.inst.Update(ctx, install.UpdateRequest{PluginID: "alpha-plugin", Source: "file", BackupCurrent: true,
		PackageData: build(t, manifest("alpha-plugin", "1.1.0"), nil)})
	if err != nil {
		t.Fatal(err)
	}
	kept := []string{"plugins/alpha-plugin", "plugins/alpha-plugin/1.1.0-*", "backups/alpha-plugin", "backups/alpha-plugin/" + res.BackupID}
	f.wantContents(t, kept...)
	leftovers := []string{
		"plugins/alpha-plugin/0.9.0-0123456789ab",     // a version no record references
		"plugins/alpha-plugin/.extract-123456",        // an interrupted extraction
		"plugins/alpha-plugin/1.2.0-0123456789ab.tmp", // an interrupted copy from a backup
		"plugins/ghost-plugin/1.0.0-0123456789ab",     // a plugin whose record is gone
		"backups/alpha-plugin/backup_20260101T000000_0000.tmp",
		"backups/alpha-plugin/backup_20260101T000000_ffff", // no backup record
		"backups/ghost-plugin/backup_20260101T000000_0000",
	}
	for _, l := range leftovers {
		if err := os.MkdirAll(filepath.Join(f.dataDir, l, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(f.dataDir, l, "bin", "run"), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.inst.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	f.wantContents(t, kept...)
	f.wantPackage(t, "alpha-plugin", "1.1.0")
	if _, err := os.Stat(filepath.Join(f.dataDir, "backups", "alpha-plugin", res.BackupID, "bin", "run")); err != nil {
		t.Fatalf("the backup's files: %v", err)
	}

	// A record pointing outside the data directory (an older layout): nothing is removed.
	outside := t.TempDir()
	if _, err := f.reg.Modify(ctx, "alpha-plugin", func(rec *store.Plugin) error { rec.Dir = outside; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(f.dataDir, leftovers[0]), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := f.inst.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	f.wantContents(t, append(kept, "plugins/alpha-plugin/0.9.0-*")...)
}

// A package downloaded from a URL is checked against the sha256 it was given.
func TestInstallFromURL(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	pkg := build(t, manifest("web-plugin", "1.0.0"), nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/web-plugin.tar.gz" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(pkg)
	}))
	t.Cleanup(srv.Close)
	sum := sha256.Sum256(pkg)
	good := hex.EncodeToString(sum[:])
	for _, c := range []struct {
		name, url, sha string
		code           errs.Code
	}{
		{"not http", "ftp://example.com/web-plugin.tar.gz", "", errs.ValidationError},
		{"not found", srv.URL + "/absent.tar.gz", "", errs.PluginInstallationFailed},
		{"checksum mismatch", srv.URL + "/web-plugin.tar.gz", strings.Repeat("0", 64), errs.PluginInstallationFailed},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.inst.Install(ctx, install.InstallRequest{Source: "url", DownloadURL: c.url, SHA256: c.sha})
			wantCode(t, err, c.code)
			if len(f.reg.Snapshot().All()) != 0 {
				t.Fatal("a refused download was installed")
			}
			f.wantContents(t)
		})
	}
	if _, err := f.inst.Install(ctx, install.InstallRequest{Source: "url", DownloadURL: srv.URL + "/web-plugin.tar.gz", SHA256: good}); err != nil {
		t.Fatal(err)
	}
	if rec := f.get(t, "web-plugin").Record(); rec.Source != "url" || rec.PackageSHA256 != good {
		t.Fatalf("record %+v", rec)
	}
	f.wantPackage(t, "web-plugin", "1.0.0")
	f.wantContents(t, "plugins/web-plugin", "plugins/web-plugin/1.0.0-*")
}

// AutoEnable enables the plugin once it is installed; an external one then waits for an
// instance to connect.
func TestInstallAutoEnable(t *testing.T) {
	f := newFixture(t)
	res, err := f.inst.Install(context.Background(), install.InstallRequest{Source: "file", AutoEnable: true,
		PackageData: build(t, manifest("auto-plugin", "1.0.0", external), nil)})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Enabled || res.Status != registry.StatusInactive {
		t.Fatalf("result %+v", res)
	}
	if p := f.get(t, "auto-plugin"); !p.Enabled() || p.Status() != registry.StatusInactive {
		t.Fatalf("record: enabled %v, status %s", p.Enabled(), p.Status())
	}
}

// A new version of a plugin others depend on must satisfy their constraints, by update and
// by reinstall alike.
func TestDependentsConstrainVersions(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.install(t, build(t, manifest("base-plugin", "1.0.0"), nil), nil)
	f.install(t, build(t, manifest("leaf-plugin", "1.0.0", dependsOn(map[string]string{"base-plugin": "^1.0.0"})), nil), nil)
	layout := []string{"plugins/base-plugin", "plugins/base-plugin/1.0.0-*", "plugins/leaf-plugin", "plugins/leaf-plugin/1.0.0-*"}
	v2 := build(t, manifest("base-plugin", "2.0.0"), nil)
	for _, c := range []struct {
		name string
		run  func() error
	}{
		{"update", func() error {
			_, err := f.inst.Update(ctx, install.UpdateRequest{PluginID: "base-plugin", Source: "file", PackageData: v2, BackupCurrent: true})
			return err
		}},
		{"reinstall", func() error {
			_, err := f.inst.Install(ctx, install.InstallRequest{Source: "file", PackageData: v2, ForceReinstall: true})
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := wantCode(t, c.run(), errs.PluginDependencyError)
			if len(e.Fields) != 1 || e.Fields[0].Field != "dependents.leaf-plugin" {
				t.Fatalf("fields %v", e.Fields)
			}
			f.wantContents(t, layout...)
			if n := len(f.backups(t, "base-plugin")); n != 0 {
				t.Fatalf("%d backups", n)
			}
		})
	}
	if _, err := f.inst.Update(ctx, install.UpdateRequest{PluginID: "base-plugin", Source: "file",
		PackageData: build(t, manifest("base-plugin", "1.5.0"), nil)}); err != nil {
		t.Fatal(err)
	}
	f.wantContents(t, "plugins/base-plugin", "plugins/base-plugin/1.5.0-*", "plugins/leaf-plugin", "plugins/leaf-plugin/1.0.0-*")
}
