package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// eventsStreamPath serves the event feed as Server-Sent Events, for browsers and curl, which
// cannot read a Connect or gRPC stream: `GET /api/v1/events/stream?patterns=user.*`.
const eventsStreamPath = restPrefix + "events/stream"

// sseKeepalive is how often an idle feed sends a comment, so that proxies keep it open.
const sseKeepalive = 15 * time.Second

// eventsStream is the SSE feed. It takes WatchEvents' parameters from the query
// (`patterns`, repeated or comma-separated) and is authorised like it; every event is one
// `event: <type>` with `id: <event id>` and the event as JSON (the WatchEvents shape) in
// `data:`. When the feed falls too far behind, it sends an `error` event and ends.
func (s *Server) eventsStream(w http.ResponseWriter, r *http.Request) {
	req := &pluginv1.WatchEventsRequest{}
	if !s.openSSE(w, r, pluginv1connect.MessagingServiceWatchEventsProcedure, req) {
		return
	}
	patterns := req.GetPatterns()
	events, lagged := s.host.Router().WatchEvents(r.Context(), patterns)
	sse := startSSE(w, "nexus event feed")
	closed := pumpSSE(r.Context(), sse, events, func(e pluginhost.Event) error {
		ev, err := eventToProto(e)
		if err != nil {
			return nil
		}
		return sse.send(e.ID, e.Type, ev)
	})
	if closed {
		if err := lagged(); err != nil {
			sse.raw(fmt.Sprintf("event: error\ndata: {\"code\":%q,\"message\":%q}\n\n", errs.PluginUnavailable, toDomain(err).Message))
		}
	}
}

// openSSE prepares a Server-Sent Events call of the RPC procedure, whose request req is
// read from the query (fields in bound come from the path and are set already): it
// authenticates and authorises the caller as for the RPC, reads and validates the request,
// and checks the response can be streamed. It answers the API's error and reports false
// when the call cannot go on.
func (s *Server) openSSE(w http.ResponseWriter, r *http.Request, procedure string, req proto.Message, bound ...protoreflect.Name) bool {
	fail := func(err error) bool {
		writeCallError(w, r, err)
		return false
	}
	a := &authInterceptor{ids: s.ids}
	p, rule, err := a.authenticate(r.Context(), procedure, r.Header)
	if err != nil {
		return fail(err)
	}
	if de := decodeQuery(req, r.URL.Query(), bound...); de != nil {
		return fail(de)
	}
	if err := protovalidate.Validate(req); err != nil {
		return fail(err)
	}
	if err := checkOwn(p, rule, req); err != nil {
		return fail(err)
	}
	if _, ok := w.(http.Flusher); !ok {
		return fail(errs.New(errs.Internal, "streaming is not supported on this connection"))
	}
	return true
}

// writeCallError answers a call that is not a transcoded RPC with the API's error in the
// REST envelope, and records it for the request log.
func writeCallError(w http.ResponseWriter, r *http.Request, err error) {
	ci := callInfoFrom(r.Context())
	de := toDomain(err)
	ci.setError(de)
	writeEnvelopeError(w, ci.requestID, de)
}

// sseStream writes Server-Sent Events to a response whose writer flushes.
type sseStream struct {
	w       http.ResponseWriter
	flusher http.Flusher
	marshal protojson.MarshalOptions
}

// startSSE answers 200 with the event-stream headers and a first comment, flushed at once:
// the client learns that the stream is open before the first event, which may be long in
// coming. w must be an http.Flusher.
func startSSE(w http.ResponseWriter, comment string) *sseStream {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s := &sseStream{w: w, flusher: w.(http.Flusher), marshal: protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}}
	s.raw(": " + comment + "\n\n")
	return s
}

// send writes one event (an id line when id is set) with m as JSON on one data line. A
// message that cannot be encoded is skipped; the error is the connection's.
func (s *sseStream) send(id, event string, m proto.Message) error {
	b, err := s.marshal.Marshal(m)
	if err != nil {
		return nil
	}
	var frame bytes.Buffer
	if id != "" {
		fmt.Fprintf(&frame, "id: %s\n", id)
	}
	fmt.Fprintf(&frame, "event: %s\ndata: %s\n\n", event, bytes.TrimSpace(bytes.ReplaceAll(b, []byte("\n"), nil)))
	return s.raw(frame.String())
}

// raw writes text as it is and flushes it.
func (s *sseStream) raw(text string) error {
	if _, err := io.WriteString(s.w, text); err != nil {
		return err
	}
	s.flusher.Flush()
	return nil
}

// pumpSSE sends what ch carries with each, and a keepalive comment every sseKeepalive, until
// ch is closed (it reports true), ctx ends or a write fails.
func pumpSSE[T any](ctx context.Context, s *sseStream, ch <-chan T, each func(T) error) bool {
	keepalive := time.NewTicker(sseKeepalive)
	defer keepalive.Stop()
	for {
		select {
		case v, open := <-ch:
			if !open {
				return true
			}
			if each(v) != nil {
				return false
			}
		case <-keepalive.C:
			if s.raw(": keepalive\n\n") != nil {
				return false
			}
		case <-ctx.Done():
			return false
		}
	}
}

// watchPaths are the long-lived reads: the event feeds and log tails, over Connect, gRPC,
// gRPC-Web and Server-Sent Events.
var watchPaths = []string{
	pluginv1connect.MessagingServiceWatchEventsProcedure,
	pluginv1connect.PluginServiceTailPluginLogsProcedure,
	eventsStreamPath,
}

func isWatch(path string) bool {
	if p, ok := strings.CutPrefix(path, restAliasPrefix); ok {
		path = restPrefix + p
	}
	if slices.Contains(watchPaths, path) {
		return true
	}
	// The log tail's Server-Sent Events: /api/v1/plugins/{plugin_id}/logs/stream.
	rest, ok := strings.CutPrefix(path, restPrefix+"plugins/")
	id, tail, _ := strings.Cut(rest, "/")
	return ok && id != "" && tail == "logs/stream"
}

// withWatchesEnded ends the watches when ended is done: a server shutting down waits for
// its calls to finish, and a feed never finishes by itself. Other calls are left to finish.
func withWatchesEnded(ended context.Context, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isWatch(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		defer context.AfterFunc(ended, cancel)()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}
