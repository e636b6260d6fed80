package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
)

// The test binary doubles as a plugin: a package's entry point is a script that runs it
// with the argument testPluginArg and a mode. Each mode misbehaves in one documented way.
const testPluginArg = "nexus-test-plugin"

// testPluginMode returns the plugin mode when the binary was started as a test plugin.
func testPluginMode() (string, bool) {
	for i, a := range os.Args {
		if a == testPluginArg && i+1 < len(os.Args) {
			return os.Args[i+1], true
		}
	}
	return "", false
}

func runTestPlugin(mode string) int {
	if mode == "probe" {
		i := slices.Index(os.Args, testPluginArg)
		return runProbe(os.Args[i+2:])
	}
	home := os.Getenv("HOME")
	var healthCalls atomic.Int64
	p := plugin.Plugin{
		Version:      "1.0.0",
		MessageTypes: []string{"echo"},
		OnStart: func(ctx context.Context, s *plugin.Session) error {
			s.Logger().Info("test plugin started", "mode", mode)
			if secret, _ := s.Config()["secret_token"].(string); secret != "" {
				fmt.Println("stdout line carrying the secret " + secret)
				s.Logger().Info("log frame carrying the secret " + secret)
				// As fields: a JSON line's (nested, and a JSON document inside a string) and
				// a log frame's.
				body, _ := json.Marshal(map[string]any{"token": secret})
				b, _ := json.Marshal(map[string]any{"level": "info", "msg": "stdout line with the secret as a field",
					"token": secret, "auth": map[string]any{"tokens": []any{secret}}, "body": string(body)})
				fmt.Println(string(b))
				s.Logger().Info("log frame with the secret as a field", "token", secret, slog.Group("auth", "token", secret))
			}
			return nil
		},
		OnHealthCheck: func(ctx context.Context) []plugin.Check {
			n := healthCalls.Add(1)
			if mode == "unhealthy" {
				return []plugin.Check{plugin.Fail("test", "always failing")}
			}
			if mode == "stop-health" && n > 1 {
				<-ctx.Done() // never answers again
			}
			details := "answering health checks"
			check := plugin.Pass("test").WithValue(float64(n), 1000, "calls")
			check.Details = &details
			return []plugin.Check{check}
		},
		OnConfigChange: func(ctx context.Context, c plugin.ConfigChange) error {
			if c.Config["reject_changes"] == true {
				return errors.New("the test plugin rejects this configuration")
			}
			return nil
		},
		OnShutdown: func(ctx context.Context, reason string) {
			if mode == "hang-shutdown" {
				select {} // never finishes; the host must escalate to SIGKILL
			}
		},
	}
	switch mode {
	case "echo":
		echoPlugin(&p) // failover_test.go
	case "leak-at-start":
		// Prints its secret (as text and as a JSON field) and exits before it is ready.
		p.OnStart = func(ctx context.Context, s *plugin.Session) error {
			secret, _ := s.Config()["secret_token"].(string)
			fmt.Println("connecting with " + secret)
			b, _ := json.Marshal(map[string]any{"event": "login", "token": secret})
			fmt.Fprintln(os.Stderr, string(b))
			os.Exit(3)
			return nil
		}
	case "crash-loop":
		fmt.Fprintln(os.Stderr, "boom: the test plugin crashes at once")
		return 3
	case "hang-startup":
		fmt.Fprintln(os.Stdout, `{"level":"INFO","message":"hanging before connecting"}`)
		select {}
	case "hang-shutdown":
		signal.Ignore(syscall.SIGTERM)
	case "crash-once":
		marker := filepath.Join(home, "crashed-once")
		if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) {
			_ = os.WriteFile(marker, []byte("x"), 0o600)
			p.OnStart = func(ctx context.Context, s *plugin.Session) error {
				go func() {
					time.Sleep(300 * time.Millisecond)
					fmt.Fprintln(os.Stderr, "crashing on purpose")
					os.Exit(7)
				}()
				return nil
			}
		}
	case "hog":
		// Grows past its memory limit once it is running.
		p.OnStart = func(ctx context.Context, s *plugin.Session) error {
			go func() {
				time.Sleep(200 * time.Millisecond)
				var keep [][]byte
				for i := 0; i < 40; i++ {
					b := make([]byte, 8<<20)
					for j := range b {
						b[j] = byte(j)
					}
					keep = append(keep, b)
					time.Sleep(20 * time.Millisecond)
				}
				<-ctx.Done()
				_ = keep
			}()
			return nil
		}
	case "flood":
		line := strings.Repeat("flood ", 16) + "\n"
		for i := 0; i < 200_000; i++ { // ~20 MB
			os.Stdout.WriteString(line)
		}
		time.Sleep(time.Second)                 // lines beyond what the host can store are dropped; let it drain
		fmt.Println(strings.Repeat("x", 1<<20)) // one oversized line
		fmt.Println(`{"level":"WARNING","message":"flood done","lines":200000}`)
	}
	p.HTTP = testHTTPHandler()
	if err := plugin.Run(context.Background(), p); err != nil {
		fmt.Fprintln(os.Stderr, "test plugin:", err)
		return 1
	}
	return 0
}

// testPluginPackage builds a package whose entry point runs this test binary as a plugin
// in the given mode.
func testPluginPackage(t testing.TB, id, mode string, extra map[string]any) []byte {
	t.Helper()
	self := pluginExe(t)
	m := map[string]any{
		"id": id, "name": "Test plugin " + mode, "version": "1.0.0", "category": "testing",
		"entry_point": "bin/run", "args": []string{testPluginArg, mode},
		"start_timeout_seconds": 5,
		"configuration": map[string]any{
			"greeting":       map[string]any{"type": "string", "default": "hello"},
			"secret_token":   map[string]any{"type": "string", "secret": true},
			"reject_changes": map[string]any{"type": "boolean", "default": false},
			"workers":        map[string]any{"type": "integer", "default": 1, "restart_required": true},
		},
	}
	for k, v := range extra {
		m[k] = v
	}
	script := "#!/bin/sh\nexec '" + self + "' -test.run=^$ \"$@\"\n"
	return pkg(t, m, map[string]string{"bin/run": script})
}

var (
	pluginExeOnce sync.Once
	pluginExePath string
	pluginExeErr  error
)

// pluginExe returns a copy of this test binary that confined plugins can run: in a
// directory of its own that every uid may read (go test's build directory is the
// builder's only), which the test servers add to their plugin-read-paths
// (pluginReadPaths). TestMain removes it.
func pluginExe(t testing.TB) string {
	t.Helper()
	pluginExeOnce.Do(func() {
		self, err := os.Executable()
		if err != nil {
			pluginExeErr = err
			return
		}
		dir, err := os.MkdirTemp("", "nexus-test-plugin-")
		if err == nil {
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			pluginExeErr = err
			return
		}
		pluginExePath = filepath.Join(dir, filepath.Base(self))
		pluginExeErr = copyFile(self, pluginExePath, 0o755)
	})
	if pluginExeErr != nil {
		t.Fatalf("copy the test binary for plugins: %v", pluginExeErr)
	}
	return pluginExePath
}

// pluginReadPaths is the plugin-read-paths of test servers: the test plugin's directory.
func pluginReadPaths(t testing.TB) []string { return []string{filepath.Dir(pluginExe(t))} }

// removePluginExe removes the copy pluginExe made, if any.
func removePluginExe() {
	if pluginExePath != "" {
		_ = os.RemoveAll(filepath.Dir(pluginExePath))
	}
}

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// searchableTempDir is t.TempDir with its parent opened for search (0711), as a data
// directory's parents must be for plugins that run under uids of their own.
func searchableTempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		t.Fatal(err)
	}
	return dir
}
