package store_test

import (
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

func TestTokenExpired(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name    string
		expires time.Time
		want    bool
	}{
		{"no expiry", time.Time{}, false},
		{"later", now.Add(time.Nanosecond), false},
		{"exactly now", now, true},
		{"earlier", now.Add(-time.Hour), true},
	} {
		if got := (store.Token{ExpiresAt: c.expires}).Expired(now); got != c.want {
			t.Errorf("%s: Expired = %v, want %v", c.name, got, c.want)
		}
	}
}
