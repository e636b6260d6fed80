package server_test

import (
	"net/http"
	"slices"
	"testing"
)

// Without a sandbox the isolation mechanisms are off and the resource limits still apply:
// each mechanism is reported once, in the API's fixed order.
func TestConfinementReportWithoutSandbox(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	want := []string{"identity", "no_new_privs", "filesystem", "network", "syscalls", "ipc", "memory", "cpu", "processes", "file_handles"}
	for _, sandboxOn := range []bool{false, true} {
		e.mustREST(http.MethodPut, "/api/v1/plugins/analytics-plugin/permissions", e.Admin, map[string]any{"sandbox_enabled": sandboxOn})
		perms := e.mustREST(http.MethodGet, "/api/v1/plugins/analytics-plugin/permissions", e.Admin, nil)
		var got []string
		for _, m := range perms["confinement"].([]any) {
			m := m.(map[string]any)
			got = append(got, m["mechanism"].(string))
			if !sandboxOn && slices.Index(want, m["mechanism"].(string)) < 6 && (m["state"] != "off" || m["detail"] != "sandbox_enabled is false for this plugin") {
				t.Errorf("sandbox off: %v", m)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("sandbox_enabled %v: mechanisms %q, want %q", sandboxOn, got, want)
		}
	}
}
