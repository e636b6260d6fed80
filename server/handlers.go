package server

import (
	"buf.build/go/protovalidate"
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/catalog"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/metrics"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/stream"
)

// pluginService implements nexus.plugin.v1.PluginService over the domain.
type pluginService struct {
	pluginv1connect.UnimplementedPluginServiceHandler
	host *pluginhost.Host
}

func (s *pluginService) ListPlugins(ctx context.Context, req *connect.Request[pluginv1.ListPluginsRequest]) (*connect.Response[pluginv1.ListPluginsResponse], error) {
	m := req.Msg
	views, sum, err := s.host.List(ctx, pluginhost.ListFilter{
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
	v, err := s.host.Get(ctx, req.Msg.GetPluginId(), true)
	if err != nil {
		return nil, err
	}
	d, err := detailView(v)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.GetPluginResponse{Plugin: d}), nil
}

func (s *pluginService) InstallPlugin(ctx context.Context, req *connect.Request[pluginv1.InstallPluginRequest]) (*connect.Response[pluginv1.InstallPluginResponse], error) {
	m := req.Msg
	res, err := s.host.Install(ctx, pluginhost.InstallRequest{
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
	res, err := s.host.Update(ctx, pluginhost.UpdateRequest{
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
	res, err := s.host.Uninstall(ctx, m.GetPluginId(), pluginhost.UninstallOptions{
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
	res, err := s.host.Rollback(ctx, req.Msg.GetPluginId(), req.Msg.GetBackupId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.RollbackPluginResponse{Rollback: &pluginv1.Rollback{
		PluginId: res.PluginID, BackupId: res.BackupID, FromVersion: res.OldVersion, ToVersion: res.NewVersion,
		Status: "completed", RolledBackAt: ts(res.At),
	}}), nil
}

func (s *pluginService) ListBackups(ctx context.Context, req *connect.Request[pluginv1.ListBackupsRequest]) (*connect.Response[pluginv1.ListBackupsResponse], error) {
	backups, err := s.host.Backups(ctx, req.Msg.GetPluginId())
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
	view, err := s.host.Config(ctx, m.GetPluginId(), m.GetIncludeSecrets())
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
	up, err := s.host.UpdateConfig(ctx, req.Msg.GetPluginId(), req.Msg.GetConfig().AsMap())
	if err != nil {
		return nil, err
	}
	if up.RestartRequired && req.Msg.GetRestart() && s.host.Runtime(req.Msg.GetPluginId()).Running {
		if _, err := s.host.Restart(ctx, req.Msg.GetPluginId(), "configuration change", 30*time.Second); err != nil {
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
	status, err := s.host.Enable(ctx, req.Msg.GetPluginId(), pluginhost.EnableOptions{EnableDependencies: req.Msg.GetEnableDependencies()})
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
	err := s.host.Disable(ctx, m.GetPluginId(), pluginhost.DisableOptions{
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
	status, err := s.host.Restart(ctx, m.GetPluginId(), m.GetReason(), timeout)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.RestartPluginResponse{PluginId: m.GetPluginId(), Status: status, RestartedAt: timestamppb.Now(), Reason: m.GetReason()}), nil
}

func (s *pluginService) GetPluginHealth(ctx context.Context, req *connect.Request[pluginv1.GetPluginHealthRequest]) (*connect.Response[pluginv1.GetPluginHealthResponse], error) {
	id := req.Msg.GetPluginId()
	var info pluginhost.RuntimeInfo
	var err error
	if req.Msg.GetRefresh() {
		info, err = s.host.CheckHealth(ctx, id)
	} else {
		_, err = s.host.Get(ctx, id, false)
		info = s.host.Runtime(id)
	}
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.GetPluginHealthResponse{Health: healthView(info, s.host.MetricsSummary(id))}), nil
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
	series, err := s.host.MetricsSeries(ctx, m.GetPluginId(), start, end, step, m.GetMetrics())
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
	recs, total, err := s.host.Logs(ctx, q)
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
	records, err := s.host.TailLogs(ctx, pluginhost.TailQuery{PluginID: m.GetPluginId(), MinLevel: m.GetLevel(), Search: m.GetSearch(), Backlog: int(m.GetBacklog())})
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
	p, err := s.host.Permissions(ctx, req.Msg.GetPluginId())
	if err != nil {
		return nil, err
	}
	set, limits := permissionsView(p)
	return connect.NewResponse(&pluginv1.GetPluginPermissionsResponse{
		Permissions: set, SecurityLevel: p.SecurityLevel, SandboxEnabled: p.SandboxEnabled, ResourceLimits: limits,
		LimitsEnforcement: enforcementView(p.Enforcement),
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
	p, err := s.host.UpdatePermissions(ctx, m.GetPluginId(), change)
	if err != nil {
		return nil, err
	}
	set, limits := permissionsView(p)
	return connect.NewResponse(&pluginv1.UpdatePluginPermissionsResponse{
		Permissions: set, SecurityLevel: p.SecurityLevel, SandboxEnabled: p.SandboxEnabled, ResourceLimits: limits,
		LimitsEnforcement: enforcementView(p.Enforcement),
	}), nil
}

// repositoryService implements nexus.plugin.v1.RepositoryService.
type repositoryService struct {
	pluginv1connect.UnimplementedRepositoryServiceHandler
	host *pluginhost.Host
}

func (r *repositoryService) SearchPlugins(_ context.Context, req *connect.Request[pluginv1.SearchPluginsRequest]) (*connect.Response[pluginv1.SearchPluginsResponse], error) {
	m := req.Msg
	q := catalog.Query{
		Query: m.GetQuery(), Category: m.GetCategory(), Author: m.GetAuthor(), Tags: m.GetTags(),
		MinRating: m.GetMinRating(), Sort: m.GetSort(), Page: int(m.GetPage()), PerPage: int(m.GetPerPage()),
	}
	if q.Page == 0 {
		q.Page = 1
	}
	if q.PerPage == 0 {
		q.PerPage = 20
	}
	hits, total, err := r.host.Search(q)
	if err != nil {
		return nil, err
	}
	out := &pluginv1.SearchPluginsResponse{
		Plugins:    make([]*pluginv1.CatalogPlugin, 0, len(hits)),
		Pagination: &pluginv1.Pagination{Page: int32(q.Page), PerPage: int32(q.PerPage), Total: int32(total), HasNext: q.Page*q.PerPage < total},
	}
	for _, h := range hits {
		version := ""
		if len(h.Versions) > 0 {
			version = h.Versions[0].Version
		}
		out.Plugins = append(out.Plugins, &pluginv1.CatalogPlugin{
			Id: h.ID, Name: h.Name, Version: version, Description: h.Description, Author: h.Author,
			Category: h.Category, Tags: orEmpty(h.Tags), Rating: h.Rating, Downloads: float64(h.Downloads),
			LastUpdated:      ts(h.LastUpdated),
			Compatibility:    &pluginv1.Compatibility{NexusVersion: h.Compatibility.NexusVersion, PythonVersion: h.Compatibility.PythonVersion},
			RepositoryUrl:    h.RepositoryURL,
			DocumentationUrl: h.DocumentationURL,
			Repository:       h.Repository,
		})
	}
	return connect.NewResponse(out), nil
}

func repositoryViews(views []catalog.View) []*pluginv1.Repository {
	out := make([]*pluginv1.Repository, 0, len(views))
	for _, v := range views {
		out = append(out, &pluginv1.Repository{
			Name: v.Name, Url: v.URL, Description: v.Description, Enabled: v.Enabled,
			PluginCount: int32(v.PluginCount), LastSync: ts(v.LastSync), LastError: v.LastError,
		})
	}
	return out
}

func (r *repositoryService) ListRepositories(context.Context, *connect.Request[pluginv1.ListRepositoriesRequest]) (*connect.Response[pluginv1.ListRepositoriesResponse], error) {
	return connect.NewResponse(&pluginv1.ListRepositoriesResponse{Repositories: repositoryViews(r.host.Repositories())}), nil
}

func (r *repositoryService) SyncRepositories(ctx context.Context, _ *connect.Request[pluginv1.SyncRepositoriesRequest]) (*connect.Response[pluginv1.SyncRepositoriesResponse], error) {
	return connect.NewResponse(&pluginv1.SyncRepositoriesResponse{Repositories: repositoryViews(r.host.SyncRepositories(ctx))}), nil
}

// messagingService implements nexus.plugin.v1.MessagingService.
type messagingService struct {
	pluginv1connect.UnimplementedMessagingServiceHandler
	host *pluginhost.Host
}

// maxPayloadBytes bounds the data of one message, broadcast or event.
const maxPayloadBytes = 1 << 20

// checkPayload refuses payloads larger than maxPayloadBytes (encoded).
func checkPayload(data *structpb.Struct) error {
	if n := proto.Size(data); n > maxPayloadBytes {
		return errs.WithFields(errs.ValidationError, "the payload is too large",
			[]errs.FieldViolation{{Field: "data", Description: fmt.Sprintf("is %d bytes encoded, at most %d", n, maxPayloadBytes)}})
	}
	return nil
}

func (s *messagingService) SendMessage(ctx context.Context, req *connect.Request[pluginv1.SendMessageRequest]) (*connect.Response[pluginv1.SendMessageResponse], error) {
	m := req.Msg
	data, err := payload(m.GetData())
	if err != nil {
		return nil, err
	}
	timeout := pluginhost.DefaultMessageTimeout
	if m.TimeoutSeconds != nil {
		timeout = time.Duration(m.GetTimeoutSeconds()) * time.Second
	}
	res, err := s.host.SendMessage(ctx, pluginhost.MessageRequest{From: m.GetPluginId(), Target: m.GetTargetPlugin(),
		Type: m.GetMessageType(), Data: data, Timeout: timeout})
	if err != nil {
		return nil, err
	}
	out, err := decodePayload(res.Data)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "the reply could not be decoded")
	}
	if res.Status != "success" && res.ErrorMessage != "" {
		if _, ok := out.GetFields()["error"]; !ok {
			out.Fields["error"] = structpb.NewStringValue(res.ErrorMessage)
		}
	}
	return connect.NewResponse(&pluginv1.SendMessageResponse{
		MessageId:      res.MessageID,
		Response:       &pluginv1.MessageReply{Status: res.Status, Data: out},
		ResponseTimeMs: float64(res.ResponseTime.Microseconds()) / 1000,
	}), nil
}

func (s *messagingService) Broadcast(ctx context.Context, req *connect.Request[pluginv1.BroadcastRequest]) (*connect.Response[pluginv1.BroadcastResponse], error) {
	m := req.Msg
	data, err := payload(m.GetData())
	if err != nil {
		return nil, err
	}
	res, err := s.host.Broadcast(ctx, pluginhost.BroadcastRequest{From: origin(ctx, m.GetSenderPlugin()), Type: m.GetMessageType(),
		Data: data, Categories: m.GetTargetCategories(), Exclude: m.GetExcludePlugins()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.BroadcastResponse{BroadcastId: res.ID, MessageType: res.Type,
		Recipients: res.Recipients, SentAt: timestamppb.New(res.SentAt)}), nil
}

func (s *messagingService) EmitEvent(ctx context.Context, req *connect.Request[pluginv1.EmitEventRequest]) (*connect.Response[pluginv1.EmitEventResponse], error) {
	m := req.Msg
	data, err := payload(m.GetData())
	if err != nil {
		return nil, err
	}
	res, err := s.host.EmitEvent(ctx, pluginhost.EventRequest{From: origin(ctx, ""), Type: m.GetType(), Data: data})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.EmitEventResponse{EventId: res.ID, Type: res.Type, Recipients: res.Recipients,
		EmittedAt: timestamppb.New(res.At)}), nil
}

func (s *messagingService) WatchEvents(ctx context.Context, req *connect.Request[pluginv1.WatchEventsRequest], stream *connect.ServerStream[pluginv1.WatchEventsResponse]) error {
	events, lagged := s.host.WatchEvents(ctx, req.Msg.GetPatterns())
	// Headers go out at once, so that a watcher knows it is subscribed before any event.
	if err := stream.Send(nil); err != nil {
		return err
	}
	for e := range events {
		ev, err := eventToProto(e)
		if err != nil {
			return err
		}
		if err := stream.Send(&pluginv1.WatchEventsResponse{Event: ev}); err != nil {
			return err
		}
	}
	if err := lagged(); err != nil {
		return err
	}
	return nil
}

func (s *messagingService) ListServices(ctx context.Context, req *connect.Request[pluginv1.ListServicesRequest]) (*connect.Response[pluginv1.ListServicesResponse], error) {
	providers, err := s.host.ListServices(ctx, req.Msg.GetService(), req.Msg.GetMessageType())
	if err != nil {
		return nil, err
	}
	out := &pluginv1.ListServicesResponse{Services: []*pluginv1.ServiceProvider{}}
	for _, p := range providers {
		out.Services = append(out.Services, stream.ProviderToProto(p))
	}
	return connect.NewResponse(out), nil
}

func (s *messagingService) ListDeadLetters(ctx context.Context, req *connect.Request[pluginv1.ListDeadLettersRequest]) (*connect.Response[pluginv1.ListDeadLettersResponse], error) {
	limit := 100
	if req.Msg.Limit != nil {
		limit = int(req.Msg.GetLimit())
	}
	dls, err := s.host.DeadLetters(ctx, req.Msg.GetPluginId(), limit)
	if err != nil {
		return nil, err
	}
	out := &pluginv1.ListDeadLettersResponse{DeadLetters: []*pluginv1.DeadLetter{}}
	for _, d := range dls {
		data, err := decodePayload(d.Data)
		if err != nil {
			return nil, errs.Wrap(errs.Internal, err, "a dead letter's payload is unreadable")
		}
		out.DeadLetters = append(out.DeadLetters, &pluginv1.DeadLetter{Id: d.ID, Kind: d.Kind, Source: d.Source, Type: d.Type,
			Data: data, Attempts: int32(d.Attempts), Reason: d.Reason, SentAt: timestamppb.New(d.SentAt), DeadLetteredAt: timestamppb.New(d.At)})
	}
	return connect.NewResponse(out), nil
}

// payload checks the size of an API payload and encodes it for the domain.
func payload(data *structpb.Struct) (pluginhost.Payload, error) {
	if err := checkPayload(data); err != nil {
		return nil, err
	}
	p, err := encodePayload(data)
	if err != nil {
		return nil, errs.New(errs.ValidationError, "data: %v", err)
	}
	return p, nil
}

// origin says who sends a broadcast or an event: the named plugin, the caller's own plugin
// (plugin tokens), or the caller's role.
func origin(ctx context.Context, plugin string) pluginhost.Origin {
	p, _ := principalFrom(ctx)
	if plugin == "" {
		plugin = p.PluginID
	}
	if plugin != "" {
		return pluginhost.Origin{Plugin: plugin}
	}
	return pluginhost.Origin{Role: string(p.Role)}
}

func eventToProto(e pluginhost.Event) (*pluginv1.Event, error) {
	data, err := decodePayload(e.Data)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "an event's payload is unreadable")
	}
	return &pluginv1.Event{Id: e.ID, Type: e.Type, Source: e.Source, Data: data, Timestamp: timestamppb.New(e.Time)}, nil
}

// pluginHostService implements nexus.pluginhost.v1.PluginHostService.
type pluginHostService struct {
	pluginhostv1connect.UnimplementedPluginHostServiceHandler
	host      *pluginhost.Host
	validator protovalidate.Validator
}

func (p pluginHostService) Connect(ctx context.Context, stream *connect.BidiStream[pluginhostv1.ConnectRequest, pluginhostv1.ConnectResponse]) error {
	principal, ok := principalFrom(ctx)
	if !ok || principal.PluginID == "" {
		return errs.New(errs.PluginPermissionDenied, "only plugin tokens may open a plugin stream")
	}
	return p.host.ServeSession(ctx, pluginhost.SessionCaller{PluginID: principal.PluginID, TokenID: principal.TokenID},
		&validatingStream{BidiStream: stream, v: p.validator, body: callInfoFrom(ctx).body})
}

// validatingStream checks each frame a plugin sends against the proto's rules. A bad frame
// that carries a request id comes back as a pluginhost.InvalidFrame, so that the session
// answers that request with VALIDATION_ERROR and carries on; any other bad frame ends it.
type validatingStream struct {
	*connect.BidiStream[pluginhostv1.ConnectRequest, pluginhostv1.ConnectResponse]
	v protovalidate.Validator
	// body is the HTTP request body of the stream (nil if unknown); End closes it.
	body    io.Closer
	endOnce sync.Once
}

// End makes the stream's pending and later Receive calls fail, so that the session ends and
// the handler returns with the session's reason (the plugin reads it in the trailers). It is
// a pluginhost.StreamEnder. A Send blocked because the plugin stopped reading is not
// released: connect-go offers no way to, on net/http's HTTP/2 server.
func (s *validatingStream) End(error) {
	if s.body != nil {
		s.endOnce.Do(func() { _ = s.body.Close() })
	}
}

func (s *validatingStream) Receive() (*pluginhostv1.ConnectRequest, error) {
	req, err := s.BidiStream.Receive()
	if err != nil {
		return nil, err
	}
	if err := validateFrame(s.v, req); err != nil {
		return nil, err
	}
	return req, nil
}

// requestIDOf returns the request id of a plugin's request frame, or "".
func requestIDOf(req *pluginhostv1.ConnectRequest) string {
	switch f := req.GetFrame().(type) {
	case *pluginhostv1.ConnectRequest_Send:
		return f.Send.GetRequestId()
	case *pluginhostv1.ConnectRequest_Emit:
		return f.Emit.GetRequestId()
	case *pluginhostv1.ConnectRequest_Broadcast:
		return f.Broadcast.GetRequestId()
	case *pluginhostv1.ConnectRequest_Subscribe:
		return f.Subscribe.GetRequestId()
	case *pluginhostv1.ConnectRequest_Kv:
		return f.Kv.GetRequestId()
	case *pluginhostv1.ConnectRequest_Discover:
		return f.Discover.GetRequestId()
	}
	return ""
}
