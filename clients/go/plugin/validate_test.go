package plugin

import (
	"regexp"
	"strings"
	"testing"
)

// FuzzIDChecks holds the hand-written checks of plugin ids and message types to the
// patterns of the protocol.
func FuzzIDChecks(f *testing.F) {
	pluginID, messageType := regexp.MustCompile(pluginIDPattern), regexp.MustCompile(messageTypePattern)
	for _, s := range []string{"analytics-plugin", "ab", "abc-", "a-c", "Abc", "user.login", "a:b_c-d.e", "9x", "", "é",
		strings.Repeat("a", 64), strings.Repeat("a", 65), strings.Repeat("a", 128), strings.Repeat("a", 129), "abc\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validPluginID(s), pluginID.MatchString(s); got != want {
			t.Errorf("validPluginID(%q) = %v, the pattern says %v", s, got, want)
		}
		if got, want := validMessageType(s), messageType.MatchString(s); got != want {
			t.Errorf("validMessageType(%q) = %v, the pattern says %v", s, got, want)
		}
	})
}
