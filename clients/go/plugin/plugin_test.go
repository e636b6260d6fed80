package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	nexus "github.com/nexus-platform/nexus/clients/go"
	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

func TestHelloAndWelcome(t *testing.T) {
	t.Parallel()
	type seen struct {
		hello *pluginhostv1.Hello
		auth  string
	}
	hellos := make(chan seen, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		hellos <- seen{s.hello, s.header.Get("Authorization")}
		s.welcome(map[string]any{"batch_size": 50, "api_key": "s3cret"}, "events:read", "messages:send")
		return s.drainEOF()
	})
	sessions := make(chan *plugin.Session, 1)
	run := startPlugin(t, h, plugin.Plugin{
		Version:       "1.2.0",
		Services:      []string{"analytics"},
		MessageTypes:  []string{"track", "report"},
		Subscriptions: []string{"user.*"},
		OnStart: func(ctx context.Context, s *plugin.Session) error {
			if plugin.SessionFromContext(ctx) != s {
				t.Error("OnStart's context does not carry the session")
			}
			sessions <- s
			return nil
		},
	}, plugin.WithInstanceID("worker-1"))

	got := receive(t, hellos, "hello")
	want := &pluginhostv1.Hello{
		PluginId:      testPluginID,
		InstanceId:    "worker-1",
		Version:       "1.2.0",
		Sdk:           "nexus-go/" + plugin.SDKVersion,
		Services:      []string{"analytics"},
		MessageTypes:  []string{"track", "report"},
		Subscriptions: []string{"user.*"},
	}
	if !proto.Equal(got.hello, want) {
		t.Errorf("hello = %v, want %v", got.hello, want)
	}
	if got.auth != "Bearer "+testToken {
		t.Errorf("Authorization = %q", got.auth)
	}

	s := receive(t, sessions, "OnStart")
	if cfg := s.Config(); cfg["batch_size"] != 50.0 || cfg["api_key"] != "s3cret" || len(cfg) != 2 {
		t.Errorf("Config() = %v", cfg)
	}
	s.Config()["batch_size"] = 1.0 // a copy: must not change the session's
	if s.Config()["batch_size"] != 50.0 {
		t.Error("Config() returned the session's own map")
	}
	if p := s.Permissions(); !slices.Equal(p, []string{"events:read", "messages:send"}) || !s.HasPermission("events:read") || s.HasPermission("admin") {
		t.Errorf("Permissions() = %v", p)
	}
	if s.PluginID() != testPluginID || s.InstanceID() != "worker-1" || s.SessionID() != "sess-1" || s.HostVersion() != "9.9.9" {
		t.Errorf("identity = %q %q %q %q", s.PluginID(), s.InstanceID(), s.SessionID(), s.HostVersion())
	}
	run.cancel()
	if err := run.wait(t); err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
}

func TestHealthCheck(t *testing.T) {
	t.Parallel()
	str := func(s string) *string { return &s }
	num := func(f float64) *float64 { return &f }
	cases := []struct {
		name    string
		handler func(context.Context) []plugin.Check
		want    []*pluginhostv1.Check
	}{{
		name: "no handler",
		want: []*pluginhostv1.Check{{Name: "sdk", Status: "pass"}},
	}, {
		name: "custom checks",
		handler: func(ctx context.Context) []plugin.Check {
			return []plugin.Check{
				plugin.Pass("database").WithResponseTime(1500 * time.Microsecond),
				plugin.Warn("queue", "backlog growing").WithValue(900, 1000, "messages"),
				plugin.Fail("cache", "unreachable"),
			}
		},
		want: []*pluginhostv1.Check{
			{Name: "database", Status: "pass", ResponseTimeMs: num(1.5)},
			{Name: "queue", Status: "warning", Details: str("backlog growing"), Value: num(900), Threshold: num(1000), Unit: str("messages")},
			{Name: "cache", Status: "fail", Details: str("unreachable")},
		},
	}, {
		name:    "no checks returned",
		handler: func(context.Context) []plugin.Check { return nil },
		want:    []*pluginhostv1.Check{{Name: "sdk", Status: "pass"}},
	}, {
		name:    "invalid check",
		handler: func(context.Context) []plugin.Check { return []plugin.Check{{Status: "great"}} },
		want:    []*pluginhostv1.Check{{Name: "unnamed", Status: "fail"}},
	}, {
		name:    "panicking handler",
		handler: func(context.Context) []plugin.Check { panic("boom") },
		want:    []*pluginhostv1.Check{{Name: "sdk", Status: "fail", Details: str("the health check handler failed")}},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reports := make(chan *pluginhostv1.HealthReport, 1)
			h := startHost(t, func(ctx context.Context, s *hostStream) error {
				s.welcome(nil)
				s.healthCheck("hc-1")
				reports <- s.healthReport()
				return s.drainEOF()
			})
			startPlugin(t, h, plugin.Plugin{OnHealthCheck: tc.handler})
			got := receive(t, reports, "health report")
			want := &pluginhostv1.HealthReport{CheckId: "hc-1", Checks: tc.want}
			if !proto.Equal(got, want) {
				t.Errorf("report = %v, want %v", got, want)
			}
		})
	}
}

func TestHealthCheckWhileStarting(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	reports := make(chan *pluginhostv1.HealthReport, 2)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil)
		s.healthCheck("hc-1")
		reports <- s.healthReport()
		close(release)
		s.healthCheck("hc-2")
		reports <- s.healthReport()
		return s.drainEOF()
	})
	startPlugin(t, h, plugin.Plugin{
		OnStart: func(ctx context.Context, s *plugin.Session) error {
			<-release
			return nil
		},
		OnHealthCheck: func(context.Context) []plugin.Check { return []plugin.Check{plugin.Pass("ready")} },
	})
	starting := "starting"
	if r, want := receive(t, reports, "first report"), []*pluginhostv1.Check{{Name: "sdk", Status: "warning", Details: &starting}}; !proto.Equal(r, &pluginhostv1.HealthReport{CheckId: "hc-1", Checks: want}) {
		t.Errorf("report during OnStart = %v", r)
	}
	if r := receive(t, reports, "second report"); !proto.Equal(r, &pluginhostv1.HealthReport{CheckId: "hc-2", Checks: []*pluginhostv1.Check{{Name: "ready", Status: "pass"}}}) {
		t.Errorf("report after OnStart = %v", r)
	}
}

func TestSlowHandlerDoesNotBlockHealthChecks(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}, 2), make(chan struct{})
	reports := make(chan *pluginhostv1.HealthReport, 1)
	replies := make(chan []*pluginhostv1.DeliveryReply, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil)
		s.deliver(&pluginhostv1.Deliver{DeliveryId: "d1", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE, Id: "m1", Type: "slow"})
		s.deliver(&pluginhostv1.Deliver{DeliveryId: "d2", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE, Id: "m2", Type: "slow"})
		select {
		case <-entered:
		case <-ctx.Done():
			return nil
		}
		s.healthCheck("hc-1")
		reports <- s.healthReport()
		close(release)
		replies <- []*pluginhostv1.DeliveryReply{s.reply(), s.reply()}
		return s.drainEOF()
	})
	var running, maxRunning atomic.Int32
	startPlugin(t, h, plugin.Plugin{
		OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
			n := running.Add(1)
			defer running.Add(-1)
			if n > maxRunning.Load() {
				maxRunning.Store(n)
			}
			entered <- struct{}{}
			select {
			case <-release:
				return map[string]any{"id": m.ID}, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	}, plugin.WithConcurrency(1))
	if r := receive(t, reports, "health report while a handler is busy"); r.GetCheckId() != "hc-1" {
		t.Errorf("report = %v", r)
	}
	for _, r := range receive(t, replies, "replies") {
		if r.GetStatus() != "success" {
			t.Errorf("reply = %v", r)
		}
	}
	if maxRunning.Load() != 1 {
		t.Errorf("%d handlers ran at once with WithConcurrency(1)", maxRunning.Load())
	}
}

func TestConfigChange(t *testing.T) {
	t.Parallel()
	acks := make(chan *pluginhostv1.ConfigAck, 1)
	proceed := make(chan struct{})
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(map[string]any{"batch_size": 50, "region": "eu"})
		for i, size := range []float64{80, 500} {
			cfg, _ := structpb.NewStruct(map[string]any{"batch_size": size, "region": "eu"})
			s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_ConfigChanged{ConfigChanged: &pluginhostv1.ConfigChanged{
				Config: cfg, UpdatedFields: []string{"batch_size"}, RestartRequired: i == 1, ChangeId: fmt.Sprintf("c%d", i+1),
			}}})
			acks <- s.configAck()
			select {
			case <-proceed:
			case <-ctx.Done():
				return nil
			}
		}
		return s.drainEOF()
	})
	sessions := make(chan *plugin.Session, 1)
	changes := make(chan plugin.ConfigChange, 2)
	startPlugin(t, h, plugin.Plugin{
		OnStart: func(ctx context.Context, s *plugin.Session) error {
			sessions <- s
			return nil
		},
		OnConfigChange: func(ctx context.Context, c plugin.ConfigChange) error {
			if got := plugin.SessionFromContext(ctx).Config()["batch_size"]; got != 50.0 && got != 80.0 {
				t.Errorf("during OnConfigChange, Config() has batch_size %v", got)
			}
			changes <- c
			if c.Config["batch_size"].(float64) > 100 {
				return errors.New("batch_size must be at most 100")
			}
			return nil
		},
	})
	s := receive(t, sessions, "OnStart")

	ack := receive(t, acks, "first config_ack")
	if want := (&pluginhostv1.ConfigAck{ChangeId: "c1", Accepted: true}); !proto.Equal(ack, want) {
		t.Errorf("ack = %v, want %v", ack, want)
	}
	if c := receive(t, changes, "first change"); c.Config["batch_size"] != 80.0 || !slices.Equal(c.UpdatedFields, []string{"batch_size"}) || c.RestartRequired {
		t.Errorf("change = %+v", c)
	}
	if got := s.Config()["batch_size"]; got != 80.0 {
		t.Errorf("after an accepted change, batch_size = %v, want 80", got)
	}
	proceed <- struct{}{}

	ack = receive(t, acks, "second config_ack")
	if want := (&pluginhostv1.ConfigAck{ChangeId: "c2", Error: "batch_size must be at most 100"}); !proto.Equal(ack, want) {
		t.Errorf("ack = %v, want %v", ack, want)
	}
	if c := receive(t, changes, "second change"); !c.RestartRequired {
		t.Errorf("change = %+v, want RestartRequired", c)
	}
	if got := s.Config()["batch_size"]; got != 80.0 {
		t.Errorf("after a rejected change, batch_size = %v, want 80", got)
	}
	proceed <- struct{}{}
}

func TestConfigChangeWithoutHandlerIsAccepted(t *testing.T) {
	t.Parallel()
	acks := make(chan *pluginhostv1.ConfigAck, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(map[string]any{"level": "info"})
		cfg, _ := structpb.NewStruct(map[string]any{"level": "debug"})
		s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_ConfigChanged{ConfigChanged: &pluginhostv1.ConfigChanged{
			Config: cfg, UpdatedFields: []string{"level"}, ChangeId: "c1",
		}}})
		acks <- s.configAck()
		return s.drainEOF()
	})
	sessions := make(chan *plugin.Session, 1)
	startPlugin(t, h, plugin.Plugin{OnStart: func(ctx context.Context, s *plugin.Session) error {
		sessions <- s
		return nil
	}})
	s := receive(t, sessions, "OnStart")
	if ack := receive(t, acks, "config_ack"); !ack.GetAccepted() || ack.GetChangeId() != "c1" {
		t.Errorf("ack = %v", ack)
	}
	if got := s.Config()["level"]; got != "debug" {
		t.Errorf("level = %v, want debug", got)
	}
}

func TestMessages(t *testing.T) {
	t.Parallel()
	deadline := time.Now().Add(10 * time.Second) // before the test context's own deadline
	data, _ := structpb.NewStruct(map[string]any{"n": 2, "tags": []any{"x"}})
	cases := []struct {
		name    string
		deliver *pluginhostv1.Deliver
		check   func(t *testing.T, r *pluginhostv1.DeliveryReply)
	}{{
		name:    "reply with data",
		deliver: &pluginhostv1.Deliver{Id: "m1", Source: "billing", Type: "sum", Data: data, Attempt: 2},
		check: func(t *testing.T, r *pluginhostv1.DeliveryReply) {
			want := map[string]any{"sum": 3.0, "typed": []any{"a", "b"}, "id": "m1", "source": "billing", "attempt": 2.0}
			if r.GetStatus() != "success" || r.GetErrorMessage() != "" || !equalJSON(r.GetData().AsMap(), want) {
				t.Errorf("reply = %v, want success with %v", r, want)
			}
		},
	}, {
		name:    "handler error",
		deliver: &pluginhostv1.Deliver{Id: "m2", Source: "billing", Type: "fail"},
		check: func(t *testing.T, r *pluginhostv1.DeliveryReply) {
			if r.GetStatus() != "error" || r.GetErrorMessage() != "unknown customer" || r.GetData() != nil {
				t.Errorf("reply = %v, want error %q", r, "unknown customer")
			}
		},
	}, {
		name:    "deadline reaches the handler",
		deliver: &pluginhostv1.Deliver{Id: "m3", Type: "deadline", Deadline: timestamppb.New(deadline)},
		check: func(t *testing.T, r *pluginhostv1.DeliveryReply) {
			if r.GetStatus() != "success" {
				t.Errorf("reply = %v", r)
			}
		},
	}, {
		name:    "panic",
		deliver: &pluginhostv1.Deliver{Id: "m4", Type: "panic"},
		check: func(t *testing.T, r *pluginhostv1.DeliveryReply) {
			if r.GetStatus() != "error" || strings.Contains(r.GetErrorMessage(), "secret") {
				t.Errorf("reply = %v, want an error that does not show the panic", r)
			}
		},
	}, {
		name:    "unencodable reply",
		deliver: &pluginhostv1.Deliver{Id: "m5", Type: "unencodable"},
		check: func(t *testing.T, r *pluginhostv1.DeliveryReply) {
			if r.GetStatus() != "error" || r.GetData() != nil {
				t.Errorf("reply = %v, want an error", r)
			}
		},
	}}
	replies := make(chan map[string]*pluginhostv1.DeliveryReply, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil)
		for i, tc := range cases {
			d := proto.Clone(tc.deliver).(*pluginhostv1.Deliver)
			d.DeliveryId = "d" + strconv.Itoa(i)
			d.Kind = pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE
			s.deliver(d)
		}
		got := map[string]*pluginhostv1.DeliveryReply{}
		for range cases {
			r := s.reply()
			got[r.GetDeliveryId()] = r
		}
		replies <- got
		return s.drainEOF()
	})
	startPlugin(t, h, plugin.Plugin{
		OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
			switch m.Type {
			case "sum":
				return map[string]any{
					"sum": m.Data["n"].(float64) + 1, "typed": []string{"a", "b"},
					"id": m.ID, "source": m.Source, "attempt": m.Attempt,
				}, nil
			case "fail":
				return nil, errors.New("unknown customer")
			case "deadline":
				if dl, ok := ctx.Deadline(); !ok || !dl.Equal(deadline) {
					return nil, fmt.Errorf("deadline = %v, %v; want %v", dl, ok, deadline)
				}
				return nil, nil
			case "panic":
				panic("secret internals")
			case "unencodable":
				return map[string]any{"f": func() {}}, nil
			}
			return nil, fmt.Errorf("unexpected type %q", m.Type)
		},
	})
	got := receive(t, replies, "replies")
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, ok := got["d"+strconv.Itoa(i)]
			if !ok {
				t.Fatal("no reply")
			}
			tc.check(t, r)
		})
	}
}

func TestMessageWithoutHandler(t *testing.T) {
	t.Parallel()
	replies := make(chan *pluginhostv1.DeliveryReply, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil)
		s.deliver(&pluginhostv1.Deliver{DeliveryId: "d1", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE, Id: "m1", Type: "ping"})
		replies <- s.reply()
		return s.drainEOF()
	})
	startPlugin(t, h, plugin.Plugin{})
	if r := receive(t, replies, "reply"); r.GetDeliveryId() != "d1" || r.GetStatus() != "error" || r.GetErrorMessage() == "" {
		t.Errorf("reply = %v, want an error", r)
	}
}

func TestEvents(t *testing.T) {
	t.Parallel()
	event := func(deliveryID, id string, attempt int32) *pluginhostv1.Deliver {
		return &pluginhostv1.Deliver{DeliveryId: deliveryID, Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_EVENT, Id: id, Source: "system", Type: "user.created", Attempt: attempt}
	}
	done := pluginhostv1.AckAction_ACK_ACTION_DONE
	deadLetter := pluginhostv1.AckAction_ACK_ACTION_DEAD_LETTER
	type result struct {
		acks   []*pluginhostv1.Ack // in order, for the sequential part
		frames []*pluginhostv1.ConnectRequest
	}
	results := make(chan result, 1)
	flakyAcked, flakyFailing := make(chan struct{}), make(chan struct{}, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil)
		var res result
		// One at a time: each delivery's ack is awaited before the next is sent.
		for _, d := range []*pluginhostv1.Deliver{
			event("d1", "e-ok", 1),
			event("d2", "e-ok", 2), // a duplicate of a handled event
			event("d3", "e-bad", 1),
			event("d4", "e-bad", 2), // a duplicate of a dead-lettered event
			{DeliveryId: "d5", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_BROADCAST, Id: "e-ok", Source: "billing", Type: "note", Attempt: 1},
		} {
			s.deliver(d)
			res.acks = append(res.acks, s.ack())
		}
		// A transient failure is not acknowledged; the host redelivers (here: until a
		// health report shows that an ack came before it).
		s.deliver(event("f1", "e-flaky", 1))
		select { // so that no redelivery overtakes it
		case <-flakyFailing:
		case <-ctx.Done():
			return nil
		}
		for i := 2; i < 50; i++ {
			s.deliver(event("f"+strconv.Itoa(i), "e-flaky", int32(i)))
			s.healthCheck("hc")
			acked := false
			for {
				f := s.next("frame", func(*pluginhostv1.ConnectRequest) bool { return true })
				if f == nil {
					return nil
				}
				res.frames = append(res.frames, f)
				acked = acked || f.GetAck() != nil
				if f.GetHealthReport() != nil {
					break
				}
			}
			if acked {
				break
			}
		}
		close(flakyAcked)
		more, err := s.drain()
		if !errors.Is(err, io.EOF) {
			t.Errorf("host: stream ended with %v", err)
		}
		res.frames = append(res.frames, more...)
		results <- res
		return nil
	})
	var mu sync.Mutex
	calls := map[string]int{}
	broadcasts := make(chan plugin.Event, 1)
	run := startPlugin(t, h, plugin.Plugin{
		OnEvent: func(ctx context.Context, e plugin.Event) error {
			mu.Lock()
			calls[e.ID]++
			mu.Unlock()
			switch {
			case e.ID == "e-bad":
				return fmt.Errorf("user.created: %w", plugin.Permanent(errors.New("malformed payload")))
			case e.ID == "e-flaky" && e.Attempt == 1:
				flakyFailing <- struct{}{}
				return errors.New("database busy")
			}
			return nil
		},
		OnBroadcast: func(ctx context.Context, b plugin.Event) error {
			broadcasts <- b
			return nil
		},
	})
	b := receive(t, broadcasts, "broadcast")
	if b.ID != "e-ok" || b.Source != "billing" || b.Type != "note" || b.Attempt != 1 {
		t.Errorf("broadcast = %+v", b)
	}
	// Stop the plugin once the host has what it needs, so that its drain ends.
	receive(t, flakyAcked, "an ack of the redelivered event")
	run.cancel()
	res := receive(t, results, "acks")
	want := []*pluginhostv1.Ack{
		{DeliveryId: "d1", Action: done},
		{DeliveryId: "d2", Action: done},
		{DeliveryId: "d3", Action: deadLetter, Reason: "user.created: malformed payload"},
		{DeliveryId: "d4", Action: deadLetter, Reason: "user.created: malformed payload"},
		{DeliveryId: "d5", Action: done},
	}
	for i := range want {
		if i >= len(res.acks) || !proto.Equal(res.acks[i], want[i]) {
			t.Errorf("ack %d = %v, want %v", i, res.acks[i], want[i])
		}
	}
	flakyAcks := 0
	for _, f := range res.frames {
		if a := f.GetAck(); a != nil {
			if a.GetDeliveryId() == "f1" || a.GetAction() != done {
				t.Errorf("ack %v after a transient failure", a)
			}
			flakyAcks++
		}
	}
	if flakyAcks == 0 {
		t.Error("the redelivered event was never acknowledged")
	}
	mu.Lock()
	defer mu.Unlock()
	if calls["e-ok"] != 1 || calls["e-bad"] != 1 || calls["e-flaky"] != 2 {
		t.Errorf("handler calls = %v, want e-ok 1, e-bad 1, e-flaky 2", calls)
	}
}

func TestSessionLogger(t *testing.T) {
	t.Parallel()
	logs := make(chan []*pluginhostv1.Log, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil)
		logs <- []*pluginhostv1.Log{s.log(), s.log(), s.log()}
		return s.drainEOF()
	})
	sessions := make(chan *plugin.Session, 1)
	var stderr syncBuffer
	run := startPlugin(t, h, plugin.Plugin{OnStart: func(ctx context.Context, s *plugin.Session) error {
		s.Logger().Debug("below the level")
		l := s.Logger().With("component", "ingest").WithGroup("req")
		l.Info("started", "n", 3, slog.Group("user", "id", "u1"), "took", 1500*time.Millisecond, slog.Group("empty"))
		s.Logger().Warn("slow", "err", errors.New("boom"), "bad", "\xff")
		s.Logger().Error("failed")
		sessions <- s
		return nil
	}}, plugin.WithStderr(&stderr))
	before := time.Now()
	got := receive(t, logs, "log frames")
	want := []struct {
		level, message string
		meta           map[string]any
	}{
		{"INFO", "started", map[string]any{"component": "ingest", "req": map[string]any{"n": 3.0, "user": map[string]any{"id": "u1"}, "took": "1.5s"}}},
		{"WARNING", "slow", map[string]any{"err": "boom", "bad": "\uFFFD"}},
		{"ERROR", "failed", nil},
	}
	for i, w := range want {
		l := got[i]
		if l.GetLevel() != w.level || l.GetMessage() != w.message {
			t.Errorf("log %d = %s %q, want %s %q", i, l.GetLevel(), l.GetMessage(), w.level, w.message)
		}
		if w.meta == nil && l.GetMetadata() != nil || w.meta != nil && !equalJSON(l.GetMetadata().AsMap(), w.meta) {
			t.Errorf("log %d metadata = %v, want %v", i, l.GetMetadata().AsMap(), w.meta)
		}
		if ts := l.GetTimestamp().AsTime(); ts.Before(before.Add(-time.Minute)) || ts.After(time.Now()) {
			t.Errorf("log %d timestamp = %v", i, ts)
		}
	}

	// Once disconnected, records go to stderr as JSON lines.
	s := receive(t, sessions, "OnStart")
	run.cancel()
	if err := run.wait(t); err != nil {
		t.Fatal(err)
	}
	s.Logger().Info("offline", "k", "v")
	var line map[string]any
	if err := json.Unmarshal(stderr.Bytes(), &line); err != nil || line["msg"] != "offline" || line["k"] != "v" || line["level"] != "INFO" {
		t.Errorf("stderr = %q (%v)", stderr.Bytes(), err)
	}
}

func TestShutdown(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}, 2), make(chan struct{})
	var sentAt atomic.Int64
	type result struct {
		frames []*pluginhostv1.ConnectRequest
		err    error
	}
	results := make(chan result, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil)
		s.deliver(&pluginhostv1.Deliver{DeliveryId: "d1", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE, Id: "m1", Type: "work"})
		select {
		case <-entered:
		case <-ctx.Done():
			return nil
		}
		sentAt.Store(time.Now().UnixNano())
		s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Shutdown{Shutdown: &pluginhostv1.Shutdown{Reason: "upgrade", TimeoutSeconds: 5}}})
		// Sent after the shutdown: must not be handled.
		s.deliver(&pluginhostv1.Deliver{DeliveryId: "d2", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE, Id: "m2", Type: "work"})
		close(release)
		frames, err := s.drain()
		results <- result{frames, err}
		return nil
	})
	var handled, finished atomic.Int32
	type shutdownCall struct {
		reason         string
		deadline       time.Time
		hasDeadline    bool
		handlersIdle   bool
		sessionPresent bool
	}
	calls := make(chan shutdownCall, 2)
	run := startPlugin(t, h, plugin.Plugin{
		OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
			handled.Add(1)
			defer finished.Add(1)
			entered <- struct{}{}
			<-release
			return map[string]any{"done": m.ID}, nil
		},
		OnShutdown: func(ctx context.Context, reason string) {
			dl, ok := ctx.Deadline()
			s := plugin.SessionFromContext(ctx)
			if s != nil {
				s.Logger().Info("bye")
			}
			calls <- shutdownCall{reason, dl, ok, finished.Load() == 1, s != nil}
		},
	})
	if err := run.wait(t); err != nil {
		t.Errorf("Run = %v, want nil after shutdown", err)
	}
	c := receive(t, calls, "OnShutdown")
	if c.reason != "upgrade" || !c.handlersIdle || !c.sessionPresent {
		t.Errorf("OnShutdown: %+v", c)
	}
	if grace := c.deadline.Sub(time.Unix(0, sentAt.Load())); !c.hasDeadline || grace < 4*time.Second || grace > 5*time.Second {
		t.Errorf("OnShutdown's deadline is %v after the request, want a little under 5s", grace)
	}
	if len(calls) != 0 {
		t.Error("OnShutdown called twice")
	}
	res := receive(t, results, "stream end")
	if !errors.Is(res.err, io.EOF) {
		t.Errorf("stream ended with %v, want a clean close", res.err)
	}
	var replies []string
	sawBye := false
	for _, f := range res.frames {
		if r := f.GetReply(); r != nil {
			replies = append(replies, r.GetDeliveryId()+":"+r.GetStatus())
		}
		if f.GetLog().GetMessage() == "bye" {
			sawBye = true
		}
	}
	if !slices.Equal(replies, []string{"d1:success"}) {
		t.Errorf("replies = %v, want only d1's", replies)
	}
	if !sawBye {
		t.Error("OnShutdown's log record was not sent before the stream closed")
	}
	if handled.Load() != 1 {
		t.Errorf("%d messages handled, want 1 (none after the shutdown request)", handled.Load())
	}
}

// errorWithReason is what the host ends a stream with when it refuses the plugin.
func errorWithReason(code connect.Code, reason string) error {
	err := connect.NewError(code, errors.New("refused"))
	if d, derr := connect.NewErrorDetail(&errdetails.ErrorInfo{Reason: reason, Domain: "nexus"}); derr == nil {
		err.AddDetail(d)
	}
	return err
}

func TestRefusalIsFatal(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		reason string
		code   connect.Code
	}{
		{"PLUGIN_PERMISSION_DENIED", connect.CodePermissionDenied},
		{"UNAUTHENTICATED", connect.CodeUnauthenticated},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			t.Parallel()
			h := startHost(t, func(ctx context.Context, s *hostStream) error {
				return errorWithReason(tc.code, tc.reason)
			})
			var started atomic.Bool
			run := startPlugin(t, h, plugin.Plugin{OnStart: func(context.Context, *plugin.Session) error {
				started.Store(true)
				return nil
			}})
			err := run.wait(t)
			if err == nil || nexus.ErrorCode(err) != tc.reason || connect.CodeOf(err) != tc.code {
				t.Fatalf("Run = %v, want a %s error", err, tc.reason)
			}
			if n := h.hellos.Load(); n != 1 {
				t.Errorf("%d hellos, want 1 (no retry)", n)
			}
			if started.Load() {
				t.Error("OnStart ran without a welcome")
			}
		})
	}
}

func TestOnStartError(t *testing.T) {
	t.Parallel()
	closed := make(chan error, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil)
		_, err := s.drain()
		closed <- err
		return nil
	})
	errBoom := errors.New("cannot open database")
	run := startPlugin(t, h, plugin.Plugin{OnStart: func(context.Context, *plugin.Session) error { return errBoom }})
	if err := run.wait(t); !errors.Is(err, errBoom) {
		t.Errorf("Run = %v, want %v", err, errBoom)
	}
	if err := receive(t, closed, "stream end"); !errors.Is(err, io.EOF) {
		t.Errorf("stream ended with %v, want a clean close", err)
	}
}

func TestReconnect(t *testing.T) {
	t.Parallel()
	hellos := make(chan *pluginhostv1.Hello, 3)
	reports := make(chan *pluginhostv1.HealthReport, 2)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		hellos <- s.hello
		switch s.n {
		case 1: // the host is not ready: refused before welcome, but not fatally
			return connect.NewError(connect.CodeUnavailable, errors.New("starting"))
		case 2: // welcomed, then the stream breaks
			s.welcome(map[string]any{"v": 1, "keep": true})
			s.healthCheck("hc-2")
			reports <- s.healthReport()
			return connect.NewError(connect.CodeUnavailable, errors.New("host restarting"))
		default: // the configuration changed while the plugin was away
			s.welcome(map[string]any{"v": 2, "keep": true})
			s.healthCheck("hc-3")
			reports <- s.healthReport()
			return s.drainEOF()
		}
	})
	var starts atomic.Int32
	sessions := make(chan *plugin.Session, 1)
	changes := make(chan plugin.ConfigChange, 1)
	startPlugin(t, h, plugin.Plugin{
		OnStart: func(ctx context.Context, s *plugin.Session) error {
			starts.Add(1)
			sessions <- s
			return nil
		},
		OnConfigChange: func(ctx context.Context, c plugin.ConfigChange) error {
			changes <- c
			return nil
		},
	})
	for _, want := range []string{"hc-2", "hc-3"} {
		if r := receive(t, reports, "health report "+want); r.GetCheckId() != want {
			t.Errorf("report = %v, want %s", r, want)
		}
	}
	first := receive(t, hellos, "hello 1")
	for i := 2; i <= 3; i++ {
		if again := receive(t, hellos, "hello "+strconv.Itoa(i)); !proto.Equal(again, first) {
			t.Errorf("hello %d = %v, want %v", i, again, first)
		}
	}
	if id := first.GetInstanceId(); !strings.Contains(id, "-"+strconv.Itoa(os.Getpid())+"-") {
		t.Errorf("instance id %q, want hostname-pid-random", id)
	}
	if n := h.hellos.Load(); n != 3 {
		t.Errorf("%d hellos, want 3", n)
	}
	c := receive(t, changes, "configuration change found on reconnecting")
	if c.Config["v"] != 2.0 || !slices.Equal(c.UpdatedFields, []string{"v"}) {
		t.Errorf("change = %+v", c)
	}
	s := receive(t, sessions, "OnStart")
	eventually(t, "the new configuration", func() bool { return s.Config()["v"] == 2.0 })
	if s.SessionID() != "sess-3" {
		t.Errorf("SessionID() = %q, want sess-3", s.SessionID())
	}
	if n := starts.Load(); n != 1 {
		t.Errorf("OnStart ran %d times, want once", n)
	}
}

func TestDeadConnectionIsLeft(t *testing.T) {
	t.Parallel()
	pinging := nexus.DefaultHTTPClient()
	pinging.Transport.(*http.Transport).HTTP2 = &http.HTTP2Config{SendPingTimeout: 100 * time.Millisecond, PingTimeout: 200 * time.Millisecond}
	t.Cleanup(pinging.CloseIdleConnections)
	for _, tc := range []struct {
		name string
		opt  plugin.Option
		// within bounds the reconnection.
		within time.Duration
	}{
		// grpc-go pings every 10s at the most.
		{"grpc-go", plugin.WithKeepalive(100*time.Millisecond, 200*time.Millisecond), 3 * waitTime},
		{"connect-go", plugin.WithHTTPClient(pinging), waitTime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.within > waitTime && testing.Short() {
				t.Skip("waits for grpc-go's first ping, 10s")
			}
			var proxy atomic.Pointer[freezer]
			reconnected := make(chan struct{})
			h := startHost(t, func(ctx context.Context, s *hostStream) error {
				s.welcome(nil)
				s.healthCheck("hc")
				s.healthReport()
				if s.n == 1 {
					proxy.Load().freeze()
					_, _ = s.drain() // until the proxy gives up on the connection
					return nil
				}
				close(reconnected)
				return s.drainEOF()
			})
			f := startFreezer(t, h.URL)
			proxy.Store(f)
			startPlugin(t, h, plugin.Plugin{}, plugin.WithHost(f.URL), tc.opt)
			select {
			case <-reconnected:
			case <-time.After(tc.within):
				t.Fatal("timed out waiting for a reconnection after the connection froze")
			}
			if n := h.hellos.Load(); n != 2 {
				t.Errorf("%d hellos, want 2", n)
			}
		})
	}
}

func TestDedupeIsBounded(t *testing.T) {
	t.Parallel()
	acks := make(chan []string, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil)
		var got []string
		for i, id := range []string{"e1", "e2", "e2", "e1"} {
			s.deliver(&pluginhostv1.Deliver{DeliveryId: "d" + strconv.Itoa(i), Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_EVENT, Id: id, Type: "tick"})
			got = append(got, s.ack().GetDeliveryId())
		}
		acks <- got
		return s.drainEOF()
	})
	var mu sync.Mutex
	var calls []string
	startPlugin(t, h, plugin.Plugin{OnEvent: func(ctx context.Context, e plugin.Event) error {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, e.ID)
		return nil
	}}, plugin.WithDedupeSize(1))
	if got := receive(t, acks, "acks"); !slices.Equal(got, []string{"d0", "d1", "d2", "d3"}) {
		t.Errorf("acks = %v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	// With room for one id, e1 is forgotten once e2 is seen; e2 is remembered.
	if !slices.Equal(calls, []string{"e1", "e2", "e1"}) {
		t.Errorf("handled %v, want e1 e2 e1", calls)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	t.Run("connected", func(t *testing.T) {
		t.Parallel()
		closed := make(chan error, 1)
		h := startHost(t, func(ctx context.Context, s *hostStream) error {
			s.welcome(nil)
			_, err := s.drain()
			closed <- err
			return nil
		})
		started := make(chan struct{})
		run := startPlugin(t, h, plugin.Plugin{OnStart: func(context.Context, *plugin.Session) error {
			close(started)
			return nil
		}})
		receive(t, started, "OnStart")
		begin := time.Now()
		run.cancel()
		if err := run.wait(t); err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		if d := time.Since(begin); d > time.Second {
			t.Errorf("Run took %v to return after cancel", d)
		}
		if err := receive(t, closed, "stream end"); !errors.Is(err, io.EOF) {
			t.Errorf("stream ended with %v, want a clean close", err)
		}
	})
	t.Run("host unreachable", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		begin := time.Now()
		err = plugin.Run(ctx, plugin.Plugin{},
			plugin.WithHost("http://"+addr), plugin.WithToken(testToken), plugin.WithPluginID(testPluginID),
			plugin.WithLogger(slog.New(slog.DiscardHandler)), plugin.WithStderr(io.Discard))
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		if d := time.Since(begin); d > 1300*time.Millisecond {
			t.Errorf("Run took %v to return after its context ended", d)
		}
	})
}

// TestEnvironment is not parallel: it sets the environment.
func TestEnvironment(t *testing.T) {
	type seen struct{ id, auth string }
	hellos := make(chan seen, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		hellos <- seen{s.hello.GetPluginId(), s.header.Get("Authorization")}
		s.welcome(nil)
		return s.drainEOF()
	})
	t.Setenv(plugin.EnvHost, h.URL)
	t.Setenv(plugin.EnvPluginID, "env-plugin")
	t.Setenv(plugin.EnvToken, "nxt_env")
	ctx, cancel := context.WithCancel(context.Background())
	done, started := make(chan error, 1), make(chan struct{})
	go func() {
		done <- plugin.Run(ctx, plugin.Plugin{OnStart: func(context.Context, *plugin.Session) error {
			close(started)
			return nil
		}}, plugin.WithLogger(slog.New(slog.DiscardHandler)), plugin.WithStderr(io.Discard))
	}()
	if got := receive(t, hellos, "hello"); got.id != "env-plugin" || got.auth != "Bearer nxt_env" {
		t.Errorf("hello from %q with %q", got.id, got.auth)
	}
	receive(t, started, "OnStart")
	cancel()
	if err := receive(t, done, "Run"); err != nil {
		t.Errorf("Run = %v", err)
	}

	t.Run("incomplete", func(t *testing.T) {
		t.Setenv(plugin.EnvHost, "")
		t.Setenv(plugin.EnvToken, "")
		err := plugin.Run(context.Background(), plugin.Plugin{})
		if err == nil || !strings.Contains(err.Error(), plugin.EnvHost) || !strings.Contains(err.Error(), plugin.EnvToken) {
			t.Errorf("Run = %v, want an error naming %s and %s", err, plugin.EnvHost, plugin.EnvToken)
		}
		if err := plugin.Run(context.Background(), plugin.Plugin{}, plugin.WithHost("127.0.0.1:8080"), plugin.WithToken("t")); err == nil {
			t.Error("Run accepted a host that is not a URL")
		}
	})
}

// TestNoGoroutineLeak is not parallel, so that other tests' goroutines do not count.
func TestNoGoroutineLeak(t *testing.T) {
	baseline := runtime.NumGoroutine()
	func() {
		replies := make(chan *pluginhostv1.DeliveryReply, 1)
		h := startHost(t, func(ctx context.Context, s *hostStream) error {
			s.welcome(nil)
			if s.n == 1 {
				s.healthCheck("hc")
				s.healthReport()
				return connect.NewError(connect.CodeUnavailable, errors.New("drop"))
			}
			s.deliver(&pluginhostv1.Deliver{DeliveryId: "d1", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE, Id: "m1", Type: "ping"})
			replies <- s.reply()
			s.deliver(&pluginhostv1.Deliver{DeliveryId: "d2", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_EVENT, Id: "e1", Type: "tick"})
			s.ack()
			s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Shutdown{Shutdown: &pluginhostv1.Shutdown{Reason: "test", TimeoutSeconds: 2}}})
			return s.drainEOF()
		})
		run := startPlugin(t, h, plugin.Plugin{
			OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
				plugin.SessionFromContext(ctx).Logger().Info("ping")
				return map[string]any{"pong": true}, nil
			},
			OnEvent: func(context.Context, plugin.Event) error { return nil },
		})
		receive(t, replies, "reply")
		if err := run.wait(t); err != nil {
			t.Errorf("Run = %v", err)
		}
		h.close()
	}()
	deadline := time.Now().Add(waitTime)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), baseline, buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// equalJSON compares two JSON-like values.
func equalJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// eventually polls cond until it holds or the wait times out.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTime)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.buf.Bytes())
}
