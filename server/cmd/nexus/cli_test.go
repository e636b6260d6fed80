package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// The CLI as an operator runs it: the real binary against a real server, the address from
// NEXUS_URL and the token from the data directory, every output format, following logs
// and events, completion scripts, and the errors' codes, fields and exit statuses.
func TestCLIBinaryAgainstAServer(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "nexus")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dataDir := t.TempDir()
	url := startTestServer(t, dataDir, "") // the admin token is made and kept in the data dir
	env := append(os.Environ(), "NEXUS_URL="+url, "NEXUS_DATA_DIR="+dataDir, "NEXUS_TOKEN=")
	nexus := func(args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), code
	}

	pkgDir := t.TempDir()
	manifest, err := os.ReadFile("../../../clients/go/plugin/examples/analytics-plugin/plugin.json")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.MkdirAll(filepath.Join(pkgDir, "bin"), 0o755)
	if err := os.WriteFile(filepath.Join(pkgDir, "plugin.json"), manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pkgDir, "bin", "analytics-plugin"), []byte("#!/bin/sh\nsleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(t.TempDir(), "analytics.tar.gz")
	if out, errOut, code := nexus("package", pkgDir, "-o", pkg); code != 0 {
		t.Fatalf("package: %d %s %s", code, out, errOut)
	}

	// Install; JSON when stdout is not a terminal.
	out, errOut, code := nexus("plugins", "install", pkg, "--config", `{"batch_size": 100}`)
	var installed struct {
		Installation struct {
			PluginID string `json:"plugin_id"`
			Status   string `json:"status"`
		} `json:"installation"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &installed) != nil || installed.Installation.PluginID != "analytics-plugin" {
		t.Fatalf("install: %d %s %s", code, out, errOut)
	}

	// The three formats of one list.
	table, _, code := nexus("plugins", "list", "-o", "table")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if code != 0 || len(lines) < 2 || strings.Join(strings.Fields(lines[0]), " ") != "ID VERSION STATUS HEALTH ENABLED LOAD_ORDER CATEGORY" ||
		!strings.HasPrefix(lines[1], "analytics-plugin") || !strings.Contains(table, "summary:") {
		t.Fatalf("table:\n%s", table)
	}
	yamlOut, _, code := nexus("plugins", "list", "--output=yaml")
	var y struct {
		Plugins []struct {
			ID      string `yaml:"id"`
			Version string `yaml:"version"`
		} `yaml:"plugins"`
	}
	if code != 0 || yaml.Unmarshal([]byte(yamlOut), &y) != nil || len(y.Plugins) != 1 || y.Plugins[0].Version != "1.2.0" {
		t.Fatalf("yaml:\n%s", yamlOut)
	}
	jsonOut, _, _ := nexus("plugins", "get", "analytics-plugin", "-o", "json")
	if !strings.Contains(jsonOut, `"id": "analytics-plugin"`) {
		t.Fatalf("get as JSON:\n%s", jsonOut)
	}

	// Configuration: a change, and a refused value with its field.
	if out, errOut, code := nexus("plugins", "config", "analytics-plugin", "--set", `{"batch_size": 200}`); code != 0 || !strings.Contains(out, "batch_size") {
		t.Fatalf("config --set: %d %s %s", code, out, errOut)
	}
	_, errOut, code = nexus("plugins", "config", "analytics-plugin", "--set", `{"batch_size": "lots"}`)
	if code != 1 || !strings.Contains(errOut, "PLUGIN_CONFIGURATION_ERROR") || !strings.Contains(errOut, "batch_size:") {
		t.Fatalf("bad config: %d %s", code, errOut)
	}

	// Logs, read and followed: the backlog first, then what is stored while following.
	logsOut, _, _ := nexus("plugins", "logs", "analytics-plugin", "--search", "configuration", "-o", "table")
	if !strings.Contains(logsOut, "TIMESTAMP") || !strings.Contains(strings.ToLower(logsOut), "configuration") {
		t.Fatalf("logs:\n%s", logsOut)
	}
	// following starts a command that keeps printing, and returns it and its lines; it is
	// killed when the test ends.
	following := func(args ...string) (*exec.Cmd, <-chan string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		lines := make(chan string, 16)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		return cmd, lines
	}
	follow, followed := following("plugins", "logs", "analytics-plugin", "--follow", "--backlog", "1", "-o", "table")
	nextLine := func(what string) string {
		t.Helper()
		select {
		case l := <-followed:
			return l
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s from logs --follow", what)
		}
		return ""
	}
	if l := nextLine("backlog entry"); !strings.Contains(l, "INFO") {
		t.Fatalf("backlog line %q", l)
	}
	if _, errOut, code := nexus("plugins", "config", "analytics-plugin", "--set", `{"batch_size": 300}`); code != 0 {
		t.Fatalf("config: %s", errOut)
	}
	if l := nextLine("live entry"); !strings.Contains(strings.ToLower(l), "configuration") {
		t.Fatalf("live line %q", l)
	}
	// SIGINT ends a follow cleanly.
	_ = follow.Process.Signal(os.Interrupt)
	if err := follow.Wait(); err != nil {
		t.Fatalf("logs --follow after SIGINT: %v", err)
	}

	// Events, followed in JSON lines.
	_, events := following("events", "--follow", "cli.*", "-o", "json")
	deadline := time.Now().Add(10 * time.Second)
	var got map[string]any
	for got == nil && time.Now().Before(deadline) {
		if _, errOut, code := nexus("events", "emit", "cli.test", "--data", `{"n": 1}`); code != 0 {
			t.Fatalf("emit: %s", errOut)
		}
		select {
		case l := <-events:
			if err := json.Unmarshal([]byte(l), &got); err != nil {
				t.Fatalf("event line %q: %v", l, err)
			}
		case <-time.After(500 * time.Millisecond): // the watch may not be open yet
		}
	}
	if got["type"] != "cli.test" || got["data"].(map[string]any)["n"] != 1.0 {
		t.Fatalf("followed event: %v", got)
	}

	// whoami: the token's role and what it may call.
	if out, errOut, code := nexus("whoami", "-o", "json"); code != 0 || !strings.Contains(out, `"role": "admin"`) ||
		!strings.Contains(out, "nexus.plugin.v1.PluginService/InstallPlugin") {
		t.Errorf("whoami: %d %s %s", code, out, errOut)
	}

	// Completion scripts for the three shells.
	for shell, want := range map[string]string{"bash": "__start_nexus", "zsh": "#compdef nexus", "fish": "complete -c nexus"} {
		if out, errOut, code := nexus("completion", shell); code != 0 || !strings.Contains(out, want) {
			t.Errorf("completion %s: %d %s (%d bytes)", shell, code, errOut, len(out))
		}
	}

	// Errors: the API's code and message (exit 1), the command line's (exit 2), an
	// unreachable server named.
	if _, errOut, code := nexus("plugins", "get", "no-such-plugin"); code != 1 || !strings.Contains(errOut, "PLUGIN_NOT_FOUND") {
		t.Errorf("unknown plugin: %d %s", code, errOut)
	}
	if _, errOut, code := nexus("plugins", "get"); code != 2 || !strings.Contains(errOut, "accepts 1 arg") {
		t.Errorf("missing argument: %d %s", code, errOut)
	}
	if _, errOut, code := nexus("plugins", "frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %d %s", code, errOut)
	}
	if _, errOut, code := nexus("plugins", "rollback", "analytics-plugin"); code != 2 || !strings.Contains(errOut, `"backup-id" not set`) {
		t.Errorf("missing required flag: %d %s", code, errOut)
	}
	if _, errOut, code := nexus("plugins", "list", "--no-such-flag"); code != 2 || !strings.Contains(errOut, "unknown flag") {
		t.Errorf("unknown flag: %d %s", code, errOut)
	}
	// An API refusal exits 1 whatever its message says.
	if _, errOut, code := nexus("plugins", "get", "Not_An_Id"); code != 1 || !strings.Contains(errOut, "VALIDATION_ERROR") {
		t.Errorf("invalid argument from the API: %d %s", code, errOut)
	}
	if _, errOut, code := nexus("plugins", "list", "-o", "xml"); code != 1 || !strings.Contains(errOut, "want table, json or yaml") {
		t.Errorf("bad output format: %d %s", code, errOut)
	}
	if _, errOut, code := nexus("plugins", "list", "--url", "http://127.0.0.1:1"); code != 1 || !strings.Contains(errOut, "cannot reach the server at http://127.0.0.1:1") {
		t.Errorf("unreachable server: %d %s", code, errOut)
	}
	if _, errOut, code := nexus("plugins", "list", "--token", "nxt_wrong"); code != 1 || !strings.Contains(errOut, "UNAUTHENTICATED") {
		t.Errorf("wrong token: %d %s", code, errOut)
	}

	if out, errOut, code := nexus("plugins", "uninstall", "analytics-plugin", "--backup"); code != 0 || !strings.Contains(out, `"backup_created": true`) {
		t.Fatalf("uninstall: %d %s %s", code, out, errOut)
	}
}
