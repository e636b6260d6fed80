// Package plugin is the Go SDK for Nexus plugins. A plugin is a process that the host
// starts (or that runs elsewhere, for an external plugin) with NEXUS_PLUGIN_ID, NEXUS_HOST
// and NEXUS_PLUGIN_TOKEN in its environment; Run connects to the host's
// PluginHostService.Connect stream, says hello, and serves the host with the handlers of a
// Plugin until the host asks it to stop:
//
//   - messages go to OnMessage, whose result is the reply;
//   - events and broadcasts go to OnEvent and OnBroadcast, and are acknowledged, dead-lettered
//     (see Permanent) or left for redelivery according to their result; duplicates are
//     dropped;
//   - health checks are answered from OnHealthCheck, configuration changes accepted or
//     rejected by OnConfigChange, and the shutdown request runs OnShutdown;
//   - the Session gives the configuration, the granted permissions, and a *slog.Logger
//     whose records reach the host's log of the plugin.
//
// The Session also makes the plugin's own requests to the host, over the same stream, from
// any goroutine (handlers and OnStart included):
//
//   - Session.Send sends a message to another plugin and waits for its Reply;
//     Session.Broadcast and Session.Emit send a broadcast or publish an event;
//   - Session.Subscribe and Session.Unsubscribe change the event subscriptions, which are
//     remembered and sent again in the hello of every reconnection;
//   - Session.Discover finds the plugins that serve a service or message type;
//   - Session.KV is the plugin's key-value namespace kept by the host (with versions for
//     compare-and-set, and expiry), and Session.SharedKV reads one another plugin shared.
//
// Every request ends with the host's reply, or when its context ends (a Send is then
// withdrawn, and its target's handler canceled). A request the host refuses fails with an
// *Error carrying the API's error code (see ErrorCode); one that would break the protocol's
// rules fails with VALIDATION_ERROR before anything is sent. When the connection breaks,
// the requests waiting for a reply fail at once with PLUGIN_UNAVAILABLE, and new requests
// wait for the reconnection, as long as their context allows.
//
// While OnEvent or OnBroadcast runs, the SDK extends its delivery before the host's
// processing timeout would deliver it again (see Extend), so a slow handler never sees its
// event twice. When the sender of a message gives up, the host says so and the context of
// the message's handler is canceled, with a cause (context.Cause) that says why.
//
// Handlers run concurrently (see WithConcurrency), so a slow one does not hold up the
// others or the health checks. Only one goroutine writes to the stream, and every
// goroutine the SDK starts has ended when Run returns (unless a handler ignores its
// context). When the stream breaks, or HTTP/2 pings find the connection dead, Run
// reconnects with exponential backoff and jitter; a refusal (bad token, permission denied)
// is not retried.
//
// A complete plugin:
//
//	package main
//
//	import (
//		"context"
//		"fmt"
//		"os"
//		"os/signal"
//		"syscall"
//
//		"github.com/nexus-platform/nexus/clients/go/plugin"
//	)
//
//	func main() {
//		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//		defer stop()
//		err := plugin.Run(ctx, plugin.Plugin{
//			Version:      "1.0.0",
//			MessageTypes: []string{"greet"},
//			OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
//				s := plugin.SessionFromContext(ctx)
//				greeting, _ := s.Config()["greeting"].(string)
//				s.Logger().Info("greeting", "from", m.Source)
//				return map[string]any{"text": greeting + ", " + m.Source}, nil
//			},
//		})
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//	}
package plugin
