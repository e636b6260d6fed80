package router_test

import (
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
// that matches one, nor overlap an endpoint of another active plugin.
func TestEndpointConflict(t *testing.T) {
	f := newFixture(t, bus.Options{})
	f.install(t,
		plugin{id: "auth-plugin", endpoints: []map[string]any{{"path": "/api/v1/auth/users/{id}", "methods": []string{"GET"}}}},
		plugin{id: "idle-plugin", status: registry.StatusInactive, endpoints: []map[string]any{{"path": "/api/v1/idle", "methods": []string{"GET"}}}},
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
		{"metrics", []manifest.APIEndpoint{endpoint("/metrics", "GET")}, "/metrics is a path"},
		{"grpc service", []manifest.APIEndpoint{endpoint("/nexus.plugin.v1.PluginService/ListPlugins", "POST")}, "/nexus. is a path"},
		{"console", []manifest.APIEndpoint{endpoint("/ui/plugins", "GET")}, "/ui is a path"},
		{"same path of an active plugin", []manifest.APIEndpoint{endpoint("/api/v1/auth/users/{user}", "GET")}, "active plugin auth-plugin serves GET /api/v1/auth/users/{id}"},
		{"more specific path of an active plugin", []manifest.APIEndpoint{endpoint("/api/v1/auth/users/me", "GET")}, "auth-plugin"},
		{"other method", []manifest.APIEndpoint{endpoint("/api/v1/auth/users/{id}", "DELETE")}, ""},
		{"inactive plugin's path", []manifest.APIEndpoint{endpoint("/api/v1/idle", "GET")}, ""},
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
