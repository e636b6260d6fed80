// Package plugintest runs a plugin written with the Go SDK (package plugin) against an
// in-process host, for the plugin author's own unit tests. The host is a real
// PluginHostService server on a free 127.0.0.1 port, and the plugin runs with plugin.Run
// over its ordinary transport, so a test goes through the same stream, frames and checks
// as the plugin does in production, without a Nexus server, a package or a process.
//
// A test makes a Host, starts its plugin on it, drives it and looks at what it did:
//
//	func TestGreet(t *testing.T) {
//		h := plugintest.NewHost(t, plugintest.Options{
//			PluginID: "greeter-plugin",
//			Config:   map[string]any{"greeting": "Hello"},
//			Granted:  []string{"messages:send", "events:emit"},
//		})
//		h.Start(greeter.Plugin())
//		reply, err := h.Send(t.Context(), "user", "greet", map[string]any{"name": "Ada"})
//		if err != nil || reply.Data["text"] != "Hello, Ada" {
//			t.Fatalf("greet = %+v, %v", reply, err)
//		}
//		if got := h.Emitted(); len(got) != 1 || got[0].Type != "greeting.sent" {
//			t.Errorf("emitted %+v", got)
//		}
//	}
//
// The host plays the platform's part:
//
//   - it delivers what a test sends: messages (Host.Send, answered with the plugin's
//     reply), events (Host.Emit, to a plugin subscribed to them) and broadcasts
//     (Host.Broadcast), each reporting whether the plugin acknowledged, dead-lettered or
//     failed it; health checks (Host.CheckHealth), configuration changes
//     (Host.UpdateConfig) and the shutdown request (Host.Shutdown);
//   - it serves the plugin's own requests as the real host does, permission checks
//     (Options.Granted) and error codes included: messages to other plugins, answered by
//     the handlers a test registers with Host.HandlePlugin; events, broadcasts and
//     subscriptions; discovery (Options.Providers); and a key-value store with versions,
//     compare-and-set and expiry (Host.KV);
//   - it records what the plugin did (Host.Sent, Host.Emitted, Host.Broadcasts, Host.Logs,
//     Host.Subscriptions, Host.KV), and Host.WaitFor waits for the plugin to have done
//     something, without sleeping.
//
// The differences from a real host: there is one plugin, the one under test (other
// plugins exist only as HandlePlugin handlers and Options.Providers, and receive no
// events or broadcasts); deliveries are never redelivered (a handler's failure is
// reported to the test instead, see Unacked); and nothing is persisted.
//
// Every wait is bounded: by the caller's context, or by Options.Timeout when the context
// has no deadline. The plugin's Run, the host's server and every goroutine the host starts
// end in the test's cleanup, which fails the test if one does not.
package plugintest
