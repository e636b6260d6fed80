package busredis_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// TestNoGoroutineLeft opens a bus with consumers (one waiting in Next, one holding an
// extended delivery) and watchers, closes it, and checks that every goroutine it started
// has ended.
func TestNoGoroutineLeft(t *testing.T) {
	before := runtime.NumGoroutine()
	b := newBus(t, shared, newPrefix(), bus.Options{ProcessingTimeout: time.Second})
	ctx := context.Background()
	waiting, err := b.Consume(ctx, "leak", "waiting")
	if err != nil {
		t.Fatal(err)
	}
	holding, err := b.Consume(ctx, "leak", "holding")
	if err != nil {
		t.Fatal(err)
	}
	publish(t, b, message(b.Replica(), "leak", "m"))
	d := next(t, holding)
	if err := holding.Extend(ctx, d.Tag, time.Minute); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := waiting.Next(ctx)
		done <- err
	}()
	wctx, cancel := context.WithCancel(ctx)
	_ = b.Watch(wctx)
	_ = b.Watch(ctx)
	time.Sleep(100 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	cancel()
	<-done
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
