package store

import (
	"encoding/json"
	"fmt"
	"time"
)

// pluginDoc is the JSON form of a plugin record kept inside a backup or an update in flight,
// the same in every store. Its field names are part of the database format: rename nothing,
// only add.
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

// EncodePluginDoc encodes a plugin record as the JSON document a store keeps inside another
// record (a backup, an update in flight). Manifest and Config are base64 inside it: they are
// kept byte for byte.
func EncodePluginDoc(p Plugin) ([]byte, error) {
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
	return json.Marshal(d)
}

// DecodePluginDoc decodes a plugin record written by EncodePluginDoc.
func DecodePluginDoc(b []byte) (Plugin, error) {
	var d pluginDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return Plugin{}, fmt.Errorf("decode plugin: %w", err)
	}
	return Plugin{
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
		Limits: ResourceLimits{
			MemoryMB:    d.MemoryMB,
			CPUPercent:  d.CPUPercent,
			FileHandles: d.FileHandles,
		},
		InstalledAt: d.InstalledAt.UTC(),
		UpdatedAt:   d.UpdatedAt.UTC(),
	}, nil
}
