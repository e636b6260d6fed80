package server_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/structpb"

	nexus "github.com/nexus-platform/nexus/clients/go"
	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis/redistest"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/server"
)

// buses runs a test against the in-memory bus and against Redis Streams (a real
// redis-server started for the test).
func buses(t *testing.T, test func(t *testing.T, tune func(*server.Config))) {
	t.Run("memory", func(t *testing.T) {
		test(t, func(c *server.Config) { c.ProcessingTimeout = 2 * time.Second })
	})
	t.Run("redis", func(t *testing.T) {
		rs := redistest.Start(t, redistest.Options{})
		test(t, func(c *server.Config) {
			c.ProcessingTimeout = 2 * time.Second
			c.RedisURL = rs.URL()
			c.RedisPrefix = "test-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")) + ":"
		})
	})
}

func startMessagingServer(t *testing.T, tune func(*server.Config)) *env {
	t.Helper()
	return startServerWith(t, testLogSink(), slog.LevelDebug, func(c *server.Config) {
		c.HealthInterval = 300 * time.Millisecond
		tune(c)
	})
}

// externalPlugin installs and enables an external plugin with the given manifest fields.
func externalPlugin(e *env, id string, extra map[string]any) {
	e.t.Helper()
	m := map[string]any{
		"id": id, "name": "Messaging " + id, "version": "1.0.0", "category": "testing",
		"external": true, "nexus_version": ">=1.0.0",
	}
	for k, v := range extra {
		m[k] = v
	}
	if res := installFromBytes(e, pkg(e.t, m, nil), map[string]any{}); res.Status != http.StatusOK {
		e.t.Fatalf("install %s: %d %s", id, res.Status, res.Raw)
	}
	e.mustREST("POST", "/api/v1/plugins/"+id+"/enable", e.Admin, map[string]any{})
}

// runInstance runs one instance of an external plugin in this process until the test ends
// or stop is called. It returns once the instance is connected.
func runInstance(e *env, id, instance string, p plugin.Plugin, opts ...plugin.Option) (stop func()) {
	e.t.Helper()
	token := e.token(store.RolePlugin, id)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan *plugin.Session, 1)
	inner := p.OnStart
	p.OnStart = func(ctx context.Context, s *plugin.Session) error {
		if inner != nil {
			if err := inner(ctx, s); err != nil {
				return err
			}
		}
		started <- s
		return nil
	}
	if p.Version == "" {
		p.Version = "1.0.0"
	}
	done := make(chan error, 1)
	go func() {
		done <- plugin.Run(ctx, p, append([]plugin.Option{plugin.WithHost(e.URL), plugin.WithToken(token), plugin.WithPluginID(id),
			plugin.WithInstanceID(instance), plugin.WithStderr(io.Discard), plugin.WithReconnectBackoff(50*time.Millisecond, 500*time.Millisecond)},
			opts...)...)
	}()
	select {
	case <-started:
	case err := <-done:
		cancel()
		e.t.Fatalf("instance %s of %s ended: %v", instance, id, err)
	case <-time.After(10 * time.Second):
		cancel()
		e.t.Fatalf("instance %s of %s did not start", instance, id)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				e.t.Errorf("instance %s of %s did not stop", instance, id)
			}
		})
	}
	e.t.Cleanup(stop)
	waitFor(e.t, id+" to be active", 10*time.Second, func() bool {
		st, _ := status(e, id)
		return st == "active"
	})
	return stop
}

func TestSendMessageOverREST(t *testing.T) {
	buses(t, func(t *testing.T, tune func(*server.Config)) {
		e := startMessagingServer(t, tune)
		externalPlugin(e, "user-management", map[string]any{"permissions": []string{"messages:send"}})
		externalPlugin(e, "analytics-plugin", map[string]any{
			"message_types": []map[string]any{
				{"type": "user_stats_request", "description": "statistics of one user"},
				{"type": "export", "required_permission": "analytics:export"},
			},
		})
		var gotSource, gotType atomic.Value
		release := make(chan struct{})
		cancelled := make(chan error, 1)
		runInstance(e, "analytics-plugin", "a1", plugin.Plugin{
			OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
				gotSource.Store(m.Source)
				gotType.Store(m.Type)
				switch m.Data["mode"] {
				case "slow":
					select {
					case <-ctx.Done():
						cancelled <- context.Cause(ctx)
						return nil, ctx.Err()
					case <-release:
					}
				case "fail":
					return nil, errors.New("no such user")
				}
				return map[string]any{"total_sessions": 45.0, "user_id": m.Data["user_id"],
					"most_visited_pages": []any{"/dashboard", "/profile"}}, nil
			},
		})

		res := e.rest("POST", "/v1/plugins/user-management/message", e.Admin, map[string]any{
			"target_plugin": "analytics-plugin", "message_type": "user_stats_request",
			"data": map[string]any{"user_id": "user_123"}, "timeout_seconds": 10,
		})
		if res.Status != http.StatusOK {
			t.Fatalf("send: %d %s", res.Status, res.Raw)
		}
		compareShape(t, "", seed(t, "send_message")["data"], res.data())
		reply := res.data()["response"].(map[string]any)
		if reply["status"] != "success" || reply["data"].(map[string]any)["user_id"] != "user_123" {
			t.Fatalf("reply = %v", reply)
		}
		if !strings.HasPrefix(res.data()["message_id"].(string), "msg_") || gotSource.Load() != "user-management" || gotType.Load() != "user_stats_request" {
			t.Fatalf("message_id %v, source %v, type %v", res.data()["message_id"], gotSource.Load(), gotType.Load())
		}

		// A handler's error comes back as a reply of status error.
		res = e.rest("POST", "/api/v1/plugins/user-management/message", e.Admin, map[string]any{
			"target_plugin": "analytics-plugin", "message_type": "user_stats_request", "data": map[string]any{"mode": "fail"},
		})
		if r := res.data()["response"].(map[string]any); r["status"] != "error" || !strings.Contains(r["data"].(map[string]any)["error"].(string), "no such user") {
			t.Fatalf("failing handler: %d %s", res.Status, res.Raw)
		}

		// The sender's deadline: the caller gets 408 and the handler is cancelled.
		start := time.Now()
		res = e.rest("POST", "/api/v1/plugins/user-management/message", e.Admin, map[string]any{
			"target_plugin": "analytics-plugin", "message_type": "user_stats_request", "data": map[string]any{"mode": "slow"}, "timeout_seconds": 1,
		})
		if res.Status != http.StatusRequestTimeout || res.errorCode() != "PLUGIN_COMMUNICATION_TIMEOUT" {
			t.Fatalf("timeout: %d %s", res.Status, res.Raw)
		}
		if d := time.Since(start); d < time.Second || d > 5*time.Second {
			t.Fatalf("the timeout took %s", d)
		}
		select {
		case <-cancelled:
		case <-time.After(5 * time.Second):
			t.Fatal("the handler was not cancelled when its sender's deadline passed")
		}

		// The caller going away cancels the handler.
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(300 * time.Millisecond)
			cancel()
		}()
		req, _ := http.NewRequestWithContext(ctx, "POST", e.URL+"/api/v1/plugins/user-management/message",
			strings.NewReader(`{"target_plugin":"analytics-plugin","message_type":"x","data":{"mode":"slow"}}`))
		req.Header.Set("Authorization", "Bearer "+e.Admin)
		req.Header.Set("Content-Type", "application/json")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("a cancelled request answered %d", resp.StatusCode)
		}
		select {
		case <-cancelled:
		case <-time.After(5 * time.Second):
			t.Fatal("the handler was not cancelled when its caller went away")
		}
		close(release)

		for _, c := range []struct {
			name, sender, target, typ, token, code string
			status                                 int
		}{
			{"unknown target", "user-management", "nobody-here", "x", e.Admin, "PLUGIN_NOT_FOUND", 404},
			{"unknown sender", "nobody-here", "analytics-plugin", "x", e.Admin, "PLUGIN_NOT_FOUND", 404},
			{"sender without messages:send", "analytics-plugin", "user-management", "x", e.Admin, "PLUGIN_PERMISSION_DENIED", 403},
			{"type requiring a permission", "user-management", "analytics-plugin", "export", e.Admin, "PLUGIN_PERMISSION_DENIED", 403},
			{"a user may not send", "user-management", "analytics-plugin", "x", e.User, "PLUGIN_PERMISSION_DENIED", 403},
			{"another plugin's token", "user-management", "analytics-plugin", "x", e.token(store.RolePlugin, "analytics-plugin"), "PLUGIN_PERMISSION_DENIED", 403},
			{"bad message type", "user-management", "analytics-plugin", "bad type!", e.Admin, "VALIDATION_ERROR", 400},
		} {
			res := e.rest("POST", "/api/v1/plugins/"+c.sender+"/message", c.token, map[string]any{"target_plugin": c.target, "message_type": c.typ})
			if res.Status != c.status || res.errorCode() != c.code {
				t.Errorf("%s: %d %s, want %d %s", c.name, res.Status, res.Raw, c.status, c.code)
			}
		}
		// Installed and enabled, but no instance connected.
		externalPlugin(e, "idle-plugin", nil)
		res = e.rest("POST", "/api/v1/plugins/user-management/message", e.Admin, map[string]any{"target_plugin": "idle-plugin", "message_type": "x"})
		if res.Status != http.StatusServiceUnavailable || res.errorCode() != "PLUGIN_UNAVAILABLE" {
			t.Fatalf("no instance: %d %s", res.Status, res.Raw)
		}
		// The plugin itself may send with its own token.
		res = e.rest("POST", "/api/v1/plugins/user-management/message", e.token(store.RolePlugin, "user-management"),
			map[string]any{"target_plugin": "analytics-plugin", "message_type": "user_stats_request"})
		if res.Status != http.StatusOK {
			t.Fatalf("plugin token: %d %s", res.Status, res.Raw)
		}
	})
}

func TestPluginsTalkOverTheirStreams(t *testing.T) {
	buses(t, func(t *testing.T, tune func(*server.Config)) {
		e := startMessagingServer(t, tune)
		externalPlugin(e, "sender-plugin", map[string]any{"category": "apps",
			"permissions": []string{"messages:send", "events:emit", "events:subscribe", "database:read", "database:write", "users:read"},
			"services":    []string{"accounts"},
		})
		externalPlugin(e, "worker-plugin", map[string]any{"category": "monitoring",
			"permissions":   []string{"events:subscribe", "database:read", "database:write"},
			"message_types": []map[string]any{{"type": "lookup", "required_permission": "users:read", "description": "find a user"}},
			"events":        map[string]any{"subscribes": []string{"user.*"}},
			"api_endpoints": []map[string]any{{"path": "/api/v1/worker/status", "methods": []string{"GET"}}},
		})
		events := make(chan plugin.Event, 16)
		broadcasts := make(chan plugin.Event, 16)
		var workerSession atomic.Pointer[plugin.Session]
		runInstance(e, "worker-plugin", "w1", plugin.Plugin{
			Services: []string{"lookups"},
			OnStart: func(ctx context.Context, s *plugin.Session) error {
				workerSession.Store(s)
				return nil
			},
			OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
				return map[string]any{"found": m.Data["user"]}, nil
			},
			OnEvent:     func(ctx context.Context, ev plugin.Event) error { events <- ev; return nil },
			OnBroadcast: func(ctx context.Context, b plugin.Event) error { broadcasts <- b; return nil },
		})
		var sender *plugin.Session
		senderEvents := make(chan plugin.Event, 16)
		runInstance(e, "sender-plugin", "s1", plugin.Plugin{
			OnStart: func(ctx context.Context, s *plugin.Session) error { sender = s; return nil },
			OnEvent: func(ctx context.Context, ev plugin.Event) error { senderEvents <- ev; return nil },
		})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()

		// A message, checked against the permission the target requires of senders.
		reply, err := sender.Send(ctx, "worker-plugin", "lookup", map[string]any{"user": "ada"})
		if err != nil || reply.Status != "success" || reply.Data["found"] != "ada" {
			t.Fatalf("send: %+v %v", reply, err)
		}
		if _, err := sender.Send(ctx, "nobody-home", "lookup", nil); plugin.ErrorCode(err) != "PLUGIN_NOT_FOUND" {
			t.Fatalf("unknown target: %v", err)
		}
		// The worker may not send at all (no messages:send).
		if _, err := workerSession.Load().Send(ctx, "sender-plugin", "x", nil); plugin.ErrorCode(err) != "PLUGIN_PERMISSION_DENIED" {
			t.Fatalf("send without messages:send: %v", err)
		}

		// Events reach subscribers (from the manifest), never the emitter itself.
		if err := sender.Subscribe(ctx, "user.*"); err != nil {
			t.Fatal(err)
		}
		res, err := sender.Emit(ctx, "user.login", map[string]any{"user_id": "u1"})
		if err != nil || len(res.Recipients) != 1 || res.Recipients[0] != "worker-plugin" {
			t.Fatalf("emit: %+v %v", res, err)
		}
		select {
		case ev := <-events:
			if ev.Type != "user.login" || ev.Source != "sender-plugin" || ev.Data["user_id"] != "u1" || ev.ID != res.ID {
				t.Fatalf("event = %+v", ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the subscriber did not get the event")
		}
		if _, err := sender.Emit(ctx, "billing.paid", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := workerSession.Load().Emit(ctx, "user.logout", nil); plugin.ErrorCode(err) != "PLUGIN_PERMISSION_DENIED" {
			t.Fatalf("emit without events:emit: %v", err)
		}
		if _, err := sender.Emit(ctx, "plugin.enabled", nil); plugin.ErrorCode(err) != "VALIDATION_ERROR" {
			t.Fatalf("emitting a host event type: %v", err)
		}
		// An administrator's event reaches the sender's run-time subscription too.
		if r := e.rest("POST", "/api/v1/events", e.Admin, map[string]any{"type": "user.created", "data": map[string]any{"user_id": "u2"}}); r.Status != http.StatusOK {
			t.Fatalf("POST /events: %d %s", r.Status, r.Raw)
		}
		for _, ch := range []chan plugin.Event{events, senderEvents} {
			select {
			case ev := <-ch:
				if ev.Type != "user.created" || ev.Source != "admin" {
					t.Fatalf("admin event = %+v", ev)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("a subscriber did not get the admin's event")
			}
		}
		select {
		case ev := <-events:
			t.Fatalf("the worker got an event it did not subscribe to: %+v", ev)
		default:
		}

		// Broadcasts: by category, never to the sender.
		b, err := sender.Broadcast(ctx, "maintenance", map[string]any{"in": "1h"}, plugin.BroadcastOptions{Categories: []string{"monitoring"}})
		if err != nil || len(b.Recipients) != 1 || b.Recipients[0] != "worker-plugin" {
			t.Fatalf("broadcast: %+v %v", b, err)
		}
		select {
		case got := <-broadcasts:
			if got.Type != "maintenance" || got.ID != b.ID {
				t.Fatalf("broadcast = %+v", got)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the broadcast was not delivered")
		}
		r := e.mustREST("POST", "/api/v1/plugins/broadcast", e.Admin, map[string]any{"message_type": "note", "exclude_plugins": []string{"worker-plugin"}})
		if rec := r["recipients"].([]any); len(rec) != 1 || rec[0] != "sender-plugin" {
			t.Fatalf("admin broadcast recipients = %v", rec)
		}

		// Key-value store, and a namespace shared read-only.
		kv := sender.KV()
		en, err := kv.Put(ctx, "users/ada", map[string]any{"logins": 1.0})
		if err != nil || en.Version != 1 {
			t.Fatalf("put: %+v %v", en, err)
		}
		if _, ok, err := kv.CompareAndSet(ctx, "users/ada", map[string]any{"logins": 2.0}, 7); ok || err != nil {
			t.Fatalf("CAS with a stale version: %v %v", ok, err)
		}
		if en, ok, err := kv.CompareAndSet(ctx, "users/ada", map[string]any{"logins": 2.0}, 1); !ok || err != nil || en.Version != 2 {
			t.Fatalf("CAS: %+v %v %v", en, ok, err)
		}
		if _, err := kv.Put(ctx, "session/x", "short", plugin.WithTTL(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if list, _, err := kv.List(ctx, "users/", "", 0); err != nil || len(list) != 1 || list[0].Key != "users/ada" {
			t.Fatalf("list: %+v %v", list, err)
		}
		shared := workerSession.Load().SharedKV("sender-plugin")
		if _, _, err := shared.Get(ctx, "users/ada"); plugin.ErrorCode(err) != "PLUGIN_PERMISSION_DENIED" {
			t.Fatalf("reading an unshared namespace: %v", err)
		}
		if _, err := kv.Share(ctx, "worker-plugin"); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := shared.Get(ctx, "users/ada"); err != nil || !ok || got.Value.(map[string]any)["logins"] != 2.0 {
			t.Fatalf("reading a shared namespace: %+v %v %v", got, ok, err)
		}
		if _, err := workerSession.Load().KV().Put(ctx, "mine", true); err != nil {
			t.Fatalf("the worker's own namespace: %v", err)
		}

		// Discovery, over the stream and the API.
		providers, err := sender.Discover(ctx, plugin.Query{MessageType: "lookup"})
		if err != nil || len(providers) != 1 || providers[0].PluginID != "worker-plugin" || providers[0].Instances != 1 ||
			providers[0].MessageTypes[0].RequiredPermission != "users:read" || len(providers[0].Endpoints) != 1 {
			t.Fatalf("discover: %+v %v", providers, err)
		}
		svc := e.mustREST("GET", "/api/v1/services?service=lookups", e.User, nil)["services"].([]any)
		if len(svc) != 1 || svc[0].(map[string]any)["plugin_id"] != "worker-plugin" {
			t.Fatalf("GET /services?service=lookups = %v", svc)
		}
		all := e.mustREST("GET", "/api/v1/services", e.Admin, nil)["services"].([]any)
		if len(all) != 2 {
			t.Fatalf("GET /services = %v", all)
		}

		// Uninstalling with cleanup_data removes the key-value data.
		e.mustREST("POST", "/api/v1/plugins/sender-plugin/disable", e.Admin, map[string]any{"force": true})
		e.mustREST("DELETE", "/api/v1/plugins/sender-plugin?cleanup_data=true", e.Admin, nil)
		externalPlugin(e, "sender-plugin", map[string]any{"permissions": []string{"database:read"}})
		var again *plugin.Session
		runInstance(e, "sender-plugin", "s2", plugin.Plugin{OnStart: func(ctx context.Context, s *plugin.Session) error { again = s; return nil }})
		if _, ok, err := again.KV().Get(ctx, "users/ada"); ok || err != nil {
			t.Fatalf("data survived cleanup_data: %v %v", ok, err)
		}
		if _, err := again.KV().Put(ctx, "x", 1); plugin.ErrorCode(err) != "PLUGIN_PERMISSION_DENIED" {
			t.Fatalf("write without database:write: %v", err)
		}
		if err := again.Subscribe(ctx, "user.*"); plugin.ErrorCode(err) != "PLUGIN_PERMISSION_DENIED" {
			t.Fatalf("subscribe without events:subscribe: %v", err)
		}
		if _, err := again.Broadcast(ctx, "x", nil, plugin.BroadcastOptions{}); plugin.ErrorCode(err) != "PLUGIN_PERMISSION_DENIED" {
			t.Fatalf("broadcast without messages:send: %v", err)
		}
	})
}

func TestEventsFeedsAndDeadLetters(t *testing.T) {
	buses(t, func(t *testing.T, tune func(*server.Config)) {
		e := startMessagingServer(t, func(c *server.Config) {
			tune(c)
			c.ProcessingTimeout = 500 * time.Millisecond
			c.MaxDeliveryAttempts = 3
		})
		client := nexus.New(e.URL, nexus.WithToken(e.User))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		watch, err := client.Messaging.WatchEvents(ctx, connect.NewRequest(&pluginv1.WatchEventsRequest{Patterns: []string{"plugin.*", "order.*"}}))
		if err != nil {
			t.Fatal(err)
		}
		defer watch.Close()
		watched := make(chan *pluginv1.Event, 64)
		go func() {
			for watch.Receive() {
				watched <- watch.Msg().GetEvent()
			}
			close(watched)
		}()
		// The same feed as Server-Sent Events.
		// (Patterns comma-separated: the query is read as every REST query is.)
		req, _ := http.NewRequestWithContext(ctx, "GET", e.URL+"/api/v1/events/stream?patterns=order.*,nothing.*", nil)
		req.Header.Set("Authorization", "Bearer "+e.Admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("SSE: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		sse := make(chan string, 64)
		go func() {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				sse <- sc.Text()
			}
			close(sse)
		}()

		externalPlugin(e, "orders-plugin", map[string]any{"permissions": []string{"events:subscribe"},
			"events": map[string]any{"subscribes": []string{"order.*"}}})
		var attempts sync.Map
		slowDone := make(chan struct{})
		runInstance(e, "orders-plugin", "o1", plugin.Plugin{
			OnEvent: func(ctx context.Context, ev plugin.Event) error {
				n, _ := attempts.LoadOrStore(ev.ID, new(atomic.Int32))
				k := n.(*atomic.Int32).Add(1)
				switch ev.Data["mode"] {
				case "poison":
					return plugin.Permanent(errors.New("cannot parse this order"))
				case "flaky":
					return errors.New("try again") // left for redelivery
				case "once-slow":
					if k == 1 {
						// Five processing timeouts: without the SDK's automatic extension the
						// host would redeliver it until it is dead-lettered (3 attempts).
						time.Sleep(2500 * time.Millisecond)
						close(slowDone)
					}
				}
				return nil
			},
		})
		waitEvent := func(what string, match func(*pluginv1.Event) bool) *pluginv1.Event {
			t.Helper()
			timeout := time.After(10 * time.Second)
			for {
				select {
				case ev, ok := <-watched:
					if !ok {
						t.Fatalf("the watch ended waiting for %s: %v", what, watch.Err())
					}
					if match(ev) {
						return ev
					}
				case <-timeout:
					t.Fatalf("no %s event", what)
				}
			}
		}
		waitEvent("plugin.enabled", func(ev *pluginv1.Event) bool {
			return ev.GetType() == "plugin.enabled" && ev.GetSource() == "system" && ev.GetData().AsMap()["plugin_id"] == "orders-plugin"
		})

		emit := func(mode string) string {
			r := e.mustREST("POST", "/api/v1/events", e.User, map[string]any{"type": "order.placed", "data": map[string]any{"mode": mode}})
			return r["event_id"].(string)
		}
		okID := emit("ok")
		ev := waitEvent("order.placed", func(ev *pluginv1.Event) bool { return ev.GetId() == okID })
		if ev.GetSource() != "user" {
			t.Fatalf("source = %s", ev.GetSource())
		}
		sawSSE := false
		for line := range sse {
			if strings.HasPrefix(line, "data: ") && strings.Contains(line, okID) {
				sawSSE = true
				break
			}
		}
		if !sawSSE {
			t.Fatal("the SSE feed ended without the event")
		}

		slowID, poisonID, flakyID := emit("once-slow"), emit("poison"), emit("flaky")
		deadIDs := func() map[string]map[string]any {
			out := map[string]map[string]any{}
			for _, d := range e.mustREST("GET", "/api/v1/plugins/orders-plugin/dead-letters", e.Admin, nil)["dead_letters"].([]any) {
				out[d.(map[string]any)["id"].(string)] = d.(map[string]any)
			}
			return out
		}
		waitFor(t, "the poison and flaky events to be dead-lettered", 15*time.Second, func() bool {
			d := deadIDs()
			return d[poisonID] != nil && d[flakyID] != nil
		})
		d := deadIDs()
		if d[poisonID]["attempts"] != 1.0 || !strings.Contains(d[poisonID]["reason"].(string), "cannot parse") {
			t.Fatalf("poison dead letter = %v", d[poisonID])
		}
		if d[flakyID]["attempts"] != 3.0 || d[flakyID]["kind"] != "event" || d[flakyID]["data"].(map[string]any)["mode"] != "flaky" {
			t.Fatalf("flaky dead letter = %v", d[flakyID])
		}
		select {
		case <-slowDone:
		case <-time.After(10 * time.Second):
			t.Fatal("the slow handler never finished")
		}
		time.Sleep(time.Second) // past another processing timeout: a redelivery would show now
		if d := deadIDs(); d[slowID] != nil {
			t.Fatalf("the slow event was dead-lettered while its handler worked: %v", d[slowID])
		}
		if n, _ := attempts.Load(slowID); n == nil || n.(*atomic.Int32).Load() != 1 {
			t.Fatal("the slow handler's event was delivered again while it was still working")
		}
		if r := e.rest("GET", "/api/v1/plugins/orders-plugin/dead-letters", e.User, nil); r.Status != http.StatusForbidden {
			t.Fatalf("a user read dead letters: %d", r.Status)
		}
		// The same story in /metrics: two dead letters (one rejected by the plugin, one
		// out of attempts), the flaky event's two redeliveries, nothing left in the inbox.
		waitFor(t, "the inbox to be empty in /metrics", 10*time.Second, func() bool {
			return metricValue(t, e, `nexus_plugin_inbox_depth{plugin_id="orders-plugin"}`) == 0
		})
		for series, want := range map[string]float64{
			`nexus_plugin_dead_letters{plugin_id="orders-plugin"}`:        2,
			`nexus_plugin_dead_lettered_total{plugin_id="orders-plugin"}`: 1,
			`nexus_plugin_redeliveries_total{plugin_id="orders-plugin"}`:  2,
		} {
			if got := metricValue(t, e, series); got != want {
				t.Errorf("%s = %v, want %v", series, got, want)
			}
		}

		e.mustREST("POST", "/api/v1/plugins/orders-plugin/disable", e.Admin, map[string]any{})
		waitEvent("plugin.disabled", func(ev *pluginv1.Event) bool { return ev.GetType() == "plugin.disabled" })
		e.mustREST("DELETE", "/api/v1/plugins/orders-plugin", e.Admin, nil)
		waitEvent("plugin.uninstalled", func(ev *pluginv1.Event) bool { return ev.GetType() == "plugin.uninstalled" })
		if r := e.rest("POST", "/api/v1/events", e.Admin, map[string]any{"type": "system.fake"}); r.errorCode() != "VALIDATION_ERROR" {
			t.Fatalf("emitting a system event: %d %s", r.Status, r.Raw)
		}
		if r := e.rest("GET", "/api/v1/events/stream?patterns=bad%20pattern", e.Admin, nil); r.errorCode() != "VALIDATION_ERROR" {
			t.Fatalf("bad SSE pattern: %d %s", r.Status, r.Raw)
		}
		if r := e.rest("GET", "/api/v1/events/stream?pattern=order.*", e.Admin, nil); r.errorCode() != "VALIDATION_ERROR" ||
			!strings.Contains(string(r.Raw), `"field":"pattern"`) {
			t.Fatalf("unknown SSE parameter: %d %s", r.Status, r.Raw)
		}
		if r := e.rest("GET", "/api/v1/events/stream", "", nil); r.Status != http.StatusUnauthorized {
			t.Fatalf("SSE without a token: %d %s", r.Status, r.Raw)
		}
	})
}

func TestKilledInstanceMidMessageIsRedelivered(t *testing.T) {
	buses(t, func(t *testing.T, tune func(*server.Config)) {
		e := startMessagingServer(t, tune)
		externalPlugin(e, "caller-plugin", map[string]any{"permissions": []string{"messages:send"}})
		externalPlugin(e, "echo-plugin", nil)
		entered := make(chan struct{}, 1)
		// The first instance's connections are cut under it, as when its process is killed:
		// the host sees the stream break, not a goodbye.
		var connsMu sync.Mutex
		var conns []net.Conn
		hc := nexus.DefaultHTTPClient()
		tr := hc.Transport.(*http.Transport)
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				connsMu.Lock()
				conns = append(conns, c)
				connsMu.Unlock()
			}
			return c, err
		}
		stopFirst := runInstance(e, "echo-plugin", "first", plugin.Plugin{
			OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
				entered <- struct{}{}
				<-ctx.Done() // never answers
				return nil, ctx.Err()
			},
		}, plugin.WithHTTPClient(hc))
		kill := func() {
			connsMu.Lock()
			for _, c := range conns {
				_ = c.(*net.TCPConn).SetLinger(0) // reset, not a graceful close
				_ = c.Close()
			}
			connsMu.Unlock()
			stopFirst()
		}
		result := make(chan restResult, 1)
		go func() {
			result <- e.rest("POST", "/api/v1/plugins/caller-plugin/message", e.Admin,
				map[string]any{"target_plugin": "echo-plugin", "message_type": "ping", "timeout_seconds": 20})
		}()
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("the first instance never got the message")
		}
		var attempt atomic.Int32
		runInstance(e, "echo-plugin", "second", plugin.Plugin{
			OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
				attempt.Store(int32(m.Attempt))
				return map[string]any{"answered_by": "second"}, nil
			},
		})
		kill()
		select {
		case r := <-result:
			if r.Status != http.StatusOK || r.data()["response"].(map[string]any)["data"].(map[string]any)["answered_by"] != "second" {
				t.Fatalf("reply: %d %s", r.Status, r.Raw)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the message was not redelivered to the live instance")
		}
		if attempt.Load() != 2 {
			t.Fatalf("attempt = %d, want 2", attempt.Load())
		}
	})
}

func TestInvalidRequestFrameFailsOnlyThatRequest(t *testing.T) {
	e := startMessagingServer(t, func(*server.Config) {})
	externalPlugin(e, "raw-plugin", map[string]any{"permissions": []string{"database:read", "database:write"}})
	c := nexus.New(e.URL, nexus.WithToken(e.token(store.RolePlugin, "raw-plugin")))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	stream := c.PluginHost.Connect(ctx)
	defer stream.CloseRequest()
	send := func(f *pluginhostv1.ConnectRequest) {
		t.Helper()
		if err := stream.Send(f); err != nil {
			t.Fatal(err)
		}
	}
	// replyTo reads frames (answering health checks) until the reply to id.
	replyTo := func(id string) *pluginhostv1.RequestReply {
		t.Helper()
		for {
			res, err := stream.Receive()
			if err != nil {
				t.Fatalf("waiting for the reply to %s: %v", id, err)
			}
			if hc := res.GetHealthCheck(); hc != nil {
				send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HealthReport{HealthReport: &pluginhostv1.HealthReport{CheckId: hc.GetCheckId()}}})
			}
			if r := res.GetReply(); r != nil && r.GetRequestId() == id {
				return r
			}
		}
	}
	send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Hello{Hello: &pluginhostv1.Hello{PluginId: "raw-plugin"}}})
	kv := func(id, key string) *pluginhostv1.ConnectRequest {
		return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Kv{Kv: &pluginhostv1.KvRequest{
			RequestId: id, Op: &pluginhostv1.KvRequest_Put{Put: &pluginhostv1.KvPut{Key: key, Value: structpb.NewBoolValue(true)}}}}}
	}
	send(kv("bad", strings.Repeat("k", 300)))
	if r := replyTo("bad"); r.GetErrorCode() != "VALIDATION_ERROR" || !strings.Contains(r.GetErrorMessage(), "key") {
		t.Fatalf("bad frame answered %v", r)
	}
	send(kv("good", "k"))
	if r := replyTo("good"); r.GetErrorCode() != "" || !r.GetKv().GetSwapped() {
		t.Fatalf("the session did not survive the bad frame: %v", r)
	}
}

func TestRedisOutageAndRestart(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{AOF: true})
	e := startMessagingServer(t, func(c *server.Config) { c.RedisURL = rs.URL() })
	externalPlugin(e, "jobs-plugin", map[string]any{"permissions": []string{"events:subscribe"},
		"events": map[string]any{"subscribes": []string{"job.*"}}})
	externalPlugin(e, "caller-plugin", map[string]any{"permissions": []string{"messages:send"}})
	var mu sync.Mutex
	seen := map[string]bool{}
	runInstance(e, "jobs-plugin", "j1", plugin.Plugin{
		OnEvent: func(ctx context.Context, ev plugin.Event) error {
			mu.Lock()
			seen[ev.ID] = true
			mu.Unlock()
			return nil
		},
		OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
			return map[string]any{"ok": true}, nil
		},
	})
	var accepted []string
	emit := func(n int) {
		for i := 0; i < n; i++ {
			r := e.rest("POST", "/api/v1/events", e.Admin, map[string]any{"type": "job.done", "data": map[string]any{"n": i}})
			if r.Status == http.StatusOK {
				accepted = append(accepted, r.data()["event_id"].(string))
			}
		}
	}
	emit(10)
	if status, body := readyz(t, e); status != http.StatusOK || body != "ready\n" {
		t.Fatalf("/readyz with Redis up: %d %q", status, body)
	}
	// The host's Redis connections are dropped under it: the bus reconnects by itself.
	admin := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	_ = admin.Do(context.Background(), "CLIENT", "KILL", "TYPE", "normal").Err()
	_ = admin.Close()
	waitFor(t, "events to flow after the connections were dropped", 20*time.Second, func() bool {
		r := e.rest("POST", "/api/v1/events", e.Admin, map[string]any{"type": "job.done", "data": map[string]any{"after": "kill"}})
		if r.Status == http.StatusOK {
			accepted = append(accepted, r.data()["event_id"].(string))
			return true
		}
		return false
	})
	emit(9)
	// Redis dies mid-stream (SIGKILL; with appendfsync always nothing acknowledged is lost).
	if err := rs.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := e.rest("POST", "/api/v1/plugins/caller-plugin/message", e.Admin, map[string]any{"target_plugin": "jobs-plugin", "message_type": "ping"})
	if r.Status != http.StatusServiceUnavailable || r.errorCode() != "PLUGIN_UNAVAILABLE" || time.Since(start) > 5*time.Second {
		t.Fatalf("a send while Redis is down: %d %s after %s", r.Status, r.Raw, time.Since(start))
	}
	if r := e.rest("POST", "/api/v1/events", e.Admin, map[string]any{"type": "job.done"}); r.errorCode() != "PLUGIN_UNAVAILABLE" {
		t.Fatalf("an event while Redis is down: %d %s", r.Status, r.Raw)
	}
	if status, body := readyz(t, e); status != http.StatusServiceUnavailable || body != "bus unavailable\n" {
		t.Fatalf("/readyz while Redis is down: %d %q", status, body)
	}
	if err := rs.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz to say ready again", 20*time.Second, func() bool {
		status, _ := readyz(t, e)
		return status == http.StatusOK
	})
	// The bus reconnects by itself; sends work again and the backlog is delivered.
	waitFor(t, "messages to flow again", 20*time.Second, func() bool {
		r := e.rest("POST", "/api/v1/plugins/caller-plugin/message", e.Admin, map[string]any{"target_plugin": "jobs-plugin", "message_type": "ping", "timeout_seconds": 2})
		return r.Status == http.StatusOK
	})
	emit(20)
	waitFor(t, "every accepted event to be delivered", 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range accepted {
			if !seen[id] {
				return false
			}
		}
		return true
	})
	if len(accepted) < 40 {
		t.Fatalf("%d of 40 events were accepted", len(accepted))
	}
}

// metricValue reads one series from /metrics; -1 when it is absent.
func metricValue(t *testing.T, e *env, series string) float64 {
	t.Helper()
	resp, err := http.Get(e.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return -1
}

// readyz answers GET /readyz: its status and body.
func readyz(t *testing.T, e *env) (int, string) {
	t.Helper()
	resp, err := http.Get(e.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestEveryPluginOperationNeedsItsGrant refuses each operation a plugin performs to a
// plugin that lacks the grant it needs.
func TestEveryPluginOperationNeedsItsGrant(t *testing.T) {
	e := startMessagingServer(t, func(*server.Config) {})
	externalPlugin(e, "owner-plugin", map[string]any{"permissions": []string{"database:read", "database:write"},
		"message_types": []map[string]any{{"type": "lookup", "required_permission": "users:read"}}})
	externalPlugin(e, "bare-plugin", map[string]any{"permissions": []string{"messages:send"}})
	var owner, bare *plugin.Session
	runInstance(e, "owner-plugin", "o1", plugin.Plugin{
		OnStart:   func(ctx context.Context, s *plugin.Session) error { owner = s; return nil },
		OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) { return map[string]any{}, nil },
	})
	runInstance(e, "bare-plugin", "b1", plugin.Plugin{
		// Subscriptions in hello, without events:subscribe: ignored.
		Subscriptions: []string{"audit.*"},
		OnStart:       func(ctx context.Context, s *plugin.Session) error { bare = s; return nil },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := owner.KV().Put(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.KV().Share(ctx, "bare-plugin"); err != nil {
		t.Fatal(err)
	}
	denied := func(what string, err error) {
		t.Helper()
		if plugin.ErrorCode(err) != "PLUGIN_PERMISSION_DENIED" {
			t.Errorf("%s without its grant: %v", what, err)
		}
	}
	_, _, err := bare.KV().Get(ctx, "k")
	denied("kv get (database:read)", err)
	_, _, err = bare.KV().List(ctx, "", "", 0)
	denied("kv list (database:read)", err)
	_, err = bare.KV().Put(ctx, "k", 1)
	denied("kv put (database:write)", err)
	_, err = bare.KV().Delete(ctx, "k")
	denied("kv delete (database:write)", err)
	_, err = bare.KV().Share(ctx, "owner-plugin")
	denied("kv share (database:write)", err)
	_, _, err = bare.SharedKV("owner-plugin").Get(ctx, "k")
	denied("reading a shared namespace (database:read)", err)
	_, err = bare.Send(ctx, "owner-plugin", "lookup", nil)
	denied("a message type requiring users:read", err)
	_, err = bare.Emit(ctx, "audit.seen", nil)
	denied("emit (events:emit)", err)
	denied("subscribe (events:subscribe)", bare.Subscribe(ctx, "audit.*"))
	_, err = owner.Send(ctx, "bare-plugin", "x", nil)
	denied("send (messages:send)", err)
	_, err = owner.Broadcast(ctx, "x", nil, plugin.BroadcastOptions{})
	denied("broadcast (messages:send)", err)
	// The same grants hold for a plugin token on the API.
	r := e.rest("POST", "/api/v1/events", e.token(store.RolePlugin, "bare-plugin"), map[string]any{"type": "audit.seen"})
	if r.Status != http.StatusForbidden || r.errorCode() != "PLUGIN_PERMISSION_DENIED" {
		t.Errorf("POST /events with a plugin token lacking events:emit: %d %s", r.Status, r.Raw)
	}
	// The hello subscription was ignored: the event reaches nobody.
	r = e.rest("POST", "/api/v1/events", e.Admin, map[string]any{"type": "audit.seen"})
	if rec := r.data()["recipients"].([]any); len(rec) != 0 {
		t.Errorf("an unsubscribed plugin got an event: %v", rec)
	}
}
