package busredis_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis/redistest"
)

// stream publishes n envelopes to plugin, one every interval, retrying each until Publish
// returns nil (the same ID again: dedupe keeps it single), while a consumer acknowledges
// what arrives. disrupt runs once, on its own goroutine, after a third of them. It checks
// that every envelope whose Publish returned nil is delivered, and returns.
func stream(t *testing.T, b *busredis.Bus, plugin string, n int, interval time.Duration, disrupt func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := consume(t, b, plugin, "reader")

	var mu sync.Mutex
	delivered := map[string]int{}
	readerDone := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		for {
			d, err := c.Next(ctx)
			if err != nil {
				select {
				case <-stop:
					readerDone <- nil
				default:
					readerDone <- fmt.Errorf("Next: %w", err)
				}
				return
			}
			// Acknowledge until it works: Redis may be away for a moment.
			for {
				err := c.Ack(ctx, d.Tag)
				if err == nil || errors.Is(err, bus.ErrUnknownDelivery) {
					break
				}
				if ctx.Err() != nil {
					readerDone <- fmt.Errorf("Ack: %w", err)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			mu.Lock()
			delivered[d.ID]++
			mu.Unlock()
		}
	}()

	var published []string
	failures := 0
	disrupted := make(chan error, 1)
	for i := range n {
		if i == n/3 {
			go func() { disrupted <- disrupt() }()
		}
		env := message(b.Replica(), plugin, fmt.Sprintf("m%04d", i))
		for {
			err := b.Publish(ctx, env)
			if err == nil {
				break
			}
			if !errors.Is(err, bus.ErrUnavailable) || ctx.Err() != nil {
				t.Fatalf("Publish %s: %v", env.ID, err)
			}
			failures++
			time.Sleep(20 * time.Millisecond)
		}
		published = append(published, env.ID)
		time.Sleep(interval)
	}
	if err := <-disrupted; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d publishes failed with ErrUnavailable and were retried", failures)

	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		missing := 0
		for _, id := range published {
			if delivered[id] == 0 {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d published envelopes never delivered", missing, len(published))
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	cancel()
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, k := range delivered {
		dups += k - 1
	}
	t.Logf("%d envelopes delivered, %d of them more than once (at least once)", len(delivered), dups)
}

// checkReaders checks that the reply and notice readers work (again).
func checkReaders(t *testing.T, b *busredis.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	w := b.Watch(ctx)
	id := fmt.Sprintf("check-%d", time.Now().UnixNano())
	if err := b.Reply(ctx, b.Replica(), bus.Reply{MessageID: id, Status: "success"}); err != nil {
		t.Fatalf("Reply: %v", err)
	}
	for r := receiveReply(t, b); r.MessageID != id; r = receiveReply(t, b) {
	}
	if err := b.Announce(ctx, bus.Envelope{ID: id, Kind: bus.KindEvent, Type: "check"}); err != nil {
		t.Fatalf("Announce: %v", err)
	}
	for {
		select {
		case ev := <-w:
			if ev.ID == id {
				return
			}
		case <-ctx.Done():
			t.Fatal("the watcher got nothing")
		}
	}
}

// TestRedisRestartAOF kills Redis (with the append-only file, fsync always) in the middle of
// a stream and starts it again: every envelope published before is delivered after, and
// the consumer and the readers recover by themselves.
func TestRedisRestartAOF(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	b := newBus(t, srv, "aof:", bus.Options{ProcessingTimeout: 2 * time.Second})
	checkReaders(t, b)
	start := time.Now()
	stream(t, b, "p", 600, time.Millisecond, func() error {
		if err := srv.Kill(); err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond)
		return srv.Restart()
	})
	t.Logf("stream with a Redis crash took %s", time.Since(start))
	checkReaders(t, b)
}

// TestConnectionsKilled drops every connection of the bus (CLIENT KILL TYPE normal from
// another client) in the middle of a stream: nothing is lost and the bus recovers.
func TestConnectionsKilled(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	b := newBus(t, srv, "kill:", bus.Options{ProcessingTimeout: 2 * time.Second})
	admin := rawClient(t, srv)
	stream(t, b, "p", 600, time.Millisecond, func() error {
		for range 3 {
			n, err := admin.ClientKillByFilter(context.Background(), "TYPE", "normal").Result()
			if err != nil {
				return fmt.Errorf("CLIENT KILL: %w", err)
			}
			t.Logf("killed %d connections", n)
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	})
	checkReaders(t, b)
}

// TestRedisDown stops Redis: calls fail fast with ErrUnavailable, and everything works again
// once Redis is back, without persistence (the consumer makes its group again).
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	b := newBus(t, srv, "down:", bus.Options{ProcessingTimeout: 2 * time.Second})
	ctx := context.Background()
	c := consume(t, b, "p", "i")
	publish(t, b, message(b.Replica(), "p", "before"))
	if d := next(t, c); d.ID != "before" {
		t.Fatalf("got %s; want before", d.ID)
	} else if err := c.Ack(ctx, d.Tag); err != nil {
		t.Fatalf("Ack: %v", err)
	}

	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	calls := map[string]func() error{
		"Publish": func() error { return b.Publish(ctx, message(b.Replica(), "p", "during")) },
		"PublishAll": func() error {
			return errors.Join(b.PublishAll(ctx, []bus.Envelope{message(b.Replica(), "p", "during")})...)
		},
		"Depth":    func() error { _, err := b.Depth(ctx, "p"); return err },
		"Live":     func() error { _, err := b.Live(ctx, "other"); return err },
		"Reply":    func() error { return b.Reply(ctx, b.Replica(), bus.Reply{MessageID: "x"}) },
		"Announce": func() error { return b.Announce(ctx, bus.Envelope{ID: "x"}) },
		"Cancel":   func() error { return b.Cancel(ctx, "p", "x", time.Now().Add(time.Minute)) },
		"Consume":  func() error { _, err := b.Consume(ctx, "p", "j"); return err },
	}
	for name, call := range calls {
		start := time.Now()
		err := call()
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s with Redis down took %s; want it to fail fast", name, took)
		}
		if !errors.Is(err, bus.ErrUnavailable) {
			t.Errorf("%s with Redis down: %v; want %v", name, err, bus.ErrUnavailable)
		}
	}

	// A Next waiting while Redis is down gets the first envelope published once it is back.
	type result struct {
		d   bus.Delivery
		err error
	}
	waiting := make(chan result, 1)
	wctx, cancel := context.WithTimeout(ctx, 3*waitLong)
	defer cancel()
	go func() {
		d, err := c.Next(wctx)
		waiting <- result{d, err}
	}()
	time.Sleep(300 * time.Millisecond)
	if err := srv.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	deadline := time.Now().Add(waitLong)
	for {
		err := b.Publish(ctx, message(b.Replica(), "p", "after"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Publish after Redis came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := <-waiting // bounded by wctx
	if r.err != nil || r.d.ID != "after" {
		t.Fatalf("Next across the outage = %q, %v; want after", r.d.ID, r.err)
	}
	if err := c.Ack(ctx, r.d.Tag); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	checkReaders(t, b)
}

// TestNewUnreachable checks that New fails fast when Redis cannot be reached.
func TestNewUnreachable(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	url := srv.URL()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := busredis.New(context.Background(), busredis.Config{URL: url})
	if !errors.Is(err, bus.ErrUnavailable) {
		t.Fatalf("New with Redis down: %v; want %v", err, bus.ErrUnavailable)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("New with Redis down took %s; want it to fail fast", took)
	}
	if _, err := busredis.New(context.Background(), busredis.Config{URL: "http://nope"}); err == nil {
		t.Fatal("New with a bad URL succeeded")
	}
}
