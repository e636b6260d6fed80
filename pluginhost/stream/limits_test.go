package stream_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/router"
	"github.com/nexus-platform/nexus/pluginhost/stream"
)

// payloadOf returns a payload whose encoding is exactly n bytes long.
func payloadOf(t *testing.T, n int) *structpb.Struct {
	t.Helper()
	pad := func(k int) *structpb.Struct { return data(t, map[string]any{"pad": strings.Repeat("x", k)}) }
	// Past the first few hundred bytes the overhead is constant (varint lengths of 3 bytes
	// from 16 KiB to 2 MiB).
	over := proto.Size(pad(n-64)) - (n - 64)
	s := pad(n - over)
	if got := proto.Size(s); got != n {
		t.Fatalf("payload of %d bytes, want %d", got, n)
	}
	return s
}

func TestPayloadLimitOnTheStream(t *testing.T) {
	// The plugin stream takes payloads up to the API's limit, and answers a larger send,
	// emit or broadcast as the API does (VALIDATION_ERROR naming the field), on that request
	// alone: the session carries on.
	most := payloadOf(t, router.MaxPayloadBytes)
	tooLarge := payloadOf(t, router.MaxPayloadBytes+1)
	cases := []struct {
		name  string
		frame func(reqID string, d *structpb.Struct) *pluginhostv1.ConnectRequest
		field string
	}{
		{"send", func(id string, d *structpb.Struct) *pluginhostv1.ConnectRequest {
			return sendFrame(id, "beta-plugin", "order.lookup", d, 10)
		}, "send.data"},
		{"emit", func(id string, d *structpb.Struct) *pluginhostv1.ConnectRequest {
			return emitFrame(id, "order.created", d)
		}, "emit.data"},
		{"broadcast", func(id string, d *structpb.Struct) *pluginhostv1.ConnectRequest {
			return broadcastFrame(id, "cache.flush", d)
		}, "broadcast.data"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.install(pluginSpec{id: "alpha-plugin", granted: []string{"messages:send", "events:emit"}})
			f.install(pluginSpec{id: "beta-plugin", granted: []string{"events:subscribe"}, subscribes: []string{"order.*"}})
			b := f.connect("beta-plugin", nil)
			a := f.connect("alpha-plugin", nil)

			r := a.request(tc.frame("req-1", tooLarge), "req-1")
			wantReplyCode(t, r, errs.ValidationError)
			want := fmt.Sprintf("the payload is too large: %s: is %d bytes encoded, at most %d", tc.field, router.MaxPayloadBytes+1, router.MaxPayloadBytes)
			if r.GetErrorMessage() != want {
				t.Fatalf("error message %q, want %q", r.GetErrorMessage(), want)
			}

			// The largest payload the API takes goes through, on the same session.
			a.send(tc.frame("req-2", most))
			d := b.deliver()
			if !proto.Equal(d.GetData(), most) {
				t.Fatalf("%s delivered a payload of %d bytes, want the %d sent", tc.name, proto.Size(d.GetData()), proto.Size(most))
			}
			if tc.name == "send" {
				b.send(replyFrame(d.GetDeliveryId(), "success", nil, ""))
			}
			if r := a.reply("req-2"); r.GetErrorCode() != "" {
				t.Fatalf("%s of the largest payload: %v", tc.name, r)
			}
		})
	}
}

func TestReplyPayloadLimit(t *testing.T) {
	// A reply larger than the API's payload limit does not reach the sender: it gets an
	// error reply saying why, and the replying plugin's log says so too.
	f := newFixture(t)
	f.install(pluginSpec{id: "alpha-plugin", granted: []string{"messages:send"}})
	f.install(pluginSpec{id: "beta-plugin"})
	b := f.connect("beta-plugin", nil)
	a := f.connect("alpha-plugin", nil)

	a.send(sendFrame("req-1", "beta-plugin", "order.lookup", nil, 10))
	d := b.deliver()
	b.send(replyFrame(d.GetDeliveryId(), "success", payloadOf(t, router.MaxPayloadBytes+1), ""))
	r := a.reply("req-1")
	want := fmt.Sprintf("the reply was too large: %d bytes encoded, at most %d", router.MaxPayloadBytes+1, router.MaxPayloadBytes)
	if r.GetStatus() != "error" || r.GetErrorMessage() != want || r.GetData() != nil && len(r.GetData().GetFields()) > 0 {
		t.Fatalf("the sender got status %q, %q and %d bytes of data; want status error, %q and none",
			r.GetStatus(), r.GetErrorMessage(), proto.Size(r.GetData()), want)
	}
}

func TestQueueOfAPluginThatDoesNotReadIsBoundedInBytes(t *testing.T) {
	// The replies to a plugin's messages are queued for it, and a plugin that does not read
	// is ended once they fill its queue: in bytes, not only in frames. With large replies
	// the session ends long before its queue holds sessionSendQueue (256) of them.
	f := newFixture(t)
	f.install(pluginSpec{id: "alpha-plugin", granted: []string{"messages:send"}})
	f.install(pluginSpec{id: "beta-plugin"})
	b := f.connect("beta-plugin", nil)
	a := f.connect("alpha-plugin", nil)

	const replyBytes = 512 << 10
	big := data(t, map[string]any{"pad": strings.Repeat("x", replyBytes)})
	const sends = pipeWindow + 256 + 16
	for i := range sends {
		a.send(sendFrame(fmt.Sprintf("req-%d", i), "beta-plugin", "order.lookup", nil, 60))
	}
	// Hundreds of 512 KiB replies under the race detector: on a loaded machine (load average
	// 9, two cores) they took more than testTimeout.
	timeout := time.NewTimer(6 * testTimeout)
	defer timeout.Stop()
	replied := 0
	for ended := false; !ended; {
		select {
		case <-a.run.done:
			ended = true
		case fr := <-b.pipe.toPlugin:
			if d := fr.GetDeliver(); d != nil {
				b.send(replyFrame(d.GetDeliveryId(), "success", big, ""))
				replied++
			}
		case <-timeout.C:
			t.Fatalf("the session of the plugin that does not read was not ended (%d replies)", replied)
		}
	}
	const why = "plugin alpha-plugin does not read its stream fast enough"
	if err := a.wait(); !errs.Is(err, errs.PluginUnavailable) || errs.MessageOf(err) != why {
		t.Fatalf("ServeSession returned %v, want %q", err, why)
	}
	// What the stream's window took, what the queue's bytes hold, one being sent, the one
	// refused, and those beta answered while the session was ending: under load up to a
	// few dozen (one over +8 was seen with four test binaries on two cores), far fewer than
	// the frames a count-only bound would queue (256).
	if most := pipeWindow + stream.SessionSendBytes/replyBytes + 32; replied > most {
		t.Fatalf("ended after %d replies of %d KiB; at most %d fit the window and the queue's %d MiB",
			replied, replyBytes>>10, most, stream.SessionSendBytes>>20)
	}
}
