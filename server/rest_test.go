package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// freeForm are the paths (dotted, arrays as []) whose object keys are data, not API shape:
// their keys are compared by type only.
var freeForm = map[string]bool{
	"plugins[].configuration":               true,
	"plugin.configuration.schema":           true,
	"plugin.configuration.current":          true,
	"plugin.manifest.dependencies.packages": true,
	"plugin.manifest.dependencies.plugins":  true,
	"configuration":                         true,
	"schema":                                true,
	"logs[].metadata":                       true,
	"response.data":                         true,
	"plugins[].compatibility":               false,
}

// compareShape checks that got has every key of want with the same JSON type, recursively.
func compareShape(t *testing.T, path string, want, got any) {
	t.Helper()
	if want == nil {
		return
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			t.Errorf("%s: want an object, got %T (%v)", path, got, got)
			return
		}
		if freeForm[strings.TrimPrefix(path, ".")] {
			return
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				t.Errorf("%s.%s: missing (have %v)", path, k, keys(g))
				continue
			}
			compareShape(t, path+"."+k, wv, gv)
		}
	case []any:
		g, ok := got.([]any)
		if !ok {
			t.Errorf("%s: want an array, got %T (%v)", path, got, got)
			return
		}
		if len(w) > 0 && len(g) > 0 {
			compareShape(t, path+"[]", w[0], g[0])
		}
	case string:
		if _, ok := got.(string); !ok {
			t.Errorf("%s: want a string, got %T (%v)", path, got, got)
		}
	case float64:
		if _, ok := got.(float64); !ok {
			t.Errorf("%s: want a number, got %T (%v)", path, got, got)
		}
	case bool:
		if _, ok := got.(bool); !ok {
			t.Errorf("%s: want a boolean, got %T (%v)", path, got, got)
		}
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func seed(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "seed", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// checkEnvelope checks the success envelope and returns data.
func checkEnvelope(t *testing.T, res restResult) {
	t.Helper()
	if res.Body["success"] != true {
		t.Fatalf("success = %v: %s", res.Body["success"], res.Raw)
	}
	ts, _ := res.Body["timestamp"].(string)
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || !strings.HasSuffix(ts, "Z") {
		t.Errorf("timestamp %q is not RFC 3339 UTC", ts)
	}
	rid, _ := res.Body["request_id"].(string)
	if rid == "" || res.Header.Get("X-Request-Id") != rid {
		t.Errorf("request_id %q, X-Request-Id %q", rid, res.Header.Get("X-Request-Id"))
	}
}

func TestRESTShapesMatchReference(t *testing.T) {
	e := startServer(t)
	data := pkg(t, analyticsManifest("1.2.0"), map[string]string{"bin/analytics-plugin": "#!/bin/sh\n"})
	inst := installFromBytes(e, data, map[string]any{"config": map[string]any{"batch_size": 100, "api_key": "k-123"}})
	checkEnvelope(t, inst)
	compareShape(t, "", seed(t, "install_plugin")["data"], inst.data())
	if got := inst.data()["installation"].(map[string]any)["status"]; got != "completed" {
		t.Errorf("installation.status = %v", got)
	}

	cases := []struct {
		seed, method, path string
		body               any
	}{
		{"list_plugins", "GET", "/api/v1/plugins", nil},
		{"get_plugin", "GET", "/api/v1/plugins/analytics-plugin", nil},
		{"get_config", "GET", "/api/v1/plugins/analytics-plugin/config", nil},
		{"update_config", "PUT", "/api/v1/plugins/analytics-plugin/config", map[string]any{"batch_size": 200, "flush_interval": 30, "api_key": "new_secret_key"}},
		{"get_logs", "GET", "/api/v1/plugins/analytics-plugin/logs", nil},
		{"get_permissions", "GET", "/api/v1/plugins/analytics-plugin/permissions", nil},
		{"uninstall_plugin", "DELETE", "/api/v1/plugins/analytics-plugin?backup=true&cleanup_data=true", nil},
	}
	for _, c := range cases {
		t.Run(c.seed, func(t *testing.T) {
			res := e.rest(c.method, c.path, e.Admin, c.body)
			if res.Status != http.StatusOK {
				t.Fatalf("status %d: %s", res.Status, res.Raw)
			}
			checkEnvelope(t, res)
			compareShape(t, "", seed(t, c.seed)["data"], res.data())
		})
	}
}

func TestRESTAliasV1(t *testing.T) {
	e := startServer(t)
	res := e.rest("GET", "/v1/plugins", e.Admin, nil)
	if res.Status != http.StatusOK {
		t.Fatalf("status %d: %s", res.Status, res.Raw)
	}
	checkEnvelope(t, res)
}

func TestRESTClientRequestIDIsEchoed(t *testing.T) {
	e := startServer(t)
	req, _ := http.NewRequest("GET", e.URL+"/api/v1/plugins", nil)
	req.Header.Set("Authorization", "Bearer "+e.Admin)
	req.Header.Set("X-Request-Id", "client-chosen-42")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if body["request_id"] != "client-chosen-42" || resp.Header.Get("X-Request-Id") != "client-chosen-42" {
		t.Fatalf("request id not echoed: %v / %q", body["request_id"], resp.Header.Get("X-Request-Id"))
	}
}

func TestListViewsAndFilters(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	mustInstall(e, dependentManifest())

	list := e.mustREST("GET", "/api/v1/plugins", e.User, nil)
	plugins := list["plugins"].([]any)
	if len(plugins) != 2 {
		t.Fatalf("want 2 plugins, got %d", len(plugins))
	}
	first := plugins[0].(map[string]any)
	second := plugins[1].(map[string]any)
	if first["id"] != "analytics-plugin" || first["load_order"] != 1.0 || second["load_order"] != 2.0 {
		t.Errorf("load order: %v=%v, %v=%v", first["id"], first["load_order"], second["id"], second["load_order"])
	}
	if d := first["dependents"].([]any); len(d) != 1 || d[0] != "user-management" {
		t.Errorf("dependents = %v", d)
	}
	if d := second["dependencies"].([]any); len(d) != 1 || d[0] != "analytics-plugin" {
		t.Errorf("dependencies = %v", d)
	}
	if got := first["endpoints"].([]any); len(got) != 1 || got[0] != "/api/v1/analytics/report" {
		t.Errorf("endpoints = %v", got)
	}
	if got := first["events"].(map[string]any)["emits"].([]any); len(got) != 1 || got[0] != "analytics.batch_processed" {
		t.Errorf("events.emits = %v", got)
	}
	// Granted permissions only: the default policy denies http:external.
	if got := fmt.Sprint(first["permissions"]); got != "[database:read database:write events:emit]" {
		t.Errorf("permissions = %s", got)
	}
	sum := list["summary"].(map[string]any)
	if sum["total"] != 2.0 || sum["inactive"] != 2.0 || sum["active"] != 0.0 || sum["disabled"] != 2.0 {
		t.Errorf("summary = %v", sum)
	}

	filters := map[string][]string{
		"?category=analytics":                {"analytics-plugin"},
		"?category=ANALYTICS":                {"analytics-plugin"},
		"?search=nothing-matches":            {},
		"?search=manages":                    {"user-management"},
		"?search=BATCHES":                    {"analytics-plugin"},
		"?status=inactive":                   {"analytics-plugin", "user-management"},
		"?status=active":                     {},
		"?include_disabled=false":            {},
		"?include_disabled=true&search=user": {"user-management"},
		"?include_disabled&search=user":      {"user-management"},
		"?include_disabled=0":                {},
	}
	for q, want := range filters {
		t.Run(q, func(t *testing.T) {
			got := []string{}
			for _, p := range e.mustREST("GET", "/api/v1/plugins"+q, e.Admin, nil)["plugins"].([]any) {
				got = append(got, p.(map[string]any)["id"].(string))
			}
			if !slices.Equal(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}

	detail := e.mustREST("GET", "/api/v1/plugins/analytics-plugin", e.User, nil)["plugin"].(map[string]any)
	cfg := detail["configuration"].(map[string]any)
	if _, ok := cfg["schema"].(map[string]any)["batch_size"]; !ok {
		t.Errorf("detail configuration.schema lacks batch_size: %v", cfg["schema"])
	}
	if cur := cfg["current"].(map[string]any); cur["batch_size"] != 50.0 || cur["storage_backend"] != "database" {
		t.Errorf("detail configuration.current = %v", cur)
	}
	if logs := detail["logs"].([]any); len(logs) == 0 {
		t.Errorf("detail logs are empty")
	}
}
