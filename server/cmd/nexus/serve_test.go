package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/server/internal/syncbuf"
)

// gogc is this process's GOGC in effect.
func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// `nexus serve` applies its heap floor while it runs (GOGC above 100 once a collection
// has run) and gives Go's default back when it stops; it says so in its log. The test
// runs serve in this process and stops it with SIGTERM, as an operator would.
func TestServeAppliesTheHeapFloor(t *testing.T) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" || gogc() != 100 {
		t.Skip("GOGC or GOMEMLIMIT is set in this environment: serve leaves the collector alone")
	}
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addr")
	var logs syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"),
			"--addr-file", addrFile, "--gc-heap-floor", "268435456"}, &bytes.Buffer{}, &logs)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for gogc() <= 100 {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC still %d; log:\n%s", gogc(), logs.String())
		}
		runtime.GC() // the floor is set again after every collection
		time.Sleep(20 * time.Millisecond)
	}
	for {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not listen; log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited %d; log:\n%s", code, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not stop on SIGTERM; log:\n%s", logs.String())
	}
	if p := gogc(); p != 100 {
		t.Errorf("GOGC %d after serve stopped, want 100", p)
	}
	if !strings.Contains(logs.String(), `"msg":"garbage collection: heap floor","bytes":268435456`) {
		t.Errorf("the log does not name the heap floor:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `"store":"sqlite","bus":"memory"`) {
		t.Errorf("the startup log does not name the store and the bus:\n%s", logs.String())
	}
}
