package server

import (
	"net/http"
	"strings"

	"buf.build/go/protovalidate"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// logsStreamPattern serves a plugin's live log tail as Server-Sent Events, for browsers and
// curl, which cannot read TailPluginLogs' Connect or gRPC stream:
// `GET /api/v1/plugins/{plugin_id}/logs/stream?level=WARNING&search=timeout&backlog=50`.
const logsStreamPattern = "GET " + restPrefix + "plugins/{plugin_id}/logs/stream"

// isLogsStreamPath reports whether path is a plugin's log stream (under /api/v1/).
func isLogsStreamPath(path string) bool {
	rest, ok := strings.CutPrefix(path, restPrefix+"plugins/")
	if !ok {
		return false
	}
	id, tail, ok := strings.Cut(rest, "/")
	return ok && id != "" && tail == "logs/stream"
}

// logsStream is the SSE log tail. It takes TailPluginLogs' parameters (level, search,
// backlog) from the query and is authorised like it. Every entry is one `event: log` with
// the entry as JSON (the GetPluginLogs shape) in `data:`; an idle tail sends a comment
// every sseKeepalive. It ends when the client goes away.
func (s *Server) logsStream(w http.ResponseWriter, r *http.Request) {
	ci := callInfoFrom(r.Context())
	fail := func(err error) {
		de := toDomain(err)
		ci.setError(de)
		writeEnvelopeError(w, ci.requestID, de)
	}
	a := &authInterceptor{ids: s.ids}
	p, rule, err := a.authenticate(r.Context(), pluginv1connect.PluginServiceTailPluginLogsProcedure, r.Header)
	if err != nil {
		fail(err)
		return
	}
	req := &pluginv1.TailPluginLogsRequest{PluginId: r.PathValue("plugin_id")}
	if de := decodeQuery(req, r.URL.Query(), "plugin_id"); de != nil {
		fail(de)
		return
	}
	if err := protovalidate.Validate(req); err != nil {
		fail(err)
		return
	}
	if err := checkOwn(p, rule, req); err != nil {
		fail(err)
		return
	}
	if _, ok := w.(http.Flusher); !ok {
		fail(errs.New(errs.Internal, "streaming is not supported on this connection"))
		return
	}
	records, err := s.host.TailLogs(r.Context(), pluginhost.TailQuery{PluginID: req.GetPluginId(), MinLevel: req.GetLevel(),
		Search: req.GetSearch(), Backlog: int(req.GetBacklog())})
	if err != nil {
		fail(err)
		return
	}
	sse := startSSE(w, "nexus log tail of "+req.GetPluginId())
	pumpSSE(r.Context(), sse, records, func(rec store.LogRecord) error {
		e, err := logEntry(rec)
		if err != nil {
			return nil
		}
		return sse.send("", "log", e)
	})
}
