package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// The log tail over Server-Sent Events: the backlog first, then entries as they are
// stored, filtered by level and text; bad parameters and tokens answer the API's errors.
func TestLogTailOverServerSentEvents(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	mustInstall(e, dependentManifest())
	e.mustREST("PUT", "/api/v1/plugins/analytics-plugin/config", e.Admin, map[string]any{"batch_size": 101})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	open := func(query, token string) (<-chan map[string]any, *http.Response) {
		req, _ := http.NewRequestWithContext(ctx, "GET", e.URL+"/api/v1/plugins/analytics-plugin/logs/stream"+query, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("%s: %d %s", query, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		entries := make(chan map[string]any, 16)
		go func() {
			defer close(entries)
			sc := bufio.NewScanner(resp.Body)
			event := ""
			for sc.Scan() {
				line := sc.Text()
				switch {
				case strings.HasPrefix(line, "event: "):
					event = strings.TrimPrefix(line, "event: ")
				case strings.HasPrefix(line, "data: ") && event == "log":
					var m map[string]any
					if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &m); err != nil {
						t.Errorf("entry %q: %v", line, err)
						return
					}
					entries <- m
				}
			}
		}()
		return entries, resp
	}
	next := func(entries <-chan map[string]any, what string) map[string]any {
		t.Helper()
		select {
		case m, ok := <-entries:
			if !ok {
				t.Fatalf("the tail ended before %s", what)
			}
			return m
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s within 10s", what)
		}
		return nil
	}

	// Backlog: the two stored entries, oldest first; then the live ones.
	all, _ := open("?backlog=2", e.User)
	if m := next(all, "the first backlog entry"); !strings.Contains(m["message"].(string), "installed") {
		t.Fatalf("first backlog entry: %v", m)
	}
	if m := next(all, "the second backlog entry"); m["metadata"].(map[string]any)["updated_fields"] == nil {
		t.Fatalf("second backlog entry: %v", m)
	}
	// A filtered tail sees only what matches (the search ignores case).
	filtered, _ := open("?search=CONFIGURATION&level=INFO", e.Admin)
	e.mustREST("PUT", "/api/v1/plugins/analytics-plugin/config", e.Admin, map[string]any{"batch_size": 102})
	live := next(all, "a live entry")
	if live["level"] != "INFO" || live["metadata"].(map[string]any)["updated_fields"] == nil {
		t.Fatalf("live entry: %v", live)
	}
	if m := next(filtered, "the filtered entry"); m["message"] != live["message"] {
		t.Fatalf("filtered tail got %v, want %v", m, live)
	}

	for _, c := range []struct {
		name, path, token string
		status            int
		code, field       string
	}{
		{"bad level", "/api/v1/plugins/analytics-plugin/logs/stream?level=LOUD", e.Admin, 400, "VALIDATION_ERROR", "level"},
		{"backlog not a number", "/api/v1/plugins/analytics-plugin/logs/stream?backlog=all", e.Admin, 400, "VALIDATION_ERROR", "backlog"},
		{"backlog too large", "/api/v1/plugins/analytics-plugin/logs/stream?backlog=5000", e.Admin, 400, "VALIDATION_ERROR", "backlog"},
		{"unknown parameter", "/api/v1/plugins/analytics-plugin/logs/stream?tail=1", e.Admin, 400, "VALIDATION_ERROR", "tail"},
		{"unknown plugin", "/api/v1/plugins/no-such-plugin/logs/stream", e.Admin, 404, "PLUGIN_NOT_FOUND", ""},
		{"bad plugin id", "/api/v1/plugins/Not_An_Id/logs/stream", e.Admin, 400, "VALIDATION_ERROR", "plugin_id"},
		{"no token", "/api/v1/plugins/analytics-plugin/logs/stream", "", 401, "UNAUTHENTICATED", ""},
		{"another plugin's token", "/api/v1/plugins/analytics-plugin/logs/stream", e.token(store.RolePlugin, "user-management"), 403, "PLUGIN_PERMISSION_DENIED", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.rest("GET", c.path, c.token, nil)
			if r.Status != c.status || r.errorCode() != c.code {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
			if c.field != "" && !strings.Contains(string(r.Raw), `"field":"`+c.field+`"`) {
				t.Fatalf("the error does not name %s: %s", c.field, r.Raw)
			}
		})
	}
}
