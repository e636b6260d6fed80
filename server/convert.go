package server

import (
	"github.com/nexus-platform/nexus/pluginhost/sandbox"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/metrics"
	"github.com/nexus-platform/nexus/pluginhost/rawstruct"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// This file converts between domain types and the API's protobuf messages. Proto types stop
// here: the domain never sees them.

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// toStruct converts a JSON-compatible map to a Struct. Values that are not JSON-compatible
// are a host fault.
func toStruct(m map[string]any) (*structpb.Struct, error) {
	if m == nil {
		m = map[string]any{}
	}
	s, err := structpb.NewStruct(m)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "internal error")
	}
	return s, nil
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func summaryView(v pluginhost.PluginView) (*pluginv1.PluginSummary, error) {
	cfg, err := toStruct(v.Config)
	if err != nil {
		return nil, err
	}
	endpoints := make([]string, 0, len(v.Endpoints))
	for _, e := range v.Endpoints {
		endpoints = append(endpoints, e.Path)
	}
	return &pluginv1.PluginSummary{
		Id: v.ID, Name: v.Name, Version: v.Version, Description: v.Description, Author: v.Author,
		Category: v.Category, Status: v.Status, Enabled: v.Enabled, Health: v.Health,
		LoadOrder: int32(v.LoadOrder),
		Manifest: &pluginv1.PluginManifestSummary{
			EntryPoint: v.EntryPoint, NexusVersion: v.NexusVersion, License: v.License,
		},
		Dependencies:  orEmpty(v.Dependencies),
		Dependents:    orEmpty(v.Dependents),
		Permissions:   orEmpty(v.Permissions),
		Endpoints:     endpoints,
		Events:        &pluginv1.PluginEventNames{Emits: eventTypes(v.Emits), Subscribes: eventTypes(v.Subscribes)},
		Configuration: cfg,
		Metrics: &pluginv1.PluginMetricsSummary{
			RequestsHandled: float64(v.Metrics.RequestsHandled), AverageResponseTime: v.Metrics.LifetimeAverageResponseMS,
			ErrorCount: float64(v.Metrics.FailedRequests), UptimeSeconds: float64(v.Metrics.UptimeSeconds),
		},
		InstalledAt: ts(v.InstalledAt),
		LastUpdated: ts(v.UpdatedAt),
	}, nil
}

func eventTypes(events []pluginhost.EventInfo) []string {
	out := make([]string, 0, len(events))
	for _, e := range events {
		out = append(out, e.Type)
	}
	return out
}

func eventDescriptions(events []pluginhost.EventInfo) []*pluginv1.EventDescription {
	out := make([]*pluginv1.EventDescription, 0, len(events))
	for _, e := range events {
		out = append(out, &pluginv1.EventDescription{Type: e.Type, Description: e.Description})
	}
	return out
}

// detailView converts a plugin's detail view. Only an admin (admin) sees the plugin's
// output lines in its error reason.
func detailView(v pluginhost.PluginView, admin bool) (*pluginv1.PluginDetail, error) {
	m := v.Metrics
	schema, err := toStruct(v.Schema)
	if err != nil {
		return nil, err
	}
	current, err := toStruct(v.Config)
	if err != nil {
		return nil, err
	}
	endpoints := make([]*pluginv1.ApiEndpoint, 0, len(v.Endpoints))
	for _, e := range v.Endpoints {
		endpoints = append(endpoints, &pluginv1.ApiEndpoint{Path: e.Path, Methods: orEmpty(e.Methods), Description: e.Description})
	}
	messageTypes := make([]*pluginv1.MessageTypeInfo, 0, len(v.MessageTypes))
	for _, t := range v.MessageTypes {
		messageTypes = append(messageTypes, &pluginv1.MessageTypeInfo{Type: t.Type, Description: t.Description, RequiredPermission: t.RequiredPermission})
	}
	logs := make([]*pluginv1.LogLine, 0, len(v.RecentLogs))
	for _, l := range v.RecentLogs {
		logs = append(logs, &pluginv1.LogLine{Timestamp: ts(l.Time), Level: l.Level, Message: l.Message})
	}
	pkgs, deps := v.PackageDeps, v.PluginDeps
	if pkgs == nil {
		pkgs = map[string]string{}
	}
	if deps == nil {
		deps = map[string]string{}
	}
	return &pluginv1.PluginDetail{
		Id: v.ID, Name: v.Name, Version: v.Version, Description: v.Description, Author: v.Author,
		Email: v.Email, Homepage: v.Homepage, Category: v.Category, Tags: orEmpty(v.Tags),
		Status: v.Status, Enabled: v.Enabled, Health: v.Health, LoadOrder: int32(v.LoadOrder),
		Manifest: &pluginv1.PluginManifestDetail{
			EntryPoint: v.EntryPoint, NexusVersion: v.NexusVersion, PythonVersion: v.PythonVersion,
			License: v.License, Dependencies: &pluginv1.ManifestDependencies{Packages: pkgs, Plugins: deps},
			Instances: int32(v.ManifestInstances),
		},
		Dependencies:  orEmpty(v.Dependencies),
		Dependents:    orEmpty(v.Dependents),
		Permissions:   orEmpty(v.Permissions),
		ApiEndpoints:  endpoints,
		Services:      orEmpty(v.Services),
		MessageTypes:  messageTypes,
		Events:        &pluginv1.PluginEvents{Emits: eventDescriptions(v.Emits), Subscribes: eventDescriptions(v.Subscribes)},
		Configuration: &pluginv1.PluginConfiguration{Schema: schema, Current: current},
		Metrics: &pluginv1.PluginMetricsDetail{
			Performance: &pluginv1.PerformanceMetrics{
				RequestsPerMinute: m.RequestsPerMinute, AverageResponseTime: m.AverageResponseMS,
				P95ResponseTime: m.P95ResponseMS, ErrorRate: m.ErrorRate,
			},
			Usage: &pluginv1.UsageMetrics{
				TotalRequests: float64(m.RequestsHandled), SuccessfulRequests: float64(m.SuccessfulRequests),
				FailedRequests: float64(m.FailedRequests), UniqueUsers: float64(m.UniqueUsers),
			},
			Resources: &pluginv1.ResourceMetrics{MemoryUsageMb: m.MemoryMB, CpuUsagePercent: m.CPUPercent, FileHandles: int32(m.FileHandles)},
		},
		Logs:        logs,
		InstalledAt: ts(v.InstalledAt),
		LastUpdated: ts(v.UpdatedAt),
		Error:       errorReason(v, admin),
		Runtime: &pluginv1.RuntimeState{
			Pid: int32(v.Runtime.PID), Instances: int32(v.Runtime.Instances), Restarts: int32(v.Runtime.Restarts),
			BackoffSeconds: v.Runtime.Backoff.Seconds(), StartedAt: ts(v.Runtime.StartedAt),
			ConnectedInstances: connectedInstances(v.Runtime.Connected),
			DesiredInstances:   int32(v.Placement.Instances), Slots: instanceSlots(v.Placement.Slots),
		},
	}, nil
}

// instanceSlots lists the lease slots of a plugin's copies.
func instanceSlots(in []pluginhost.Slot) []*pluginv1.InstanceSlot {
	out := make([]*pluginv1.InstanceSlot, len(in))
	for i, s := range in {
		out[i] = &pluginv1.InstanceSlot{Slot: int32(s.Slot), ReplicaId: s.Replica}
		if !s.ExpiresAt.IsZero() {
			out[i].LeaseExpiresAt = timestamppb.New(s.ExpiresAt)
		}
	}
	return out
}

// connectedInstances lists the connected instances of a plugin with their replica.
func connectedInstances(in []pluginhost.ConnectedInstance) []*pluginv1.ConnectedInstance {
	out := make([]*pluginv1.ConnectedInstance, len(in))
	for i, c := range in {
		out[i] = &pluginv1.ConnectedInstance{InstanceId: c.InstanceID, ReplicaId: c.Replica}
	}
	return out
}

// errorReason is why a plugin is in error: with the plugin's last output lines for an
// admin, in the host's words only for everyone else.
func errorReason(v pluginhost.PluginView, admin bool) string {
	switch {
	case v.Status != pluginhost.StatusError:
		return ""
	case admin:
		return v.StatusReasonWithOutput
	}
	return v.StatusReason
}

func logEntry(r store.LogRecord) (*pluginv1.LogEntry, error) {
	meta := map[string]any{}
	if len(r.Metadata) > 0 {
		s := &structpb.Struct{}
		if err := s.UnmarshalJSON(r.Metadata); err == nil {
			return &pluginv1.LogEntry{Timestamp: ts(r.Time), Level: r.Level, Message: r.Message, Metadata: s}, nil
		}
	}
	s, err := toStruct(meta)
	if err != nil {
		return nil, err
	}
	return &pluginv1.LogEntry{Timestamp: ts(r.Time), Level: r.Level, Message: r.Message, Metadata: s}, nil
}

func confinementView(r sandbox.Report) []*pluginv1.ConfinementState {
	out := make([]*pluginv1.ConfinementState, len(r))
	for i, s := range r {
		out[i] = &pluginv1.ConfinementState{Mechanism: s.Mechanism, State: s.State, Detail: s.Detail}
	}
	return out
}

func enforcementView(e pluginhost.LimitEnforcement) *pluginv1.LimitEnforcement {
	return &pluginv1.LimitEnforcement{MemoryMb: e.Memory, CpuPercent: e.CPU, FileHandles: e.FileHandles}
}

// metricSeries fills the API's series from the store's, by name.
func metricSeries(in map[string][]metrics.Point) *pluginv1.MetricSeries {
	conv := func(name string) []*pluginv1.MetricPoint {
		pts := in[name]
		out := make([]*pluginv1.MetricPoint, 0, len(pts))
		for _, p := range pts {
			out = append(out, &pluginv1.MetricPoint{Timestamp: ts(p.Time), Value: p.Value})
		}
		return out
	}
	return &pluginv1.MetricSeries{
		RequestsPerMinute: conv(metrics.RequestsPerMinute), ResponseTimeMs: conv(metrics.ResponseTimeMS),
		P95ResponseTimeMs: conv(metrics.P95ResponseTimeMS), ErrorRate: conv(metrics.ErrorRate),
		MemoryUsageMb: conv(metrics.MemoryUsageMB), CpuUsagePercent: conv(metrics.CPUUsagePercent),
		FileHandles: conv(metrics.FileHandles),
	}
}

func permissionsView(p pluginhost.Permissions) (*pluginv1.PermissionSet, *pluginv1.ResourceLimits) {
	return &pluginv1.PermissionSet{
			Requested: orEmpty(p.Requested), Granted: orEmpty(p.Granted), Denied: orEmpty(p.Denied),
		}, &pluginv1.ResourceLimits{
			MemoryMb: int32(p.Limits.MemoryMB), CpuPercent: int32(p.Limits.CPUPercent), FileHandles: int32(p.Limits.FileHandles),
		}
}

func healthView(info pluginhost.RuntimeInfo, m metrics.Summary) *pluginv1.PluginHealth {
	checks := make([]*pluginv1.HealthCheck, 0, len(info.Checks))
	for _, c := range info.Checks {
		checks = append(checks, &pluginv1.HealthCheck{
			Name: c.Name, Status: c.Status, ResponseTimeMs: c.ResponseTimeMS, Details: c.Details,
			Value: c.Value, Threshold: c.Threshold, Unit: c.Unit,
		})
	}
	status := info.Health
	if !info.Running && info.Instances == 0 {
		status = pluginhost.HealthUnhealthy
	}
	return &pluginv1.PluginHealth{
		Status: status, LastCheck: ts(info.LastCheck), UptimeSeconds: info.Uptime.Round(time.Second).Seconds(),
		Checks: checks,
		Metrics: &pluginv1.HealthMetrics{
			RequestsPerMinute: m.RequestsPerMinute, ErrorRate: m.ErrorRate,
			MemoryUsageMb: float64(info.Usage.RSSBytes) / (1 << 20), CpuUsagePercent: m.CPUPercent,
		},
	}
}

// decodePayload decodes a domain payload (the protobuf encoding of a Struct) for the API; an
// empty payload is an empty object.
func decodePayload(p pluginhost.Payload) (*structpb.Struct, error) {
	s := &structpb.Struct{}
	if len(p) > 0 {
		if err := proto.Unmarshal(p, s); err != nil {
			return nil, err
		}
	}
	if s.Fields == nil {
		s.Fields = map[string]*structpb.Value{}
	}
	return s, nil
}

// encodePayload encodes an API payload for the domain. A raw Struct (see rawstruct) gives the
// bytes it holds, uncopied.
func encodePayload(s *structpb.Struct) (pluginhost.Payload, error) { return rawstruct.Bytes(s) }

// eventToProto converts an event for the API (the MessagingService and the REST event stream).
func eventToProto(e pluginhost.Event) (*pluginv1.Event, error) {
	data, err := decodePayload(e.Data)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "an event's payload is unreadable")
	}
	return &pluginv1.Event{Id: e.ID, Type: e.Type, Source: e.Source, Data: data, Timestamp: timestamppb.New(e.Time)}, nil
}
