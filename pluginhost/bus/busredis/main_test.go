package busredis_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis/redistest"
)

// shared is the redis-server most tests share (each with its own key prefix); tests that
// stop or restart Redis start their own.
var shared *redistest.Server

func TestMain(m *testing.M) {
	srv, err := redistest.StartServer(redistest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "busredis tests need redis-server (apt-get install -y redis-server):", err)
		os.Exit(1)
	}
	shared = srv
	code := m.Run()
	_ = srv.Close()
	os.Exit(code)
}

var prefixes atomic.Int64

// newPrefix returns a key prefix no other bus of this test binary uses.
func newPrefix() string {
	return fmt.Sprintf("t%d-%d:", os.Getpid(), prefixes.Add(1))
}

// newBus returns a bus on srv with prefix, closed when the test ends.
func newBus(t testing.TB, srv *redistest.Server, prefix string, opts bus.Options) *busredis.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := busredis.New(ctx, busredis.Config{URL: srv.URL(), Prefix: prefix, Options: opts, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("busredis.New: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
