package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// TestRESTErrorFromBody pins how the answers the transcoder writes itself are classified:
// by status and by what the edge saw, never by their message.
func TestRESTErrorFromBody(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name              string
		status            int
		body              string
		refused, tooLarge bool
		code              errs.Code
		message           string
	}{
		{"no such path", 404, "Not Found\n", true, false, codeRouteNotFound, "no such API path"},
		{"no such method", 405, "Method Not Allowed\n", true, false, codeMethodNotAllowed, "method not allowed on this path"},
		{"body over its limit", 429, `{"code":8,"message":"read first 0 bytes of message: exceeded 4194304 byte http.MaxBytesReader limit"}`, true, true, codeRequestTooLarge, "the request body is too large"},
		{"body over its limit, reported as a fault", 500, `{"code":13,"message":"http: request body too large"}`, true, true, codeRequestTooLarge, "the request body is too large"},
		{"413", 413, "", true, false, codeRequestTooLarge, "the request body is too large"},
		{"undecodable body", 500, `{"code":2,"message":"proto: unexpected EOF"}`, true, false, errs.ValidationError, "invalid request: unexpected EOF"},
		{"undecodable body, protobuf-go's other space", 500, "{\"code\":2,\"message\":\"proto:\u00a0unexpected EOF\"}", true, false, errs.ValidationError, "invalid request: unexpected EOF"},
		{"unknown query parameter", 500, `{"code":13,"message":"unknown field in field path \"bogus\""}`, true, false, errs.ValidationError, `invalid request: unknown field in field path "bogus"`},
		{"wrong parameter type", 400, `{"code":3,"message":"invalid parameter \"per_page\""}`, true, false, errs.ValidationError, `invalid parameter "per_page"`},
		{"bad request without a message", 400, "", true, false, errs.ValidationError, "the request is malformed"},
		{"not JSON", 415, "sub-format not supported\n", true, false, errs.ValidationError, "the request body must be JSON (Content-Type: application/json)"},
		// After a handler ran, a failure without a domain error is the host's, whatever
		// its message says (the message text once made this a VALIDATION_ERROR).
		{"failure after the handler, mentioning a parameter", 500, `{"code":2,"message":"bad parameter in the response"}`, false, false, errs.Internal, "internal error"},
		{"bad gateway after the handler", 502, `{"code":2,"message":"unknown field"}`, false, false, errs.Internal, "internal error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			de := restErrorFromBody(c.status, []byte(c.body), c.refused, c.tooLarge)
			if de.Code != c.code || de.Message != c.message {
				t.Fatalf("got %s %q, want %s %q", de.Code, de.Message, c.code, c.message)
			}
		})
	}
}

// TestLimitedBodyRecordsOversize checks that a body read past its http.MaxBytesReader limit
// is recorded by type, and that a body within it is not.
func TestLimitedBodyRecordsOversize(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		body string
		want bool
	}{{"short", false}, {strings.Repeat("x", 100), true}} {
		ci := &callInfo{}
		b := &limitedBody{ReadCloser: http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(strings.NewReader(c.body)), 10), ci: ci}
		_, err := io.ReadAll(b)
		var tooLarge *http.MaxBytesError
		if c.want != errors.As(err, &tooLarge) {
			t.Fatalf("reading %d bytes: %v", len(c.body), err)
		}
		if got := ci.refusedForSize(); got != c.want {
			t.Errorf("reading %d bytes of at most 10: refusedForSize = %v, want %v", len(c.body), got, c.want)
		}
	}
}

// TestRESTEnvelopeSuccess checks the success envelope: the transcoder's JSON is copied as
// it is (its spacing kept shows it was not re-encoded), with the timestamp, the request id
// and a Content-Length; an answer not labelled JSON goes through encoding/json, which
// refuses one that is not JSON.
func TestRESTEnvelopeSuccess(t *testing.T) {
	t.Parallel()
	serve := func(contentType, body string) *httptest.ResponseRecorder {
		h := withRESTEnvelope(1<<20, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", contentType)
			_, _ = io.WriteString(w, body)
		}))
		req := httptest.NewRequest(http.MethodGet, "/api/v1/plugins", nil)
		req = req.WithContext(withCallInfo(req.Context(), &callInfo{requestID: "req_0123"}))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	rec := serve("application/json; charset=utf-8", ` {"plugins": [{"id":"a<b>"}], "n": 1}`+"\n")
	body := rec.Body.String()
	var env struct {
		Success   bool           `json:"success"`
		Data      map[string]any `json:"data"`
		Timestamp string         `json:"timestamp"`
		RequestID string         `json:"request_id"`
	}
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if rec.Code != http.StatusOK || !strings.HasPrefix(body, `{"success":true,"data":{"plugins": [{"id":"a<b>"}], "n": 1},"timestamp":"`) ||
		!strings.HasSuffix(body, `"request_id":"req_0123"}`+"\n") || rec.Header().Get("Content-Length") != strconv.Itoa(len(body)) ||
		rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("%d %v %q", rec.Code, rec.Header(), body)
	}
	if _, err := time.Parse(time.RFC3339Nano, env.Timestamp); err != nil || !env.Success || env.RequestID != "req_0123" || env.Data["n"] != 1.0 {
		t.Errorf("envelope %+v (%v)", env, err)
	}

	// Not labelled JSON: re-encoded (compacted), and refused when it is not JSON.
	if rec := serve("text/plain", `{"a": 1}`); rec.Code != http.StatusOK || !strings.HasPrefix(rec.Body.String(), `{"success":true,"data":{"a":1},`) {
		t.Errorf("an answer not labelled JSON: %d %q", rec.Code, rec.Body.String())
	}
	if rec := serve("text/plain", `not json`); rec.Code != http.StatusInternalServerError {
		t.Errorf("an answer that is not JSON: %d %q", rec.Code, rec.Body.String())
	}
}
