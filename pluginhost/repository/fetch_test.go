package repository_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/repository"
)

func TestFetchLimits(t *testing.T) {
	mux := http.NewServeMux()
	// big streams 4 KiB chunks without Content-Length until the client goes away.
	mux.HandleFunc("/big.tar.gz", func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 4096)
		for i := 0; i < 1024 && r.Context().Err() == nil; i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/declared.tar.gz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(1<<20))
		w.WriteHeader(http.StatusOK)
	})
	// slow trickles one byte per 100 ms, until the client goes away.
	mux.HandleFunc("/slow.tar.gz", func(w http.ResponseWriter, r *http.Request) {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := w.Write([]byte{'x'}); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	})
	mux.HandleFunc("/gone.tar.gz", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	tests := []struct {
		name     string
		ref      string
		maxBytes int64
		timeout  time.Duration
		cause    error
		within   time.Duration
	}{
		{"oversize without Content-Length", "big.tar.gz", 64 << 10, 5 * time.Second, repository.ErrDownloadTooLarge, 3 * time.Second},
		{"oversize Content-Length", "declared.tar.gz", 64 << 10, 5 * time.Second, repository.ErrDownloadTooLarge, 3 * time.Second},
		{"slow body", "slow.tar.gz", 1 << 20, 400 * time.Millisecond, repository.ErrDownloadTimeout, 2 * time.Second},
		{"HTTP error", "gone.tar.gz", 1 << 20, 5 * time.Second, nil, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := repository.Fetch(t.Context(), srv.URL+"/index.json", tt.ref, tt.maxBytes, tt.timeout)
			if elapsed := time.Since(start); elapsed > tt.within {
				t.Errorf("Fetch took %s, want at most %s", elapsed, tt.within)
			}
			wantCode(t, err, errs.PluginInstallationFailed)
			if tt.cause != nil && !errors.Is(err, tt.cause) {
				t.Fatalf("Fetch error = %v, want %v", err, tt.cause)
			}
		})
	}
}

func TestFetchRefused(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	if err := os.Mkdir(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret.tar.gz"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "secret.tar.gz"), filepath.Join(repo, "link.tar.gz")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "big.tar.gz"), make([]byte, 2048), 0o644); err != nil {
		t.Fatal(err)
	}
	base := "file://" + filepath.ToSlash(repo) + "/"
	tests := []struct {
		name, base, ref string
	}{
		{"ftp scheme", "ftp://example.com/repo/", "index.json"},
		{"no scheme", "/srv/repo", "index.json"},
		{"dot-dot ref", base, "../secret.tar.gz"},
		{"escaped dot-dot ref", base, "a/%2e%2e/%2e%2e/secret.tar.gz"},
		{"absolute path ref", base, "/etc/passwd"},
		{"file ref", base, "file:///etc/passwd"},
		{"symlink out of the repository", base, "link.tar.gz"},
		{"missing file", base, "missing.tar.gz"},
		{"file over the limit", base, "big.tar.gz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := repository.Fetch(t.Context(), tt.base, tt.ref, 1024, time.Second)
			wantCode(t, err, errs.PluginInstallationFailed)
			if strings.Contains(err.Error(), "secret") && !strings.Contains(tt.ref, "secret") {
				t.Errorf("error leaks the target: %v", err)
			}
		})
	}
}

func TestHandler(t *testing.T) {
	_, priv := newKey(t)
	dir, _ := buildRepo(t, priv)
	if err := os.Mkdir(filepath.Join(dir, "sub.tar.gz"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"notes.txt": "x", ".hidden.tar.gz": "x"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	outside := filepath.Join(t.TempDir(), "outside.tar.gz")
	if err := os.WriteFile(outside, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "escape.tar.gz")); err != nil {
		t.Fatal(err)
	}
	h := repository.Handler(dir)
	tests := []struct {
		method, path string
		status       int
		contentType  string
	}{
		{"GET", "/index.json", 200, "application/json"},
		{"HEAD", "/index.json", 200, "application/json"},
		{"GET", "/analytics-plugin-1.2.0.tar.gz", 200, "application/gzip"},
		{"GET", "/", 404, ""},
		{"GET", "/../index.json", 404, ""},
		{"GET", "/x/../index.json", 404, ""},
		{"GET", "/sub.tar.gz", 404, ""},
		{"GET", "/notes.txt", 404, ""},
		{"GET", "/.hidden.tar.gz", 404, ""},
		{"GET", "/escape.tar.gz", 404, ""},
		{"GET", "/missing.tar.gz", 404, ""},
		{"POST", "/index.json", 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, "/", nil)
			req.URL.Path = tt.path // unclean on purpose
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d", rec.Code, tt.status)
			}
			if tt.contentType != "" {
				if got := rec.Header().Get("Content-Type"); got != tt.contentType {
					t.Errorf("Content-Type = %q, want %q", got, tt.contentType)
				}
				if rec.Header().Get("Content-Length") == "" {
					t.Error("no Content-Length")
				}
			}
		})
	}

	// Over a real server: conditional requests and encoded traversal.
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/index.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/index.json", nil)
	req.Header.Set("If-None-Match", etag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: status %d, want 304", resp.StatusCode)
	}
	resp, err = http.Get(srv.URL + "/%2e%2e%2f" + filepath.Base(outside))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("encoded traversal: status %d, want 404", resp.StatusCode)
	}
}

// A download that gets no HTTP answer says what failed (the name lookup, the connection,
// TLS) and never repeats the URL's credentials.
func TestFetchSaysWhatFailed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	secure := httptest.NewTLSServer(http.NotFoundHandler())
	defer secure.Close()
	tests := []struct {
		name, base, want string
	}{
		{"no such host", "http://nexus-fetch-test.invalid/repo/", "DNS: "},
		{"connection refused", "http://user:hunter2@" + closed + "/repo/", "connect: " + closed + " refused the connection"},
		{"plain HTTP behind https", strings.Replace(plain.URL, "http://", "https://", 1) + "/repo/", "TLS: the server answered in plain HTTP to an https URL"},
		{"unknown certificate authority", secure.URL + "/repo/", "TLS: the server's certificate is signed by an unknown authority"},
		{"HTTP status", plain.URL + "/repo/", "answered HTTP 404 Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := repository.Fetch(t.Context(), tt.base, "p-1.0.0.tar.gz", 1024, 10*time.Second)
			e := wantCode(t, err, errs.PluginInstallationFailed)
			if !strings.Contains(e.Message, tt.want) {
				t.Errorf("message %q, want it to say %q", e.Message, tt.want)
			}
			if strings.Contains(e.Message, "hunter2") {
				t.Errorf("message %q repeats the URL's password", e.Message)
			}
		})
	}
}
