package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
	"github.com/nexus-platform/nexus/server"
)

// TestMain lets the test binary act as a Nexus server (NEXUS_TEST_SERVE=1), so that tests
// can run a real server process and kill it, and as a plugin (see testplugin_test.go).
func TestMain(m *testing.M) {
	if mode, ok := testPluginMode(); ok {
		os.Exit(runTestPlugin(mode))
	}
	if os.Getenv("NEXUS_TEST_SERVE") == "1" {
		os.Exit(serveForTest())
	}
	code := m.Run()
	removePluginExe()
	os.Exit(code)
}

func serveForTest() int {
	cfg, err := server.ParseConfig(nil, os.Getenv, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := server.Run(ctx, cfg, server.NewLogger(io.Discard, 0)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startProcess starts the test binary as a server on dataDir and waits until it is ready.
func startProcess(t testing.TB, dataDir string) (*exec.Cmd, string) {
	t.Helper()
	return startProcessAs(t, dataDir, filepath.Join(t.TempDir(), "addr"), nil)
}

// startProcessAs is startProcess with the server's address written to addrFile and, when
// cred is not nil, the server running as cred's user (from the copy of the test binary
// every user can run).
func startProcessAs(t testing.TB, dataDir, addrFile string, cred *syscall.Credential) (*exec.Cmd, string) {
	t.Helper()
	return startProcessWith(t, dataDir, addrFile, cred, nil)
}

// startProcessWith is startProcessAs with more environment variables (NEXUS_* settings).
func startProcessWith(t testing.TB, dataDir, addrFile string, cred *syscall.Credential, env []string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if cred != nil {
		cmd = exec.Command(pluginExe(t), "-test.run=^$")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = filepath.Dir(dataDir)
	}
	cmd.Env = append(os.Environ(), "NEXUS_TEST_SERVE=1", "NEXUS_LISTEN=127.0.0.1:0",
		"NEXUS_DATA_DIR="+dataDir, "NEXUS_ADDR_FILE="+addrFile, "NEXUS_ADMIN_TOKEN="+testAdminToken,
		"NEXUS_PLUGIN_READ_PATHS="+strings.Join(pluginReadPaths(t), ","))
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			url := "http://" + strings.TrimSpace(string(b))
			if resp, err := http.Get(url + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return cmd, url
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("server process did not become ready")
	return nil, ""
}

func TestSIGKILLDuringInstallLeavesConsistentState(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	// A package with 24 MiB of incompressible data takes a while to check and unpack, so
	// kills land in the middle of installs.
	payload := make([]byte, 24<<20)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	pkgFile := filepath.Join(t.TempDir(), "big.tar.gz")
	if err := os.WriteFile(pkgFile, pkg(t, map[string]any{
		"id": "big-plugin", "name": "Big", "version": "1.0.0", "entry_point": "bin/big",
	}, map[string]string{"bin/big": "#!/bin/sh\n", "data/blob": string(payload)}), 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir := searchableTempDir(t)
	delays := []time.Duration{5 * time.Millisecond, 40 * time.Millisecond, 90 * time.Millisecond, 150 * time.Millisecond, 250 * time.Millisecond, 400 * time.Millisecond}
	for round, delay := range delays {
		cmd, url := startProcess(t, dataDir)
		go func() {
			body, _ := json.Marshal(map[string]any{"source": "file", "file_path": pkgFile, "force_reinstall": true})
			req, _ := http.NewRequest("POST", url+"/api/v1/plugins/install", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+testAdminToken)
			req.Header.Set("Content-Type", "application/json")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		time.Sleep(delay)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()

		// Straight after the kill: the store is consistent and every recorded plugin's
		// directory is complete.
		recs := checkConsistent(t, dataDir, round)
		t.Logf("round %d (kill after %v): %d plugin records, directories on disk: %v", round, delay, len(recs), pluginDirs(t, dataDir))
		// After a restart: nothing is left that no record references.
		cmd, url = startProcess(t, dataDir)
		res, err := http.Get(url + "/readyz")
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("round %d: restarted server not ready: %v", round, err)
		}
		res.Body.Close()
		// SIGTERM shuts the server down gracefully: it exits 0.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("round %d: after SIGTERM the server exited with %v", round, err)
		}
		recs = checkConsistent(t, dataDir, round)
		referenced := map[string]bool{}
		for _, r := range recs {
			rel, _ := filepath.Rel("plugins", r.Dir)
			referenced[rel] = true
		}
		for _, d := range pluginDirs(t, dataDir) {
			if !referenced[d] {
				t.Errorf("round %d: after restart, unreferenced directory plugins/%s is left", round, d)
			}
		}
	}
}

// checkConsistent opens the store, checks its integrity and that every plugin record points
// at a complete package directory, and returns the records.
func checkConsistent(t *testing.T, dataDir string, round int) []store.Plugin {
	t.Helper()
	st, err := storesqlite.Open(context.Background(), filepath.Join(dataDir, "nexus.db"))
	if err != nil {
		t.Fatalf("round %d: store does not open after SIGKILL: %v", round, err)
	}
	defer st.Close()
	var recs []store.Plugin
	if err := st.Read(context.Background(), func(tx store.Tx) error {
		var err error
		recs, err = tx.Plugins()
		return err
	}); err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	for _, r := range recs {
		if filepath.IsAbs(r.Dir) {
			t.Fatalf("round %d: plugin directories must be recorded relative to the data directory: %s", round, r.Dir)
		}
		for _, f := range []string{"plugin.json", "bin/big", "data/blob"} {
			st, err := os.Stat(filepath.Join(dataDir, r.Dir, f))
			if err != nil {
				t.Fatalf("round %d: plugin %s is recorded but %s is missing: %v", round, r.ID, f, err)
			}
			if f == "data/blob" && st.Size() != 24<<20 {
				t.Fatalf("round %d: %s is partial (%d bytes)", round, f, st.Size())
			}
		}
	}
	return recs
}

func TestServerSIGKILLLeavesNoOrphanAndPluginsComeBack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	dataDir := searchableTempDir(t)
	cmd, url := startProcess(t, dataDir)
	e := &env{t: t, URL: url, DataDir: dataDir, Admin: testAdminToken}
	installTestPlugin(e, "survivor", "healthy", nil, nil)
	e.mustREST("POST", "/api/v1/plugins/survivor/enable", e.Admin, map[string]any{})
	pid := pluginPID(e, "survivor")
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitFor(t, "the orphaned plugin to die with its server", 5*time.Second, func() bool { return processGone(pid) })

	_, url = startProcess(t, dataDir)
	e.URL = url
	waitFor(t, "the enabled plugin to come back", 30*time.Second, func() bool {
		st, _ := status(e, "survivor")
		return st == "active"
	})
	waitFor(t, "a new process", 5*time.Second, func() bool { p := pluginPID(e, "survivor"); return p != pid && !processGone(p) })
}
