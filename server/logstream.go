package server

import (
	"net/http"
	"strings"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	"github.com/nexus-platform/nexus/pluginhost"
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
	req := &pluginv1.TailPluginLogsRequest{PluginId: r.PathValue("plugin_id")}
	if !s.openSSE(w, r, pluginv1connect.PluginServiceTailPluginLogsProcedure, req, "plugin_id") {
		return
	}
	records, err := s.host.TailLogs(r.Context(), pluginhost.TailQuery{PluginID: req.GetPluginId(), MinLevel: req.GetLevel(),
		Search: req.GetSearch(), Backlog: int(req.GetBacklog())})
	if err != nil {
		writeCallError(w, r, err)
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
