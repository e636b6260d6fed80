package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"connectrpc.com/connect"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/identity"
	"github.com/nexus-platform/nexus/server/console"
)

// callInfo is the per-request state shared by the HTTP middleware and the Connect
// interceptors. It is created by the middleware before any handler runs; the interceptors of
// the same request fill it in. The mutex guards every field but requestID, which is set
// once before the struct is shared.
type callInfo struct {
	requestID string
	// body is the request's body as the server received it; set once, before the call is
	// shared. Closing it fails the handler's pending and later reads (a plugin stream the
	// host ends: see pluginStream.End).
	body io.Closer

	mu        sync.Mutex
	principal *identity.Principal
	authErr   error // why the bearer token was refused, when it was
	authDone  bool  // the middleware has authenticated the request
	err       *errs.Error
	target    string // what a call acted on, when the request does not name it
	// wireStatus is the first HTTP status the transcoder wrote for a REST call, and
	// handlerRan whether the interceptors had started by then: a status written before
	// means the transcoder refused the request itself (malformed body or parameters).
	wireStatus int
	handlerRan bool
	earlyBody  []byte
	// bodyTooLarge is set when reading the body failed with *http.MaxBytesError: the
	// caller sent more than its limit (see limitedBody).
	bodyTooLarge bool
}

// authenticated returns what the middleware found of the caller.
func (c *callInfo) authenticated() (p identity.Principal, err error, done bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.principal != nil {
		p = *c.principal
	}
	return p, c.authErr, c.authDone
}

// wireRefused reports whether the transcoder refused the request before any handler ran.
func (c *callInfo) wireRefused() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wireStatus >= 400 && !c.handlerRan
}

// noteWireStatus records the first status written for the request and reports whether it
// is an error written before any handler ran (the transcoder refused the request).
func (c *callInfo) noteWireStatus(code int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wireStatus == 0 && !c.handlerRan {
		c.wireStatus = code
		return code >= 400
	}
	return false
}

// noteBodyTooLarge records that the caller sent more than the body limit.
func (c *callInfo) noteBodyTooLarge() {
	c.mu.Lock()
	c.bodyTooLarge = true
	c.mu.Unlock()
}

// refusedForSize reports whether the request was refused because its body was too large:
// reading it hit the limit, or the transcoder or connect-go answered, before any handler
// ran, with 413 or with 429, the status of resource_exhausted (vanguard's own buffer
// limits, connect-go's limit on a message).
func (c *callInfo) refusedForSize() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bodyTooLarge || c.wireStatus == http.StatusRequestEntityTooLarge || c.wireStatus == http.StatusTooManyRequests
}

func (c *callInfo) markHandlerRan() {
	c.mu.Lock()
	c.handlerRan = true
	c.mu.Unlock()
}

func (c *callInfo) setTarget(t string) {
	c.mu.Lock()
	c.target = t
	c.mu.Unlock()
}

func (c *callInfo) getTarget() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.target
}

func (c *callInfo) setPrincipal(p identity.Principal) {
	c.mu.Lock()
	c.principal = &p
	c.mu.Unlock()
}

func (c *callInfo) getPrincipal() (identity.Principal, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.principal == nil {
		return identity.Principal{}, false
	}
	return *c.principal, true
}

func (c *callInfo) setError(e *errs.Error) {
	c.mu.Lock()
	c.err = e
	c.mu.Unlock()
}

func (c *callInfo) getError() *errs.Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

type callInfoKey struct{}

func withCallInfo(ctx context.Context, ci *callInfo) context.Context {
	return context.WithValue(ctx, callInfoKey{}, ci)
}

// callInfoFrom returns the request's callInfo; requests that bypassed the middleware (tests
// that mount handlers directly) get a fresh one.
func callInfoFrom(ctx context.Context) *callInfo {
	if ci, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		return ci
	}
	return &callInfo{}
}

// requestIDFrom returns the request id of ctx ("" when none).
func requestIDFrom(ctx context.Context) string {
	return callInfoFrom(ctx).requestID
}

// contextLogHandler adds the request id of the context to every record.
type contextLogHandler struct{ slog.Handler }

func (h contextLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := requestIDFrom(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h contextLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return contextLogHandler{h.Handler.WithAttrs(attrs)}
}

func (h contextLogHandler) WithGroup(name string) slog.Handler {
	return contextLogHandler{h.Handler.WithGroup(name)}
}

// NewLogger returns a JSON logger that adds the request id of the context to each record.
func NewLogger(w interface{ Write([]byte) (int, error) }, level slog.Level) *slog.Logger {
	return slog.New(contextLogHandler{slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})})
}

// newRequestID returns a fresh request id.
func newRequestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails on supported platforms
	return "req_" + hex.EncodeToString(b)
}

// validRequestID accepts client-chosen request ids that are short and printable.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:", r)) {
			return false
		}
	}
	return true
}

// statusRecorder remembers the status of a passthrough response.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Flush lets streaming handlers flush through the recorder.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer (for full duplex).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// withRequestContext assigns the request id, creates the callInfo, logs the request, and
// recovers from panics in handlers.
func withRequestContext(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set("X-Request-Id", id)
		ci := &callInfo{requestID: id, body: r.Body}
		ctx := withCallInfo(r.Context(), ci)
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.ErrorContext(ctx, "handler panic", "panic", p, "path", r.URL.Path)
				if rec.status == 0 {
					if isREST(r.URL.Path) {
						writeEnvelopeError(rec, id, errs.New(errs.Internal, "internal error"))
					} else {
						http.Error(rec, "internal error", http.StatusInternalServerError)
					}
				}
			}
			if _, authErr, _ := ci.authenticated(); authErr != nil && errs.Is(authErr, errs.Internal) {
				// Refused before any interceptor ran (withAuthentication): logged here.
				log.ErrorContext(ctx, "could not authenticate the request", "path", r.URL.Path, "error", authErr)
			}
			log.InfoContext(ctx, "request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
				"duration_ms", float64(time.Since(start).Microseconds())/1000, "protocol", r.Proto)
		}()
		next.ServeHTTP(rec, r.WithContext(ctx))
	})
}

// restPrefixes are the path prefixes of the JSON REST API. `/v1/...` is an alias of
// `/api/v1/...` (the reference document's curl examples use it).
const (
	restPrefix      = "/api/v1/"
	restAliasPrefix = "/v1/"
)

func isREST(path string) bool {
	return strings.HasPrefix(path, restPrefix) || strings.HasPrefix(path, restAliasPrefix)
}

// bufferedWriter holds a REST response until it is wrapped in the envelope.
type bufferedWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
	ci     *callInfo
}

func (b *bufferedWriter) Header() http.Header { return b.header }
func (b *bufferedWriter) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
		b.ci.noteWireStatus(code)
	}
}

// Flush is a no-op: the answer is written whole once it is wrapped.
func (b *bufferedWriter) Flush() {}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// withRESTEnvelope serves the REST API: it maps `/v1/` to `/api/v1/`, refuses oversized bodies,
// reads the query parameters (queryParams; nil leaves them to the transcoder), and wraps
// every answer in the reference envelope `{success, data | error, timestamp, request_id}`
// with the HTTP status of the error table.
func withRESTEnvelope(maxBody int64, query *queryParams, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isREST(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		r = r.Clone(r.Context())
		if p, ok := strings.CutPrefix(r.URL.Path, restAliasPrefix); ok {
			r.URL.Path = restPrefix + p
			r.URL.RawPath = ""
		}
		// The envelope is built from the handler's plain JSON, so the transcoder must not
		// compress it.
		r.Header.Del("Accept-Encoding")
		// REST bodies are JSON. `curl -d` labels them as a form; take them as JSON rather
		// than refusing them (bearer tokens, not cookies, authenticate, so this opens no
		// cross-site form posting).
		if ct := r.Header.Get("Content-Type"); r.ContentLength != 0 && (ct == "" || strings.HasPrefix(ct, "application/x-www-form-urlencoded")) {
			r.Header.Set("Content-Type", "application/json")
		}
		if r.URL.Path == eventsStreamPath || isLogsStreamPath(r.URL.Path) {
			// A stream of Server-Sent Events, not one JSON answer: never buffered.
			next.ServeHTTP(w, r)
			return
		}
		ci := callInfoFrom(r.Context())
		if r.ContentLength > maxBody {
			writeEnvelopeError(w, ci.requestID, errs.New(codeRequestTooLarge, "the request body exceeds %d bytes", maxBody))
			return
		}
		if query != nil {
			if de := query.normalize(r); de != nil {
				ci.setError(de)
				writeEnvelopeError(w, ci.requestID, de)
				return
			}
		}
		// Connect-Protocol-Version marks Connect calls; everything else here is REST, which
		// must not be mistaken for Connect by the transcoder.
		buf := &bufferedWriter{header: http.Header{}, ci: ci}
		next.ServeHTTP(buf, r)
		status := buf.status
		if status == 0 {
			status = http.StatusOK
		}
		if status >= 200 && status < 300 {
			data := bytes.TrimSpace(buf.body.Bytes())
			if len(data) == 0 {
				data = []byte("{}")
			}
			if isJSON(buf.header.Get("Content-Type")) {
				writeSuccess(w, status, data, ci.requestID)
				return
			}
			writeEnvelope(w, status, envelope{Success: true, Data: data, Timestamp: nowRFC3339(), RequestID: ci.requestID})
			return
		}
		de := ci.getError()
		if refused := ci.wireRefused(); de == nil || refused {
			// The transcoder refused the request before a handler ran, or failed after.
			de = restErrorFromBody(status, buf.body.Bytes(), refused, ci.refusedForSize())
		}
		writeEnvelopeError(w, ci.requestID, de)
	})
}

// restErrorFromBody reads an error the transcoder produced itself (unknown route,
// malformed JSON, oversized body; queryParams refuses bad query parameters before it).
// It classifies by the HTTP status and what the edge saw, never by the message, which it
// only passes on to the caller: refused says the transcoder answered before any handler
// ran (then the request was at fault, whatever status the transcoder chose), tooLarge
// that the body was over its limit (callInfo.refusedForSize).
//
// What vanguard v0.4.0 answers before a handler runs, and so what reaches here:
//   - no such path or method: 404 or 405, plain text;
//   - a Content-Type it cannot decode: 415, plain text;
//   - a path parameter of the wrong type: 400 (invalid_argument);
//   - a body it cannot decode: 500 (unknown or internal: vanguard passes the decoder's
//     error on without a code of its own);
//   - a body over a limit: 429 (resource_exhausted), from connect-go when the body's
//     http.MaxBytesReader fails, or from vanguard's buffer limits.
func restErrorFromBody(status int, body []byte, refused, tooLarge bool) *errs.Error {
	var st struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &st)
	msg := st.Message
	switch {
	case status == http.StatusNotFound:
		return errs.New(codeRouteNotFound, "no such API path")
	case status == http.StatusMethodNotAllowed:
		return errs.New(codeMethodNotAllowed, "method not allowed on this path")
	case tooLarge || status == http.StatusRequestEntityTooLarge:
		return errs.New(codeRequestTooLarge, "the request body is too large")
	case refused && status >= 500:
		return errs.New(errs.ValidationError, "invalid request: %s", decoderMessage(msg))
	case status == http.StatusUnsupportedMediaType:
		return errs.New(errs.ValidationError, "the request body must be JSON (Content-Type: application/json)")
	case status == http.StatusBadRequest:
		if msg == "" {
			msg = "the request is malformed"
		}
		return errs.New(errs.ValidationError, "%s", msg)
	}
	if status >= 500 {
		return errs.New(errs.Internal, "internal error")
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return errs.New(errs.ValidationError, "%s", msg)
}

// decoderMessage is the message of a decoding error the transcoder passes on, for the
// caller, without the "proto:" prefix of protobuf-go's errors. protobuf-go follows that
// prefix with a space or a non-breaking space, chosen per binary so that no one matches
// its text; this only tidies what the caller reads and decides nothing.
func decoderMessage(msg string) string {
	if rest, ok := strings.CutPrefix(msg, "proto:"); ok {
		return strings.TrimLeftFunc(rest, unicode.IsSpace)
	}
	return msg
}

func writeEnvelopeError(w http.ResponseWriter, requestID string, de *errs.Error) {
	writeEnvelope(w, wireOf(de.Code).HTTP, envelope{Error: errorBody(de), Timestamp: nowRFC3339(), RequestID: requestID})
}

// envelope is the REST answer: `data` on success, `error` on failure.
type envelope struct {
	Success   bool            `json:"success"`
	Data      json.RawMessage `json:"data,omitempty"`
	Error     *restError      `json:"error,omitempty"`
	Timestamp string          `json:"timestamp"`
	RequestID string          `json:"request_id"`
}

func writeEnvelope(w http.ResponseWriter, status int, body envelope) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep ">=1.0.0" readable
	err := enc.Encode(body)
	out := bytes.TrimRight(buf.Bytes(), "\n")
	if err != nil {
		status = http.StatusInternalServerError
		out = []byte(`{"success":false,"error":{"code":"INTERNAL_ERROR","message":"internal error","details":{}}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	_, _ = w.Write(append(out, '\n'))
}

// writeSuccess writes the success envelope around data, JSON that the transcoder wrote
// with protojson (so valid), copied as it is: re-encoding it through encoding/json
// (json.RawMessage is compacted and checked byte by byte) was a tenth of the CPU of a
// 100-plugin list (nexus-bench's reads). It writes what writeEnvelope writes, but for the
// spacing inside data.
func writeSuccess(w http.ResponseWriter, status int, data []byte, requestID string) {
	id, err := json.Marshal(requestID)
	if err != nil {
		writeEnvelope(w, status, envelope{Success: true, Data: data, Timestamp: nowRFC3339(), RequestID: requestID})
		return
	}
	out := make([]byte, 0, len(data)+len(id)+96)
	out = append(out, `{"success":true,"data":`...)
	out = append(out, data...)
	out = append(out, `,"timestamp":"`...)
	out = time.Now().UTC().AppendFormat(out, time.RFC3339Nano)
	out = append(out, `","request_id":`...)
	out = append(out, id...)
	out = append(out, "}\n"...)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(status)
	_, _ = w.Write(out)
}

// isJSON reports whether contentType is application/json (with parameters or not), what
// the transcoder labels the JSON it writes.
func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

func nowRFC3339() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// bodyLimits bounds request bodies by who calls and what: package uploads by admins get the
// most, everything else a message-sized amount. Callers without a valid token are refused
// before their body is read (withAuthentication); unauthenticated bounds what one could send
// should that ever change. The plugin stream is bounded per message by the handler instead
// (its body is the whole session).
type bodyLimits struct {
	unauthenticated, message, upload int64
}

// pluginStreamPath is the plugin session stream, whose body lasts as long as the session.
const pluginStreamPath = "/nexus.pluginhost.v1.PluginHostService/Connect"

// unauthenticatedBodyBytes bounds what a caller without a valid token may send.
const unauthenticatedBodyBytes = 64 << 10

// uploadPaths are the calls that carry plugin packages.
var uploadPaths = map[string]bool{
	"/nexus.plugin.v1.PluginService/InstallPlugin": true,
	"/nexus.plugin.v1.PluginService/UpdatePlugin":  true,
}

func isUploadPath(method, path string) bool {
	if uploadPaths[path] {
		return true
	}
	p := strings.TrimPrefix(strings.TrimPrefix(path, "/api"), "/v1/plugins/")
	if p == path {
		return false
	}
	return (method == http.MethodPost && p == "install") || (method == http.MethodPut && !strings.Contains(p, "/"))
}

// openPaths need no token: operations endpoints, the API's description, reflection, gRPC
// health, and the web console's files (the console signs in with a token for every call it
// makes; its files hold no data).
func isOpenPath(path string) bool {
	switch path {
	case "/metrics", "/healthz", "/readyz", openAPIPath, "/ui":
		return true
	}
	return strings.HasPrefix(path, "/grpc.reflection.") || strings.HasPrefix(path, "/grpc.health.") ||
		strings.HasPrefix(path, console.Prefix)
}

// withAuthentication checks the bearer token from the request's headers before anything
// reads the body, records the caller for the interceptors, and bounds the body by who calls.
// A caller without a valid token (none, unknown, revoked or expired) is answered here, on
// every transport, and its body is never read: it gets UNAUTHENTICATED whatever it sent, not
// an error about the body it should not have been able to make the server read.
func withAuthentication(ids authenticator, limits bodyLimits, next http.Handler) http.Handler {
	rpcErrors := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isOpenPath(r.URL.Path) || (r.URL.Path == "/" && r.Method == http.MethodGet) {
			// The root only redirects a browser to the console.
			next.ServeHTTP(w, r)
			return
		}
		ci := callInfoFrom(r.Context())
		var principal *identity.Principal
		var authErr error
		if token, ok := identity.BearerToken(r.Header.Get("Authorization")); !ok {
			authErr = errs.New(errs.Unauthenticated, "missing bearer token: send Authorization: Bearer <token>")
		} else if p, err := ids.Authenticate(r.Context(), token); err != nil {
			authErr = err
		} else {
			principal = &p
		}
		ci.mu.Lock()
		ci.principal, ci.authErr, ci.authDone = principal, authErr, true
		ci.mu.Unlock()
		if authErr != nil {
			refuseUnauthenticated(w, r, rpcErrors, ci, authErr)
			return
		}
		if r.URL.Path != pluginStreamPath {
			limit := limits.message
			switch {
			case principal == nil: // refused above; kept so that the bound holds regardless
				limit = limits.unauthenticated
			case principal.IsAdmin() && isUploadPath(r.Method, r.URL.Path):
				limit = limits.upload
			}
			if r.ContentLength > limit {
				limit = 0 // refuse at once: reading it would be wasted work
			}
			r.Body = &limitedBody{ReadCloser: http.MaxBytesReader(w, r.Body, limit), ci: ci}
		}
		next.ServeHTTP(w, r)
	})
}

// refuseUnauthenticated answers a request whose token was refused, in its own protocol: the
// REST envelope on REST paths, a Connect, gRPC or gRPC-Web error (with ErrorInfo) for RPCs,
// the envelope for anything else. The body is left unread; net/http discards what remains of
// it (or closes the connection when that is too much).
func refuseUnauthenticated(w http.ResponseWriter, r *http.Request, rpcErrors *connect.ErrorWriter, ci *callInfo, err error) {
	de := toDomain(err)
	ci.setError(de)
	if de.Code == errs.Unauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="nexus"`)
	}
	if !isREST(r.URL.Path) && rpcErrors.IsSupported(r) {
		_ = rpcErrors.Write(w, r, toConnect(de))
		return
	}
	writeEnvelopeError(w, ci.requestID, de)
}

// limitedBody is a request body bounded by http.MaxBytesReader that records in the
// request's callInfo when the caller sent more than the limit. The transcoder and
// connect-go turn the *http.MaxBytesError into errors of their own; the record lets the
// edge answer REQUEST_TOO_LARGE from the error's type, not from their messages.
type limitedBody struct {
	io.ReadCloser
	ci *callInfo
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var tooLarge *http.MaxBytesError
	if err != nil && errors.As(err, &tooLarge) {
		b.ci.noteBodyTooLarge()
	}
	return n, err
}

// connectGuard stands between the transcoder and a Connect unary call. When the transcoder
// refuses the request before any handler runs (a body it cannot decode), it answers with
// its own error shape and no error code; the guard holds that answer back and writes the
// API's error instead (REQUEST_TOO_LARGE for a body over its limit, VALIDATION_ERROR
// otherwise, with ErrorInfo), in the Connect protocol.
type connectGuard struct {
	http.ResponseWriter
	ci      *callInfo
	held    bool
	heldBuf bytes.Buffer
}

func (g *connectGuard) WriteHeader(code int) {
	if g.held {
		return
	}
	if g.ci.noteWireStatus(code) {
		g.held = true
		return
	}
	g.ResponseWriter.WriteHeader(code)
}

func (g *connectGuard) Write(b []byte) (int, error) {
	if g.held {
		return g.heldBuf.Write(b)
	}
	return g.ResponseWriter.Write(b)
}

// Flush passes flushes through unless the answer is held.
func (g *connectGuard) Flush() {
	if f, ok := g.ResponseWriter.(http.Flusher); ok && !g.held {
		f.Flush()
	}
}

// withConnectErrors applies connectGuard to Connect unary calls.
func withConnectErrors(next http.Handler) http.Handler {
	ew := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Connect-Protocol-Version") != "1" || isREST(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		ci := callInfoFrom(r.Context())
		g := &connectGuard{ResponseWriter: w, ci: ci}
		next.ServeHTTP(g, r)
		if !g.held {
			return
		}
		var st struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(g.heldBuf.Bytes(), &st)
		de := errs.New(errs.ValidationError, "invalid request: %s", decoderMessage(st.Message))
		switch {
		case ci.refusedForSize():
			de = errs.New(codeRequestTooLarge, "the request body is too large")
		case st.Message == "":
			de = errs.New(errs.ValidationError, "the request is malformed")
		}
		ci.setError(de)
		for k := range w.Header() {
			w.Header().Del(k)
		}
		_ = ew.Write(w, r, toConnect(de))
	})
}
