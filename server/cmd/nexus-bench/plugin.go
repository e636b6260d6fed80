package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
)

// The plugin processes of the host scenarios, on the Go plugin SDK.

// pluginFlags are the flags of both plugin roles; the token comes from NEXUS_PLUGIN_TOKEN.
type pluginFlags struct {
	host, id string
}

func (p *pluginFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.host, "host", "", "the server's URL")
	fs.StringVar(&p.id, "id", "", "the plugin id")
}

func (p *pluginFlags) options(extra ...plugin.Option) []plugin.Option {
	return append([]plugin.Option{
		plugin.WithHost(p.host),
		plugin.WithToken(os.Getenv(plugin.EnvToken)),
		plugin.WithPluginID(p.id),
	}, extra...)
}

// pluginEchoMain is bench-echo: it answers every message with the message's data. Its
// handler concurrency is raised above the SDK's default so that it never caps the round
// trips in flight.
func pluginEchoMain(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet(rolePluginEcho, flag.ContinueOnError)
	var pf pluginFlags
	pf.register(fs)
	if err := parseChildFlags(fs, args); err != nil {
		return err
	}
	err := plugin.Run(ctx, plugin.Plugin{
		Version:      "1.0.0",
		MessageTypes: []string{echoMessageType},
		OnStart: func(context.Context, *plugin.Session) error {
			return writeJSON(out, ready{})
		},
		OnMessage: func(_ context.Context, m plugin.Message) (map[string]any, error) {
			return m.Data, nil
		},
	}, pf.options(plugin.WithConcurrency(4*concurrency))...)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// pluginSenderMain is bench-sender: once started, it measures Session.Send round trips to
// bench-echo and reports them.
func pluginSenderMain(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet(rolePluginSender, flag.ContinueOnError)
	var pf pluginFlags
	pf.register(fs)
	var l loadFlags
	l.register(fs)
	if err := parseChildFlags(fs, args); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := make(chan *plugin.Session, 1)
	done := make(chan error, 1)
	go func() {
		done <- plugin.Run(runCtx, plugin.Plugin{
			Version: "1.0.0",
			OnStart: func(_ context.Context, s *plugin.Session) error {
				started <- s
				return nil
			},
		}, pf.options()...)
	}()
	var s *plugin.Session
	select {
	case s = <-started:
	case err := <-done:
		return fmt.Errorf("the plugin stopped before it started: %v", err)
	case <-time.After(readyTimeout):
		cancel()
		<-done
		return fmt.Errorf("the plugin did not start within %v", readyTimeout)
	}

	blob := payloadText(l.payload)
	data := map[string]any{"blob": blob} // only read by Send, so shared by every round trip
	rt := func(ctx context.Context) error {
		r, err := s.Send(ctx, echoPluginID, echoMessageType, data)
		if err != nil {
			return fmt.Errorf("send: %w", err)
		}
		if r.Status != "success" {
			return fmt.Errorf("reply %s: status %q: %s", r.MessageID, r.Status, r.Error)
		}
		if got, _ := r.Data["blob"].(string); got != blob {
			return fmt.Errorf("reply %s does not carry the payload back", r.MessageID)
		}
		return nil
	}
	m, err := func() (Measurement, error) {
		if err := settle(ctx, rt); err != nil {
			return Measurement{}, err
		}
		return measure(ctx, rt, l)
	}()
	cancel()
	if runErr := <-done; runErr != nil && !errors.Is(runErr, context.Canceled) && err == nil {
		err = fmt.Errorf("plugin.Run: %w", runErr)
	}
	if err != nil {
		return err
	}
	return writeJSON(out, m)
}
