package plugintest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	"github.com/nexus-platform/nexus/clients/go/plugin/plugintest"
)

// The example plugins are commands (package main), so these tests run a small plugin of
// their own: a shop's order plugin, written as a plugin author would write it.

const waitTime = 10 * time.Second

// orders is the plugin under test.
func orders() plugin.Plugin {
	return plugin.Plugin{
		Version:       "1.0.0",
		Services:      []string{"orders"},
		MessageTypes:  []string{"greet", "count", "charge", "wait"},
		Subscriptions: []string{"user.*"},
		OnStart: func(ctx context.Context, s *plugin.Session) error {
			s.Logger().Info("orders started", "greeting", s.Config()["greeting"])
			return nil
		},
		OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
			s := plugin.SessionFromContext(ctx)
			switch m.Type {
			case "greet":
				greeting, _ := s.Config()["greeting"].(string)
				return map[string]any{"text": greeting + ", " + m.Source}, nil
			case "count":
				n, err := increment(ctx, s.KV(), "count")
				return map[string]any{"count": n}, err
			case "charge":
				r, err := s.Send(ctx, "billing-plugin", "charge", map[string]any{"order": m.Data["order"], "amount": m.Data["amount"]})
				if err != nil {
					return nil, fmt.Errorf("billing: %w", err)
				}
				if r.Status == "error" {
					return nil, errors.New("billing: " + r.Error)
				}
				return r.Data, nil
			case "wait":
				<-ctx.Done()
				return nil, context.Cause(ctx)
			}
			return nil, fmt.Errorf("unknown message type %s", m.Type)
		},
		OnEvent: func(ctx context.Context, e plugin.Event) error {
			s := plugin.SessionFromContext(ctx)
			switch e.Type {
			case "user.created":
				_, err := s.Emit(ctx, "order.cart_created", map[string]any{"user": e.Data["id"]})
				return err
			case "user.invalid":
				return plugin.Permanent(errors.New("no user id"))
			case "user.flaky":
				return errors.New("database busy")
			case "user.panic":
				panic("boom")
			}
			return nil
		},
		OnBroadcast: func(ctx context.Context, b plugin.Event) error {
			_, err := plugin.SessionFromContext(ctx).KV().Put(ctx, "last_broadcast", b.Type)
			return err
		},
		OnHealthCheck: func(ctx context.Context) []plugin.Check {
			return []plugin.Check{plugin.Pass("orders-db").WithResponseTime(time.Millisecond)}
		},
		OnConfigChange: func(ctx context.Context, c plugin.ConfigChange) error {
			if _, ok := c.Config["greeting"].(string); !ok {
				return errors.New("greeting must be a string")
			}
			return nil
		},
	}
}

// increment adds one to a counter with compare-and-set.
func increment(ctx context.Context, kv *plugin.KV, key string) (float64, error) {
	for {
		cur, _, err := kv.Get(ctx, key)
		if err != nil {
			return 0, err
		}
		n, _ := cur.Value.(float64)
		if _, ok, err := kv.CompareAndSet(ctx, key, n+1, cur.Version); err != nil || ok {
			return n + 1, err
		}
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTime)
	t.Cleanup(cancel)
	return ctx
}

// wantCode checks that err carries code, as the plugin sees it.
func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	var pe *plugin.Error
	if !errors.As(err, &pe) || plugin.ErrorCode(err) != code {
		t.Errorf("%s: error %v, want an *plugin.Error with code %s", what, err, code)
	}
}

var allGranted = []string{"messages:send", "events:*", "database:read", "database:write"}

func TestMessages(t *testing.T) {
	t.Parallel()
	h := plugintest.NewHost(t, plugintest.Options{PluginID: "orders-plugin", Config: map[string]any{"greeting": "Hello"}, Granted: allGranted})
	h.Start(orders())
	ctx := testContext(t)

	r, err := h.Send(ctx, "user", "greet", nil)
	if err != nil || r.Status != "success" || r.Data["text"] != "Hello, user" || r.MessageID == "" {
		t.Errorf("greet = %+v, %v", r, err)
	}
	r, err = h.Send(ctx, "admin", "refund", map[string]any{"order": 7})
	if err != nil || r.Status != "error" || r.Error != "unknown message type refund" {
		t.Errorf("a failing handler = %+v, %v; want status error with the handler's message", r, err)
	}
	for i := 1; i <= 3; i++ {
		r, err = h.Send(ctx, "user", "count", nil)
		if err != nil || r.Data["count"] != float64(i) {
			t.Errorf("count #%d = %+v, %v", i, r, err)
		}
	}
	if e, ok := h.KV("").Get("count"); !ok || e.Value != 3.0 || e.Version != 3 {
		t.Errorf("KV count = %+v, %v", e, ok)
	}
}

func TestSendGivesUp(t *testing.T) {
	t.Parallel()
	h := plugintest.NewHost(t, plugintest.Options{PluginID: "orders-plugin", Granted: allGranted})
	h.Start(orders())

	ctx, cancel := context.WithTimeout(testContext(t), 300*time.Millisecond)
	defer cancel()
	_, err := h.Send(ctx, "user", "wait", nil)
	wantCode(t, "Send past its deadline", err, "PLUGIN_COMMUNICATION_TIMEOUT")

	ctx, cancel = context.WithCancel(testContext(t))
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := h.Send(ctx, "user", "wait", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Send canceled = %v, want context.Canceled", err)
	}
	// The handlers were told: their context ended with the SDK's cause, and they returned.
	if r, err := h.Send(testContext(t), "user", "greet", nil); err != nil || r.Status != "success" {
		t.Errorf("greet after the abandoned messages = %+v, %v", r, err)
	}
}

func TestEventsAndBroadcasts(t *testing.T) {
	t.Parallel()
	h := plugintest.NewHost(t, plugintest.Options{PluginID: "orders-plugin", Granted: allGranted})
	h.Start(orders())
	ctx := testContext(t)

	cases := []struct {
		typ     string
		outcome plugintest.Outcome
		reason  string
	}{
		{"user.created", plugintest.Acked, ""},
		{"user.deleted", plugintest.Acked, ""},
		{"user.invalid", plugintest.DeadLettered, "no user id"},
		{"user.flaky", plugintest.Unacked, "database busy"},
		{"user.panic", plugintest.Unacked, "plugintest: the handler panicked"},
	}
	for _, tc := range cases {
		d, err := h.Emit(ctx, "users-plugin", tc.typ, map[string]any{"id": "u1"})
		if err != nil || d.Outcome != tc.outcome || d.Reason != tc.reason || !strings.HasPrefix(d.ID, "evt-") {
			t.Errorf("Emit %s = %+v, %v; want %s (%q)", tc.typ, d, err, tc.outcome, tc.reason)
		}
	}
	if _, err := h.Emit(ctx, "users-plugin", "order.paid", nil); !errors.Is(err, plugintest.ErrNotSubscribed) {
		t.Errorf("Emit of an event the plugin is not subscribed to = %v", err)
	}
	got := h.Emitted()
	if len(got) != 1 || got[0].Type != "order.cart_created" || got[0].Data["user"] != "u1" || got[0].Err != nil || got[0].ID == "" {
		t.Errorf("Emitted = %+v", got)
	}

	d, err := h.Broadcast(ctx, "admin", "maintenance", map[string]any{"at": "02:00"})
	if err != nil || d.Outcome != plugintest.Acked {
		t.Errorf("Broadcast = %+v, %v", d, err)
	}
	if e, ok := h.KV("").Get("last_broadcast"); !ok || e.Value != "maintenance" {
		t.Errorf("KV last_broadcast = %+v, %v", e, ok)
	}
}

func TestSubscriptions(t *testing.T) {
	t.Parallel()
	t.Run("without events:subscribe", func(t *testing.T) {
		t.Parallel()
		h := plugintest.NewHost(t, plugintest.Options{PluginID: "orders-plugin", Granted: []string{"events:emit"}, Subscriptions: []string{"order.*"}})
		h.Start(orders())
		if _, err := h.Emit(testContext(t), "system", "user.created", nil); !errors.Is(err, plugintest.ErrNotSubscribed) {
			t.Errorf("Emit = %v", err)
		}
		if s := h.Subscriptions(); len(s) != 0 {
			t.Errorf("Subscriptions = %v, want none: the hello's are ignored", s)
		}
		logs := h.Logs()
		if !slices.ContainsFunc(logs, func(e plugintest.LogEntry) bool { return e.FromHost && e.Level == "WARNING" }) {
			t.Errorf("no warning about the ignored subscriptions in %+v", logs)
		}
	})
	t.Run("at run time", func(t *testing.T) {
		t.Parallel()
		subscribed := make(chan error, 1)
		p := orders()
		p.OnStart = func(ctx context.Context, s *plugin.Session) error {
			subscribed <- s.Subscribe(ctx, "order.*")
			return s.Unsubscribe(ctx, "user.*")
		}
		h := plugintest.NewHost(t, plugintest.Options{PluginID: "orders-plugin", Granted: []string{"events:subscribe"}, Subscriptions: []string{"billing.*"}})
		h.Start(p)
		if err := <-subscribed; err != nil {
			t.Fatal(err)
		}
		if s := h.Subscriptions(); !slices.Equal(s, []string{"order.*"}) {
			t.Errorf("Subscriptions = %v", s)
		}
		ctx := testContext(t)
		for _, typ := range []string{"order.paid", "billing.failed"} {
			if d, err := h.Emit(ctx, "system", typ, nil); err != nil || d.Outcome != plugintest.Acked {
				t.Errorf("Emit %s = %+v, %v", typ, d, err)
			}
		}
		if _, err := h.Emit(ctx, "system", "user.created", nil); !errors.Is(err, plugintest.ErrNotSubscribed) {
			t.Errorf("Emit after Unsubscribe = %v", err)
		}
	})
	t.Run("subscribe refused", func(t *testing.T) {
		t.Parallel()
		errs := make(chan error, 1)
		h := plugintest.NewHost(t, plugintest.Options{PluginID: "orders-plugin"})
		h.Start(plugin.Plugin{OnStart: func(ctx context.Context, s *plugin.Session) error {
			errs <- s.Subscribe(ctx, "order.*")
			return nil
		}})
		wantCode(t, "Subscribe", <-errs, "PLUGIN_PERMISSION_DENIED")
	})
}

func TestPluginToPlugin(t *testing.T) {
	t.Parallel()
	h := plugintest.NewHost(t, plugintest.Options{
		PluginID: "orders-plugin",
		Granted:  []string{"messages:*"},
		Providers: []plugin.Provider{{PluginID: "audit-plugin", MessageTypes: []plugin.MessageTypeInfo{
			{Type: "charge", RequiredPermission: "audit:write"},
		}}},
	})
	var mu sync.Mutex
	var charged []map[string]any
	h.HandlePlugin("billing-plugin", func(messageType string, data map[string]any) (map[string]any, error) {
		mu.Lock()
		defer mu.Unlock()
		if data["amount"] == nil {
			return nil, errors.New("no amount")
		}
		charged = append(charged, data)
		return map[string]any{"invoice": "inv-1"}, nil
	})
	h.Start(orders())
	ctx := testContext(t)

	r, err := h.Send(ctx, "user", "charge", map[string]any{"order": 7, "amount": 12.5})
	if err != nil || r.Status != "success" || r.Data["invoice"] != "inv-1" {
		t.Errorf("charge = %+v, %v", r, err)
	}
	r, err = h.Send(ctx, "user", "charge", map[string]any{"order": 8})
	if err != nil || r.Error != "billing: no amount" {
		t.Errorf("charge without amount = %+v, %v; want the billing handler's error", r, err)
	}
	h.HandlePlugin("billing-plugin", func(string, map[string]any) (map[string]any, error) {
		return nil, &plugin.Error{Code: "PLUGIN_UNAVAILABLE", Message: "billing is restarting"}
	})
	r, _ = h.Send(ctx, "user", "charge", map[string]any{"order": 9, "amount": 1})
	if !strings.Contains(r.Error, "PLUGIN_UNAVAILABLE: billing is restarting") {
		t.Errorf("charge while billing refuses = %+v; want the host's code to reach the plugin", r)
	}
	sent := h.Sent()
	if len(sent) != 3 || sent[0].Target != "billing-plugin" || sent[0].Type != "charge" || sent[0].Data["order"] != 7.0 || sent[0].ID == "" || sent[0].Err != nil {
		t.Errorf("Sent = %+v", sent)
	}
	mu.Lock()
	if len(charged) != 1 || charged[0]["amount"] != 12.5 {
		t.Errorf("billing got %v", charged)
	}
	mu.Unlock()

	// Refusals, with the real host's codes.
	errs := make(chan error, 1)
	sender := func(target, typ string) plugin.Plugin {
		return plugin.Plugin{OnStart: func(ctx context.Context, s *plugin.Session) error {
			_, err := s.Send(ctx, target, typ, nil)
			errs <- err
			return nil
		}}
	}
	for _, tc := range []struct {
		name, target, typ string
		granted           []string
		code              string
	}{
		{"without messages:send", "billing-plugin", "charge", []string{"events:emit"}, "PLUGIN_PERMISSION_DENIED"},
		{"unknown plugin", "stock-plugin", "reserve", []string{"messages:send"}, "PLUGIN_NOT_FOUND"},
		{"required permission", "audit-plugin", "charge", []string{"messages:send"}, "PLUGIN_PERMISSION_DENIED"},
		{"provider without handler", "audit-plugin", "charge", []string{"messages:send", "audit:*"}, "PLUGIN_UNAVAILABLE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := plugintest.NewHost(t, plugintest.Options{PluginID: "orders-plugin", Granted: tc.granted, Providers: []plugin.Provider{
				{PluginID: "audit-plugin", MessageTypes: []plugin.MessageTypeInfo{{Type: "charge", RequiredPermission: "audit:write"}}},
			}})
			h.HandlePlugin("billing-plugin", func(string, map[string]any) (map[string]any, error) { return nil, nil })
			h.Start(sender(tc.target, tc.typ))
			wantCode(t, "Send", <-errs, tc.code)
			if s := h.Sent(); len(s) != 1 || s[0].ID != "" || plugin.ErrorCode(s[0].Err) != tc.code {
				t.Errorf("Sent = %+v", s)
			}
		})
	}
}

func TestEmitAndBroadcastFromPlugin(t *testing.T) {
	t.Parallel()
	type result struct {
		emit, reserved, broadcast error
	}
	run := func(t *testing.T, granted []string) (*plugintest.Host, result) {
		results := make(chan result, 1)
		h := plugintest.NewHost(t, plugintest.Options{PluginID: "orders-plugin", Granted: granted})
		h.Start(plugin.Plugin{OnStart: func(ctx context.Context, s *plugin.Session) error {
			var r result
			_, r.emit = s.Emit(ctx, "order.created", map[string]any{"id": 1})
			_, r.reserved = s.Emit(ctx, "system.started", nil)
			_, r.broadcast = s.Broadcast(ctx, "stock.check", map[string]any{"sku": "A"}, plugin.BroadcastOptions{Categories: []string{"stock"}})
			results <- r
			return nil
		}})
		return h, <-results
	}
	t.Run("granted", func(t *testing.T) {
		h, r := run(t, []string{"events:emit", "messages:send"})
		if r.emit != nil || r.broadcast != nil {
			t.Errorf("emit %v, broadcast %v", r.emit, r.broadcast)
		}
		wantCode(t, "Emit of a host event type", r.reserved, "VALIDATION_ERROR")
		if b := h.Broadcasts(); len(b) != 1 || b[0].Type != "stock.check" || !slices.Equal(b[0].Categories, []string{"stock"}) || b[0].ID == "" {
			t.Errorf("Broadcasts = %+v", b)
		}
		if e := h.Emitted(); len(e) != 2 || e[0].Err != nil || e[1].Err == nil {
			t.Errorf("Emitted = %+v", e)
		}
	})
	t.Run("not granted", func(t *testing.T) {
		_, r := run(t, nil)
		wantCode(t, "Emit", r.emit, "PLUGIN_PERMISSION_DENIED")
		wantCode(t, "Broadcast", r.broadcast, "PLUGIN_PERMISSION_DENIED")
	})
}

func TestKV(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var clock sync.Mutex
	h := plugintest.NewHost(t, plugintest.Options{
		PluginID: "orders-plugin",
		Granted:  []string{"database:*"},
		Now: func() time.Time {
			clock.Lock()
			defer clock.Unlock()
			return now
		},
	})
	advance := func(d time.Duration) {
		clock.Lock()
		now = now.Add(d)
		clock.Unlock()
	}
	if _, err := h.KV("billing-plugin").Put("rate", 0.2); err != nil {
		t.Fatal(err)
	}
	sessions := make(chan *plugin.Session, 1)
	h.Start(plugin.Plugin{OnStart: func(ctx context.Context, s *plugin.Session) error {
		sessions <- s
		return nil
	}})
	s := <-sessions
	ctx := testContext(t)
	kv := s.KV()

	e, err := kv.Put(ctx, "cart:1", map[string]any{"items": []string{"a"}}, plugin.WithTTL(time.Minute))
	if err != nil || e.Version != 1 || !e.ExpiresAt.Equal(now.Add(time.Minute)) || !e.UpdatedAt.Equal(now) {
		t.Errorf("Put = %+v, %v", e, err)
	}
	if e, ok := h.KV("").Get("cart:1"); !ok || e.Version != 1 {
		t.Errorf("the host's view = %+v, %v", e, ok)
	}
	advance(time.Minute)
	if _, found, err := kv.Get(ctx, "cart:1"); err != nil || found {
		t.Errorf("Get of an expired entry = %v, %v", found, err)
	}
	if e, err := kv.Put(ctx, "cart:1", "again"); err != nil || e.Version != 1 || !e.ExpiresAt.IsZero() {
		t.Errorf("Put after expiry = %+v, %v; want version 1 again", e, err)
	}

	e, ok, err := kv.CompareAndSet(ctx, "n", 1, 0)
	if err != nil || !ok || e.Version != 1 {
		t.Errorf("CompareAndSet if absent = %+v, %v, %v", e, ok, err)
	}
	if e, ok, err := kv.CompareAndSet(ctx, "n", 5, 0); err != nil || ok || e.Version != 1 || e.Value != 1.0 {
		t.Errorf("CompareAndSet if absent, present = %+v, %v, %v; want the current entry", e, ok, err)
	}
	if e, ok, err := kv.CompareAndSet(ctx, "missing", 1, 3); err != nil || ok || e.Key != "" {
		t.Errorf("CompareAndSet of a missing key at version 3 = %+v, %v, %v", e, ok, err)
	}
	_, err = kv.DeleteIf(ctx, "n", 7)
	wantCode(t, "DeleteIf at another version", err, "VALIDATION_ERROR")
	if ok, err := kv.DeleteIf(ctx, "n", 1); err != nil || !ok {
		t.Errorf("DeleteIf = %v, %v", ok, err)
	}
	if ok, err := kv.Delete(ctx, "n"); err != nil || ok {
		t.Errorf("Delete of a deleted key = %v, %v", ok, err)
	}

	for _, k := range []string{"item:3", "item:1", "item:2"} {
		if _, err := kv.Put(ctx, k, k); err != nil {
			t.Fatal(err)
		}
	}
	page, next, err := kv.List(ctx, "item:", "", 2)
	if err != nil || len(page) != 2 || page[0].Key != "item:1" || next != "item:2" {
		t.Errorf("List page 1 = %+v, %q, %v", page, next, err)
	}
	page, next, err = kv.List(ctx, "item:", next, 2)
	if err != nil || len(page) != 1 || page[0].Key != "item:3" || next != "" {
		t.Errorf("List page 2 = %+v, %q, %v", page, next, err)
	}
	if keys := entryKeys(h.KV("").Entries()); !slices.Equal(keys, []string{"cart:1", "item:1", "item:2", "item:3"}) {
		t.Errorf("Entries = %v", keys)
	}

	if readers, err := kv.Share(ctx, "report-plugin", "audit-plugin"); err != nil || !slices.Equal(readers, []string{"audit-plugin", "report-plugin"}) {
		t.Errorf("Share = %v, %v", readers, err)
	}
	if r := h.KV("").Readers(); !slices.Equal(r, []string{"audit-plugin", "report-plugin"}) {
		t.Errorf("Readers = %v", r)
	}
	_, _, err = s.SharedKV("billing-plugin").Get(ctx, "rate")
	wantCode(t, "Get from a namespace not shared", err, "PLUGIN_PERMISSION_DENIED")
	h.KV("billing-plugin").Share("orders-plugin")
	if e, found, err := s.SharedKV("billing-plugin").Get(ctx, "rate"); err != nil || !found || e.Value != 0.2 {
		t.Errorf("Get from a shared namespace = %+v, %v, %v", e, found, err)
	}
	_, err = s.SharedKV("billing-plugin").Put(ctx, "rate", 0.3)
	wantCode(t, "Put into another plugin's namespace", err, "PLUGIN_PERMISSION_DENIED")
}

func TestKVPermissions(t *testing.T) {
	t.Parallel()
	errs := make(chan [2]error, 1)
	h := plugintest.NewHost(t, plugintest.Options{PluginID: "orders-plugin", Granted: []string{"database:read"}})
	h.Start(plugin.Plugin{OnStart: func(ctx context.Context, s *plugin.Session) error {
		_, _, getErr := s.KV().Get(ctx, "k")
		_, putErr := s.KV().Put(ctx, "k", 1)
		errs <- [2]error{getErr, putErr}
		return nil
	}})
	got := <-errs
	if got[0] != nil {
		t.Errorf("Get with database:read = %v", got[0])
	}
	wantCode(t, "Put without database:write", got[1], "PLUGIN_PERMISSION_DENIED")
}

func TestHealthConfigAndShutdown(t *testing.T) {
	t.Parallel()
	stopped := make(chan string, 1)
	p := orders()
	p.OnShutdown = func(ctx context.Context, reason string) { stopped <- reason }
	h := plugintest.NewHost(t, plugintest.Options{
		PluginID:        "orders-plugin",
		Config:          map[string]any{"greeting": "Hello", "batch": 10},
		RestartRequired: []string{"batch"},
	})
	changes := make(chan plugin.ConfigChange, 4)
	onChange := p.OnConfigChange
	p.OnConfigChange = func(ctx context.Context, c plugin.ConfigChange) error {
		changes <- c
		return onChange(ctx, c)
	}
	h.Start(p)
	ctx := testContext(t)

	checks, err := h.CheckHealth(ctx)
	if err != nil || len(checks) != 1 || checks[0].Name != "orders-db" || checks[0].Status != plugin.StatusPass || *checks[0].ResponseTimeMS != 1 {
		t.Errorf("CheckHealth = %+v, %v", checks, err)
	}

	ok, reason, err := h.UpdateConfig(ctx, map[string]any{"greeting": 42})
	if err != nil || ok || reason != "greeting must be a string" {
		t.Errorf("a rejected change = %v, %q, %v", ok, reason, err)
	}
	if c := h.Config(); c["greeting"] != "Hello" {
		t.Errorf("Config after a rejected change = %v", c)
	}
	ok, reason, err = h.UpdateConfig(ctx, map[string]any{"greeting": "Hi", "batch": 20, "unused": nil})
	if err != nil || !ok || reason != "" {
		t.Errorf("an accepted change = %v, %q, %v", ok, reason, err)
	}
	<-changes
	if c := <-changes; !slices.Equal(c.UpdatedFields, []string{"batch", "greeting"}) || !c.RestartRequired || c.Config["batch"] != 20.0 {
		t.Errorf("the plugin saw %+v", c)
	}
	if r, err := h.Send(ctx, "user", "greet", nil); err != nil || r.Data["text"] != "Hi, user" {
		t.Errorf("greet after the change = %+v, %v", r, err)
	}

	if err := h.Shutdown(ctx, "test over"); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if r := <-stopped; r != "test over" {
		t.Errorf("OnShutdown reason %q", r)
	}
	_, err = h.Send(ctx, "user", "greet", nil)
	wantCode(t, "Send after shutdown", err, "PLUGIN_UNAVAILABLE")
}

func TestLogsAndWaitFor(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	h := plugintest.NewHost(t, plugintest.Options{PluginID: "orders-plugin", Config: map[string]any{"greeting": "Hello"}, Granted: []string{"events:subscribe"}})
	p := orders()
	onStart := p.OnStart
	p.OnStart = func(ctx context.Context, s *plugin.Session) error {
		if err := onStart(ctx, s); err != nil {
			return err
		}
		go func() {
			<-release
			s.Logger().Warn("late", "n", 1)
		}()
		return nil
	}
	h.Start(p)
	// Log records are not acknowledged: the first may still be on its way.
	if err := h.WaitFor(testContext(t), func() bool { return len(h.Logs()) > 0 }); err != nil {
		t.Fatal(err)
	}
	logs := h.Logs()
	if len(logs) != 1 || logs[0].Level != "INFO" || logs[0].Message != "orders started" || logs[0].Metadata["greeting"] != "Hello" || logs[0].FromHost {
		t.Errorf("Logs = %+v", logs)
	}
	close(release)
	err := h.WaitFor(testContext(t), func() bool { return len(h.Logs()) == 2 })
	if logs := h.Logs(); err != nil || logs[1].Message != "late" || logs[1].Level != "WARNING" {
		t.Errorf("WaitFor = %v, logs %+v", err, logs)
	}
	ctx, cancel := context.WithTimeout(testContext(t), 50*time.Millisecond)
	defer cancel()
	if err := h.WaitFor(ctx, func() bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor of a condition that never holds = %v", err)
	}
}

func TestDiscover(t *testing.T) {
	t.Parallel()
	found := make(chan []plugin.Provider, 2)
	h := plugintest.NewHost(t, plugintest.Options{PluginID: "orders-plugin", Providers: []plugin.Provider{
		{PluginID: "billing-plugin", Version: "2.0.0", Status: "active", Services: []string{"billing"}, Instances: 2},
		{PluginID: "auth-plugin", Status: "active", MessageTypes: []plugin.MessageTypeInfo{{Type: "verify_token"}}},
	}})
	h.Start(plugin.Plugin{
		Version:      "1.0.0",
		Services:     []string{"orders"},
		MessageTypes: []string{"track"},
		OnStart: func(ctx context.Context, s *plugin.Session) error {
			all, err := s.Discover(ctx, plugin.Query{})
			found <- all
			if err != nil {
				return err
			}
			verifiers, err := s.Discover(ctx, plugin.Query{MessageType: "verify_token"})
			found <- verifiers
			return err
		},
	})
	var ids []string
	for _, p := range <-found {
		ids = append(ids, p.PluginID)
		if p.PluginID == "orders-plugin" && (p.Version != "1.0.0" || !slices.Equal(p.Services, []string{"orders"}) || p.Instances != 1) {
			t.Errorf("the plugin itself: %+v", p)
		}
	}
	if !slices.Equal(ids, []string{"auth-plugin", "billing-plugin", "orders-plugin"}) {
		t.Errorf("Discover = %v", ids)
	}
	if v := <-found; len(v) != 1 || v[0].PluginID != "auth-plugin" {
		t.Errorf("Discover verify_token = %+v", v)
	}
}

func TestOnStartFails(t *testing.T) {
	t.Parallel()
	h := plugintest.NewHost(t, plugintest.Options{})
	h.Start(plugin.Plugin{OnStart: func(ctx context.Context, s *plugin.Session) error {
		return errors.New("no database")
	}})
	if err := h.Wait(testContext(t)); err == nil || !strings.Contains(err.Error(), "no database") {
		t.Errorf("Wait = %v, want OnStart's error", err)
	}
}

func TestEnvironment(t *testing.T) {
	t.Parallel()
	h := plugintest.NewHost(t, plugintest.Options{})
	if h.PluginID() != plugintest.DefaultPluginID || !strings.HasPrefix(h.URL(), "http://127.0.0.1:") || h.Token() == "" {
		t.Errorf("PluginID %q, URL %q, Token %q", h.PluginID(), h.URL(), h.Token())
	}
	// A plugin with a wrong token is refused, as by the real host, and does not retry.
	ctx := testContext(t)
	quiet := []plugin.Option{plugin.WithHost(h.URL()), plugin.WithLogger(slog.New(slog.DiscardHandler)), plugin.WithStderr(io.Discard)}
	err := plugin.Run(ctx, plugin.Plugin{}, append(quiet, plugin.WithPluginID(h.PluginID()), plugin.WithToken("nxt_wrong"))...)
	if plugin.ErrorCode(err) != "UNAUTHENTICATED" {
		t.Errorf("Run with a wrong token = %v", err)
	}
	err = plugin.Run(ctx, plugin.Plugin{}, append(quiet, plugin.WithPluginID("other-plugin"), plugin.WithToken(h.Token()))...)
	if plugin.ErrorCode(err) != "PLUGIN_PERMISSION_DENIED" {
		t.Errorf("Run as another plugin = %v", err)
	}
}

func entryKeys(entries []plugin.Entry) []string {
	keys := make([]string, 0, len(entries))
	for _, e := range entries {
		keys = append(keys, e.Key)
	}
	return keys
}

// TestNoGoroutineLeak runs a host and its plugin through a test's life, and checks that
// their goroutines are gone after its cleanup. It is not parallel, so that other tests'
// goroutines do not count. The host waits for its own goroutines; the check polls only
// for those of the connections' transports, which exit on their own once closed.
func TestNoGoroutineLeak(t *testing.T) {
	baseline := runtime.NumGoroutine()
	t.Run("life", func(t *testing.T) {
		h := plugintest.NewHost(t, plugintest.Options{PluginID: "orders-plugin", Granted: allGranted})
		h.HandlePlugin("billing-plugin", func(string, map[string]any) (map[string]any, error) { return nil, nil })
		h.Start(orders())
		ctx := testContext(t)
		if _, err := h.Send(ctx, "user", "charge", map[string]any{"amount": 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Emit(ctx, "system", "user.created", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := h.CheckHealth(ctx); err != nil {
			t.Fatal(err)
		}
	})
	deadline := time.Now().Add(waitTime)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), baseline, buf.String())
		}
		<-tick.C
	}
}

// The test host carries uploads and downloads larger than the window, both ways.
func TestHTTPLargeBodies(t *testing.T) {
	h := plugintest.NewHost(t, plugintest.Options{PluginID: "files-plugin"})
	h.Start(plugin.Plugin{HTTP: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = w.Write(bytes.Repeat(b, 2))
	})})
	upload := bytes.Repeat([]byte("abcdefgh"), (1<<20)/8)
	rec := httptest.NewRecorder()
	h.HTTP(plugin.Caller{}).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/echo", bytes.NewReader(upload)))
	if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), bytes.Repeat(upload, 2)) {
		t.Fatalf("%d, %d bytes", rec.Code, rec.Body.Len())
	}
}
