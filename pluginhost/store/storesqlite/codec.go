package storesqlite

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// timeValue encodes t for a time column: nanoseconds since the Unix epoch, or NULL for the
// zero time. Times outside what int64 nanoseconds can hold (before 1678, after 2261) are
// refused rather than silently changed.
func timeValue(t time.Time) (any, error) {
	if t.IsZero() {
		return nil, nil
	}
	if t.Before(time.Unix(0, math.MinInt64)) || t.After(time.Unix(0, math.MaxInt64)) {
		return nil, fmt.Errorf("time %s is outside the storable range (years 1678 to 2261)", t.UTC().Format(time.RFC3339Nano))
	}
	return t.UnixNano(), nil
}

// timeFrom decodes a time column written by timeValue, in UTC.
func timeFrom(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.Unix(0, v.Int64).UTC()
}

// stringsValue encodes a list of strings as a JSON array ("null" for a nil list, so nil
// and empty lists both round-trip).
func stringsValue(s []string) (string, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// stringsFrom decodes a list written by stringsValue.
func stringsFrom(s string) ([]string, error) {
	var out []string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("decode string list: %w", err)
	}
	return out, nil
}

// pluginDocValue encodes p as the stores' plugin document (store.EncodePluginDoc).
func pluginDocValue(p store.Plugin) (string, error) {
	b, err := store.EncodePluginDoc(p)
	return string(b), err
}

// pluginFromDoc decodes a plugin written by pluginDocValue.
func pluginFromDoc(s string) (store.Plugin, error) { return store.DecodePluginDoc([]byte(s)) }
