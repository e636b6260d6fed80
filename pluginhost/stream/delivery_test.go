package stream_test

import (
	"bytes"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/stream"
)

// TestIdleSessionHasNoDeliveryGoroutine checks that a session whose consumer has nothing
// to hand out (busmem's, which calls back) keeps no goroutine for its deliveries, and
// still gets a message, an event, and the event again once its processing timeout expired
// while the session was idle.
func TestIdleSessionHasNoDeliveryGoroutine(t *testing.T) {
	f := newFixtureBus(t, bus.Options{ProcessingTimeout: time.Second, MaxAttempts: maxAttempts})
	f.install(pluginSpec{id: "alpha-plugin", granted: []string{"messages:send", "events:emit"}})
	f.install(pluginSpec{id: "beta-plugin", granted: []string{"events:subscribe"}, subscribes: []string{"order.*"},
		messageTypes: map[string]string{"order.lookup": ""}})
	b := f.connect("beta-plugin", nil)
	a := f.connect("alpha-plugin", nil)
	waitNoDeliveryGoroutine(t, "once connected")

	a.send(sendFrame("req-1", "beta-plugin", "order.lookup", nil, 20))
	d := b.deliver()
	if d.GetKind() != pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE {
		t.Fatalf("delivery %v; want the message", d)
	}
	b.send(replyFrame(d.GetDeliveryId(), "success", nil, ""))
	if r := a.reply("req-1"); r.GetStatus() != "success" {
		t.Fatalf("reply %v", r)
	}
	waitNoDeliveryGoroutine(t, "after a message")

	if r := a.request(emitFrame("req-2", "order.created", nil), "req-2"); len(r.GetRecipients()) != 1 {
		t.Fatalf("emit reply %v", r)
	}
	first := b.deliver()
	if first.GetKind() != pluginhostv1.DeliveryKind_DELIVERY_KIND_EVENT || first.GetAttempt() != 1 {
		t.Fatalf("delivery %v; want the event's first attempt", first)
	}
	// Left unsettled: the session is idle while the event is in flight, and gets it again
	// when its processing timeout expires.
	waitNoDeliveryGoroutine(t, "while the event is in flight")
	again := b.deliver()
	if again.GetId() != first.GetId() || again.GetDeliveryId() != first.GetDeliveryId() || again.GetAttempt() != 2 {
		t.Fatalf("delivery %v; want the event again, attempt 2", again)
	}
	b.send(ackFrame(again.GetDeliveryId(), pluginhostv1.AckAction_ACK_ACTION_DONE, ""))
	b.barrier()
	waitNoDeliveryGoroutine(t, "after the redelivery")
	if n, err := f.router.Bus().Depth(t.Context(), "beta-plugin"); err != nil || n != 0 {
		t.Fatalf("beta-plugin's inbox holds %d entries (%v); want 0", n, err)
	}
}

// waitNoDeliveryGoroutine waits until no goroutine of the process sends a session's
// deliveries (the sessions of the other tests have ended by then).
func waitNoDeliveryGoroutine(t *testing.T, when string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		n := deliveryGoroutines()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d goroutines send deliveries; want none while the sessions are idle", when, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// deliveryGoroutines counts the goroutines running a delivery loop or run.
func deliveryGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return bytes.Count(buf, []byte("stream.(*Sessions).runDeliveries(")) + bytes.Count(buf, []byte("stream.(*Sessions).deliverLoop("))
}

// TestDeliveriesUnderLoad sends many messages at once to a plugin that answers each at
// once: its consumer goes from idle to busy and back, and is called back while a delivery
// run ends, many times over. Every message must be delivered and answered; one the session
// failed to wake up for would stay in the inbox until the test gives up.
func TestDeliveriesUnderLoad(t *testing.T) {
	const messages, window = 3000, 256
	f := newFixture(t)
	f.install(pluginSpec{id: "alpha-plugin", granted: []string{"messages:send"}})
	f.install(pluginSpec{id: "beta-plugin", messageTypes: map[string]string{"order.lookup": ""}})
	b := f.connect("beta-plugin", nil)
	a := f.connect("alpha-plugin", nil)

	stop := make(chan struct{})
	defer close(stop)
	failed := make(chan error, 2)
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	// put hands a frame to the host as plug.send does, from another goroutine.
	put := func(p *plug, req *pluginhostv1.ConnectRequest) bool {
		select {
		case p.pipe.toHost <- received{req: req}:
			return true
		case <-p.run.done:
			fail(fmt.Errorf("%s: the session ended: %v", p.id, p.run.err))
		case <-stop:
		}
		return false
	}
	// The target answers every delivery at once.
	go func() {
		for {
			select {
			case fr := <-b.pipe.toPlugin:
				d := fr.GetDeliver()
				if d == nil {
					fail(fmt.Errorf("beta-plugin got %s, want a delivery", frameName(fr)))
					return
				}
				if !put(b, replyFrame(d.GetDeliveryId(), "success", nil, "")) {
					return
				}
			case <-stop:
				return
			}
		}
	}()
	// The sender keeps up to window messages waiting for their replies.
	room := make(chan struct{}, window)
	go func() {
		for i := range messages {
			select {
			case room <- struct{}{}:
			case <-stop:
				return
			}
			if !put(a, sendFrame(fmt.Sprint("req-", i), "beta-plugin", "order.lookup", nil, 30)) {
				return
			}
		}
	}()
	for i := range messages {
		select {
		case fr := <-a.pipe.toPlugin:
			if r := fr.GetReply(); r == nil || r.GetStatus() != "success" {
				t.Fatalf("reply %d: %v; want a success", i, fr)
			}
			<-room
		case err := <-failed:
			t.Fatal(err)
		case <-time.After(testTimeout):
			depth, _ := f.router.Bus().Depth(t.Context(), "beta-plugin")
			t.Fatalf("%d of %d replies; beta-plugin's inbox holds %d entries", i, messages, depth)
		}
	}
}

// TestDeliveryRuns checks the rules of a session's delivery runs: one at a time; a call
// back that comes while a run goes makes it look again before it ends (the call back
// that would otherwise be lost: the consumer calls once per registration); none starts
// once the deliveries have stopped.
func TestDeliveryRuns(t *testing.T) {
	rc := stream.NewRunControl()
	var started atomic.Int32
	looked := make(chan struct{})
	step := make(chan struct{})
	ended := make(chan struct{})
	run := func() {
		started.Add(1)
		defer func() { ended <- struct{}{} }()
		for {
			looked <- struct{}{}
			<-step
			if rc.Ends() {
				return
			}
		}
	}
	wait := func(what string) {
		t.Helper()
		select {
		case <-looked:
		case <-time.After(testTimeout):
			t.Fatalf("the run did not look (%s)", what)
		}
	}
	rc.Start(run)
	wait("started")
	rc.Start(run) // called back while the run goes
	step <- struct{}{}
	wait("called back during the run")
	step <- struct{}{} // nothing more: it ends
	<-ended
	rc.Start(run)
	wait("started again")
	step <- struct{}{}
	<-ended
	rc.Stop()
	if n := started.Load(); n != 2 {
		t.Fatalf("%d runs started; want 2", n)
	}
	rc.Start(run)
	if rc.Running() {
		t.Fatal("a run started after the deliveries stopped")
	}
}
