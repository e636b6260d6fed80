package stream_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/stream"
)

const httpWindow = 256 << 10

// nextHTTP reads host frames until one of the HTTP frames comes.
func (p *plug) nextHTTP() *pluginhostv1.ConnectResponse {
	p.t.Helper()
	for {
		f := p.recv()
		switch f.GetFrame().(type) {
		case *pluginhostv1.ConnectResponse_HttpRequest, *pluginhostv1.ConnectResponse_HttpRequestBody,
			*pluginhostv1.ConnectResponse_HttpResponseWindow, *pluginhostv1.ConnectResponse_HttpCancel:
			return f
		}
	}
}

// An HTTP call reaches a connected instance with the request as the caller made it (no
// Authorization, no hop-by-hop header, the caller's identity), the upload flows within the
// window the plugin grants, and the answer streams back to the caller within the window
// the host grants.
func TestHTTPCall(t *testing.T) {
	f := newFixture(t)
	f.install(pluginSpec{id: "web-plugin"})
	p := f.connect("web-plugin", nil)

	upload := bytes.Repeat([]byte("u"), 600<<10) // more than two windows
	rec := httptest.NewRecorder()
	done := make(chan error, 1)
	go func() {
		done <- f.sessions.CallHTTP(context.Background(), "web-plugin", stream.HTTPCall{
			Method: "POST", Path: "/api/v1/things/7", Query: "a=1", Pattern: "POST /api/v1/things/{id}",
			PathParams: map[string]string{"id": "7"},
			Header:     http.Header{"Authorization": {"Bearer secret"}, "Connection": {"close"}, "X-Test": {"yes"}},
			Caller:     stream.HTTPCaller{Authenticated: true, TokenID: "tok_1", Name: "ci", Role: "user"},
			Body:       bytes.NewReader(upload),
		}, rec)
	}()
	req := p.nextHTTP().GetHttpRequest()
	if req == nil || req.GetPathParams()["id"] != "7" || req.GetCaller().GetName() != "ci" || req.GetBodyDone() {
		t.Fatalf("request frame %v", req)
	}
	for _, h := range req.GetHeaders() {
		if h.GetName() == "Authorization" || h.GetName() == "Connection" {
			t.Errorf("the plugin got header %s", h.GetName())
		}
	}
	got := append([]byte(nil), req.GetBody()...)
	// The host stops at the window until the plugin grants more.
	for len(got) < httpWindow {
		got = append(got, p.nextHTTP().GetHttpRequestBody().GetChunk()...)
	}
	if len(got) != httpWindow {
		t.Fatalf("the host sent %d bytes, beyond the window of %d", len(got), httpWindow)
	}
	for {
		p.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HttpWindow{HttpWindow: &pluginhostv1.HttpWindow{RequestId: req.GetRequestId(), Bytes: 64 << 10}}})
		b := p.nextHTTP().GetHttpRequestBody()
		got = append(got, b.GetChunk()...)
		if b.GetDone() {
			break
		}
	}
	if !bytes.Equal(got, upload) {
		t.Fatalf("the plugin got %d bytes of the upload, want %d", len(got), len(upload))
	}
	// The answer, in three parts.
	p.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HttpResponse{HttpResponse: &pluginhostv1.HttpResponse{
		RequestId: req.GetRequestId(), Status: 201, Headers: []*pluginhostv1.HttpHeader{{Name: "X-Reply", Values: []string{"ok"}}, {Name: "Transfer-Encoding", Values: []string{"chunked"}}},
		Body: []byte("one,")}}})
	p.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HttpResponseBody{HttpResponseBody: &pluginhostv1.HttpBody{RequestId: req.GetRequestId(), Chunk: []byte("two,")}}})
	p.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HttpResponseBody{HttpResponseBody: &pluginhostv1.HttpBody{RequestId: req.GetRequestId(), Chunk: []byte("three"), Done: true}}})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rec.Code != 201 || rec.Body.String() != "one,two,three" || rec.Header().Get("X-Reply") != "ok" || rec.Header().Get("Transfer-Encoding") != "" {
		t.Fatalf("answer %d %v %q", rec.Code, rec.Header(), rec.Body.String())
	}
}

// No instance: PLUGIN_UNAVAILABLE. A deadline before the answer: PLUGIN_COMMUNICATION_TIMEOUT,
// and the plugin is told to stop. An instance that goes away mid-call: ErrCallFailed.
func TestHTTPCallFailures(t *testing.T) {
	f := newFixture(t)
	f.install(pluginSpec{id: "web-plugin"})
	call := stream.HTTPCall{Method: "GET", Path: "/x", Pattern: "GET /x"}
	if err := f.sessions.CallHTTP(context.Background(), "web-plugin", call, httptest.NewRecorder()); !errs.Is(err, errs.PluginUnavailable) {
		t.Fatalf("without an instance: %v", err)
	}
	p := f.connect("web-plugin", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.sessions.CallHTTP(ctx, "web-plugin", call, httptest.NewRecorder()) }()
	req := p.nextHTTP().GetHttpRequest()
	if req.GetDeadline() == nil {
		t.Error("the request carries no deadline")
	}
	if err := <-done; !errs.Is(err, errs.PluginCommunicationTimeout) {
		t.Fatalf("past the deadline: %v", err)
	}
	if c := p.nextHTTP().GetHttpCancel(); c.GetRequestId() != req.GetRequestId() {
		t.Fatalf("no cancel for the call: %v", c)
	}

	rec := httptest.NewRecorder()
	go func() { done <- f.sessions.CallHTTP(context.Background(), "web-plugin", call, rec) }()
	req = p.nextHTTP().GetHttpRequest()
	p.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HttpResponse{HttpResponse: &pluginhostv1.HttpResponse{
		RequestId: req.GetRequestId(), Status: 200, Body: []byte("partial")}}})
	p.pipe.End(errors.New("the plugin crashed"))
	if err := <-done; !errors.Is(err, stream.ErrCallFailed) {
		t.Fatalf("instance gone mid-call: %v", err)
	}
	if b, _ := io.ReadAll(rec.Body); rec.Code != 200 || !strings.HasPrefix(string(b), "partial") {
		t.Fatalf("the caller got %d %q", rec.Code, b)
	}
}
