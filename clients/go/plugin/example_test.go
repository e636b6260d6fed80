package plugin_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
)

// A complete plugin: it answers "greet" messages with the greeting from its configuration,
// and exits 0 when the host asks it to stop (or on SIGTERM).
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := plugin.Run(ctx, plugin.Plugin{
		Version:      "1.0.0",
		MessageTypes: []string{"greet"},
		OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
			s := plugin.SessionFromContext(ctx)
			greeting, _ := s.Config()["greeting"].(string)
			s.Logger().Info("greeting", "from", m.Source)
			return map[string]any{"text": greeting + ", " + m.Source}, nil
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// A plugin with start-up work, its own health checks, live configuration and a clean
// shutdown. The options override the environment, e.g. for an external plugin.
func ExampleRun() {
	var db *sql.DB // opened in OnStart; deliveries wait for OnStart to return
	p := plugin.Plugin{
		Version:       "2.1.0",
		Subscriptions: []string{"user.*"},
		OnStart: func(ctx context.Context, s *plugin.Session) error {
			dsn, _ := s.Config()["dsn"].(string)
			var err error
			db, err = sql.Open("sqlite", dsn)
			return err
		},
		OnEvent: func(ctx context.Context, e plugin.Event) error {
			_, err := db.ExecContext(ctx, "INSERT INTO seen(id, type) VALUES (?, ?)", e.ID, e.Type)
			return err // not permanent: the host redelivers
		},
		OnHealthCheck: func(ctx context.Context) []plugin.Check {
			begin := time.Now()
			if err := db.PingContext(ctx); err != nil {
				return []plugin.Check{plugin.Fail("database", err.Error())}
			}
			return []plugin.Check{plugin.Pass("database").WithResponseTime(time.Since(begin))}
		},
		OnConfigChange: func(ctx context.Context, c plugin.ConfigChange) error {
			if c.RestartRequired {
				return errors.New("restart the plugin to change the database")
			}
			return nil
		},
		OnShutdown: func(ctx context.Context, reason string) {
			_ = db.Close()
		},
	}
	err := plugin.Run(context.Background(), p,
		plugin.WithHost("http://127.0.0.1:8080"),
		plugin.WithPluginID("audit-plugin"),
		plugin.WithToken(os.Getenv("AUDIT_PLUGIN_TOKEN")),
		plugin.WithConcurrency(4),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

// An event handler dead-letters what it can never process, and leaves the rest to be
// redelivered.
func ExamplePermanent() {
	onEvent := func(ctx context.Context, e plugin.Event) error {
		email, ok := e.Data["email"].(string)
		if !ok {
			return plugin.Permanent(fmt.Errorf("event %s has no email", e.ID))
		}
		_ = email // ... send the welcome mail; a failure here is retried
		return nil
	}
	err := onEvent(context.Background(), plugin.Event{ID: "evt_1", Type: "user.created"})
	fmt.Println(plugin.IsPermanent(err), err)
	// Output: true event evt_1 has no email
}

func ExampleCheck() {
	c := plugin.Warn("queue", "backlog growing").WithValue(900, 1000, "messages")
	fmt.Println(c.Name, c.Status, *c.Details, *c.Value, *c.Threshold, *c.Unit)
	// Output: queue warning backlog growing 900 1000 messages
}

// Session.Logger's records reach the host's log of the plugin, with their attributes as
// metadata.
func ExampleSession_Logger() {
	_ = plugin.Plugin{
		OnStart: func(ctx context.Context, s *plugin.Session) error {
			log := s.Logger().With("instance", s.InstanceID())
			log.Info("started", "permissions", s.Permissions())
			return nil
		},
	}
}

// A message handler asks another plugin, within a deadline, and tells a failed request (no
// reply: an *plugin.Error or the context's error) from a reply whose handler failed.
func ExampleSession_Send() {
	onMessage := func(ctx context.Context, m plugin.Message) (map[string]any, error) {
		s := plugin.SessionFromContext(ctx)
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second) // the host waits 5 s too
		defer cancel()
		r, err := s.Send(ctx, "billing-plugin", "get_invoice", map[string]any{"customer": m.Data["customer"]})
		switch {
		case plugin.ErrorCode(err) == "PLUGIN_NOT_FOUND":
			return nil, errors.New("billing is not installed")
		case err != nil:
			return nil, err
		case r.Status == "error":
			return nil, fmt.Errorf("billing: %s", r.Error)
		}
		return r.Data, nil
	}
	_ = plugin.Plugin{MessageTypes: []string{"invoice"}, OnMessage: onMessage}
}

// A plugin subscribes to events at run time and emits its own. Subscriptions made in OnStart
// are kept across reconnections.
func ExampleSession_Emit() {
	_ = plugin.Plugin{
		OnStart: func(ctx context.Context, s *plugin.Session) error {
			return s.Subscribe(ctx, "order.*")
		},
		OnEvent: func(ctx context.Context, e plugin.Event) error {
			if e.Type != "order.paid" {
				return nil
			}
			res, err := plugin.SessionFromContext(ctx).Emit(ctx, "invoice.issued", map[string]any{"order": e.Data["id"]})
			if err != nil {
				return err // not acknowledged: the host delivers order.paid again
			}
			plugin.SessionFromContext(ctx).Logger().Info("invoice issued", "event", res.ID, "recipients", res.Recipients)
			return nil
		},
	}
}

// A counter in the plugin's key-value namespace, shared by all its instances: CompareAndSet
// retries from the current entry until no other instance wrote in between.
func ExampleKV() {
	increment := func(ctx context.Context, kv *plugin.KV, key string) (float64, error) {
		for {
			cur, _, err := kv.Get(ctx, key)
			if err != nil {
				return 0, err
			}
			n, _ := cur.Value.(float64) // JSON numbers are float64; 0 when absent
			// Version 0 (absent key) writes only if the key still does not exist.
			if _, ok, err := kv.CompareAndSet(ctx, key, n+1, cur.Version, plugin.WithTTL(24*time.Hour)); err != nil || ok {
				return n + 1, err
			}
		}
	}
	_ = plugin.Plugin{
		OnStart: func(ctx context.Context, s *plugin.Session) error {
			starts, err := increment(ctx, s.KV(), "starts")
			if err != nil {
				return err
			}
			s.Logger().Info("started", "starts", starts) // forgotten a day after the last start
			// Let the report plugin read this namespace through its SharedKV.
			_, err = s.KV().Share(ctx, "report-plugin")
			return err
		},
	}
}

// A plugin finds who handles a message type before sending it.
func ExampleSession_Discover() {
	_ = plugin.Plugin{
		OnStart: func(ctx context.Context, s *plugin.Session) error {
			providers, err := s.Discover(ctx, plugin.Query{MessageType: "verify_token"})
			if err != nil {
				return err
			}
			for _, p := range providers {
				s.Logger().Info("token verifier", "plugin", p.PluginID, "version", p.Version, "instances", p.Instances)
			}
			return nil
		},
	}
}

// A handler that knows it needs long asks for the time at once. (Without it, the SDK still
// extends the delivery every third of the processing timeout while the handler runs.)
func ExampleExtend() {
	_ = plugin.Plugin{
		OnEvent: func(ctx context.Context, e plugin.Event) error {
			if e.Type == "report.requested" {
				if err := plugin.Extend(ctx, 5*time.Minute); err != nil {
					return err
				}
			}
			return nil // ... build the report
		},
	}
}
