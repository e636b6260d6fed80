package server

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"time"

	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/encoding/protojson"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/errs"
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
	flusher, ok := w.(http.Flusher)
	if !ok {
		fail(errs.New(errs.Internal, "streaming is not supported on this connection"))
		return
	}
	records, err := s.host.TailLogs(r.Context(), pluginhost.TailQuery{PluginID: req.GetPluginId(), MinLevel: req.GetLevel(),
		Search: req.GetSearch(), Backlog: int(req.GetBacklog())})
	if err != nil {
		fail(err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprintf(w, ": nexus log tail of %s\n\n", req.GetPluginId())
	flusher.Flush()
	marshal := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	keepalive := time.NewTicker(sseKeepalive)
	defer keepalive.Stop()
	for {
		select {
		case rec, open := <-records:
			if !open {
				return // the request ended
			}
			e, err := logEntry(rec)
			if err != nil {
				continue
			}
			b, err := marshal.Marshal(e)
			if err != nil {
				continue
			}
			if _, err := fmt.Fprintf(w, "event: log\ndata: %s\n\n", bytes.TrimSpace(bytes.ReplaceAll(b, []byte("\n"), nil))); err != nil {
				return
			}
			flusher.Flush()
		case <-keepalive.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			flusher.Flush()
		case <-r.Context().Done():
			return
		}
	}
}
