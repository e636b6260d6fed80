package plugin_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

const window = 256 << 10 // HTTP_WINDOW_BYTES of pluginhost.proto

// httpAnswer is what the fake host read of one call's answer.
type httpAnswer struct {
	status  int32
	headers map[string][]string
	body    []byte
}

// readAnswer reads the answer to request id, granting more window as the body arrives (or
// not, when grant is false) and checking that the plugin never sends beyond its window.
func readAnswer(s *grpcHostStream, id string, grant bool, onWindow func(int64)) (httpAnswer, error) {
	var a httpAnswer
	credit := int64(window)
	take := func(n int) error {
		credit -= int64(n)
		if credit < 0 {
			return fmt.Errorf("the plugin sent %d bytes beyond its window", -credit)
		}
		if grant && n > 0 {
			credit += int64(n)
			s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HttpResponseWindow{
				HttpResponseWindow: &pluginhostv1.HttpWindow{RequestId: id, Bytes: int64(n)}}})
		}
		return nil
	}
	for {
		f, err := s.receive()
		if err != nil {
			return a, err
		}
		switch fr := f.GetFrame().(type) {
		case *pluginhostv1.ConnectRequest_HttpResponse:
			r := fr.HttpResponse
			a.status, a.headers = r.GetStatus(), map[string][]string{}
			for _, h := range r.GetHeaders() {
				a.headers[h.GetName()] = h.GetValues()
			}
			a.body = append(a.body, r.GetBody()...)
			if err := take(len(r.GetBody())); err != nil || r.GetDone() {
				return a, err
			}
		case *pluginhostv1.ConnectRequest_HttpResponseBody:
			b := fr.HttpResponseBody
			a.body = append(a.body, b.GetChunk()...)
			if err := take(len(b.GetChunk())); err != nil || b.GetDone() {
				return a, err
			}
		case *pluginhostv1.ConnectRequest_HttpWindow:
			if onWindow != nil {
				onWindow(fr.HttpWindow.GetBytes())
			}
		}
	}
}

func httpRequest(id, method, path string, body []byte, done bool) *pluginhostv1.ConnectResponse {
	return &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HttpRequest{HttpRequest: &pluginhostv1.HttpRequest{
		RequestId: id, Method: method, Path: path, Pattern: method + " /api/v1/things/{id}",
		PathParams: map[string]string{"id": "42"}, Query: "q=a+b",
		Headers: []*pluginhostv1.HttpHeader{{Name: "X-Test", Values: []string{"one", "two"}}},
		Caller:  &pluginhostv1.HttpCaller{Authenticated: true, TokenId: "tok_1", Name: "ci", Role: "user"},
		Body:    body, BodyDone: done, Host: "nexus.test", RemoteAddr: "192.0.2.7:5555",
	}}}
}

// The plugin's net/http handler answers calls the host carries over the stream: the
// request as the caller made it (path values, query, headers, caller), the answer streamed
// in chunks within the host's window (or in one frame with its Content-Length when the
// handler returns without flushing), uploads read as they come with windows granted back,
// cancellation reaching the handler, and 501 without a handler.
func TestHTTPHandler(t *testing.T) {
	t.Parallel()
	canceled := make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/things/{id}", func(w http.ResponseWriter, r *http.Request) {
		c, _ := plugin.CallerOf(r.Context())
		if plugin.SessionFromContext(r.Context()) == nil {
			http.Error(w, "no session in the handler's context", http.StatusInternalServerError)
			return
		}
		w.Header().Set("X-Reply", "yes")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "id=%s q=%s h=%v caller=%s/%s/%s host=%s remote=%s pattern=%s\n", r.PathValue("id"), r.URL.Query().Get("q"),
			r.Header.Values("X-Test"), c.Name, c.Role, c.TokenID, r.Host, r.RemoteAddr, r.Pattern)
		w.(http.Flusher).Flush()
		w.Write(bytes.Repeat([]byte("x"), 1<<20)) // a download four windows long
	})
	mux.HandleFunc("POST /api/v1/things/{id}", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
	})
	putStarted := make(chan struct{}, 1)
	mux.HandleFunc("PUT /api/v1/things/{id}", func(w http.ResponseWriter, r *http.Request) {
		putStarted <- struct{}{}
		<-r.Context().Done()
		canceled <- context.Cause(r.Context())
	})

	upload := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16) // 3 MiB: twelve windows
	results := make(chan error, 1)
	h := startGRPCHost(t, func(s *grpcHostStream) error {
		s.welcome()
		results <- func() error {
			// A GET with a streamed answer, granted as it arrives.
			s.send(httpRequest("r1", "GET", "/api/v1/things/42", nil, true))
			a, err := readAnswer(s, "r1", true, nil)
			if err != nil {
				return err
			}
			head, rest, _ := bytes.Cut(a.body, []byte("\n"))
			if want := "id=42 q=a b h=[one two] caller=ci/user/tok_1 host=nexus.test remote=192.0.2.7:5555 pattern=GET /api/v1/things/{id}"; a.status != 202 || string(head) != want ||
				a.headers["X-Reply"][0] != "yes" || len(rest) != 1<<20 || a.headers["Content-Length"] != nil {
				return fmt.Errorf("GET answered %d %v %q (+%d bytes)", a.status, a.headers, head, len(rest))
			}
			// An upload in chunks: the host sends within the window the plugin grants.
			s.send(httpRequest("r2", "POST", "/api/v1/things/42", upload[:64<<10], false))
			sent, credit := 64<<10, int64(window-64<<10)
			answer := make(chan httpAnswer, 1)
			errc := make(chan error, 1)
			granted := make(chan int64, 64)
			go func() {
				a, err := readAnswer(s, "r2", true, func(n int64) { granted <- n })
				answer <- a
				errc <- err
			}()
			for sent < len(upload) {
				for credit < 64<<10 {
					credit += receive(t, granted, "a window grant")
				}
				end := min(sent+64<<10, len(upload))
				s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HttpRequestBody{HttpRequestBody: &pluginhostv1.HttpBody{
					RequestId: "r2", Chunk: upload[sent:end], Done: end == len(upload)}}})
				credit -= int64(end - sent)
				sent = end
			}
			if err := <-errc; err != nil {
				return err
			}
			sum := sha256.Sum256(upload)
			// An answer its handler did not flush comes whole, with its length.
			if a := <-answer; a.status != 200 || string(a.body) != fmt.Sprintf("%d %s", len(upload), hex.EncodeToString(sum[:])) ||
				fmt.Sprint(a.headers["Content-Length"]) != fmt.Sprintf("[%d]", len(a.body)) {
				return fmt.Errorf("upload answered %d %v %q", a.status, a.headers, a.body)
			}
			// A cancel reaches the handler's context (a call cancelled before its handler
			// starts is dropped without running it).
			s.send(httpRequest("r3", "PUT", "/api/v1/things/42", nil, true))
			receive(t, putStarted, "the PUT handler")
			s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HttpCancel{HttpCancel: &pluginhostv1.HttpCancel{RequestId: "r3", Reason: "the caller went away"}}})
			if err := receive(t, canceled, "the handler's cancellation"); err == nil || !strings.Contains(err.Error(), "the caller went away") {
				return fmt.Errorf("the handler's context ended with %v", err)
			}
			return nil
		}()
		return s.drainEOF()
	})
	// An HTTP handler runs with the receive side handed over at once (it waits for its
	// body and windows, which the receive side reads): the inline budget of an hour shows
	// that nothing waits for it.
	run := startPlugin(t, h, plugin.Plugin{HTTP: mux}, plugin.WithInlineBudget(time.Hour))
	if err := receive(t, results, "the host's script"); err != nil {
		t.Fatal(err)
	}
	run.cancel()

	// Without a handler: 501.
	noHandler := make(chan httpAnswer, 1)
	h2 := startGRPCHost(t, func(s *grpcHostStream) error {
		s.welcome()
		s.send(httpRequest("r1", "GET", "/api/v1/things/42", nil, true))
		a, err := readAnswer(s, "r1", true, nil)
		if err != nil {
			t.Error(err)
		}
		noHandler <- a
		return s.drainEOF()
	})
	startPlugin(t, h2, plugin.Plugin{})
	if a := receive(t, noHandler, "the answer without a handler"); a.status != 501 {
		t.Fatalf("without a handler: %d %q", a.status, a.body)
	}
}
