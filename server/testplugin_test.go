package server_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
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
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
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
