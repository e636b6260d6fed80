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
