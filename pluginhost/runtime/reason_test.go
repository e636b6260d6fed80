package runtime_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// leakedSecret is a secret with every character JSON encoders escape.
const leakedSecret = `s3cr"et<&>\pw`

const secretSchema = `{"password": {"type": "string", "secret": true}}`

// secretForms are the ways leakedSecret can be written: as it is, and JSON-escaped the Go
// way (<, > and & as \u003c, \u003e and \u0026) and the plain way.
func secretForms(t *testing.T) []string {
	t.Helper()
	goJSON, err := json.Marshal(leakedSecret)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(leakedSecret); err != nil {
		t.Fatal(err)
	}
	plain := bytes.TrimSpace(buf.Bytes())
	return []string{leakedSecret, string(goJSON[1 : len(goJSON)-1]), string(plain[1 : len(plain)-1])}
}

// noSecret fails the test when any form of leakedSecret appears in one of texts, named by
// where.
func noSecret(t *testing.T, where string, texts ...string) {
	t.Helper()
	for _, text := range texts {
		for _, form := range secretForms(t) {
			if strings.Contains(text, form) {
				t.Errorf("%s holds the secret (%q): %q", where, form, text)
			}
		}
	}
}

// storedReason reads a plugin's status reason from the store itself.
func storedReason(t *testing.T, f *fixture, id string) string {
	t.Helper()
	var rec store.Plugin
	err := f.st.Read(context.Background(), func(tx store.Tx) error {
		var err error
		rec, err = tx.Plugin(id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return rec.StatusReason
}

// A plugin's last output lines reach its failure reasons with its secrets hidden, in every
// form, wherever the reason goes: the error of the start, the recorded reason (in the store
// too), the plugin.error event, and the runtime's view of its output. The event carries
// the reason without the output lines (the host's words only), as PublicReason gives it;
// the recorded reason keeps them for administrators.
func TestFailureReasonsHideSecrets(t *testing.T) {
	t.Run("start failure", func(t *testing.T) {
		f := newFixture(t, runtime.Config{})
		f.install(spec{id: "leaky-plugin", mode: "leak", args: []string{leakedSecret},
			configuration: secretSchema, config: map[string]any{"password": leakedSecret}})
		_, err := f.enable("leaky-plugin", runtime.EnableOptions{})
		var e *errs.Error
		if !errors.As(err, &e) || e.Code != errs.PluginStartupFailed {
			t.Fatalf("Enable: %v; want PLUGIN_STARTUP_FAILED", err)
		}
		lines := detail(e, "last_log_lines")
		if len(lines) != 2 {
			t.Fatalf("last_log_lines %q", lines)
		}
		noSecret(t, "the error", e.Message)
		noSecret(t, "last_log_lines", lines...)
		if !strings.Contains(e.Message, "connecting with password ***hidden***") {
			t.Errorf("the error lacks the (redacted) output: %q", e.Message)
		}
		checkReasons(t, f, "leaky-plugin", "plugin leaky-plugin failed to start: exited with code 3 before it became ready")
	})

	t.Run("quarantine", func(t *testing.T) {
		f := newFixture(t, runtime.Config{BackoffMin: 10 * time.Millisecond, BackoffMax: 40 * time.Millisecond,
			CrashLoopCount: 2, CrashLoopWindow: time.Minute})
		p := f.install(spec{id: "leaky-plugin", mode: "leaky-serve", args: []string{leakedSecret},
			configuration: secretSchema, config: map[string]any{"password": leakedSecret}})
		f.mustEnable("leaky-plugin")
		first := p.current()
		first.crash(t)
		eventually(t, 20*time.Second, func() bool {
			info := f.rt.Info("leaky-plugin")
			return info.Restarts == 1 && info.PID != 0 && info.PID != first.pid &&
				f.record("leaky-plugin").Status == registry.StatusActive
		}, "the restart")
		p.current().crash(t)
		eventually(t, 20*time.Second, func() bool { return f.record("leaky-plugin").Status == registry.StatusError }, "the quarantine")
		checkReasons(t, f, "leaky-plugin", "quarantined after 2 crashes within 1m0s; last exit: exited with code 3")
	})
}

// checkReasons checks the recorded reason of a plugin in error and its plugin.error event:
// the reason starts with the host's words (want), then holds the plugin's output with the
// secret hidden; the event has the host's words only.
func checkReasons(t *testing.T, f *fixture, id, want string) {
	t.Helper()
	reason := f.record(id).StatusReason
	if got := storedReason(t, f, id); got != reason {
		t.Errorf("stored reason %q, the registry has %q", got, reason)
	}
	noSecret(t, "the recorded reason", reason)
	noSecret(t, "the runtime's last output", f.rt.Info(id).LastOutput...)
	if !strings.HasPrefix(reason, want+"; last output: ") || !strings.Contains(reason, "***hidden***") {
		t.Errorf("recorded reason %q; want %q and the plugin's output, redacted", reason, want)
	}
	if got := runtime.PublicReason(reason); got != want {
		t.Errorf("PublicReason = %q, want %q", got, want)
	}
	events := f.eventsOf("plugin.error", id)
	if len(events) != 1 {
		t.Fatalf("plugin.error events: %v", events)
	}
	if got := fmt.Sprint(events[0]["reason"]); got != want {
		t.Errorf("plugin.error reason %q, want %q (no output lines)", got, want)
	}
}
