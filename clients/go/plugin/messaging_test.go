package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// startSession runs p against h and returns its Session once OnStart has run.
func startSession(t *testing.T, h *fakeHost, p plugin.Plugin, opts ...plugin.Option) (*plugin.Session, *runningPlugin) {
	t.Helper()
	sessions := make(chan *plugin.Session, 1)
	p.OnStart = func(ctx context.Context, s *plugin.Session) error {
		sessions <- s
		return nil
	}
	run := startPlugin(t, h, p, opts...)
	return receive(t, sessions, "OnStart"), run
}

// testContext bounds a call made by a test.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTime)
	t.Cleanup(cancel)
	return ctx
}

// wantCode checks that err is an *plugin.Error with code.
func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	var pe *plugin.Error
	if !errors.As(err, &pe) || pe.Code != code || plugin.ErrorCode(err) != code {
		t.Errorf("%s: error %v, want an *plugin.Error with code %s", what, err, code)
	}
}

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestErrorCode(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("charging: %w", &plugin.Error{Code: "PLUGIN_NOT_FOUND", Message: "plugin billing is not installed"})
	if got := plugin.ErrorCode(err); got != "PLUGIN_NOT_FOUND" {
		t.Errorf("ErrorCode = %q", got)
	}
	if got := err.Error(); got != "charging: PLUGIN_NOT_FOUND: plugin billing is not installed" {
		t.Errorf("Error() = %q", got)
	}
	for _, err := range []error{nil, errors.New("plain"), context.Canceled} {
		if got := plugin.ErrorCode(err); got != "" {
			t.Errorf("ErrorCode(%v) = %q, want none", err, got)
		}
	}
	if got := plugin.ErrorCode(errorWithReason(connect.CodePermissionDenied, "PLUGIN_PERMISSION_DENIED")); got != "PLUGIN_PERMISSION_DENIED" {
		t.Errorf("ErrorCode of the host's refusal = %q", got)
	}
}

func TestSend(t *testing.T) {
	t.Parallel()
	frames := make(chan []*pluginhostv1.ConnectRequest, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil, "messages:send")
		frames <- s.serveRequests(func(f *pluginhostv1.ConnectRequest) *pluginhostv1.RequestReply {
			snd := f.GetSend()
			switch snd.GetMessageType() {
			case "sum":
				n, _ := snd.GetData().AsMap()["n"].(float64)
				return &pluginhostv1.RequestReply{MessageId: "msg-1", Status: "success", Data: mustStruct(t, map[string]any{
					"sum": n + 1, "nested": map[string]any{"list": []any{1, "a", nil, true}},
				})}
			case "fail":
				return &pluginhostv1.RequestReply{MessageId: "msg-2", Status: "error", ErrorMessage: "unknown customer", Data: mustStruct(t, map[string]any{"customer": "c1"})}
			case "lost":
				return &pluginhostv1.RequestReply{ErrorCode: "PLUGIN_NOT_FOUND", ErrorMessage: "plugin billing is not installed"}
			case "slow":
				return &pluginhostv1.RequestReply{ErrorCode: "PLUGIN_COMMUNICATION_TIMEOUT", ErrorMessage: "no reply within 3s"}
			}
			return &pluginhostv1.RequestReply{ErrorCode: "VALIDATION_ERROR", ErrorMessage: "unexpected message type"}
		})
		return nil
	})
	s, run := startSession(t, h, plugin.Plugin{})

	t.Run("success", func(t *testing.T) {
		r, err := s.Send(t.Context(), "billing", "sum", map[string]any{"n": 2, "tags": []string{"x"}})
		want := map[string]any{"sum": 3.0, "nested": map[string]any{"list": []any{1.0, "a", nil, true}}}
		if err != nil || r.MessageID != "msg-1" || r.Status != "success" || r.Error != "" || !equalJSON(r.Data, want) {
			t.Errorf("Send = %+v, %v; want success with %v", r, err, want)
		}
	})
	t.Run("target failed", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		r, err := s.Send(ctx, "billing", "fail", nil)
		if err != nil || r.MessageID != "msg-2" || r.Status != "error" || r.Error != "unknown customer" || r.Data["customer"] != "c1" {
			t.Errorf("Send = %+v, %v; want a reply with status error and no error", r, err)
		}
	})
	t.Run("host error", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		r, err := s.Send(ctx, "billing", "lost", nil)
		wantCode(t, "Send", err, "PLUGIN_NOT_FOUND")
		if pe := (*plugin.Error)(nil); errors.As(err, &pe) && pe.Message != "plugin billing is not installed" {
			t.Errorf("message = %q", pe.Message)
		}
		if r.Status != "" || r.Data != nil {
			t.Errorf("Reply = %+v, want zero on error", r)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 2500*time.Millisecond)
		defer cancel()
		_, err := s.Send(ctx, "billing", "slow", nil)
		wantCode(t, "Send", err, "PLUGIN_COMMUNICATION_TIMEOUT")
	})
	run.cancel()
	if err := run.wait(t); err != nil {
		t.Fatal(err)
	}

	// The host's timeout comes from the context's deadline, in whole seconds rounded up.
	got := map[string]*pluginhostv1.Send{}
	for _, f := range receive(t, frames, "requests") {
		got[f.GetSend().GetMessageType()] = f.GetSend()
	}
	for typ, want := range map[string]int32{"sum": 30, "fail": 10, "lost": 300, "slow": 3} {
		if g := got[typ]; g.GetTimeoutSeconds() != want || g.GetTargetPlugin() != "billing" {
			t.Errorf("send %s = %v, want timeout_seconds %d", typ, g, want)
		}
	}
	if d := got["sum"].GetData().AsMap(); !equalJSON(d, map[string]any{"n": 2.0, "tags": []any{"x"}}) {
		t.Errorf("data sent = %v", d)
	}
	if got["fail"].GetData() != nil {
		t.Errorf("nil data sent as %v", got["fail"].GetData())
	}
	ids := map[string]bool{}
	for _, g := range got {
		ids[g.GetRequestId()] = true
	}
	if len(ids) != 4 {
		t.Errorf("request ids are not unique: %v", ids)
	}
}

// Concurrent requests from many goroutines each get their own reply, whatever the order of
// the host's replies.
func TestConcurrentRequests(t *testing.T) {
	t.Parallel()
	const n = 32
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil)
		var reqs []*pluginhostv1.ConnectRequest
		for range n {
			f := s.request()
			if f == nil {
				return nil
			}
			reqs = append(reqs, f)
		}
		for _, f := range slices.Backward(reqs) {
			s.answer(&pluginhostv1.RequestReply{RequestId: requestID(f), Status: "success", Data: f.GetSend().GetData()})
		}
		return s.drainEOF()
	})
	s, _ := startSession(t, h, plugin.Plugin{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, err := s.Send(testContext(t), "echo-plugin", "echo", map[string]any{"i": i})
			if err != nil || r.Data["i"] != float64(i) {
				t.Errorf("Send %d = %+v, %v", i, r, err)
			}
		})
	}
	wg.Wait()
}

func TestSendAbandoned(t *testing.T) {
	t.Parallel()
	type seen struct{ send, cancel *pluginhostv1.ConnectRequest }
	seenCh := make(chan seen, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil)
		snd := s.request() // left unanswered
		cancel := s.request()
		seenCh <- seen{snd, cancel}
		// A reply that comes too late is ignored.
		s.answer(&pluginhostv1.RequestReply{RequestId: requestID(snd), Status: "success"})
		s.serveRequests(func(*pluginhostv1.ConnectRequest) *pluginhostv1.RequestReply {
			return &pluginhostv1.RequestReply{Status: "success", MessageId: "msg-2"}
		})
		return nil
	})
	s, _ := startSession(t, h, plugin.Plugin{})
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err := s.Send(ctx, "billing", "charge", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Send = %v, want the context's error", err)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("Send returned %v after its context ended", d)
	}
	got := receive(t, seenCh, "send and cancel_send")
	if got.send.GetSend().GetTimeoutSeconds() != 1 {
		t.Errorf("timeout_seconds = %d, want 1", got.send.GetSend().GetTimeoutSeconds())
	}
	if c := got.cancel.GetCancelSend(); c == nil || c.GetRequestId() != got.send.GetSend().GetRequestId() {
		t.Errorf("after the context ended the host got %v, want cancel_send of %s", got.cancel, got.send.GetSend().GetRequestId())
	}
	if r, err := s.Send(testContext(t), "billing", "charge", nil); err != nil || r.MessageID != "msg-2" {
		t.Errorf("Send after an abandoned one = %+v, %v", r, err)
	}
}

func TestConnectionLoss(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	second := make(chan []*pluginhostv1.ConnectRequest, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		if s.n == 1 {
			s.welcome(nil)
			s.request() // never answered: the connection breaks first
			return connect.NewError(connect.CodeUnavailable, errors.New("host restarting"))
		}
		select { // the plugin stays disconnected until the test says
		case <-gate:
		case <-ctx.Done():
			return nil
		}
		s.welcome(nil)
		second <- s.serveRequests(func(f *pluginhostv1.ConnectRequest) *pluginhostv1.RequestReply {
			return &pluginhostv1.RequestReply{Id: "evt-1", Recipients: []string{"audit-plugin"}}
		})
		return nil
	})
	s, run := startSession(t, h, plugin.Plugin{})

	begin := time.Now()
	_, err := s.Send(testContext(t), "billing", "charge", nil)
	wantCode(t, "Send across a lost connection", err, "PLUGIN_UNAVAILABLE")
	if pe := (*plugin.Error)(nil); errors.As(err, &pe) && pe.Message != "connection to the host lost" {
		t.Errorf("message = %q", pe.Message)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("the pending request failed %v after the connection broke", d)
	}

	// While disconnected, a request waits for the next connection, bounded by its context.
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.Emit(ctx, "never.sent", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Emit while disconnected = %v, want the context's error", err)
	}
	results := make(chan error, 1)
	go func() {
		res, err := s.Emit(testContext(t), "after.reconnect", map[string]any{"k": "v"})
		if err == nil && (res.ID != "evt-1" || !slices.Equal(res.Recipients, []string{"audit-plugin"})) {
			err = fmt.Errorf("result %+v", res)
		}
		results <- err
	}()
	close(gate)
	if err := receive(t, results, "Emit after reconnecting"); err != nil {
		t.Errorf("Emit after reconnecting: %v", err)
	}
	run.cancel()
	if err := run.wait(t); err != nil {
		t.Fatal(err)
	}
	frames := receive(t, second, "requests on the second connection")
	if len(frames) != 1 || frames[0].GetEmit().GetType() != "after.reconnect" {
		t.Errorf("requests on the second connection = %v, want only the emit made after the loss", frames)
	}

	// Once Run has returned, requests fail at once.
	begin = time.Now()
	_, err = s.Discover(testContext(t), plugin.Query{})
	wantCode(t, "Discover after Run", err, "PLUGIN_UNAVAILABLE")
	if d := time.Since(begin); d > time.Second {
		t.Errorf("Discover after Run took %v", d)
	}
}

func TestEmitAndBroadcast(t *testing.T) {
	t.Parallel()
	frames := make(chan []*pluginhostv1.ConnectRequest, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil, "events:emit", "messages:send")
		s.deliver(&pluginhostv1.Deliver{DeliveryId: "d1", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_EVENT, Id: "e1", Type: "order.placed"})
		frames <- s.serveRequests(func(f *pluginhostv1.ConnectRequest) *pluginhostv1.RequestReply {
			switch {
			case f.GetEmit().GetType() == "forbidden.event":
				return &pluginhostv1.RequestReply{ErrorCode: "PLUGIN_PERMISSION_DENIED", ErrorMessage: "events:emit not granted"}
			case f.GetEmit() != nil:
				return &pluginhostv1.RequestReply{Id: "evt-" + f.GetEmit().GetType(), Recipients: []string{"a-plugin", "b-plugin"}}
			case f.GetBroadcast() != nil:
				return &pluginhostv1.RequestReply{Id: "brd-1", Recipients: []string{"c-plugin"}}
			}
			return &pluginhostv1.RequestReply{ErrorCode: "VALIDATION_ERROR", ErrorMessage: "unexpected"}
		})
		return nil
	})
	handled := make(chan error, 1)
	s, run := startSession(t, h, plugin.Plugin{
		// Requests work from handlers too.
		OnEvent: func(ctx context.Context, e plugin.Event) error {
			res, err := plugin.SessionFromContext(ctx).Emit(ctx, "order.audited", map[string]any{"order": e.ID})
			if err == nil && res.ID != "evt-order.audited" {
				err = fmt.Errorf("result %+v", res)
			}
			handled <- err
			return err
		},
	})
	if err := receive(t, handled, "Emit from OnEvent"); err != nil {
		t.Errorf("Emit from OnEvent: %v", err)
	}
	res, err := s.Emit(testContext(t), "user.created", map[string]any{"user": map[string]any{"id": "u1", "roles": []string{"admin"}}})
	if err != nil || res.ID != "evt-user.created" || !slices.Equal(res.Recipients, []string{"a-plugin", "b-plugin"}) {
		t.Errorf("Emit = %+v, %v", res, err)
	}
	_, err = s.Emit(testContext(t), "forbidden.event", nil)
	wantCode(t, "Emit", err, "PLUGIN_PERMISSION_DENIED")
	b, err := s.Broadcast(testContext(t), "cache.flush", map[string]any{"all": true}, plugin.BroadcastOptions{
		Categories: []string{"storage"}, Exclude: []string{"analytics-plugin"},
	})
	if err != nil || b.ID != "brd-1" || !slices.Equal(b.Recipients, []string{"c-plugin"}) {
		t.Errorf("Broadcast = %+v, %v", b, err)
	}
	run.cancel()
	if err := run.wait(t); err != nil {
		t.Fatal(err)
	}
	got := receive(t, frames, "requests")
	if len(got) != 4 {
		t.Fatalf("%d requests, want 4: %v", len(got), got)
	}
	if e := got[1].GetEmit(); e.GetType() != "user.created" || !equalJSON(e.GetData().AsMap(), map[string]any{"user": map[string]any{"id": "u1", "roles": []any{"admin"}}}) {
		t.Errorf("emit = %v", e)
	}
	want := &pluginhostv1.BroadcastSend{
		RequestId: requestID(got[3]), MessageType: "cache.flush", Data: mustStruct(t, map[string]any{"all": true}),
		TargetCategories: []string{"storage"}, ExcludePlugins: []string{"analytics-plugin"},
	}
	if !proto.Equal(got[3].GetBroadcast(), want) {
		t.Errorf("broadcast = %v, want %v", got[3].GetBroadcast(), want)
	}
}

func TestSubscribe(t *testing.T) {
	t.Parallel()
	hellos := make(chan *pluginhostv1.Hello, 2)
	frames := make(chan []*pluginhostv1.ConnectRequest, 1)
	reconnected := make(chan struct{})
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		hellos <- s.hello
		s.welcome(nil, "events:subscribe")
		if s.n > 1 {
			s.healthCheck("hc")
			s.healthReport()
			close(reconnected)
			return s.drainEOF()
		}
		var seen []*pluginhostv1.ConnectRequest
		for {
			f := s.request()
			if f == nil {
				return nil
			}
			rep := &pluginhostv1.RequestReply{RequestId: requestID(f)}
			if f.GetEmit() != nil { // the plugin made its changes: break the connection
				s.answer(rep)
				frames <- seen
				return connect.NewError(connect.CodeUnavailable, errors.New("host restarting"))
			}
			seen = append(seen, f)
			if slices.Contains(f.GetSubscribe().GetAdd(), "secret.*") {
				rep.ErrorCode, rep.ErrorMessage = "PLUGIN_PERMISSION_DENIED", "not allowed"
			}
			s.answer(rep)
		}
	})
	errs := make(chan error, 1)
	startPlugin(t, h, plugin.Plugin{
		Subscriptions: []string{"user.*"},
		// Requests work from OnStart.
		OnStart: func(ctx context.Context, s *plugin.Session) error {
			errs <- func() error {
				if err := s.Subscribe(ctx, "payment.*", "order.*", "order.*"); err != nil {
					return err
				}
				if err := s.Unsubscribe(ctx, "user.*"); err != nil {
					return err
				}
				if err := s.Subscribe(ctx, "secret.*"); plugin.ErrorCode(err) != "PLUGIN_PERMISSION_DENIED" {
					return fmt.Errorf("a refused Subscribe returned %v", err)
				}
				if err := s.Subscribe(ctx, "no spaces"); plugin.ErrorCode(err) != "VALIDATION_ERROR" {
					return fmt.Errorf("an invalid pattern returned %v", err)
				}
				if err := s.Subscribe(ctx); err != nil {
					return fmt.Errorf("no patterns: %v", err)
				}
				_, err := s.Emit(ctx, "subscriptions.changed", nil)
				return err
			}()
			return nil
		},
	})
	if err := receive(t, errs, "subscription changes"); err != nil {
		t.Fatal(err)
	}
	if h1 := receive(t, hellos, "first hello"); !slices.Equal(h1.GetSubscriptions(), []string{"user.*"}) {
		t.Errorf("first hello subscriptions = %v", h1.GetSubscriptions())
	}
	// The reconnection's hello carries what the host accepted, and nothing it refused.
	if h2 := receive(t, hellos, "second hello"); !slices.Equal(h2.GetSubscriptions(), []string{"order.*", "payment.*"}) {
		t.Errorf("hello after reconnecting subscriptions = %v, want order.* payment.*", h2.GetSubscriptions())
	}
	receive(t, reconnected, "the reconnection")
	got := receive(t, frames, "subscribe frames")
	want := []*pluginhostv1.Subscribe{
		{Add: []string{"order.*", "payment.*"}},
		{Remove: []string{"user.*"}},
		{Add: []string{"secret.*"}},
	}
	if len(got) != len(want) {
		t.Fatalf("requests = %v", got)
	}
	for i, w := range want {
		w.RequestId = requestID(got[i])
		if !proto.Equal(got[i].GetSubscribe(), w) {
			t.Errorf("subscribe %d = %v, want %v", i, got[i].GetSubscribe(), w)
		}
	}
}

// Requests the host would reject are refused before anything is sent, so that the stream
// (and every other request on it) survives.
func TestInvalidRequests(t *testing.T) {
	t.Parallel()
	frames := make(chan []*pluginhostv1.ConnectRequest, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil)
		frames <- s.serveRequests(func(*pluginhostv1.ConnectRequest) *pluginhostv1.RequestReply {
			return &pluginhostv1.RequestReply{Id: "evt-1"}
		})
		return nil
	})
	s, run := startSession(t, h, plugin.Plugin{})
	ctx := testContext(t)
	many := make([]string, 300)
	for i := range many {
		many[i] = "p" + strconv.Itoa(i) + ".*"
	}
	cases := map[string]func() error{
		"send to a bad id": func() error { _, err := s.Send(ctx, "Billing!", "charge", nil); return err },
		"send a bad type":  func() error { _, err := s.Send(ctx, "billing", "1charge", nil); return err },
		"unencodable data": func() error { _, err := s.Send(ctx, "billing", "charge", map[string]any{"f": func() {}}); return err },
		"emit a bad type":  func() error { _, err := s.Emit(ctx, "user created", nil); return err },
		"broadcast a bad type": func() error {
			_, err := s.Broadcast(ctx, "", nil, plugin.BroadcastOptions{})
			return err
		},
		"too many categories": func() error {
			_, err := s.Broadcast(ctx, "flush", nil, plugin.BroadcastOptions{Categories: many})
			return err
		},
		"too many patterns":  func() error { return s.Subscribe(ctx, many...) },
		"empty key":          func() error { _, _, err := s.KV().Get(ctx, ""); return err },
		"long key":           func() error { _, err := s.KV().Put(ctx, string(make([]rune, 257)), 1); return err },
		"invalid UTF-8 key":  func() error { _, err := s.KV().Delete(ctx, "\xff"); return err },
		"long TTL":           func() error { _, err := s.KV().Put(ctx, "k", 1, plugin.WithTTL(31*24*time.Hour)); return err },
		"negative version":   func() error { _, _, err := s.KV().CompareAndSet(ctx, "k", 1, -1); return err },
		"DeleteIf version 0": func() error { _, err := s.KV().DeleteIf(ctx, "k", 0); return err },
		"share with a bad id": func() error {
			_, err := s.KV().Share(ctx, "Not An Id")
			return err
		},
		"bad owner":      func() error { _, _, err := s.SharedKV("X").Get(ctx, "k"); return err },
		"long service":   func() error { _, err := s.Discover(ctx, plugin.Query{Service: string(make([]byte, 129))}); return err },
		"unencodable KV": func() error { _, err := s.KV().Put(ctx, "k", make(chan int)); return err },
	}
	for name, call := range cases {
		wantCode(t, name, call(), "VALIDATION_ERROR")
	}
	if _, err := s.Emit(ctx, "still.connected", nil); err != nil {
		t.Errorf("Emit after the refused requests: %v", err)
	}
	run.cancel()
	if err := run.wait(t); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, frames, "requests"); len(got) != 1 || got[0].GetEmit().GetType() != "still.connected" {
		t.Errorf("the host received %v, want only the valid emit", got)
	}
	if n := h.hellos.Load(); n != 1 {
		t.Errorf("%d hellos, want 1: the stream must survive", n)
	}
}
