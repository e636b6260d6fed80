package server_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// WhoAmI tells each kind of token what it is and what it may call, from the same table that
// authorises the calls.
func TestWhoAmI(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	plugin := e.token(store.RolePlugin, "analytics-plugin")
	for _, c := range []struct {
		token, role, pluginID string
		may, mayNot           []string
	}{
		{e.Admin, "admin", "", []string{"PluginService/InstallPlugin", "PluginService/UpdatePluginConfig", "MessagingService/ListDeadLetters", "AccessService/WhoAmI"}, []string{"PluginHostService/Connect"}},
		{e.User, "user", "", []string{"PluginService/ListPlugins", "PluginService/GetPluginLogs", "MessagingService/WatchEvents", "AccessService/WhoAmI"}, []string{"PluginService/InstallPlugin", "PluginService/UpdatePluginConfig", "RepositoryService/SyncRepositories", "MessagingService/ListDeadLetters"}},
		{plugin, "plugin", "analytics-plugin", []string{"PluginHostService/Connect", "MessagingService/SendMessage", "AccessService/WhoAmI"}, []string{"PluginService/InstallPlugin", "PluginService/ListPlugins"}},
	} {
		d := e.mustREST(http.MethodGet, "/api/v1/whoami", c.token, nil)
		if d["role"] != c.role || d["plugin_id"] != c.pluginID || d["token_id"] == "" || d["name"] == "" {
			t.Errorf("%s: %v", c.role, d)
		}
		var allowed []string
		for _, p := range d["allowed_procedures"].([]any) {
			allowed = append(allowed, p.(string))
		}
		if !slices.IsSorted(allowed) {
			t.Errorf("%s: not sorted: %v", c.role, allowed)
		}
		has := func(short string) bool {
			return slices.ContainsFunc(allowed, func(p string) bool { return p == "nexus.plugin.v1."+short || p == "nexus.pluginhost.v1."+short })
		}
		for _, m := range c.may {
			if !has(m) {
				t.Errorf("%s may call %s, which is not listed: %v", c.role, m, allowed)
			}
		}
		for _, m := range c.mayNot {
			if has(m) {
				t.Errorf("%s may not call %s, which is listed", c.role, m)
			}
		}
	}
	if res := e.rest(http.MethodGet, "/api/v1/whoami", "nxt_unknown", nil); res.Status != http.StatusUnauthorized || res.errorCode() != "UNAUTHENTICATED" {
		t.Errorf("unknown token: %d %s", res.Status, res.Raw)
	}
}
