package storepg

import (
	"encoding/json"
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

// pluginDoc is the JSON form of a plugin record kept inside a backup or an update in
// flight (jsonb). Its field names are part of the database format: rename nothing, only
// add.
type pluginDoc struct {
	ID              string    `json:"id"`
	Version         string    `json:"version"`
	Manifest        []byte    `json:"manifest,omitempty"`
	Dir             string    `json:"dir"`
	Source          string    `json:"source"`
	PackageSHA256   string    `json:"package_sha256"`
	Enabled         bool      `json:"enabled"`
	Status          string    `json:"status"`
	StatusReason    string    `json:"status_reason"`
	Config          []byte    `json:"config,omitempty"`
	ConfigUpdatedAt time.Time `json:"config_updated_at"`
	Requested       []string  `json:"requested"`
	Granted         []string  `json:"granted"`
	Denied          []string  `json:"denied"`
	SecurityLevel   string    `json:"security_level"`
	SandboxEnabled  bool      `json:"sandbox_enabled"`
	MemoryMB        int       `json:"memory_mb"`
	CPUPercent      int       `json:"cpu_percent"`
	FileHandles     int       `json:"file_handles"`
	InstalledAt     time.Time `json:"installed_at"`
	UpdatedAt       time.Time `json:"updated_at"`
}

// pluginDocValue encodes p as a pluginDoc. Manifest and Config are base64 inside it: they
// are kept byte for byte, which jsonb would not do for JSON embedded as JSON.
func pluginDocValue(p store.Plugin) ([]byte, error) {
	p = cleanPlugin(p)
	return json.Marshal(pluginDoc{
		ID:              p.ID,
		Version:         p.Version,
		Manifest:        p.Manifest,
		Dir:             p.Dir,
		Source:          p.Source,
		PackageSHA256:   p.PackageSHA256,
		Enabled:         p.Enabled,
		Status:          p.Status,
		StatusReason:    p.StatusReason,
		Config:          p.Config,
		ConfigUpdatedAt: p.ConfigUpdatedAt.UTC(),
		Requested:       p.Requested,
		Granted:         p.Granted,
		Denied:          p.Denied,
		SecurityLevel:   p.SecurityLevel,
		SandboxEnabled:  p.SandboxEnabled,
		MemoryMB:        p.Limits.MemoryMB,
		CPUPercent:      p.Limits.CPUPercent,
		FileHandles:     p.Limits.FileHandles,
		InstalledAt:     p.InstalledAt.UTC(),
		UpdatedAt:       p.UpdatedAt.UTC(),
	})
}

// pluginFromDoc decodes a plugin written by pluginDocValue.
func pluginFromDoc(b []byte) (store.Plugin, error) {
	var d pluginDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return store.Plugin{}, fmt.Errorf("decode plugin: %w", err)
	}
	return store.Plugin{
		ID:              d.ID,
		Version:         d.Version,
		Manifest:        d.Manifest,
		Dir:             d.Dir,
		Source:          d.Source,
		PackageSHA256:   d.PackageSHA256,
		Enabled:         d.Enabled,
		Status:          d.Status,
		StatusReason:    d.StatusReason,
		Config:          d.Config,
		ConfigUpdatedAt: d.ConfigUpdatedAt.UTC(),
		Requested:       d.Requested,
		Granted:         d.Granted,
		Denied:          d.Denied,
		SecurityLevel:   d.SecurityLevel,
		SandboxEnabled:  d.SandboxEnabled,
		Limits: store.ResourceLimits{
			MemoryMB:    d.MemoryMB,
			CPUPercent:  d.CPUPercent,
			FileHandles: d.FileHandles,
		},
		InstalledAt: d.InstalledAt.UTC(),
		UpdatedAt:   d.UpdatedAt.UTC(),
	}, nil
}
