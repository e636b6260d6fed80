package server_test

import (
	"net/http"
	"testing"
)

// The detail view lists the services and message types a plugin declares, whether or not it
// runs (ListServices lists active providers only).
func TestDetailListsDeclaredServicesAndMessageTypes(t *testing.T) {
	e := startServer(t)
	m := analyticsManifest("1.2.0")
	m["services"] = []string{"analytics", "reports"}
	m["message_types"] = []map[string]any{
		{"type": "user_stats_request", "description": "A user's activity"},
		{"type": "purge", "description": "Forget a user", "required_permission": "analytics:admin"},
	}
	mustInstall(e, m)
	d := e.mustREST(http.MethodGet, "/api/v1/plugins/analytics-plugin", e.User, nil)["plugin"].(map[string]any)
	if d["status"] == "active" {
		t.Fatalf("the plugin runs: %v", d["status"])
	}
	if s := d["services"].([]any); len(s) != 2 || s[0] != "analytics" || s[1] != "reports" {
		t.Errorf("services: %v", d["services"])
	}
	types := d["message_types"].([]any)
	if len(types) != 2 {
		t.Fatalf("message_types: %v", types)
	}
	if p := types[1].(map[string]any); p["type"] != "purge" || p["description"] != "Forget a user" || p["required_permission"] != "analytics:admin" {
		t.Errorf("message_types[1]: %v", p)
	}
}
