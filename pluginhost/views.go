package pluginhost

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
	"github.com/nexus-platform/nexus/pluginhost/permission"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

// This file holds the views that combine the registry with the runtime, metrics and logs, and
// the configuration and permission changes.

// List returns the installed plugins that pass the filter, in load order, and counts over
// all installed plugins.
func (h *Host) List(ctx context.Context, f ListFilter) ([]PluginView, Summary, error) {
	g := h.reg.Snapshot()
	all := make([]loaded, 0, len(g.All()))
	for _, p := range g.All() {
		all = append(all, loadedOf(p))
	}
	var sum Summary
	var out []PluginView
	search := strings.ToLower(f.Search)
	for _, p := range all {
		sum.Total++
		switch p.rec.Status {
		case StatusActive:
			sum.Active++
		case StatusError:
			sum.Error++
		default:
			sum.Inactive++
		}
		if !p.rec.Enabled {
			sum.Disabled++
		}
		if f.Status != "" && p.rec.Status != f.Status ||
			f.Category != "" && !strings.EqualFold(p.man.Category, f.Category) ||
			!f.IncludeDisabled && !p.rec.Enabled {
			continue
		}
		if search != "" && !strings.Contains(strings.ToLower(p.rec.ID+"\n"+p.man.Name+"\n"+p.man.Description), search) {
			continue
		}
		v, err := h.view(p, g, false)
		if err != nil {
			return nil, Summary{}, err
		}
		out = append(out, v)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].LoadOrder != out[j].LoadOrder {
			return out[i].LoadOrder < out[j].LoadOrder
		}
		return out[i].ID < out[j].ID
	})
	return out, sum, nil
}

// Get returns one plugin; with detail it also carries the most recent log records.
func (h *Host) Get(ctx context.Context, id string, detail bool) (PluginView, error) {
	snap := h.reg.Snapshot()
	p, err := snap.Get(id)
	if err != nil {
		return PluginView{}, err
	}
	v, err := h.view(loadedOf(p), snap, true)
	if err != nil || !detail {
		return v, err
	}
	v.RecentLogs = h.logs.Recent(id)
	v.Placement = h.rt.PlacementOf(id)
	return v, nil
}

// view is p's view in g; withSchema adds the configuration schema (a deep copy: the list
// does not show it, and copying it was a third of the list's own view work).
func (h *Host) view(p loaded, g *registry.Snapshot, withSchema bool) (PluginView, error) {
	m := p.man
	v := PluginView{
		ID: p.rec.ID, Name: m.Name, Version: p.rec.Version, Description: m.Description, Author: m.Author,
		Email: m.Email, Homepage: m.Homepage, Category: m.Category, License: m.License, Tags: m.Tags,
		Status: p.rec.Status, StatusReason: runtime.PublicReason(p.rec.StatusReason), StatusReasonWithOutput: p.rec.StatusReason,
		Enabled: p.rec.Enabled,
		Runtime: h.rt.Info(p.rec.ID), Placement: runtime.Placement{Instances: m.InstanceCount()}, LoadOrder: g.Order(p.rec.ID),
		EntryPoint: m.EntryPoint, NexusVersion: m.NexusVersion, PythonVersion: m.PythonVersion, ManifestInstances: m.InstanceCount(),
		PackageDeps: m.Dependencies.Packages, PluginDeps: m.Dependencies.Plugins,
		Dependencies: m.DependencyIDs(), Dependents: g.Dependents(p.rec.ID),
		Permissions: p.rec.Granted,
		Config:      p.p.MaskedConfig(),
		Metrics:     h.metrics.Summary(p.rec.ID),
		InstalledAt: p.rec.InstalledAt, UpdatedAt: p.rec.UpdatedAt,
	}
	if withSchema {
		v.Schema = p.p.Schema().Raw()
	}
	v.Health = v.Runtime.Health
	for _, e := range m.APIEndpoints {
		v.Endpoints = append(v.Endpoints, EndpointInfo{Path: e.Path, Methods: e.Methods, Description: e.Description})
	}
	for _, e := range m.Events.Emits {
		v.Emits = append(v.Emits, EventInfo{Type: e.Type, Description: e.Description})
	}
	for _, e := range m.Events.Subscribes {
		v.Subscribes = append(v.Subscribes, EventInfo{Type: e.Type, Description: e.Description})
	}
	v.Services = slices.Clone(m.Services)
	for _, t := range m.MessageTypes {
		v.MessageTypes = append(v.MessageTypes, MessageTypeInfo{Type: t.Type, Description: t.Description, RequiredPermission: t.RequiredPermission})
	}
	return v, nil
}

// Config returns a plugin's configuration; secrets are masked unless includeSecrets.
func (h *Host) Config(ctx context.Context, id string, includeSecrets bool) (ConfigView, error) {
	p, err := h.load(ctx, id)
	if err != nil {
		return ConfigView{}, err
	}
	values := p.p.Config()
	schema := p.man.Schema()
	if !includeSecrets {
		values = schema.Mask(values)
	}
	return ConfigView{Values: values, Schema: schema.Raw(), LastUpdated: p.rec.ConfigUpdatedAt}, nil
}

// UpdateConfig merges patch into a plugin's configuration after validating the result
// against its schema. Nothing is stored when a value is invalid.
func (h *Host) UpdateConfig(ctx context.Context, id string, patch map[string]any) (ConfigUpdate, error) {
	defer h.rt.Lock(id)()
	p, err := h.load(ctx, id)
	if err != nil {
		return ConfigUpdate{}, err
	}
	current := p.p.Config()
	schema := p.man.Schema()
	merged, updated, restart, err := registry.ApplyConfig(schema, current, orEmptyMap(patch))
	if err != nil {
		return ConfigUpdate{}, err
	}
	now := time.Now().UTC()
	if len(updated) > 0 {
		// A running plugin gets the change first: if it rejects it, nothing is stored.
		if err := h.rt.PushConfig(ctx, id, merged, updated, restart); err != nil {
			return ConfigUpdate{}, err
		}
		h.logs.SetSecrets(id, registry.SecretValues(merged, schema.SecretFields()))
		sealed, err := h.reg.SealConfig(schema, merged)
		if err != nil {
			return ConfigUpdate{}, err
		}
		err = h.reg.Update(ctx, func(tx *registry.Tx) error {
			// The record as it is now: its status may have changed during the push (the
			// runtime records it without this plugin's lock); only the configuration is ours.
			cur, err := tx.Get(id)
			if err != nil {
				return err
			}
			rec := cur.Record()
			rec.Config, rec.ConfigUpdatedAt, rec.UpdatedAt = sealed, now, now
			if _, err := tx.Put(rec); err != nil {
				return err
			}
			return h.logs.AppendIn(tx, []store.LogRecord{{
				PluginID: id, Time: now, Level: "INFO", Message: "Configuration updated",
				Metadata: mustJSON(map[string]any{"updated_fields": updated, "restart_required": restart}),
			}})
		})
		if err != nil {
			return ConfigUpdate{}, errs.Wrap(errs.Internal, err, "could not store the configuration")
		}
	}
	if len(updated) == 0 {
		now = p.rec.ConfigUpdatedAt // nothing changed
	}
	return ConfigUpdate{Values: schema.Mask(merged), UpdatedFields: updated, RestartRequired: restart, UpdatedAt: now}, nil
}

// Permissions returns a plugin's permissions.
func (h *Host) Permissions(ctx context.Context, id string) (Permissions, error) {
	p, err := h.load(ctx, id)
	if err != nil {
		return Permissions{}, err
	}
	return h.permissionsOf(p.rec), nil
}

// permissionsOf is the permission view of r. SandboxEnabled is reported true only when
// the plugin's confinement is complete: host-launched, asked for, and every mechanism of
// its profile enforced.
func (h *Host) permissionsOf(r store.Plugin) Permissions {
	caps := supervisor.Capabilities()
	var e LimitEnforcement
	if r.Limits.MemoryMB > 0 {
		e.Memory = runtime.MemoryEnforcement(caps)
	}
	if r.Limits.CPUPercent > 0 {
		e.CPU = caps.CPU
	}
	if r.Limits.FileHandles > 0 {
		e.FileHandles = caps.FileHandles
	}
	report := h.rt.Confinement(r.ID)
	hostLaunched := true
	if p, err := h.reg.Get(r.ID); err == nil {
		hostLaunched = !p.Manifest().External
	}
	return Permissions{
		Requested: r.Requested, Granted: r.Granted, Denied: r.Denied,
		SecurityLevel: r.SecurityLevel, SandboxEnabled: r.SandboxEnabled && hostLaunched && report.Complete(),
		Limits: r.Limits, Enforcement: e, Confinement: report, HostLaunched: hostLaunched,
	}
}

// UpdatePermissions grants and revokes permissions and changes security settings. A
// revoked permission that the plugin requested is listed as denied; a granted one is no
// longer denied.
func (h *Host) UpdatePermissions(ctx context.Context, id string, c PermissionChange) (Permissions, error) {
	for _, g := range c.Grant {
		if slices.Contains(c.Revoke, g) {
			return Permissions{}, errs.WithFields(errs.ValidationError, "a permission cannot be granted and revoked at once",
				[]errs.FieldViolation{{Field: "grant", Description: g + " is also in revoke"}})
		}
	}
	defer h.rt.Lock(id)()
	p, err := h.load(ctx, id)
	if err != nil {
		return Permissions{}, err
	}
	rec := p.rec
	granted := slices.Clone(rec.Granted)
	denied := slices.Clone(rec.Denied)
	for _, g := range c.Grant {
		granted = append(granted, g)
		denied = slices.DeleteFunc(denied, func(d string) bool { return d == g })
	}
	for _, r := range c.Revoke {
		granted = slices.DeleteFunc(granted, func(x string) bool { return x == r })
		if slices.Contains(rec.Requested, r) {
			denied = append(denied, r)
		}
	}
	for _, r := range c.Revoke {
		if cover := permission.Covering(granted, r); len(cover) > 0 {
			return Permissions{}, errs.WithFields(errs.ValidationError, "a revoked permission is still covered by a wider grant",
				[]errs.FieldViolation{{Field: "revoke", Description: fmt.Sprintf("%s is covered by the grant %s; revoke that instead", r, strings.Join(cover, ", "))}})
		}
	}
	rec.Granted, rec.Denied = sortedCopy(granted), sortedCopy(denied)
	if c.SecurityLevel != "" {
		rec.SecurityLevel = c.SecurityLevel
	}
	if c.SandboxEnabled != nil {
		rec.SandboxEnabled = *c.SandboxEnabled
	}
	if c.Limits != nil {
		rec.Limits = *c.Limits
	}
	now := time.Now().UTC()
	rec.UpdatedAt = now
	err = h.reg.Update(ctx, func(tx *registry.Tx) error {
		// Only the permission fields are ours: the status may have changed meanwhile.
		cur, err := tx.Get(id)
		if err != nil {
			return err
		}
		next := cur.Record()
		next.Granted, next.Denied, next.UpdatedAt = rec.Granted, rec.Denied, now
		next.SecurityLevel, next.SandboxEnabled, next.Limits = rec.SecurityLevel, rec.SandboxEnabled, rec.Limits
		if _, err := tx.Put(next); err != nil {
			return err
		}
		return h.logs.AppendIn(tx, []store.LogRecord{{
			PluginID: id, Time: now, Level: "INFO", Message: "Permissions updated",
			Metadata: mustJSON(map[string]any{"granted": rec.Granted, "denied": rec.Denied, "security_level": rec.SecurityLevel}),
		}})
	})
	if err != nil {
		return Permissions{}, errs.Wrap(errs.Internal, err, "could not store the permissions")
	}
	return h.permissionsOf(rec), nil
}

// Logs returns one page of an installed plugin's logs, newest first, and the total.
func (h *Host) Logs(ctx context.Context, q LogQuery) ([]store.LogRecord, int, error) {
	if _, err := h.load(ctx, q.PluginID); err != nil {
		return nil, 0, err
	}
	if !q.Start.IsZero() && !q.End.IsZero() && q.End.Before(q.Start) {
		return nil, 0, errs.WithFields(errs.ValidationError, "end_time is before start_time",
			[]errs.FieldViolation{{Field: "end_time", Description: "must not be before start_time"}})
	}
	var recs []store.LogRecord
	var total int
	err := h.st.Read(ctx, func(tx store.Tx) error {
		var err error
		recs, total, err = tx.Logs(q)
		return err
	})
	if err != nil {
		return nil, 0, errs.Wrap(errs.Internal, err, "could not read the logs")
	}
	return recs, total, nil
}

// Backups lists the backups of a plugin (installed or not), newest first.
func (h *Host) Backups(ctx context.Context, id string) ([]store.Backup, error) {
	var out []store.Backup
	err := h.st.Read(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.Backups(id)
		return err
	})
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "could not read the backups")
	}
	return out, nil
}

// Audit appends an entry to the audit log.
func (h *Host) Audit(ctx context.Context, e store.AuditEntry) error {
	return h.audit.Add(ctx, e) // stored in batches off the caller's path (see package audit)
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

func orEmptyMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}

// loaded is an installed plugin with its record and manifest at hand.
type loaded struct {
	rec store.Plugin
	man *manifest.Manifest
	p   *registry.Plugin
}

func loadedOf(p *registry.Plugin) loaded { return loaded{rec: p.Record(), man: p.Manifest(), p: p} }

// load returns an installed plugin from memory, or PLUGIN_NOT_FOUND.
func (h *Host) load(_ context.Context, id string) (loaded, error) {
	p, err := h.reg.Get(id)
	if err != nil {
		return loaded{}, err
	}
	return loadedOf(p), nil
}
