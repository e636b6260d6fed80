package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// timedAck is an ack and when the host read it.
type timedAck struct {
	ack *pluginhostv1.Ack
	at  time.Time
}

// While a slow OnEvent runs, its delivery is extended before the processing timeout runs
// out, so the host never delivers it again; a quick one is not extended at all.
func TestAutoExtend(t *testing.T) {
	t.Parallel()
	const work = 1600 * time.Millisecond // the slow handler's work: 1.6 processing timeouts
	type result struct {
		sentAt time.Time
		acks   []timedAck
	}
	results := make(chan result, 1)
	later := make(chan []*pluginhostv1.ConnectRequest, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcomeWith(&pluginhostv1.Welcome{ProcessingTimeoutSeconds: 1, MaxAttempts: 5}, nil)
		var res result
		res.sentAt = time.Now()
		s.deliver(&pluginhostv1.Deliver{DeliveryId: "slow", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_EVENT, Id: "e1", Type: "report.requested", Attempt: 1})
		s.deliver(&pluginhostv1.Deliver{DeliveryId: "quick", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_BROADCAST, Id: "b1", Type: "ping", Attempt: 1})
		for {
			a := s.ack()
			if a == nil {
				return nil
			}
			res.acks = append(res.acks, timedAck{a, time.Now()})
			if a.GetDeliveryId() == "slow" && a.GetAction() == pluginhostv1.AckAction_ACK_ACTION_DONE {
				break
			}
		}
		results <- res
		frames, _ := s.drain()
		later <- frames
		return nil
	})
	var attempts sync.Map
	s, run := startSession(t, h, plugin.Plugin{
		OnEvent: func(ctx context.Context, e plugin.Event) error {
			attempts.Store(e.ID, e.Attempt)
			select {
			case <-time.After(work):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
		OnBroadcast: func(ctx context.Context, b plugin.Event) error { return nil },
	})
	if s.ProcessingTimeout() != time.Second || s.MaxAttempts() != 5 {
		t.Errorf("ProcessingTimeout, MaxAttempts = %v, %d", s.ProcessingTimeout(), s.MaxAttempts())
	}
	res := receive(t, results, "the acks")
	run.cancel()
	if err := run.wait(t); err != nil {
		t.Fatal(err)
	}

	var extends []timedAck
	quickDone := false
	for _, a := range res.acks {
		switch {
		case a.ack.GetDeliveryId() == "quick":
			quickDone = a.ack.GetAction() == pluginhostv1.AckAction_ACK_ACTION_DONE
			if !quickDone {
				t.Errorf("the quick broadcast got %v", a.ack)
			}
		case a.ack.GetDeliveryId() == "slow" && a.ack.GetAction() == pluginhostv1.AckAction_ACK_ACTION_EXTEND:
			if a.ack.GetExtendSeconds() != 1 {
				t.Errorf("extension %v, want 1 second (the processing timeout)", a.ack)
			}
			extends = append(extends, a)
		}
	}
	if !quickDone {
		t.Error("the quick broadcast was not acknowledged")
	}
	// Ideally one every third of a second: 4 during 1.6 s. The property that matters is that
	// no second passes without one.
	if len(extends) < 2 {
		t.Errorf("%d extensions during %v of work with a 1s processing timeout, want several", len(extends), work)
	}
	last := res.sentAt
	for _, a := range append(extends, res.acks[len(res.acks)-1]) {
		if gap := a.at.Sub(last); gap >= 900*time.Millisecond {
			t.Errorf("%v without an extension: the host would have delivered again", gap)
		}
		last = a.at
	}
	for _, f := range receive(t, later, "the frames after the final ack") {
		if f.GetAck() != nil {
			t.Errorf("ack after the final one: %v", f.GetAck())
		}
	}
	if a, _ := attempts.Load("e1"); a != 1 {
		t.Errorf("event attempt = %v", a)
	}
}

func TestExtend(t *testing.T) {
	t.Parallel()
	acks := make(chan []*pluginhostv1.Ack, 1)
	replies := make(chan *pluginhostv1.DeliveryReply, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil) // no processing timeout: nothing is extended automatically
		s.deliver(&pluginhostv1.Deliver{DeliveryId: "d1", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_EVENT, Id: "e1", Type: "import.requested"})
		var got []*pluginhostv1.Ack
		for {
			a := s.ack()
			if a == nil {
				return nil
			}
			got = append(got, a)
			if a.GetAction() == pluginhostv1.AckAction_ACK_ACTION_DONE {
				break
			}
		}
		acks <- got
		s.deliver(&pluginhostv1.Deliver{DeliveryId: "d2", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE, Id: "m1", Type: "extend"})
		replies <- s.reply()
		return s.drainEOF()
	})
	handlerCtx := make(chan context.Context, 1)
	startPlugin(t, h, plugin.Plugin{
		OnEvent: func(ctx context.Context, e plugin.Event) error {
			for _, d := range []time.Duration{90 * time.Second, 0, time.Hour, 1500 * time.Millisecond} {
				if err := plugin.Extend(ctx, d); err != nil {
					t.Errorf("Extend(%v) = %v", d, err)
				}
			}
			wantCode(t, "Extend outside a handler", plugin.Extend(context.Background(), time.Second), "VALIDATION_ERROR")
			handlerCtx <- ctx
			return nil
		},
		OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
			wantCode(t, "Extend in OnMessage", plugin.Extend(ctx, time.Second), "VALIDATION_ERROR")
			return nil, nil
		},
	})
	got := receive(t, acks, "acks")
	var seconds []int32
	for _, a := range got[:len(got)-1] {
		if a.GetAction() != pluginhostv1.AckAction_ACK_ACTION_EXTEND || a.GetDeliveryId() != "d1" {
			t.Errorf("ack %v, want an extension of d1", a)
		}
		seconds = append(seconds, a.GetExtendSeconds())
	}
	if !slices.Equal(seconds, []int32{90, 1, 600, 2}) {
		t.Errorf("extensions = %v s, want 90 1 600 2", seconds)
	}
	// Once the handler has returned, there is nothing left to extend.
	ctx := receive(t, handlerCtx, "the handler's context")
	wantCode(t, "Extend after the handler returned", plugin.Extend(ctx, time.Second), "VALIDATION_ERROR")
	if r := receive(t, replies, "reply"); r.GetStatus() != "success" {
		t.Errorf("reply = %v", r)
	}
}

// The host's cancel frame cancels the context of the message's handler, with a cause that
// says why; a message given up on while it waits for a worker is not handled at all.
func TestCancelFrame(t *testing.T) {
	t.Parallel()
	started := make(chan string, 3)
	frames := make(chan []*pluginhostv1.ConnectRequest, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil)
		msg := func(deliveryID, id string) {
			s.deliver(&pluginhostv1.Deliver{
				DeliveryId: deliveryID, Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE, Id: id, Source: "billing", Type: "work",
				Deadline: timestamppb.New(time.Now().Add(time.Minute)),
			})
		}
		cancel := func(deliveryID, id, reason string) {
			s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Cancel{Cancel: &pluginhostv1.Cancel{DeliveryId: deliveryID, Id: id, Reason: reason}}})
		}
		wait := func(id string) bool {
			select {
			case got := <-started:
				if got != id {
					t.Errorf("handler started for %s, want %s", got, id)
				}
				return true
			case <-ctx.Done():
				return false
			}
		}
		msg("d1", "m1")
		if !wait("m1") {
			return nil
		}
		msg("d2", "m2")                         // waits for the only worker
		cancel("d2", "m2", "cancelled")         // given up on before it starts
		cancel("d99", "m99", "cancelled")       // unknown: ignored
		cancel("d1", "m1", "deadline_exceeded") // the running handler stops
		msg("d3", "m3")
		if !wait("m3") {
			return nil
		}
		cancel("d3", "m3", "cancelled")
		got, _ := s.drain()
		frames <- got
		return nil
	})
	causes := make(chan error, 2)
	run := startPlugin(t, h, plugin.Plugin{
		OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
			started <- m.ID
			select {
			case <-ctx.Done():
				causes <- context.Cause(ctx)
				return nil, ctx.Err()
			case <-time.After(waitTime):
				return nil, errors.New("not canceled")
			}
		},
	}, plugin.WithConcurrency(1))
	first := receive(t, causes, "m1's cause")
	if !errors.Is(first, context.DeadlineExceeded) {
		t.Errorf("cause = %v, want one wrapping context.DeadlineExceeded", first)
	}
	second := receive(t, causes, "m3's cause")
	if !errors.Is(second, context.Canceled) || second == context.Canceled {
		t.Errorf("cause = %v, want one that says the sender canceled, wrapping context.Canceled", second)
	}
	run.cancel()
	if err := run.wait(t); err != nil {
		t.Fatal(err)
	}
	for _, f := range receive(t, frames, "frames") {
		if f.GetReply().GetDeliveryId() == "d2" {
			t.Errorf("a message canceled before it started was answered: %v", f.GetReply())
		}
	}
	select {
	case id := <-started:
		t.Errorf("handler started for %s", id)
	default:
	}
}

// TestInlineHandlerWaitsForTheHost checks that a handler run by the goroutine that read its
// delivery (and so holds the receive side) can wait for the host's replies: Session.Send
// from OnMessage, and from OnEvent, hands the receive side over at once. The inline budget
// is an hour, so without that hand-off the replies would never be read and the test would
// time out.
func TestInlineHandlerWaitsForTheHost(t *testing.T) {
	t.Parallel()
	done := make(chan error, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil, "messages:send")
		done <- func() error {
			for i, kind := range []pluginhostv1.DeliveryKind{pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE, pluginhostv1.DeliveryKind_DELIVERY_KIND_EVENT} {
				id := fmt.Sprintf("d%d", i)
				s.deliver(&pluginhostv1.Deliver{DeliveryId: id, Kind: kind, Id: "m" + id, Source: "billing", Type: "work",
					Deadline: timestamppb.New(time.Now().Add(time.Minute))})
				req := s.request()
				if req.GetSend() == nil {
					return fmt.Errorf("want the handler's send, got %v", req)
				}
				s.answer(&pluginhostv1.RequestReply{RequestId: requestID(req), MessageId: "inner", Status: "success", Data: mustStruct(t, map[string]any{"n": 7})})
				switch kind {
				case pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE:
					if r := s.reply(); r.GetDeliveryId() != id || r.GetStatus() != "success" || r.GetData().AsMap()["n"] != 7.0 {
						return fmt.Errorf("reply %v, want success with the inner reply's data", r)
					}
				default:
					if a := s.ack(); a.GetDeliveryId() != id || a.GetAction() != pluginhostv1.AckAction_ACK_ACTION_DONE {
						return fmt.Errorf("ack %v, want done", a)
					}
				}
			}
			return nil
		}()
		_, err := s.drain()
		return err
	})
	send := func(ctx context.Context) (map[string]any, error) {
		r, err := plugin.SessionFromContext(ctx).Send(ctx, "billing", "inner", nil)
		return r.Data, err
	}
	run := startPlugin(t, h, plugin.Plugin{
		OnMessage: func(ctx context.Context, _ plugin.Message) (map[string]any, error) { return send(ctx) },
		OnEvent: func(ctx context.Context, _ plugin.Event) error {
			_, err := send(ctx)
			return err
		},
	}, plugin.WithInlineBudget(time.Hour))
	if err := receive(t, done, "the host's script"); err != nil {
		t.Fatal(err)
	}
	run.cancel()
	if err := run.wait(t); err != nil {
		t.Fatal(err)
	}
}

// TestInlineHandlerBudget checks that a handler that holds the receive side and waits for
// something else than the host (here another delivery) does not hold it past its budget:
// a successor reads on, and the second delivery starts while the first one waits for it.
func TestInlineHandlerBudget(t *testing.T) {
	t.Parallel()
	replies := make(chan []*pluginhostv1.DeliveryReply, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil)
		for _, id := range []string{"d1", "d2"} {
			s.deliver(&pluginhostv1.Deliver{DeliveryId: id, Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE, Id: "m" + id, Source: "billing", Type: "work",
				Deadline: timestamppb.New(time.Now().Add(time.Minute))})
		}
		replies <- []*pluginhostv1.DeliveryReply{s.reply(), s.reply()}
		_, err := s.drain()
		return err
	})
	second := make(chan struct{})
	run := startPlugin(t, h, plugin.Plugin{
		OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
			if m.ID == "md2" {
				close(second)
				return nil, nil
			}
			select {
			case <-second:
				return nil, nil
			case <-time.After(waitTime):
				return nil, errors.New("the second delivery did not start while the first one ran")
			}
		},
	}, plugin.WithConcurrency(2))
	for _, r := range receive(t, replies, "the replies") {
		if r.GetStatus() != "success" {
			t.Errorf("delivery %s answered %s: %s", r.GetDeliveryId(), r.GetStatus(), r.GetErrorMessage())
		}
	}
	run.cancel()
	if err := run.wait(t); err != nil {
		t.Fatal(err)
	}
}
