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
)

// hostServer is a running `nexus serve`.
type hostServer struct {
	url     string // http://127.0.0.1:PORT
	dataDir string
	admin   string // the admin token (NEXUS_ADMIN_TOKEN)
	logPath string // the server's stderr
	proc    *proc
}

// runHostMemory runs the host scenario on the in-memory bus.
func (b *bench) runHostMemory(ctx context.Context) (Measurement, error) {
	return b.runHost(ctx, "")
}

// runHostRedis runs the host scenario on the Redis Streams bus, with a redis-server of its
// own.
func (b *bench) runHostRedis(ctx context.Context) (Measurement, error) {
	srv, err := startRedis()
	if err != nil {
		return Measurement{}, err
	}
	defer srv.Close()
	return b.runHost(ctx, srv.URL())
}

// runHost starts the server (on redisURL's bus when set), installs and runs the two plugins,
// and returns bench-sender's measurement.
func (b *bench) runHost(ctx context.Context, redisURL string) (m Measurement, err error) {
	ps := newProcs(b.stderr)
	defer ps.stopAll()
	h, err := b.startHost(ctx, ps, redisURL)
	if err != nil {
		return m, err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w%s", err, h.logTail())
		}
	}()
	tokens := map[string]string{}
	for _, id := range []string{echoPluginID, senderPluginID} {
		if err := h.installExternal(ctx, id); err != nil {
			return m, err
		}
		if tokens[id], err = h.pluginToken(ctx, b.cfg.nexus, id); err != nil {
			return m, err
		}
	}

	echo, err := ps.start(echoPluginID, b.pluginCmd(rolePluginEcho, h, echoPluginID, tokens[echoPluginID]), stopGrace)
	if err != nil {
		return m, err
	}
	if err := echo.readJSON(ctx, readyTimeout, &ready{}); err != nil {
		return m, err
	}
	sender, err := ps.start(senderPluginID, b.pluginCmd(rolePluginSender, h, senderPluginID, tokens[senderPluginID], b.loadArgs()...), stopGrace)
	if err != nil {
		return m, err
	}
	if err := sender.readJSON(ctx, b.measureTimeout(), &m); err != nil {
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
func (b *bench) startHost(ctx context.Context, ps *procs, redisURL string) (*hostServer, error) {
	dir, err := os.MkdirTemp(b.tmp, "host-")
	if err != nil {
		return nil, err
	}
	admin, err := randomToken()
	if err != nil {
		return nil, err
	}
	h := &hostServer{dataDir: filepath.Join(dir, "data"), admin: admin, logPath: filepath.Join(dir, "nexus.log")}
	addrFile := filepath.Join(dir, "addr")
	args := []string{"serve", "--listen", "127.0.0.1:0", "--addr-file", addrFile, "--data-dir", h.dataDir, "--log-level", "warn"}
	if redisURL != "" {
		args = append(args, "--redis-url", redisURL)
	}
	logFile, err := os.Create(h.logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(b.cfg.nexus, args...)
	cmd.Env = childEnv("NEXUS_ADMIN_TOKEN=" + admin)
	cmd.Stderr = logFile
	if h.proc, err = ps.start("nexus", cmd, serverStopGrace); err != nil {
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
			return nil, fmt.Errorf("nexus serve exited: %s%s", exitText(h.proc.waitErr), h.logTail())
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("nexus serve did not listen within %v%s", readyTimeout, h.logTail())
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
			return nil, fmt.Errorf("nexus serve not ready within %v (last: %v %s)%s", readyTimeout, err, res.raw, h.logTail())
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

// pluginToken creates a plugin token with `nexus token create`.
func (h *hostServer) pluginToken(ctx context.Context, nexus, id string) (string, error) {
	cmd := exec.CommandContext(ctx, nexus, "token", "create", "--data-dir", h.dataDir,
		"--role", "plugin", "--plugin", id, "--name", "nexus-bench "+id)
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
	return "\nnexus serve log (tail):\n" + string(b)
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
