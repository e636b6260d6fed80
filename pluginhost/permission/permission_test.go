package permission_test

import (
	"slices"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/permission"
)

func TestMatch(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern, perm string
		want          bool
	}{
		{"auth:*", "auth:login", true},
		{"auth:*", "users:read", false},
		{"*:read", "users:read", true},
		{"*:read", "users:write", false},
		{"*:*", "anything:goes", true},
		{"users:read", "users:read", true},
		{"users:read", "users:readall", false},
		{"events:user.*", "events:user.login", true},
		{"events:user.*", "events:system.startup", false},
		{"bad", "users:read", false},
		{"users:read", "bad", false},
	}
	for _, c := range cases {
		t.Run(c.pattern+"~"+c.perm, func(t *testing.T) {
			if got := permission.Match(c.pattern, c.perm); got != c.want {
				t.Fatalf("Match(%q, %q) = %v, want %v", c.pattern, c.perm, got, c.want)
			}
		})
	}
}

func TestDefaultPolicyMatchesReferenceExample(t *testing.T) {
	t.Parallel()
	// The reference document's permissions example: http:external is denied.
	granted, denied := permission.DefaultPolicy().Decide([]string{
		"database:read", "database:write", "events:emit", "http:external", "database:read",
	})
	if want := []string{"database:read", "database:write", "events:emit"}; !slices.Equal(granted, want) {
		t.Fatalf("granted = %v, want %v", granted, want)
	}
	if want := []string{"http:external"}; !slices.Equal(denied, want) {
		t.Fatalf("denied = %v, want %v", denied, want)
	}
}

func TestPolicyDeniesBareWildcardResource(t *testing.T) {
	t.Parallel()
	granted, denied := permission.DefaultPolicy().Decide([]string{"*:*", "*:read", "auth:*"})
	if want := []string{"auth:*"}; !slices.Equal(granted, want) {
		t.Fatalf("granted = %v, want %v", granted, want)
	}
	if want := []string{"*:*", "*:read"}; !slices.Equal(denied, want) {
		t.Fatalf("denied = %v, want %v", denied, want)
	}
}

func TestPolicyGrantList(t *testing.T) {
	t.Parallel()
	p := permission.Policy{Grant: []string{"events:*"}}
	granted, denied := p.Decide([]string{"events:emit", "database:read"})
	if !slices.Equal(granted, []string{"events:emit"}) || !slices.Equal(denied, []string{"database:read"}) {
		t.Fatalf("granted %v denied %v", granted, denied)
	}
}

func TestPolicyDeniesWildcardsOverlappingADeny(t *testing.T) {
	t.Parallel()
	granted, denied := permission.DefaultPolicy().Decide([]string{"http:*", "admin:read", "system:*", "database:*", "h*:external"})
	if want := []string{"database:*"}; !slices.Equal(granted, want) {
		t.Fatalf("granted = %v, want %v", granted, want)
	}
	if want := []string{"admin:read", "h*:external", "http:*", "system:*"}; !slices.Equal(denied, want) {
		t.Fatalf("denied = %v, want %v", denied, want)
	}
}

func TestOverlaps(t *testing.T) {
	t.Parallel()
	cases := []struct {
		a, b string
		want bool
	}{
		{"http:*", "http:external", true},
		{"http:external", "http:*", true},
		{"http:ext*", "http:e*", true},
		{"http:int*", "http:ext*", false},
		{"*:read", "users:*", true},
		{"users:read", "users:write", false},
		{"users:read", "groups:read", false},
	}
	for _, c := range cases {
		if got := permission.Overlaps(c.a, c.b); got != c.want {
			t.Errorf("Overlaps(%q, %q) = %v", c.a, c.b, got)
		}
	}
}
