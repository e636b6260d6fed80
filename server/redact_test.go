package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

// escapingSecret holds every character JSON encoders escape: " and \, and <, > and &,
// which Go's encoder writes as \u003c, \u003e and \u0026.
const escapingSecret = `tok"en\<x>&y-42`

// secretForms are the ways escapingSecret can be written: as it is, and JSON-escaped once
// or twice (a JSON document inside a JSON string), the Go way and the plain way.
func secretForms(t testing.TB) []string {
	t.Helper()
	goJSON := func(s string) string {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return string(b[1 : len(b)-1])
	}
	plainJSON := func(s string) string {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		b := bytes.TrimSpace(buf.Bytes())
		return string(b[1 : len(b)-1])
	}
	out := []string{escapingSecret}
	for _, once := range []string{goJSON(escapingSecret), plainJSON(escapingSecret)} {
		out = append(out, once, goJSON(once), plainJSON(once))
	}
	return out
}

// noSecretIn fails the test when a form of escapingSecret is in text or, when text is JSON,
// in any string (keys included) of it once decoded.
func noSecretIn(t testing.TB, where string, text []byte) {
	t.Helper()
	texts := []string{string(text)}
	var v any
	if json.Unmarshal(text, &v) == nil {
		var walk func(any)
		walk = func(v any) {
			switch v := v.(type) {
			case string:
				texts = append(texts, v)
				if strings.HasPrefix(strings.TrimSpace(v), "{") {
					var inner any
					if json.Unmarshal([]byte(v), &inner) == nil {
						walk(inner)
					}
				}
			case []any:
				for _, x := range v {
					walk(x)
				}
			case map[string]any:
				for k, x := range v {
					texts = append(texts, k)
					walk(x)
				}
			}
		}
		walk(v)
	}
	for _, form := range secretForms(t) {
		for _, s := range texts {
			if strings.Contains(s, form) {
				t.Errorf("%s holds the secret as %q: %s", where, form, text)
				return
			}
		}
	}
}

// A plugin that prints its secret and fails to start: the secret is nowhere, and only
// admins see its output lines in the reason. Checked in the enable's error, the detail view
// for an admin and for a user, the plugin.error event on the SSE feed and as a subscribed
// plugin receives it, and the plugin's row and logs in nexus.db.
func TestFailureReasonsHideSecretsAndOutputFromUsers(t *testing.T) {
	e := startRuntimeServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	externalPlugin(e, "error-watcher", map[string]any{"permissions": []string{"events:subscribe"},
		"events": map[string]any{"subscribes": []string{"plugin.error"}}})
	received := make(chan plugin.Event, 8)
	runInstance(e, "error-watcher", "w1", plugin.Plugin{
		OnEvent: func(ctx context.Context, ev plugin.Event) error {
			received <- ev
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", e.URL+"/api/v1/events/stream?patterns=plugin.error", nil)
	req.Header.Set("Authorization", "Bearer "+e.User)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("SSE: %d", resp.StatusCode)
	}
	sse := make(chan string, 64)
	go func() {
		defer close(sse)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			sse <- sc.Text()
		}
	}()
	// The feed's comment line says it is open: events emitted from now on reach it.
	if line := <-sse; !strings.HasPrefix(line, ":") {
		t.Fatalf("SSE began with %q", line)
	}

	installTestPlugin(e, "leaky-start", "leak-at-start", nil, map[string]any{"secret_token": escapingSecret})
	res := e.rest("POST", "/api/v1/plugins/leaky-start/enable", e.Admin, map[string]any{})
	if res.errorCode() != "PLUGIN_STARTUP_FAILED" {
		t.Fatalf("enable: %d %s", res.Status, res.Raw)
	}
	noSecretIn(t, "the enable's error", res.Raw)
	if !strings.Contains(string(res.Raw), "connecting with ***hidden***") {
		t.Errorf("the enable's error lacks the (redacted) output: %s", res.Raw)
	}
	const public = "plugin leaky-start failed to start: exited with code 3 before it became ready"

	admin := e.rest("GET", "/api/v1/plugins/leaky-start", e.Admin, nil)
	noSecretIn(t, "the admin's detail view", admin.Raw)
	reason, _ := admin.data()["plugin"].(map[string]any)["error"].(string)
	if !strings.HasPrefix(reason, public+"; last output: ") || !strings.Contains(reason, "connecting with ***hidden***") {
		t.Errorf("the admin's reason is %q; want %q with the plugin's output, redacted", reason, public)
	}
	user := e.rest("GET", "/api/v1/plugins/leaky-start", e.User, nil)
	noSecretIn(t, "the user's detail view", user.Raw)
	if reason := user.data()["plugin"].(map[string]any)["error"]; reason != public {
		t.Errorf("the user's reason is %q; want %q (no output lines)", reason, public)
	}

	var event []byte
	for event == nil {
		select {
		case line, ok := <-sse:
			if !ok {
				t.Fatal("the SSE feed ended without plugin.error")
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok && strings.Contains(data, "leaky-start") {
				event = []byte(data)
			}
		case <-ctx.Done():
			t.Fatal("no plugin.error on the SSE feed")
		}
	}
	noSecretIn(t, "the SSE event", event)
	var ev struct {
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(event, &ev); err != nil || ev.Data["reason"] != public {
		t.Errorf("SSE plugin.error %s (%v); want the reason %q", event, err, public)
	}

	select {
	case got := <-received:
		b, _ := json.Marshal(got.Data)
		noSecretIn(t, "the subscribed plugin's event", b)
		if got.Type != "plugin.error" || got.Data["plugin_id"] != "leaky-start" || got.Data["reason"] != public {
			t.Errorf("the subscribed plugin got %s %s; want plugin.error with the reason %q", got.Type, b, public)
		}
	case <-ctx.Done():
		t.Fatal("the subscribed plugin got no plugin.error")
	}

	st, err := storesqlite.Open(context.Background(), filepath.Join(e.DataDir, "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var rec store.Plugin
	var logs []store.LogRecord
	err = st.Read(context.Background(), func(tx store.Tx) error {
		if rec, err = tx.Plugin("leaky-start"); err != nil {
			return err
		}
		logs, _, err = tx.Logs(store.LogFilter{PluginID: "leaky-start", Page: 1, PerPage: 1000})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	noSecretIn(t, "the reason in nexus.db", []byte(rec.StatusReason))
	if !strings.HasPrefix(rec.StatusReason, public+"; last output: ") {
		t.Errorf("stored reason %q", rec.StatusReason)
	}
	for _, l := range logs {
		noSecretIn(t, "a log record in nexus.db", []byte(l.Message))
		noSecretIn(t, "a log record's metadata in nexus.db", l.Metadata)
	}
}

// A plugin that logs a secret holding characters JSON escapes, as text, as JSON fields
// (nested, and in a JSON document carried in a string) on stdout and through the SDK's
// logger: GET /logs returns none of its forms.
func TestLogsHideSecretsWithEscapedCharacters(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "escaping-secret", "healthy", nil, map[string]any{"secret_token": escapingSecret})
	e.mustREST("POST", "/api/v1/plugins/escaping-secret/enable", e.Admin, map[string]any{})
	waitFor(t, "the secret lines", 10*time.Second, func() bool {
		return len(e.mustREST("GET", "/api/v1/plugins/escaping-secret/logs?search=secret+as+a+field", e.Admin, nil)["logs"].([]any)) == 2
	})
	res := e.rest("GET", "/api/v1/plugins/escaping-secret/logs?per_page=100", e.Admin, nil)
	noSecretIn(t, "GET /logs", res.Raw)
	fields := 0
	for _, l := range res.data()["logs"].([]any) {
		l := l.(map[string]any)
		if !strings.Contains(l["message"].(string), "secret as a field") {
			continue
		}
		meta, _ := l["metadata"].(map[string]any)
		if meta["token"] != "***hidden***" {
			t.Errorf("%q: token %v", l["message"], meta["token"])
		}
		fields++
	}
	if fields != 2 {
		t.Errorf("%d records with the secret as a field", fields)
	}
	noSecretIn(t, "the detail view", e.rest("GET", "/api/v1/plugins/escaping-secret", e.User, nil).Raw)
}
