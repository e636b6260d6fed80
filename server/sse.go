package server

import (
	"bytes"
	"fmt"
	"net/http"
	"regexp"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// eventsStreamPath serves the event feed as Server-Sent Events, for browsers and curl, which
// cannot read a Connect or gRPC stream: `GET /api/v1/events/stream?patterns=user.*`.
const eventsStreamPath = restPrefix + "events/stream"

// sseKeepalive is how often an idle feed sends a comment, so that proxies keep it open.
const sseKeepalive = 15 * time.Second

var eventPattern = regexp.MustCompile(`^[A-Za-z0-9_*.:-]{1,128}$`)

// eventsStream is the SSE feed. It is authorised like WatchEvents; every event is one
// `event: <type>` with `id: <event id>` and the event as JSON (the WatchEvents shape) in
// `data:`. When the feed falls too far behind, it sends an `error` event and ends.
func (s *Server) eventsStream(w http.ResponseWriter, r *http.Request) {
	ci := callInfoFrom(r.Context())
	a := &authInterceptor{ids: s.ids}
	if _, _, err := a.authenticate(r.Context(), pluginv1connect.MessagingServiceWatchEventsProcedure, r.Header); err != nil {
		de := toDomain(err)
		ci.setError(de)
		writeEnvelopeError(w, ci.requestID, de)
		return
	}
	patterns := r.URL.Query()["patterns"]
	var bad []errs.FieldViolation
	if len(patterns) > 64 {
		bad = append(bad, errs.FieldViolation{Field: "patterns", Description: "at most 64 patterns"})
	}
	for i, p := range patterns {
		if !eventPattern.MatchString(p) {
			bad = append(bad, errs.FieldViolation{Field: fmt.Sprintf("patterns[%d]", i), Description: "must be an event type pattern such as user.* (letters, digits, _ * . : -)"})
		}
	}
	if len(bad) > 0 {
		de := errs.WithFields(errs.ValidationError, "invalid event patterns", bad)
		ci.setError(de)
		writeEnvelopeError(w, ci.requestID, de)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		de := errs.New(errs.Internal, "streaming is not supported on this connection")
		writeEnvelopeError(w, ci.requestID, de)
		return
	}
	events, lagged := s.host.Router().WatchEvents(r.Context(), patterns)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(w, ": nexus event feed\n\n")
	flusher.Flush()
	marshal := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	keepalive := time.NewTicker(sseKeepalive)
	defer keepalive.Stop()
	for {
		select {
		case e, open := <-events:
			if !open {
				if err := lagged(); err != nil {
					_, _ = fmt.Fprintf(w, "event: error\ndata: {\"code\":%q,\"message\":%q}\n\n", errs.PluginUnavailable, toDomain(err).Message)
					flusher.Flush()
				}
				return
			}
			ev, err := eventToProto(e)
			if err != nil {
				continue
			}
			b, err := marshal.Marshal(ev)
			if err != nil {
				continue
			}
			if _, err := fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", e.ID, e.Type, bytes.TrimSpace(bytes.ReplaceAll(b, []byte("\n"), nil))); err != nil {
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
