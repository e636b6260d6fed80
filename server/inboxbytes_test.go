package server_test

import (
	"context"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	"github.com/nexus-platform/nexus/server"
)

// TestStalledSubscriberHoldsAtMostMaxInboxBytes: a plugin subscribed to events stops
// reading its stream, and a user emits large events. Its inbox takes them up to
// --max-inbox-bytes and then leaves it out of the recipients (the refusal of a full inbox),
// and the server's heap grows by at most that bound plus a fixed allowance: nothing else
// buffers the events for the stalled plugin.
func TestStalledSubscriberHoldsAtMostMaxInboxBytes(t *testing.T) {
	const (
		bound      = 4 << 20
		eventBytes = 256 << 10
		events     = 80 // 20 MiB in all, five times the bound
		// allowance covers what the host holds beside the inbox: the frame being sent to
		// the stalled plugin, transport buffers, the Redis consumer's read-ahead.
		allowance = 6 << 20
	)
	buses(t, func(t *testing.T, tune func(*server.Config)) {
		e := startMessagingServer(t, func(c *server.Config) {
			tune(c)
			c.MaxInboxBytes = bound
		})
		externalPlugin(e, "stalled-plugin", map[string]any{
			"permissions": []string{"events:subscribe"},
			"events":      map[string]any{"subscribes": []string{"bulk.*"}},
		})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()

		// The plugin says hello on a gRPC stream with a small fixed window, and never reads
		// after the welcome (the stream stays open until the test ends).
		openStalledSession(t, ctx, e)

		client := pluginv1connect.NewMessagingServiceClient(nexus.DefaultHTTPClient(), e.URL)
		payload, err := structpb.NewStruct(map[string]any{"pad": strings.Repeat("x", eventBytes)})
		if err != nil {
			t.Fatal(err)
		}
		emit := func(typ string) []string {
			t.Helper()
			req := connect.NewRequest(&pluginv1.EmitEventRequest{Type: typ, Data: payload})
			req.Header().Set("Authorization", "Bearer "+e.User)
			res, err := client.EmitEvent(ctx, req)
			if err != nil {
				t.Fatalf("emit %s: %v", typ, err)
			}
			return res.Msg.GetRecipients()
		}
		// Warm up whatever the first emit allocates for good (connections, caches), with an
		// event nobody subscribes to.
		emit("warmup.done")
		before := heapAfterGC()

		accepted, refused := 0, 0
		for range events {
			if slices.Contains(emit("bulk.item"), "stalled-plugin") {
				if refused > 0 {
					t.Fatalf("an event was queued after %d were refused, with nothing acknowledged", refused)
				}
				accepted++
			} else {
				refused++
			}
		}
		grown := heapAfterGC() - before
		t.Logf("%d events queued, %d refused; heap grew by %.1f MiB (bound %d MiB)", accepted, refused, float64(grown)/(1<<20), bound>>20)

		// Refusals start once the next event would take the inbox past the bound (an
		// event's size is its payload and a few headers).
		if accepted*eventBytes > bound || (accepted+1)*(eventBytes+1<<10) <= bound {
			t.Fatalf("%d events of %d KiB queued before refusals; the bound is %d MiB", accepted, eventBytes>>10, bound>>20)
		}
		if grown > bound+allowance {
			t.Fatalf("the heap grew by %d bytes, more than the bound (%d) and the allowance (%d)", grown, bound, allowance)
		}
	})
}

// heapAfterGC returns the bytes of live heap objects after full collections (two: the
// buffer pools' victim caches survive the first).
func heapAfterGC() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
