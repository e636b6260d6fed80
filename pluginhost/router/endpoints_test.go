package router_test

import (
	"github.com/nexus-platform/nexus/pluginhost/store"
	"strings"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
	"github.com/nexus-platform/nexus/pluginhost/registry"
)

func endpoint(path string, methods ...string) manifest.APIEndpoint {
	return manifest.APIEndpoint{Path: path, Methods: methods}
}

// A plugin may not claim a path of Nexus's own API, by its literal path or by a wildcard
// that matches one, nor overlap an endpoint of another enabled plugin.
func TestEndpointConflict(t *testing.T) {
	f := newFixture(t, bus.Options{})
	f.install(t,
		plugin{id: "auth-plugin", endpoints: []map[string]any{{"path": "/api/v1/auth/users/{id}", "methods": []string{"GET"}}}},
		plugin{id: "idle-plugin", disabled: true, status: registry.StatusInactive, endpoints: []map[string]any{{"path": "/api/v1/idle", "methods": []string{"GET"}}}},
	)
	for _, tc := range []struct {
		name     string
		eps      []manifest.APIEndpoint
		conflict string // a substring of the message; "" for none
	}{
		{"own path", []manifest.APIEndpoint{endpoint("/api/v1/reports", "GET")}, ""},
		{"plugins API", []manifest.APIEndpoint{endpoint("/api/v1/plugins/mine", "GET")}, "/api/v1/plugins is a path of Nexus's own API"},
		{"wildcard over the plugins API", []manifest.APIEndpoint{endpoint("/api/v1/{what}", "GET")}, "/api/v1/plugins is a path"},
		{"catch-all", []manifest.APIEndpoint{endpoint("/", "POST")}, "is a path of Nexus's own API"},
		{"v1 alias", []manifest.APIEndpoint{endpoint("/v1/reports", "GET")}, "/v1 is a path"},
		{"cluster view", []manifest.APIEndpoint{endpoint("/api/v1/cluster", "GET")}, "/api/v1/cluster is a path of Nexus's own API"},
		{"below the cluster view", []manifest.APIEndpoint{endpoint("/api/v1/cluster/{node}", "POST")}, "/api/v1/cluster is a path"},
		{"metrics", []manifest.APIEndpoint{endpoint("/metrics", "GET")}, "/metrics is a path"},
		{"grpc service", []manifest.APIEndpoint{endpoint("/nexus.plugin.v1.PluginService/ListPlugins", "POST")}, "/nexus. is a path"},
		{"console", []manifest.APIEndpoint{endpoint("/ui/plugins", "GET")}, "/ui is a path"},
		{"same path of an active plugin", []manifest.APIEndpoint{endpoint("/api/v1/auth/users/{user}", "GET")}, "enabled plugin auth-plugin serves GET /api/v1/auth/users/{id}"},
		{"more specific path of an active plugin", []manifest.APIEndpoint{endpoint("/api/v1/auth/users/me", "GET")}, "auth-plugin"},
		{"other method", []manifest.APIEndpoint{endpoint("/api/v1/auth/users/{id}", "DELETE")}, ""},
		{"disabled plugin's path", []manifest.APIEndpoint{endpoint("/api/v1/idle", "GET")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := f.r.EndpointConflict("new-plugin", tc.eps)
			switch {
			case tc.conflict == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.conflict != "" && (!errs.Is(err, errs.PluginRouteConflict) || !strings.Contains(errs.MessageOf(err), tc.conflict)):
				t.Fatalf("err = %v, want PLUGIN_ROUTE_CONFLICT with %q", err, tc.conflict)
			}
		})
	}
	// The plugin that holds a path may keep serving it (an update, a restart).
	if err := f.r.EndpointConflict("auth-plugin", []manifest.APIEndpoint{endpoint("/api/v1/auth/users/{id}", "GET")}); err != nil {
		t.Fatalf("the holder itself: %v", err)
	}
}

// Requests find the endpoint of the enabled plugin that serves them, with the wildcards'
// values; a disabled plugin serves nothing, and the table follows the registry.
func TestEndpointLookup(t *testing.T) {
	f := newFixture(t, bus.Options{})
	f.install(t,
		plugin{id: "auth-plugin", endpoints: []map[string]any{
			{"path": "/api/v1/auth/users/{id}", "methods": []string{"GET"}},
			{"path": "/api/v1/auth/files/{path...}", "methods": []string{"GET", "PUT"}, "auth": "public", "timeout_seconds": 5},
		}},
		plugin{id: "idle-plugin", disabled: true, status: registry.StatusInactive, endpoints: []map[string]any{{"path": "/api/v1/idle", "methods": []string{"GET"}}}},
	)
	m, ok := f.r.Endpoint("GET", "/api/v1/auth/users/42")
	if !ok || m.PluginID != "auth-plugin" || m.Pattern != "GET /api/v1/auth/users/{id}" || m.Params["id"] != "42" || m.Endpoint.Auth != "token" {
		t.Fatalf("users: %+v %v", m, ok)
	}
	m, ok = f.r.Endpoint("PUT", "/api/v1/auth/files/a/b%20c")
	if !ok || m.Params["path"] != "a/b c" || m.Endpoint.Auth != "public" || m.Endpoint.TimeoutSeconds != 5 {
		t.Fatalf("files: %+v %v", m, ok)
	}
	for _, c := range [][2]string{{"GET", "/api/v1/idle"}, {"DELETE", "/api/v1/auth/users/42"}, {"GET", "/api/v1/nothing"}} {
		if m, ok := f.r.Endpoint(c[0], c[1]); ok {
			t.Errorf("%s %s matched %+v", c[0], c[1], m)
		}
	}
	if m, ok := f.r.Endpoint("DELETE", "/api/v1/auth/files/x"); ok || m.Allow != "GET, HEAD, PUT" {
		t.Errorf("a declared path with another method: %+v %v, want Allow GET, HEAD, PUT", m, ok)
	}
	if m, _ := f.r.Endpoint("GET", "/api/v1/nothing"); m.Allow != "" {
		t.Errorf("an undeclared path: Allow %q", m.Allow)
	}
	f.modify(t, "idle-plugin", func(rec *store.Plugin) { rec.Enabled = true })
	if m, ok := f.r.Endpoint("GET", "/api/v1/idle"); !ok || m.PluginID != "idle-plugin" {
		t.Fatalf("after enabling: %+v %v", m, ok)
	}
}
