package stream

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	relayv1 "github.com/nexus-platform/nexus/gen/go/nexus/relay/v1"
	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/presence"
)

type replicaBus struct{ bus.Bus }

func (replicaBus) Replica() string { return "a" }

// flakyRelay loses Redis for the request body frames; the serving replica stays alive.
type flakyRelay struct {
	bus.Relay
	sent chan string
}

func (r *flakyRelay) Alive(context.Context, string) (bool, error) { return true, nil }
func (r *flakyRelay) SendFrame(_ context.Context, _ string, b []byte) error {
	var f relayv1.Frame
	_ = proto.Unmarshal(b, &f)
	switch f.Frame.(type) {
	case *relayv1.Frame_RequestBody:
		r.sent <- "body (failed)"
		return errors.New("redis: connection refused")
	case *relayv1.Frame_Start:
		r.sent <- "start"
	case *relayv1.Frame_Cancel:
		r.sent <- "cancel"
	}
	return nil
}

// A relayed upload whose second body frame cannot be sent (Redis down for a moment) fails at
// once, rather than waiting for its deadline with the serving side waiting for the body.
func TestRelayedCallFailsWhenABodyFrameIsLost(t *testing.T) {
	r := &flakyRelay{sent: make(chan string, 16)}
	h := &Sessions{bus: replicaBus{}, relay: r, pres: presence.New(), log: slog.New(slog.DiscardHandler),
		relayed: &relayCalls{out: map[string]*httpCall{}, served: map[string]*servedCall{}}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	body := bytes.NewReader(make([]byte, 300<<10))
	first, done, _ := readChunk(body)
	start := time.Now()
	_, _, err := h.carry(ctx, h.replicaPeer("b", "p"), "p", HTTPCall{Method: "POST", Path: "/up", Body: body}, first, done, httptest.NewRecorder())
	t.Logf("carry returned after %v: %v", time.Since(start).Round(time.Millisecond), err)
	for len(r.sent) > 0 {
		t.Logf("frame: %s", <-r.sent)
	}
	if !errors.Is(err, ErrCallFailed) || time.Since(start) > time.Second {
		t.Error("the call waited for its deadline although the relay had failed")
	}
}
