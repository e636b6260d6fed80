package router

import "testing"

func TestMatchEvent(t *testing.T) {
	for _, c := range []struct {
		pattern, typ string
		want         bool
	}{
		{"*", "user.login", true},
		{"*", "x", true},
		{"user.*", "user.login", true},
		{"user.*", "user.profile.updated", true},
		{"user.*", "user", false},
		{"user.*", "users.login", false},
		{"*.error", "db.error", true},
		{"*.error", "db.warning", false},
		{"*.error", "error", false},
		{"*.error", "plugin.db.error", false},
		{"user.login", "user.login", true},
		{"user.login", "user.logout", false},
		{"user.login", "user.login.failed", false},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.b.d", false},
		{"a.*.c", "a.c", false},
	} {
		if got := MatchEvent(c.pattern, c.typ); got != c.want {
			t.Errorf("MatchEvent(%q, %q) = %v, want %v", c.pattern, c.typ, got, c.want)
		}
	}
}

func TestReservedEventTypes(t *testing.T) {
	for typ, want := range map[string]bool{"plugin.enabled": true, "system.startup": true, "plugins.x": false, "user.login": false, "plugin": false} {
		if got := IsReservedEventType(typ); got != want {
			t.Errorf("IsReservedEventType(%q) = %v, want %v", typ, got, want)
		}
	}
}
