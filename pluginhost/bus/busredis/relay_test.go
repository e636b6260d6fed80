package busredis_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis"
)

// TestRelay runs two replicas of one bus: B holding a plugin is among A's holders of it (at
// once, and no longer once released), frames from A reach B in order and leave no entry
// behind, and a closed replica is no longer alive.
func TestRelay(t *testing.T) {
	prefix := newPrefix()
	a := newBus(t, shared, prefix, bus.Options{})
	b := newBus(t, shared, prefix, bus.Options{})
	ctx := context.Background()
	holders := func(plugin string) []string {
		t.Helper()
		hs, err := a.Holders(ctx, plugin)
		if err != nil {
			t.Fatalf("Holders: %v", err)
		}
		return hs
	}
	eventually(t, "B alive", func() bool { ok, err := a.Alive(ctx, b.Replica()); return err == nil && ok })
	if hs := holders("web"); len(hs) != 0 {
		t.Fatalf("holders before any hold: %v", hs)
	}

	b.Hold("web")
	b.Hold("web")
	a.Hold("web") // a replica is never its own holder
	eventually(t, "B holds web", func() bool { return slices.Equal(holders("web"), []string{b.Replica()}) })
	b.Release("web")
	time.Sleep(100 * time.Millisecond)
	if hs := holders("web"); !slices.Equal(hs, []string{b.Replica()}) {
		t.Fatalf("after releasing one of two instances: holders %v", hs)
	}
	b.Release("web")
	eventually(t, "B released web", func() bool { return len(holders("web")) == 0 })

	got := make(chan string, 100)
	b.ReceiveFrames(func(f []byte) { got <- string(f) })
	for i := range 50 {
		if err := a.SendFrame(ctx, b.Replica(), fmt.Appendf(nil, "frame %d", i)); err != nil {
			t.Fatalf("SendFrame: %v", err)
		}
	}
	for i := range 50 {
		select {
		case f := <-got:
			if want := fmt.Sprintf("frame %d", i); f != want {
				t.Fatalf("frame %d is %q", i, f)
			}
		case <-time.After(waitLong):
			t.Fatalf("frame %d never came", i)
		}
	}
	rdb := rawClient(t, shared)
	eventually(t, "read frames deleted", func() bool {
		n, err := rdb.XLen(ctx, prefix+"relay:"+b.Replica()).Result()
		return err == nil && n == 0
	})

	b.Hold("web")
	eventually(t, "B holds web again", func() bool { return len(holders("web")) == 1 })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.Alive(ctx, b.Replica()); err != nil || ok {
		t.Fatalf("Alive of a closed replica = %v, %v", ok, err)
	}
	if hs := holders("web"); len(hs) != 0 {
		t.Fatalf("a closed replica still holds: %v", hs)
	}
}

// eventually fails the test unless cond holds within waitLong.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Replicas whose clocks disagree by more than the grace of the holders set still see each
// other alive: the scores are on Redis's clock.
func TestRelayWithSkewedClocks(t *testing.T) {
	prefix := newPrefix()
	a := newBus(t, shared, prefix, bus.Options{})
	b := newBus(t, shared, prefix, bus.Options{})
	busredis.SkewClock(a, 30*time.Second) // A's clock is half a minute ahead
	ctx := context.Background()
	b.Hold("web")
	eventually(t, "A sees B hold web", func() bool {
		hs, err := a.Holders(ctx, "web")
		return err == nil && len(hs) == 1
	})
	eventually(t, "A sees B alive", func() bool { ok, err := a.Alive(ctx, b.Replica()); return err == nil && ok })
	a.Hold("api")
	eventually(t, "B sees A hold api", func() bool {
		hs, err := b.Holders(ctx, "api")
		return err == nil && len(hs) == 1
	})
}
