package server_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/server"
)

// An expired token is refused like an unknown one (401, UNAUTHENTICATED) on REST, on every
// RPC protocol and on the plugin stream (both transports), with a message saying it expired;
// a plugin session whose token expires while it is connected is ended.
func TestExpiredTokenIsRefusedEverywhere(t *testing.T) {
	e := startMessagingServer(t, func(*server.Config) {})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	past := time.Now().Add(-time.Minute)
	user := putToken(t, e, store.Token{Name: "expired-user", Role: store.RoleUser, ExpiresAt: past})

	res := e.rest("GET", "/api/v1/plugins", user, nil)
	if res.Status != http.StatusUnauthorized || res.errorCode() != "UNAUTHENTICATED" || !strings.Contains(string(res.Raw), "expired") {
		t.Fatalf("REST with an expired token: %d %s", res.Status, res.Raw)
	}
	for _, p := range protocols {
		c := nexus.New(e.URL, nexus.WithToken(user), nexus.WithProtocol(p.p))
		_, err := c.Plugins.ListPlugins(ctx, connect.NewRequest(&pluginv1.ListPluginsRequest{}))
		if nexus.ErrorCode(err) != "UNAUTHENTICATED" || connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "expired") {
			t.Errorf("%s with an expired token: %v", p.name, err)
		}
	}

	for _, transport := range []string{"grpc", "connect"} {
		t.Run("stream/"+transport, func(t *testing.T) {
			id := "expiry-" + transport
			externalPlugin(e, id, nil)
			expired := putToken(t, e, store.Token{Name: "expired-plugin", Role: store.RolePlugin, PluginID: id, ExpiresAt: past})
			s, err := openRawSession(t, ctx, e, transport, id, expired)
			if err == nil || s.code(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "expired") {
				t.Fatalf("a session opened with an expired token: %v", err)
			}

			// A session open when its token expires is ended by the host (within the
			// revocation check's interval of the expiry). Should opening take longer than
			// the token lives, the open itself is refused: either way no session outlives
			// its token.
			ttl := 3 * time.Second
			token, _, err := e.srv.Identity().CreateWithTTL(ctx, "short-lived", store.RolePlugin, id, ttl)
			if err != nil {
				t.Fatal(err)
			}
			expires := time.Now().Add(ttl)
			sctx, cancel := context.WithTimeout(ctx, ttl+20*time.Second) // bounds the wait below
			defer cancel()
			s, err = openRawSession(t, sctx, e, transport, id, token)
			if err == nil {
				err = endOf(t, s)
				if time.Now().Before(expires) {
					t.Fatalf("the session ended before its token expired: %v", err)
				}
			}
			if s.code(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "expired") {
				t.Fatalf("the session of an expiring token ended with %v; want UNAUTHENTICATED saying it expired", err)
			}
			if late := time.Since(expires); late > 10*time.Second {
				t.Fatalf("the session ended %s after its token expired", late)
			}
		})
	}
}

// launchTokenPackage is a test plugin (mode healthy) whose entry point first writes the
// token it was launched with to launch-token in its data directory, so the test can use it.
func launchTokenPackage(t *testing.T, id string) []byte {
	t.Helper()
	self := pluginExe(t)
	m := map[string]any{
		"id": id, "name": "Launch token " + id, "version": "1.0.0", "category": "testing",
		"entry_point": "bin/run", "args": []string{testPluginArg, "healthy"}, "start_timeout_seconds": 10,
	}
	script := "#!/bin/sh\nprintf '%s' \"$NEXUS_PLUGIN_TOKEN\" > \"$HOME/launch-token\"\nexec '" + self + "' -test.run=^$ \"$@\"\n"
	return pkg(t, m, map[string]string{"bin/run": script})
}

// launchToken reads the token the plugin's current process was launched with.
func launchToken(t *testing.T, e *env, id string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.DataDir, "plugin-data", id, "launch-token"))
	if err != nil || len(b) == 0 {
		t.Fatalf("the plugin's launch token: %q %v", b, err)
	}
	return string(b)
}

// tokenWorks reports whether a plugin token is accepted: the plugin reads its own record.
func tokenWorks(t *testing.T, e *env, id, token string) bool {
	t.Helper()
	res := e.rest("GET", "/api/v1/plugins/"+id, token, nil)
	switch {
	case res.Status == http.StatusOK:
		return true
	case res.Status == http.StatusUnauthorized && res.errorCode() == "UNAUTHENTICATED":
		return false
	}
	t.Fatalf("GET with a launch token: %d %s", res.Status, res.Raw)
	return false
}

// The token a plugin process is launched with is valid while the process runs, and not once
// it is stopped, nor after a restart replaced the process.
func TestLaunchTokenEndsWithItsProcess(t *testing.T) {
	e := startRuntimeServer(t)
	if res := installFromBytes(e, launchTokenPackage(t, "launch-plugin"), map[string]any{}); res.Status != http.StatusOK {
		t.Fatalf("install: %d %s", res.Status, res.Raw)
	}
	e.mustREST("POST", "/api/v1/plugins/launch-plugin/enable", e.Admin, map[string]any{})
	first := launchToken(t, e, "launch-plugin")
	if !tokenWorks(t, e, "launch-plugin", first) {
		t.Fatal("the launch token of the running process is refused")
	}
	e.mustREST("POST", "/api/v1/plugins/launch-plugin/restart", e.Admin, map[string]any{})
	second := launchToken(t, e, "launch-plugin")
	if second == first || tokenWorks(t, e, "launch-plugin", first) || !tokenWorks(t, e, "launch-plugin", second) {
		t.Fatal("after a restart the old launch token must be refused and the new one accepted")
	}
	e.mustREST("POST", "/api/v1/plugins/launch-plugin/disable", e.Admin, map[string]any{})
	if tokenWorks(t, e, "launch-plugin", second) {
		t.Fatal("the launch token is still valid after its plugin was stopped")
	}
}

// A server killed with SIGKILL cannot revoke its plugins' launch tokens; the next server on
// the same data directory does, before it launches the plugins again.
func TestLaunchTokenDoesNotOutliveAServerCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	dataDir := t.TempDir()
	cmd, url := startProcess(t, dataDir)
	e := &env{t: t, URL: url, DataDir: dataDir, Admin: testAdminToken}
	if res := installFromBytes(e, launchTokenPackage(t, "crash-token-plugin"), map[string]any{}); res.Status != http.StatusOK {
		t.Fatalf("install: %d %s", res.Status, res.Raw)
	}
	e.mustREST("POST", "/api/v1/plugins/crash-token-plugin/enable", e.Admin, map[string]any{})
	old := launchToken(t, e, "crash-token-plugin")
	if !tokenWorks(t, e, "crash-token-plugin", old) {
		t.Fatal("the launch token of the running process is refused")
	}
	pid := pluginPID(e, "crash-token-plugin")
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitFor(t, "the orphaned plugin to die with its server", 5*time.Second, func() bool { return processGone(pid) })

	_, e.URL = startProcess(t, dataDir)
	if tokenWorks(t, e, "crash-token-plugin", old) {
		t.Fatal("the launch token of a process of the crashed server is still valid after the restart")
	}
	// The plugin comes back with a new token, which works.
	waitFor(t, "the enabled plugin to come back", 30*time.Second, func() bool {
		st, _ := status(e, "crash-token-plugin")
		return st == "active"
	})
	if now := launchToken(t, e, "crash-token-plugin"); now == old || !tokenWorks(t, e, "crash-token-plugin", now) {
		t.Fatal("the relaunched plugin's token is not a new, valid one")
	}
}
