package server_test

import (
	"net/http"
	"strings"
	"testing"
)

// A plugin cannot claim a path of Nexus's own API, nor one another active plugin serves:
// refused at install, update and enable with 409 PLUGIN_ROUTE_CONFLICT naming the holder.
func TestEndpointPathConflictsAreRefused(t *testing.T) {
	e := startRuntimeServer(t)
	eps := func(path string) map[string]any {
		return map[string]any{"api_endpoints": []map[string]any{{"path": path, "methods": []string{"GET"}}}}
	}
	res := installFromBytes(e, testPluginPackage(t, "greedy-plugin", "serve", eps("/api/v1/plugins/{id}/report")), nil)
	if res.Status != http.StatusConflict || res.errorCode() != "PLUGIN_ROUTE_CONFLICT" || !strings.Contains(string(res.Raw), "/api/v1/plugins is a path of Nexus's own API") ||
		!strings.Contains(string(res.Raw), "api_endpoints[0].path") {
		t.Fatalf("install over the plugins API: %d %s", res.Status, res.Raw)
	}

	installTestPlugin(e, "holder-plugin", "serve", eps("/api/v1/reports/{name}"), nil)
	installTestPlugin(e, "second-plugin", "serve", eps("/api/v1/reports/daily"), nil) // the holder is not active yet
	e.mustREST(http.MethodPost, "/api/v1/plugins/holder-plugin/enable", e.Admin, nil)

	res = e.rest(http.MethodPost, "/api/v1/plugins/second-plugin/enable", e.Admin, nil)
	if res.Status != http.StatusConflict || res.errorCode() != "PLUGIN_ROUTE_CONFLICT" || !strings.Contains(string(res.Raw), "enabled plugin holder-plugin serves GET /api/v1/reports/{name}") {
		t.Fatalf("enable over an active plugin's path: %d %s", res.Status, res.Raw)
	}
	res = installFromBytes(e, testPluginPackage(t, "third-plugin", "serve", eps("/api/v1/reports/{name}")), nil)
	if res.Status != http.StatusConflict || !strings.Contains(string(res.Raw), "holder-plugin") {
		t.Fatalf("install over an active plugin's path: %d %s", res.Status, res.Raw)
	}
	if st, _ := status(e, "second-plugin"); st == "active" {
		t.Fatal("the refused plugin runs")
	}
	// Once the holder is disabled, the path is free.
	e.mustREST(http.MethodPost, "/api/v1/plugins/holder-plugin/disable", e.Admin, nil)
	e.mustREST(http.MethodPost, "/api/v1/plugins/second-plugin/enable", e.Admin, nil)
}
