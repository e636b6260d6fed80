package server

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/metrics"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// pluginService implements nexus.plugin.v1.PluginService over the domain.
type pluginService struct {
	pluginv1connect.UnimplementedPluginServiceHandler
	plugins   pluginManager
	installer pluginInstaller
	runtime   pluginRuntime
	cluster   replicaLister
	// endpoints counts the calls of plugins' HTTP endpoints (GetPlugin shows them).
	endpoints *endpointMetrics
}

// pluginManager is what pluginService needs of the host (a *pluginhost.Host): the views,
// configuration, observation and permissions of installed plugins.
type pluginManager interface {
	List(ctx context.Context, f pluginhost.ListFilter) ([]pluginhost.PluginView, pluginhost.Summary, error)
	Get(ctx context.Context, id string, detail bool) (pluginhost.PluginView, error)
	Backups(ctx context.Context, id string) ([]store.Backup, error)

	Config(ctx context.Context, id string, includeSecrets bool) (pluginhost.ConfigView, error)
	UpdateConfig(ctx context.Context, id string, patch map[string]any) (pluginhost.ConfigUpdate, error)

	MetricsSummary(id string) metrics.Summary
	MetricsSeries(ctx context.Context, id string, start, end time.Time, resolution time.Duration, names []string) (map[string][]metrics.Point, error)
	Logs(ctx context.Context, q pluginhost.LogQuery) ([]store.LogRecord, int, error)
	TailLogs(ctx context.Context, q pluginhost.TailQuery) (<-chan store.LogRecord, error)

	Permissions(ctx context.Context, id string) (pluginhost.Permissions, error)
	UpdatePermissions(ctx context.Context, id string, c pluginhost.PermissionChange) (pluginhost.Permissions, error)
}

// pluginInstaller is what the service uses of install.Installer.
type pluginInstaller interface {
	Install(ctx context.Context, req pluginhost.InstallRequest) (pluginhost.InstallResult, error)
	Update(ctx context.Context, req pluginhost.UpdateRequest) (pluginhost.UpdateResult, error)
	Uninstall(ctx context.Context, id string, opts pluginhost.UninstallOptions) (pluginhost.UninstallResult, error)
	Rollback(ctx context.Context, id, backupID string) (pluginhost.UpdateResult, error)
}

// pluginRuntime is what the service uses of runtime.Runtime.
type pluginRuntime interface {
	Enable(ctx context.Context, id string, opts pluginhost.EnableOptions) (string, error)
	Disable(ctx context.Context, id string, opts pluginhost.DisableOptions) error
	Restart(ctx context.Context, id, reason string, timeout time.Duration) (string, error)
	SetInstances(ctx context.Context, id string, n int) error
	Placed() bool
	Info(id string) pluginhost.RuntimeInfo
	CheckHealth(ctx context.Context, id string) (pluginhost.RuntimeInfo, error)
}

func (s *pluginService) ListPlugins(ctx context.Context, req *connect.Request[pluginv1.ListPluginsRequest]) (*connect.Response[pluginv1.ListPluginsResponse], error) {
	m := req.Msg
	views, sum, err := s.plugins.List(ctx, pluginhost.ListFilter{
		Status: m.GetStatus(), Category: m.GetCategory(), Search: m.GetSearch(),
		IncludeDisabled: m.IncludeDisabled == nil || m.GetIncludeDisabled(),
	})
	if err != nil {
		return nil, err
	}
	out := &pluginv1.ListPluginsResponse{
		Plugins: make([]*pluginv1.PluginSummary, 0, len(views)),
		Summary: &pluginv1.PluginsSummary{
			Total: int32(sum.Total), Active: int32(sum.Active), Inactive: int32(sum.Inactive),
			Error: int32(sum.Error), Disabled: int32(sum.Disabled),
		},
	}
	for _, v := range views {
		pv, err := summaryView(v)
		if err != nil {
			return nil, err
		}
		out.Plugins = append(out.Plugins, pv)
	}
	return connect.NewResponse(out), nil
}

func (s *pluginService) GetPlugin(ctx context.Context, req *connect.Request[pluginv1.GetPluginRequest]) (*connect.Response[pluginv1.GetPluginResponse], error) {
	v, err := s.plugins.Get(ctx, req.Msg.GetPluginId(), true)
	if err != nil {
		return nil, err
	}
	caller, _ := principalFrom(ctx)
	d, err := detailView(v, caller.IsAdmin())
	if err != nil {
		return nil, err
	}
	if s.endpoints != nil {
		for _, e := range d.GetApiEndpoints() {
			e.Stats = s.endpoints.Stats(v.ID, e.GetPath(), e.GetMethods())
		}
	}
	if s.cluster != nil {
		// The instances connected to the other replicas, at their last heartbeat.
		rt := d.GetRuntime()
		for _, r := range s.cluster.RemoteSessions(v.ID) {
			rt.ConnectedInstances = append(rt.ConnectedInstances, &pluginv1.ConnectedInstance{InstanceId: r.InstanceID, ReplicaId: r.Replica})
		}
		rt.Instances = int32(len(rt.ConnectedInstances))
	}
	return connect.NewResponse(&pluginv1.GetPluginResponse{Plugin: d}), nil
}

func (s *pluginService) InstallPlugin(ctx context.Context, req *connect.Request[pluginv1.InstallPluginRequest]) (*connect.Response[pluginv1.InstallPluginResponse], error) {
	m := req.Msg
	res, err := s.installer.Install(ctx, pluginhost.InstallRequest{
		Source: m.GetSource(), FilePath: m.GetFilePath(), PackageData: m.GetPackageData(),
		PluginName: m.GetPluginName(), Version: m.GetVersion(),
		DownloadURL: m.GetDownloadUrl(), SHA256: m.GetSha256(),
		Config: m.GetConfig().AsMap(), AutoEnable: m.GetAutoEnable(), ForceReinstall: m.GetForceReinstall(),
	})
	if err != nil {
		return nil, err
	}
	callInfoFrom(ctx).setTarget(res.PluginID)
	return connect.NewResponse(&pluginv1.InstallPluginResponse{
		Installation: &pluginv1.Installation{
			PluginId: res.PluginID, Status: "completed", Version: res.Version,
			InstalledAt: ts(res.InstalledAt), DurationSeconds: res.Duration.Seconds(),
		},
		Plugin: &pluginv1.PluginBrief{Id: res.PluginID, Name: res.Name, Version: res.Version, Status: res.Status, Enabled: res.Enabled},
	}), nil
}

func (s *pluginService) UpdatePlugin(ctx context.Context, req *connect.Request[pluginv1.UpdatePluginRequest]) (*connect.Response[pluginv1.UpdatePluginResponse], error) {
	m := req.Msg
	res, err := s.installer.Update(ctx, pluginhost.UpdateRequest{
		PluginID: m.GetPluginId(), Source: m.GetSource(), Version: m.GetVersion(), FilePath: m.GetFilePath(),
		PackageData: m.GetPackageData(), DownloadURL: m.GetDownloadUrl(), SHA256: m.GetSha256(),
		BackupCurrent: m.GetBackupCurrent(), RestartPlugin: m.GetRestartPlugin(), UpdateConfig: m.GetUpdateConfig(),
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.UpdatePluginResponse{Update: &pluginv1.PluginUpdate{
		PluginId: res.PluginID, OldVersion: res.OldVersion, NewVersion: res.NewVersion, Status: "completed",
		BackupId: res.BackupID, UpdatedAt: ts(res.At),
	}}), nil
}

func (s *pluginService) UninstallPlugin(ctx context.Context, req *connect.Request[pluginv1.UninstallPluginRequest]) (*connect.Response[pluginv1.UninstallPluginResponse], error) {
	m := req.Msg
	res, err := s.installer.Uninstall(ctx, m.GetPluginId(), pluginhost.UninstallOptions{
		Force: m.GetForce(), Backup: m.GetBackup(), CleanupData: m.GetCleanupData(),
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.UninstallPluginResponse{Uninstallation: &pluginv1.Uninstallation{
		PluginId: res.PluginID, Status: "completed", BackupCreated: res.BackupCreated,
		DataRemoved: res.DataRemoved, UninstalledAt: ts(res.UninstalledAt), BackupId: res.BackupID,
	}}), nil
}

func (s *pluginService) RollbackPlugin(ctx context.Context, req *connect.Request[pluginv1.RollbackPluginRequest]) (*connect.Response[pluginv1.RollbackPluginResponse], error) {
	res, err := s.installer.Rollback(ctx, req.Msg.GetPluginId(), req.Msg.GetBackupId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.RollbackPluginResponse{Rollback: &pluginv1.Rollback{
		PluginId: res.PluginID, BackupId: res.BackupID, FromVersion: res.OldVersion, ToVersion: res.NewVersion,
		Status: "completed", RolledBackAt: ts(res.At),
	}}), nil
}

func (s *pluginService) ListBackups(ctx context.Context, req *connect.Request[pluginv1.ListBackupsRequest]) (*connect.Response[pluginv1.ListBackupsResponse], error) {
	backups, err := s.plugins.Backups(ctx, req.Msg.GetPluginId())
	if err != nil {
		return nil, err
	}
	out := &pluginv1.ListBackupsResponse{Backups: make([]*pluginv1.Backup, 0, len(backups))}
	for _, b := range backups {
		out.Backups = append(out.Backups, &pluginv1.Backup{
			BackupId: b.ID, PluginId: b.PluginID, Version: b.Version, Reason: b.Reason,
			CreatedAt: ts(b.CreatedAt), SizeBytes: float64(b.SizeBytes),
		})
	}
	return connect.NewResponse(out), nil
}

func (s *pluginService) GetPluginConfig(ctx context.Context, req *connect.Request[pluginv1.GetPluginConfigRequest]) (*connect.Response[pluginv1.GetPluginConfigResponse], error) {
	m := req.Msg
	if m.GetIncludeSecrets() {
		if p, _ := principalFrom(ctx); !p.IsAdmin() {
			return nil, errs.New(errs.PluginPermissionDenied, "only admins may read secret configuration values")
		}
	}
	view, err := s.plugins.Config(ctx, m.GetPluginId(), m.GetIncludeSecrets())
	if err != nil {
		return nil, err
	}
	cfg, err := toStruct(view.Values)
	if err != nil {
		return nil, err
	}
	out := &pluginv1.GetPluginConfigResponse{Configuration: cfg, LastUpdated: ts(view.LastUpdated)}
	if m.IncludeSchema == nil || m.GetIncludeSchema() {
		if out.Schema, err = toStruct(view.Schema); err != nil {
			return nil, err
		}
	}
	return connect.NewResponse(out), nil
}

func (s *pluginService) UpdatePluginConfig(ctx context.Context, req *connect.Request[pluginv1.UpdatePluginConfigRequest]) (*connect.Response[pluginv1.UpdatePluginConfigResponse], error) {
	up, err := s.plugins.UpdateConfig(ctx, req.Msg.GetPluginId(), req.Msg.GetConfig().AsMap())
	if err != nil {
		return nil, err
	}
	if up.RestartRequired && req.Msg.GetRestart() && s.runsSomewhere(ctx, req.Msg.GetPluginId()) {
		if _, err := s.runtime.Restart(ctx, req.Msg.GetPluginId(), "configuration change", 30*time.Second); err != nil {
			return nil, err
		}
	}
	cfg, err := toStruct(up.Values)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.UpdatePluginConfigResponse{
		Configuration: cfg, UpdatedFields: orEmpty(up.UpdatedFields),
		RestartRequired: up.RestartRequired, UpdatedAt: ts(up.UpdatedAt),
	}), nil
}

func (s *pluginService) EnablePlugin(ctx context.Context, req *connect.Request[pluginv1.EnablePluginRequest]) (*connect.Response[pluginv1.EnablePluginResponse], error) {
	status, err := s.runtime.Enable(ctx, req.Msg.GetPluginId(), pluginhost.EnableOptions{EnableDependencies: req.Msg.GetEnableDependencies()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.EnablePluginResponse{PluginId: req.Msg.GetPluginId(), Status: status, EnabledAt: timestamppb.Now()}), nil
}

func (s *pluginService) DisablePlugin(ctx context.Context, req *connect.Request[pluginv1.DisablePluginRequest]) (*connect.Response[pluginv1.DisablePluginResponse], error) {
	m := req.Msg
	timeout := 30 * time.Second
	if m.TimeoutSeconds != nil {
		timeout = time.Duration(m.GetTimeoutSeconds()) * time.Second
	}
	err := s.runtime.Disable(ctx, m.GetPluginId(), pluginhost.DisableOptions{
		Reason: m.GetReason(), Graceful: m.GracefulShutdown == nil || m.GetGracefulShutdown(), Timeout: timeout, Force: m.GetForce(),
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.DisablePluginResponse{PluginId: m.GetPluginId(), Status: pluginhost.StatusInactive, DisabledAt: timestamppb.Now(), Reason: m.GetReason()}), nil
}

func (s *pluginService) RestartPlugin(ctx context.Context, req *connect.Request[pluginv1.RestartPluginRequest]) (*connect.Response[pluginv1.RestartPluginResponse], error) {
	m := req.Msg
	timeout := 30 * time.Second
	if m.TimeoutSeconds != nil {
		timeout = time.Duration(m.GetTimeoutSeconds()) * time.Second
	}
	status, err := s.runtime.Restart(ctx, m.GetPluginId(), m.GetReason(), timeout)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.RestartPluginResponse{PluginId: m.GetPluginId(), Status: status, RestartedAt: timestamppb.Now(), Reason: m.GetReason()}), nil
}

// runsSomewhere reports whether a copy of plugin id runs here or, with replicas, on another
// replica (its record says active).
func (s *pluginService) runsSomewhere(ctx context.Context, id string) bool {
	if s.runtime.Info(id).Running {
		return true
	}
	if !s.runtime.Placed() {
		return false
	}
	v, err := s.plugins.Get(ctx, id, false)
	return err == nil && v.Enabled && v.Status == pluginhost.StatusActive
}

func (s *pluginService) SetPluginInstances(ctx context.Context, req *connect.Request[pluginv1.SetPluginInstancesRequest]) (*connect.Response[pluginv1.SetPluginInstancesResponse], error) {
	m := req.Msg
	if err := s.runtime.SetInstances(ctx, m.GetPluginId(), int(m.GetInstances())); err != nil {
		return nil, err
	}
	live := 1
	msg := fmt.Sprintf("%d instances of %s requested", m.GetInstances(), m.GetPluginId())
	if !s.runtime.Placed() {
		if m.GetInstances() > 1 {
			msg += "; this server runs one copy (the count applies to servers sharing a PostgreSQL database)"
		}
	} else {
		if replicas, err := s.cluster.Replicas(ctx); err == nil {
			live = 0
			for _, r := range replicas {
				if r.Up {
					live++
				}
			}
		}
		switch wait := int(m.GetInstances()) - live; {
		case wait == 1:
			msg += fmt.Sprintf("; %d live replicas run one each, 1 waits for another replica", live)
		case wait > 1:
			msg += fmt.Sprintf("; %d live replicas run one each, %d wait for more replicas", live, wait)
		}
	}
	return connect.NewResponse(&pluginv1.SetPluginInstancesResponse{
		PluginId: m.GetPluginId(), Instances: m.GetInstances(), LiveReplicas: int32(live), Message: msg,
	}), nil
}

func (s *pluginService) GetPluginHealth(ctx context.Context, req *connect.Request[pluginv1.GetPluginHealthRequest]) (*connect.Response[pluginv1.GetPluginHealthResponse], error) {
	id := req.Msg.GetPluginId()
	var info pluginhost.RuntimeInfo
	var err error
	if req.Msg.GetRefresh() {
		info, err = s.runtime.CheckHealth(ctx, id)
	} else {
		_, err = s.plugins.Get(ctx, id, false)
		info = s.runtime.Info(id)
	}
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.GetPluginHealthResponse{Health: healthView(info, s.plugins.MetricsSummary(id))}), nil
}

func (s *pluginService) GetPluginMetrics(ctx context.Context, req *connect.Request[pluginv1.GetPluginMetricsRequest]) (*connect.Response[pluginv1.GetPluginMetricsResponse], error) {
	m := req.Msg
	end := time.Now().UTC()
	if m.GetEndTime() != nil {
		end = m.GetEndTime().AsTime()
	}
	start := end.Add(-time.Hour)
	if m.GetStartTime() != nil {
		start = m.GetStartTime().AsTime()
	}
	resolution := m.GetResolution()
	if resolution == "" {
		resolution = "1m"
	}
	step, err := metrics.ParseResolution(resolution)
	if err != nil {
		return nil, err
	}
	series, err := s.plugins.MetricsSeries(ctx, m.GetPluginId(), start, end, step, m.GetMetrics())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.GetPluginMetricsResponse{
		TimeRange: &pluginv1.TimeRange{Start: ts(start), End: ts(end), Resolution: resolution},
		Metrics:   metricSeries(series),
	}), nil
}

func (s *pluginService) GetPluginLogs(ctx context.Context, req *connect.Request[pluginv1.GetPluginLogsRequest]) (*connect.Response[pluginv1.GetPluginLogsResponse], error) {
	m := req.Msg
	q := pluginhost.LogQuery{
		PluginID: m.GetPluginId(), MinLevel: m.GetLevel(), Search: m.GetSearch(),
		Page: int(m.GetPage()), PerPage: int(m.GetPerPage()),
	}
	if q.Page == 0 {
		q.Page = 1
	}
	if q.PerPage == 0 {
		q.PerPage = 100
	}
	if m.GetStartTime() != nil {
		q.Start = m.GetStartTime().AsTime()
	}
	if m.GetEndTime() != nil {
		q.End = m.GetEndTime().AsTime()
	}
	recs, total, err := s.plugins.Logs(ctx, q)
	if err != nil {
		return nil, err
	}
	out := &pluginv1.GetPluginLogsResponse{
		Logs: make([]*pluginv1.LogEntry, 0, len(recs)),
		Pagination: &pluginv1.Pagination{
			Page: int32(q.Page), PerPage: int32(q.PerPage), Total: int32(total),
			HasNext: q.Page*q.PerPage < total,
		},
	}
	for _, r := range recs {
		e, err := logEntry(r)
		if err != nil {
			return nil, err
		}
		out.Logs = append(out.Logs, e)
	}
	return connect.NewResponse(out), nil
}

func (s *pluginService) TailPluginLogs(ctx context.Context, req *connect.Request[pluginv1.TailPluginLogsRequest], stream *connect.ServerStream[pluginv1.TailPluginLogsResponse]) error {
	m := req.Msg
	records, err := s.plugins.TailLogs(ctx, pluginhost.TailQuery{PluginID: m.GetPluginId(), MinLevel: m.GetLevel(), Search: m.GetSearch(), Backlog: int(m.GetBacklog())})
	if err != nil {
		return err
	}
	// Send the response headers now: the client learns that the tail is open before the
	// first entry, which may be long in coming.
	if err := stream.Send(nil); err != nil {
		return err
	}
	for r := range records {
		e, err := logEntry(r)
		if err != nil {
			return err
		}
		if err := stream.Send(&pluginv1.TailPluginLogsResponse{Entry: e}); err != nil {
			return err
		}
	}
	return nil
}

func (s *pluginService) GetPluginPermissions(ctx context.Context, req *connect.Request[pluginv1.GetPluginPermissionsRequest]) (*connect.Response[pluginv1.GetPluginPermissionsResponse], error) {
	p, err := s.plugins.Permissions(ctx, req.Msg.GetPluginId())
	if err != nil {
		return nil, err
	}
	set, limits := permissionsView(p)
	return connect.NewResponse(&pluginv1.GetPluginPermissionsResponse{
		Permissions: set, SecurityLevel: p.SecurityLevel, SandboxEnabled: p.SandboxEnabled, ResourceLimits: limits,
		LimitsEnforcement: enforcementView(p.Enforcement), Confinement: confinementView(p.Confinement), HostLaunched: p.HostLaunched,
	}), nil
}

func (s *pluginService) UpdatePluginPermissions(ctx context.Context, req *connect.Request[pluginv1.UpdatePluginPermissionsRequest]) (*connect.Response[pluginv1.UpdatePluginPermissionsResponse], error) {
	m := req.Msg
	change := pluginhost.PermissionChange{Grant: m.GetGrant(), Revoke: m.GetRevoke(), SecurityLevel: m.GetSecurityLevel()}
	if m.SandboxEnabled != nil {
		v := m.GetSandboxEnabled()
		change.SandboxEnabled = &v
	}
	if l := m.GetResourceLimits(); l != nil {
		change.Limits = &store.ResourceLimits{MemoryMB: int(l.GetMemoryMb()), CPUPercent: int(l.GetCpuPercent()), FileHandles: int(l.GetFileHandles())}
	}
	p, err := s.plugins.UpdatePermissions(ctx, m.GetPluginId(), change)
	if err != nil {
		return nil, err
	}
	set, limits := permissionsView(p)
	return connect.NewResponse(&pluginv1.UpdatePluginPermissionsResponse{
		Permissions: set, SecurityLevel: p.SecurityLevel, SandboxEnabled: p.SandboxEnabled, ResourceLimits: limits,
		LimitsEnforcement: enforcementView(p.Enforcement), Confinement: confinementView(p.Confinement), HostLaunched: p.HostLaunched,
	}), nil
}
