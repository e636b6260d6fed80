package plugintest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	"github.com/nexus-platform/nexus/clients/go/plugin/plugintest"
)

// greeter is a plugin under test: it answers "greet" messages with the greeting of its
// configuration, and tells the other plugins with an event.
func greeter() plugin.Plugin {
	return plugin.Plugin{
		MessageTypes: []string{"greet"},
		OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
			s := plugin.SessionFromContext(ctx)
			greeting, _ := s.Config()["greeting"].(string)
			text := fmt.Sprintf("%s, %v", greeting, m.Data["name"])
			if _, err := s.Emit(ctx, "greeting.sent", map[string]any{"to": m.Data["name"]}); err != nil {
				return nil, err
			}
			return map[string]any{"text": text}, nil
		},
	}
}

// A test starts the plugin on a host, sends it a message, and looks at what it did. In a
// test, t is the test's *testing.T; runExample stands in for it here.
func Example() {
	runExample(func(t testing.TB) {
		h := plugintest.NewHost(t, plugintest.Options{
			PluginID: "greeter-plugin",
			Config:   map[string]any{"greeting": "Hello"},
			Granted:  []string{"events:emit"},
		})
		h.Start(greeter())

		reply, err := h.Send(context.Background(), "user", "greet", map[string]any{"name": "Ada"})
		fmt.Println(reply.Status, reply.Data["text"], err)
		for _, e := range h.Emitted() {
			fmt.Println("emitted", e.Type, e.Data["to"])
		}
	})
	// Output:
	// success Hello, Ada <nil>
	// emitted greeting.sent Ada
}

// The host checks every request of the plugin against its grants, and answers with the
// real host's error codes.
func Example_permissions() {
	runExample(func(t testing.TB) {
		h := plugintest.NewHost(t, plugintest.Options{
			PluginID: "greeter-plugin",
			Config:   map[string]any{"greeting": "Hello"},
			// No events:emit.
		})
		h.Start(greeter())

		reply, _ := h.Send(context.Background(), "user", "greet", map[string]any{"name": "Ada"})
		fmt.Println(reply.Status+":", reply.Error)
		fmt.Println(plugin.ErrorCode(h.Emitted()[0].Err))
	})
	// Output:
	// error: PLUGIN_PERMISSION_DENIED: plugin greeter-plugin may not emit events: it lacks the permission events:emit
	// PLUGIN_PERMISSION_DENIED
}

// Other plugins are handlers: the plugin's messages to them reach the test.
func ExampleHost_HandlePlugin() {
	runExample(func(t testing.TB) {
		h := plugintest.NewHost(t, plugintest.Options{PluginID: "orders-plugin", Granted: []string{"messages:send"}})
		h.HandlePlugin("billing-plugin", func(messageType string, data map[string]any) (map[string]any, error) {
			if data["amount"].(float64) <= 0 {
				return nil, errors.New("nothing to charge")
			}
			return map[string]any{"invoice": "inv-1"}, nil
		})
		h.Start(plugin.Plugin{
			OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
				r, err := plugin.SessionFromContext(ctx).Send(ctx, "billing-plugin", "charge", m.Data)
				if err != nil {
					return nil, err
				}
				if r.Status == "error" {
					return nil, errors.New("billing: " + r.Error)
				}
				return r.Data, nil
			},
		})

		ctx := context.Background()
		r, _ := h.Send(ctx, "user", "checkout", map[string]any{"amount": 12.5})
		fmt.Println(r.Status, r.Data["invoice"])
		r, _ = h.Send(ctx, "user", "checkout", map[string]any{"amount": 0})
		fmt.Println(r.Status, r.Error)
		for _, m := range h.Sent() {
			fmt.Println("sent", m.Type, "to", m.Target, m.Data["amount"])
		}
	})
	// Output:
	// success inv-1
	// error billing: nothing to charge
	// sent charge to billing-plugin 12.5
	// sent charge to billing-plugin 0
}

// Emit tells what the plugin did with an event: acknowledged it, dead-lettered it, or left
// it to be delivered again.
func ExampleHost_Emit() {
	runExample(func(t testing.TB) {
		h := plugintest.NewHost(t, plugintest.Options{
			PluginID:      "mailer-plugin",
			Granted:       []string{"events:subscribe"},
			Subscriptions: []string{"user.*"}, // as the manifest would subscribe it
		})
		h.Start(plugin.Plugin{
			OnEvent: func(ctx context.Context, e plugin.Event) error {
				email, ok := e.Data["email"].(string)
				switch {
				case !ok:
					return plugin.Permanent(errors.New("no email"))
				case email == "down@example.com":
					return errors.New("mail server unreachable")
				}
				return nil
			},
		})

		ctx := context.Background()
		for _, data := range []map[string]any{{"email": "ada@example.com"}, {}, {"email": "down@example.com"}} {
			d, err := h.Emit(ctx, "users-plugin", "user.created", data)
			fmt.Println(d.Outcome, d.Reason, err)
		}
		_, err := h.Emit(ctx, "users-plugin", "order.paid", nil)
		fmt.Println(errors.Is(err, plugintest.ErrNotSubscribed))
	})
	// Output:
	// acked  <nil>
	// dead_lettered no email <nil>
	// unacked mail server unreachable <nil>
	// true
}

// The key-value store keeps versions, as the real one does; a test seeds it and looks
// into it, also into other plugins' namespaces that the plugin reads.
func ExampleHost_KV() {
	runExample(func(t testing.TB) {
		h := plugintest.NewHost(t, plugintest.Options{PluginID: "report-plugin", Granted: []string{"database:read", "database:write"}})
		// billing-plugin's namespace, shared with the plugin under test.
		if _, err := h.KV("billing-plugin").Put("rate", 0.2); err != nil {
			t.Fatal(err)
		}
		h.KV("billing-plugin").Share("report-plugin")
		h.Start(plugin.Plugin{
			OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
				s := plugin.SessionFromContext(ctx)
				rate, _, err := s.SharedKV("billing-plugin").Get(ctx, "rate")
				if err != nil {
					return nil, err
				}
				_, err = s.KV().Put(ctx, "last_rate", rate.Value)
				return nil, err
			},
		})

		for range 2 {
			if _, err := h.Send(context.Background(), "user", "report", nil); err != nil {
				t.Fatal(err)
			}
		}
		e, _ := h.KV("").Get("last_rate")
		fmt.Println(e.Value, e.Version)
	})
	// Output: 0.2 2
}

// WaitFor waits for what the plugin does on its own, without sleeping.
func ExampleHost_WaitFor() {
	runExample(func(t testing.TB) {
		h := plugintest.NewHost(t, plugintest.Options{PluginID: "ticker-plugin", Granted: []string{"events:emit"}})
		h.Start(plugin.Plugin{
			OnStart: func(ctx context.Context, s *plugin.Session) error {
				go func() { // background work, tied to the plugin's life
					for i := range 3 {
						if _, err := s.Emit(ctx, "tick", map[string]any{"n": i}); err != nil {
							return
						}
					}
				}()
				return nil
			},
		})

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := h.WaitFor(ctx, func() bool { return len(h.Emitted()) == 3 })
		fmt.Println(len(h.Emitted()), err)
	})
	// Output: 3 <nil>
}

// UpdateConfig pushes a configuration change, which the plugin accepts or rejects.
func ExampleHost_UpdateConfig() {
	runExample(func(t testing.TB) {
		h := plugintest.NewHost(t, plugintest.Options{
			Config:          map[string]any{"batch_size": 50, "flush_interval": 30},
			RestartRequired: []string{"flush_interval"},
		})
		h.Start(plugin.Plugin{
			OnConfigChange: func(ctx context.Context, c plugin.ConfigChange) error {
				if n, _ := c.Config["batch_size"].(float64); n < 1 {
					return errors.New("batch_size must be at least 1")
				}
				fmt.Println("changed", c.UpdatedFields, "restart required:", c.RestartRequired)
				return nil
			},
		})

		ctx := context.Background()
		fmt.Println(h.UpdateConfig(ctx, map[string]any{"batch_size": 0}))
		fmt.Println(h.UpdateConfig(ctx, map[string]any{"batch_size": 10, "flush_interval": 60}))
		fmt.Println(h.Config()["batch_size"])
	})
	// Output:
	// false batch_size must be at least 1 <nil>
	// changed [batch_size flush_interval] restart required: true
	// true  <nil>
	// 10
}

// runExample runs body with a testing.TB, as go test runs a test with its *testing.T:
// examples have none. It runs body's cleanups when body returns or fails.
func runExample(body func(t testing.TB)) {
	t := &exampleTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer t.cleanup()
		body(t)
	}()
	<-done
}

// exampleTB implements the methods of testing.TB that the host calls; its failures are
// printed, so that they show in the example's output.
type exampleTB struct {
	testing.TB // nil: the other methods are not used

	mu       sync.Mutex
	cleanups []func()
}

func (t *exampleTB) Helper()                   {}
func (t *exampleTB) Logf(string, ...any)       {}
func (t *exampleTB) Errorf(f string, a ...any) { fmt.Printf("error: "+f+"\n", a...) }
func (t *exampleTB) Fatal(a ...any)            { fmt.Println(a...); runtime.Goexit() }

func (t *exampleTB) Fatalf(f string, a ...any) {
	t.Errorf(f, a...)
	runtime.Goexit()
}

func (t *exampleTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func (t *exampleTB) cleanup() {
	t.mu.Lock()
	fs := t.cleanups
	t.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// A plugin's HTTP endpoints are an ordinary net/http handler (plugin.Plugin.HTTP); the test
// host carries requests to it over the stream, as the real host carries calls to the
// endpoints it serves.
func ExampleHost_HTTP() {
	runExample(func(t testing.TB) {
		h := plugintest.NewHost(t, plugintest.Options{PluginID: "hello-plugin"})
		mux := http.NewServeMux()
		mux.HandleFunc("GET /api/v1/hello/{name}", func(w http.ResponseWriter, r *http.Request) {
			caller, _ := plugin.CallerOf(r.Context())
			fmt.Fprintf(w, "hello %s, from %s (%s)", r.PathValue("name"), caller.Name, caller.Role)
		})
		h.Start(plugin.Plugin{HTTP: mux})

		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/api/v1/hello/ada", nil)
		h.HTTP(plugin.Caller{Authenticated: true, Name: "ci", Role: "user"}).ServeHTTP(rec, req)
		fmt.Println(rec.Code, rec.Body.String())
	})
	// Output:
	// 200 hello ada, from ci (user)
}
