package storepg

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// timeValue encodes t for a time column: nanoseconds since the Unix epoch, or NULL for the
// zero time. Times outside what int64 nanoseconds can hold (before 1678, after 2261) are
// refused rather than silently changed.
func timeValue(t time.Time) (pgtype.Int8, error) {
	if t.IsZero() {
		return pgtype.Int8{}, nil
	}
	if t.Before(time.Unix(0, math.MinInt64)) || t.After(time.Unix(0, math.MaxInt64)) {
		return pgtype.Int8{}, fmt.Errorf("time %s is outside the storable range (years 1678 to 2261)", t.UTC().Format(time.RFC3339Nano))
	}
	return pgtype.Int8{Int64: t.UnixNano(), Valid: true}, nil
}

// timeFrom decodes a time column written by timeValue, in UTC.
func timeFrom(v pgtype.Int8) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.Unix(0, v.Int64).UTC()
}

// stringsValue encodes a list of strings for a text[] column: a nil list as an empty array
// (the columns are NOT NULL; the store may return nil and empty lists as each other).
func stringsValue(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// cleanText returns s as PostgreSQL text can hold it: each NUL byte and each byte that is
// not part of valid UTF-8 replaced by U+FFFD. It is used for text that comes from a
// plugin's output.
func cleanText(s string) string {
	if utf8.ValidString(s) && !strings.Contains(s, "\x00") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == 0 || (r == utf8.RuneError && size == 1) {
			r = utf8.RuneError
		}
		b.WriteRune(r)
		i += size
	}
	return b.String()
}

// cleanPlugin applies cleanText to the plugin's status reason, which quotes its output.
func cleanPlugin(p store.Plugin) store.Plugin {
	p.StatusReason = cleanText(p.StatusReason)
	return p
}

// pluginDocValue encodes p, its text cleaned (cleanPlugin), as the stores' plugin document
// (store.EncodePluginDoc).
func pluginDocValue(p store.Plugin) ([]byte, error) { return store.EncodePluginDoc(cleanPlugin(p)) }

// pluginFromDoc decodes a plugin written by pluginDocValue.
func pluginFromDoc(b []byte) (store.Plugin, error) { return store.DecodePluginDoc(b) }
