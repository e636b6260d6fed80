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

// pluginDoc is the JSON form of a plugin record kept inside a backup. Its field names are
// part of the database format: rename nothing, only add.
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

// pluginDocValue encodes p as a pluginDoc.
func pluginDocValue(p store.Plugin) (string, error) {
	d := pluginDoc{
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
	}
	b, err := json.Marshal(d)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// pluginFromDoc decodes a plugin written by pluginDocValue.
func pluginFromDoc(s string) (store.Plugin, error) {
	var d pluginDoc
	if err := json.Unmarshal([]byte(s), &d); err != nil {
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
