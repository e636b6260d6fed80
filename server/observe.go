package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// auditor records state-changing calls.
type auditor interface {
	Audit(ctx context.Context, e store.AuditEntry) error
}

// rpcMetrics are the request metrics of the API.
type rpcMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newRPCMetrics(reg prometheus.Registerer) *rpcMetrics {
	m := &rpcMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nexus_rpc_requests_total",
			Help: "API calls by procedure and outcome code (OK or the API error code).",
		}, []string{"procedure", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nexus_rpc_request_duration_seconds",
			Help:    "API call latency by procedure and outcome code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"procedure", "code"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// observeInterceptor is the outermost interceptor: it turns every error into a domain error
// with an API code (recorded for the REST envelope and sent as a Connect error with
// ErrorInfo), counts and times calls, writes the audit log and logs host faults.
type observeInterceptor struct {
	log     *slog.Logger
	metrics *rpcMetrics
	audit   auditor
}

func (o *observeInterceptor) finish(ctx context.Context, procedure string, req any, start time.Time, err error) error {
	code := "OK"
	var de *errs.Error
	if err != nil {
		de = toDomain(err)
		code = string(de.Code)
		callInfoFrom(ctx).setError(de)
		if de.Code == errs.Internal {
			o.log.ErrorContext(ctx, "internal error", "procedure", procedure, "error", err)
		} else {
			o.log.DebugContext(ctx, "call failed", "procedure", procedure, "code", code, "error", err)
		}
	}
	o.metrics.requests.WithLabelValues(procedure, code).Inc()
	o.metrics.duration.WithLabelValues(procedure, code).Observe(time.Since(start).Seconds())
	if r, ok := accessRules[procedure]; ok && r.mutating && o.audit != nil {
		if _, authenticated := principalFrom(ctx); authenticated {
			o.writeAudit(ctx, procedure, req, code)
		} else {
			// Calls without a valid token are counted and logged, not written to the audit
			// log: they changed nothing, and a flood of them must not fill the store.
			o.log.WarnContext(ctx, "unauthenticated call to a state-changing operation", "procedure", procedure)
		}
	}
	if de != nil {
		return toConnect(de)
	}
	return nil
}

func (o *observeInterceptor) writeAudit(ctx context.Context, procedure string, req any, outcome string) {
	entry := store.AuditEntry{
		Time:      time.Now().UTC(),
		Action:    procedure,
		Outcome:   outcome,
		RequestID: requestIDFrom(ctx),
		Target:    auditTarget(req),
	}
	if entry.Target == "" {
		entry.Target = callInfoFrom(ctx).getTarget()
	}
	if p, ok := principalFrom(ctx); ok {
		entry.Actor, entry.ActorName, entry.Role = p.TokenID, p.Name, p.Role
	}
	if details := auditDetails(req); details != nil {
		entry.Details = details
	}
	// The audit write must not be cut short by the caller going away.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := o.audit.Audit(actx, entry); err != nil {
		o.log.ErrorContext(ctx, "audit log write failed", "procedure", procedure, "error", err)
	}
}

// auditTarget is the plugin a request acts on, when it names one.
func auditTarget(req any) string {
	m, ok := req.(proto.Message)
	if !ok || m == nil {
		return ""
	}
	fields := m.ProtoReflect().Descriptor().Fields()
	for _, name := range []string{"plugin_id", "plugin_name", "target_plugin"} {
		if fd := fields.ByName(protoreflect.Name(name)); fd != nil {
			if v := m.ProtoReflect().Get(fd).String(); v != "" {
				return v
			}
		}
	}
	return ""
}

// auditDetails keeps the harmless scalar fields of a request (never config values, package
// bytes or payloads, which may carry secrets).
func auditDetails(req any) []byte {
	m, ok := req.(proto.Message)
	if !ok || m == nil {
		return nil
	}
	out := map[string]any{}
	fields := m.ProtoReflect().Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		switch fd.Name() {
		case "source", "version", "force", "force_reinstall", "auto_enable", "backup", "cleanup_data",
			"reason", "graceful_shutdown", "timeout_seconds", "backup_id", "file_path", "download_url",
			"message_type", "security_level", "grant", "revoke", "restart_plugin", "backup_current", "update_config":
			if !m.ProtoReflect().Has(fd) {
				continue
			}
			v := m.ProtoReflect().Get(fd)
			if fd.IsList() {
				list := make([]string, v.List().Len())
				for j := range list {
					list[j] = v.List().Get(j).String()
				}
				out[string(fd.Name())] = list
			} else {
				out[string(fd.Name())] = v.Interface()
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil
	}
	return b
}

func (o *observeInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		ci := callInfoFrom(ctx)
		if ci.wireRefused() {
			// The transcoder could not decode the request and has answered already; the
			// handler must not run on the empty message it passes on.
			return nil, errs.New(errs.ValidationError, "the request is malformed")
		}
		ci.markHandlerRan()
		resp, err := next(ctx, req)
		if ferr := o.finish(ctx, req.Spec().Procedure, req.Any(), start, err); ferr != nil {
			return nil, ferr
		}
		return resp, nil
	}
}

func (o *observeInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (o *observeInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		return o.finish(ctx, conn.Spec().Procedure, nil, start, err)
	}
}
