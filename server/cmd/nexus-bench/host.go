package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/archive"
)

// The host scenarios: `nexus serve` as a process, two external plugins installed and
// enabled through the REST API, plugin tokens from `nexus token create`, and the two plugin
// processes (this binary as bench-echo and bench-sender).

// The plugins of the host scenarios.
const (
	echoPluginID   = "bench-echo"
	senderPluginID = "bench-sender"
	// echoMessageType is the message type bench-sender sends and bench-echo answers.
	echoMessageType = "echo"
	// secretKeyFile is the server's secrets key in its data directory.
	secretKeyFile = "secret.key"
)

// hostServer is a running `nexus serve`.
type hostServer struct {
	name        string // in error messages: "nexus serve", "nexus serve A", ...
	url         string // http://127.0.0.1:PORT
	dataDir     string
	databaseURL string // its PostgreSQL database; empty: SQLite in dataDir
	redisURL    string // its bus's Redis; empty: the in-memory bus
	admin       string // the admin token (NEXUS_ADMIN_TOKEN)
	logPath     string // the server's stderr
	proc        *proc
}

// hostOptions say how to start a `nexus serve`.
type hostOptions struct {
	name        string // hostServer.name; "nexus serve" when empty
	redisURL    string // --redis-url; empty: the in-memory bus
	databaseURL string // --database-url; empty: SQLite in the data directory
	// admin is its NEXUS_ADMIN_TOKEN; a random one when empty. Servers sharing a database
	// must share it: a server starting with another bootstrap token revokes the previous one.
	admin string
	// secretKey, when set, is written to the data directory as secret.key before the first
	// start, as replicas sharing a database must share it.
	secretKey []byte
	// env is more of its environment (GOGC=10 for the idle scenario).
	env []string
}

// runHostMemory runs the host scenario on the in-memory bus.
func (b *bench) runHostMemory(ctx context.Context) (Measurement, error) {
	return b.runHost(ctx, "")
}

// runHostRedis runs the host scenario on the Redis Streams bus, with a redis-server of its
// own.
func (b *bench) runHostRedis(ctx context.Context) (Measurement, error) {
	return overRedis(ctx, b.runHost)
}

// overRedis runs a scenario with the URL of a redis-server of its own, stopped after it.
func overRedis(ctx context.Context, run func(ctx context.Context, redisURL string) (Measurement, error)) (Measurement, error) {
	srv, err := startRedis()
	if err != nil {
		return Measurement{}, err
	}
	defer srv.Close()
	return run(ctx, srv.URL())
}

// runHost starts the server (on redisURL's bus when set), installs and runs the two plugins,
// and returns bench-sender's measurement.
func (b *bench) runHost(ctx context.Context, redisURL string) (m Measurement, err error) {
	ps := newProcs(b.stderr)
	defer ps.stopAll()
	h, err := b.startHost(ctx, ps, hostOptions{redisURL: redisURL})
	if err != nil {
		return m, err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w%s", err, h.logTail())
		}
	}()
	return b.runPlugins(ctx, ps, h, h)
}

// runPlugins installs and enables bench-echo and bench-sender through sender's server,
// waits until echo's server sees them enabled (a replica sharing sender's database), runs
// bench-echo connected to echo and bench-sender connected to sender, and returns
// bench-sender's measurement. sender and echo may be the same server.
func (b *bench) runPlugins(ctx context.Context, ps *procs, sender, echo *hostServer) (m Measurement, err error) {
	tokens := map[string]string{}
	for _, id := range []string{echoPluginID, senderPluginID} {
		if err := sender.installExternal(ctx, id); err != nil {
			return m, err
		}
		if tokens[id], err = sender.pluginToken(ctx, b.cfg.nexus, id); err != nil {
			return m, err
		}
	}
	if echo != sender {
		for _, id := range []string{echoPluginID, senderPluginID} {
			if err := echo.waitEnabled(ctx, id); err != nil {
				return m, err
			}
		}
	}

	echoProc, err := ps.start(echoPluginID, b.pluginCmd(rolePluginEcho, echo, echoPluginID, tokens[echoPluginID]), stopGrace)
	if err != nil {
		return m, err
	}
	if err := echoProc.readJSON(ctx, readyTimeout, &ready{}); err != nil {
		return m, err
	}
	// The CPU per round trip counts the servers, both plugins and redis-server (not
	// PostgreSQL: no message touches it).
	servers := []*proc{sender.proc, echoProc}
	if echo != sender {
		servers = append(servers, echo.proc)
	}
	args := append(b.loadArgs(), cpuArgs(senderPluginID, sender.redisURL, servers...)...)
	senderProc, err := ps.start(senderPluginID, b.pluginCmd(rolePluginSender, sender, senderPluginID, tokens[senderPluginID], args...), stopGrace)
	if err != nil {
		return m, err
	}
	if err := senderProc.readJSON(ctx, b.measureTimeout(), &m); err != nil {
		return m, err
	}
	return m, nil
}

// pluginCmd runs this binary as a plugin of h; the token goes in the environment (not in
// the arguments, which anyone may read in ps).
func (b *bench) pluginCmd(role string, h *hostServer, id, token string, args ...string) *exec.Cmd {
	cmd := b.selfCmd(role, append([]string{"-host", h.url, "-id", id}, args...)...)
	cmd.Env = childEnv("NEXUS_PLUGIN_TOKEN=" + token)
	return cmd
}

// startHost starts `nexus serve` on a free loopback port with a fresh data directory and
// waits until it is ready.
func (b *bench) startHost(ctx context.Context, ps *procs, opts hostOptions) (*hostServer, error) {
	dir, err := os.MkdirTemp(b.tmp, "host-")
	if err != nil {
		return nil, err
	}
	admin := opts.admin
	if admin == "" {
		if admin, err = randomToken(); err != nil {
			return nil, err
		}
	}
	name := opts.name
	if name == "" {
		name = "nexus serve"
	}
	h := &hostServer{name: name, dataDir: filepath.Join(dir, "data"), databaseURL: opts.databaseURL, redisURL: opts.redisURL,
		admin: admin, logPath: filepath.Join(dir, "nexus.log")}
	if opts.secretKey != nil {
		if err := os.MkdirAll(h.dataDir, 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(h.dataDir, secretKeyFile), opts.secretKey, 0o600); err != nil {
			return nil, err
		}
	}
	addrFile := filepath.Join(dir, "addr")
	args := []string{"serve", "--listen", "127.0.0.1:0", "--addr-file", addrFile, "--data-dir", h.dataDir, "--log-level", "warn"}
	if opts.redisURL != "" {
		args = append(args, "--redis-url", opts.redisURL)
	}
	if opts.databaseURL != "" {
		// pgtest's URLs carry no password (trust authentication), so ps shows nothing secret.
		args = append(args, "--database-url", opts.databaseURL)
	}
	logFile, err := os.Create(h.logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(b.cfg.nexus, args...)
	cmd.Env = childEnv(append([]string{"NEXUS_ADMIN_TOKEN=" + admin}, opts.env...)...)
	cmd.Stderr = logFile
	if h.proc, err = ps.start(name, cmd, serverStopGrace); err != nil {
		return nil, err
	}

	// The address file appears once the server listens.
	deadline := time.Now().Add(readyTimeout)
	for {
		if addr, err := os.ReadFile(addrFile); err == nil && bytes.HasSuffix(addr, []byte("\n")) {
			h.url = "http://" + strings.TrimSpace(string(addr))
			break
		}
		if !h.proc.running() {
			return nil, fmt.Errorf("%s exited: %s%s", name, exitText(h.proc.waitErr), h.logTail())
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not listen within %v%s", name, readyTimeout, h.logTail())
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
	for {
		res, err := h.do(ctx, http.MethodGet, "/readyz", nil)
		if err == nil && res.status == http.StatusOK {
			return h, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s not ready within %v (last: %v %s)%s", name, readyTimeout, err, res.raw, h.logTail())
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// installExternal installs an external plugin (a package holding only its manifest) and
// enables it.
func (h *hostServer) installExternal(ctx context.Context, id string) error {
	pkg, err := manifestPackage(map[string]any{
		"id": id, "name": "Benchmark " + id, "version": "1.0.0",
		"description": "nexus-bench plugin", "category": "testing",
		"external": true, "nexus_version": ">=1.0.0",
		"permissions": []string{"messages:send"},
	})
	if err != nil {
		return err
	}
	if err := h.mustOK(ctx, http.MethodPost, "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": pkg}); err != nil {
		return fmt.Errorf("install %s: %w", id, err)
	}
	if err := h.mustOK(ctx, http.MethodPost, "/api/v1/plugins/"+id+"/enable", map[string]any{}); err != nil {
		return fmt.Errorf("enable %s: %w", id, err)
	}
	return nil
}

// waitEnabled waits until h sees plugin id installed and enabled (a replica learns of a
// change made through another from the shared database).
func (h *hostServer) waitEnabled(ctx context.Context, id string) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		var detail struct {
			Plugin struct {
				Enabled bool `json:"enabled"`
			} `json:"plugin"`
		}
		err := h.getData(ctx, "/api/v1/plugins/"+id, &detail)
		if err == nil && detail.Plugin.Enabled {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not see %s enabled within %v (last: %v)", h.name, id, readyTimeout, err)
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
}

// pluginToken creates a plugin token with `nexus token create`, in h's database.
func (h *hostServer) pluginToken(ctx context.Context, nexus, id string) (string, error) {
	args := []string{"token", "create", "--data-dir", h.dataDir, "--role", "plugin", "--plugin", id, "--name", "nexus-bench " + id}
	if h.databaseURL != "" {
		args = append(args, "--database-url", h.databaseURL)
	}
	cmd := exec.CommandContext(ctx, nexus, args...)
	cmd.Env = childEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("nexus token create for %s: %w: %s", id, err, strings.TrimSpace(stderr.String()))
	}
	token := strings.TrimSpace(string(out))
	if token == "" || strings.ContainsAny(token, " \n") {
		return "", fmt.Errorf("nexus token create for %s printed %q, not a token", id, out)
	}
	return token, nil
}

// apiResult is an HTTP answer of the server.
type apiResult struct {
	status int
	raw    []byte
}

// do calls the server with the admin token; body, when not nil, is sent as JSON.
func (h *hostServer) do(ctx context.Context, method, path string, body any) (apiResult, error) {
	var rd io.Reader
	if body != nil {
		js, err := json.Marshal(body)
		if err != nil {
			return apiResult{}, err
		}
		rd = bytes.NewReader(js)
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, h.url+path, rd)
	if err != nil {
		return apiResult{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+h.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return apiResult{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return apiResult{status: resp.StatusCode, raw: raw}, err
}

// mustOK calls the REST API and fails unless the answer is a success envelope.
func (h *hostServer) mustOK(ctx context.Context, method, path string, body any) error {
	res, err := h.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	var env struct {
		Success bool `json:"success"`
	}
	if res.status != http.StatusOK || json.Unmarshal(res.raw, &env) != nil || !env.Success {
		return fmt.Errorf("%s %s: status %d: %s", method, path, res.status, bytes.TrimSpace(res.raw))
	}
	return nil
}

// logTail is the end of the server's log, for error messages ("" when empty).
func (h *hostServer) logTail() string {
	b, err := os.ReadFile(h.logPath)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	const max = 4096
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return "\n" + h.name + " log (tail):\n" + string(b)
}

// manifestPackage is a plugin package (.tar.gz) holding only plugin.json.
func manifestPackage(manifest map[string]any) ([]byte, error) {
	dir, err := os.MkdirTemp("", "nexus-bench-pkg-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	js, err := json.MarshalIndent(manifest, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "plugin.json"), js, 0o644); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := archive.Create(&buf, dir); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// randomToken is a random 32-character admin token.
func randomToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
