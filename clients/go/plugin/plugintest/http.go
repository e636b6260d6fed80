package plugintest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// The flow control of HTTP bodies, as the real host applies it (pluginhost.proto).
const (
	httpWindowBytes = 256 << 10
	httpChunkBytes  = 64 << 10
)

// httpCalls routes the plugin's frames of HTTP calls to the calls waiting for them.
type httpCalls struct {
	mu    sync.Mutex
	calls map[string]chan *pluginhostv1.ConnectRequest
}

func (c *httpCalls) open(id string) chan *pluginhostv1.ConnectRequest {
	ch := make(chan *pluginhostv1.ConnectRequest, 64)
	c.mu.Lock()
	if c.calls == nil {
		c.calls = map[string]chan *pluginhostv1.ConnectRequest{}
	}
	c.calls[id] = ch
	c.mu.Unlock()
	return ch
}

func (c *httpCalls) close(id string) {
	c.mu.Lock()
	delete(c.calls, id)
	c.mu.Unlock()
}

// route hands a frame to its call; it waits while the call's reader is behind.
func (c *httpCalls) route(id string, f *pluginhostv1.ConnectRequest, done <-chan struct{}) {
	c.mu.Lock()
	ch := c.calls[id]
	c.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- f:
	case <-done:
	}
}

// HTTP returns a handler that carries each request to the plugin's HTTP handler
// (plugin.Plugin.HTTP) the way the real host carries calls to its endpoints: over the
// plugin's stream, as caller, with the body in chunks within the plugin's window and the
// answer streamed back. Use it with httptest.NewRecorder or httptest.NewServer. The request's
// context bounds the call (the plugin's handler is cancelled when it ends); the pattern the
// plugin's own router matches is reported as the request path.
func (h *Host) HTTP(caller plugin.Caller) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := h.current()
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id := h.newID("http")
		frames := h.http.open(id)
		defer h.http.close(id)
		first := body[:min(len(body), httpChunkBytes)]
		headers := make([]*pluginhostv1.HttpHeader, 0, len(r.Header))
		for k, v := range r.Header {
			if k != "Authorization" {
				headers = append(headers, &pluginhostv1.HttpHeader{Name: k, Values: v})
			}
		}
		req := &pluginhostv1.HttpRequest{RequestId: id, Method: r.Method, Path: r.URL.EscapedPath(), Pattern: r.Method + " " + r.URL.Path,
			Query: r.URL.RawQuery, Headers: headers, Body: first, BodyDone: len(first) == len(body), Host: r.Host, RemoteAddr: r.RemoteAddr,
			Caller: &pluginhostv1.HttpCaller{Authenticated: caller.Authenticated, TokenId: caller.TokenID, Name: caller.Name, Role: caller.Role, PluginId: caller.PluginID}}
		if err := s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HttpRequest{HttpRequest: req}}); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		sent, credit := len(first), int64(httpWindowBytes-len(first))
		sendBody := func() error {
			for sent < len(body) && credit > 0 {
				end := min(sent+httpChunkBytes, len(body), sent+int(credit))
				f := &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HttpRequestBody{HttpRequestBody: &pluginhostv1.HttpBody{
					RequestId: id, Chunk: body[sent:end], Done: end == len(body)}}}
				if err := s.send(f); err != nil {
					return err
				}
				credit -= int64(end - sent)
				sent = end
			}
			return nil
		}
		if err := sendBody(); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		wrote := false
		for {
			var f *pluginhostv1.ConnectRequest
			select {
			case f = <-frames:
			case <-s.done:
				if !wrote {
					http.Error(w, fmt.Sprintf("plugin %s disconnected", h.opts.PluginID), http.StatusBadGateway)
				}
				return
			case <-r.Context().Done():
				_ = s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HttpCancel{HttpCancel: &pluginhostv1.HttpCancel{
					RequestId: id, Reason: "the caller went away"}}})
				return
			}
			var chunk []byte
			done := false
			switch fr := f.GetFrame().(type) {
			case *pluginhostv1.ConnectRequest_HttpWindow:
				credit += fr.HttpWindow.GetBytes()
				if err := sendBody(); err != nil {
					return
				}
				continue
			case *pluginhostv1.ConnectRequest_HttpResponse:
				for _, hh := range fr.HttpResponse.GetHeaders() {
					for _, v := range hh.GetValues() {
						w.Header().Add(hh.GetName(), v)
					}
				}
				w.WriteHeader(int(fr.HttpResponse.GetStatus()))
				wrote = true
				chunk, done = fr.HttpResponse.GetBody(), fr.HttpResponse.GetDone()
			case *pluginhostv1.ConnectRequest_HttpResponseBody:
				chunk, done = fr.HttpResponseBody.GetChunk(), fr.HttpResponseBody.GetDone()
			}
			_, _ = io.Copy(w, bytes.NewReader(chunk))
			if fl, ok := w.(http.Flusher); ok {
				fl.Flush()
			}
			if done {
				return
			}
			if len(chunk) > 0 {
				_ = s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HttpResponseWindow{HttpResponseWindow: &pluginhostv1.HttpWindow{
					RequestId: id, Bytes: int64(len(chunk))}}})
			}
		}
	})
}
