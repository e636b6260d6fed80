package console_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexus-platform/nexus/server/console"
)

func get(t *testing.T, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

// anAsset returns the path under /ui/ of one of the bundle's hashed files.
func anAsset(t *testing.T, ext string) string {
	t.Helper()
	matches, err := fs.Glob(os.DirFS("dist"), "assets/*"+ext)
	if err != nil || len(matches) == 0 {
		t.Fatalf("no %s asset in dist/ (%v): run make console", ext, err)
	}
	return console.Prefix + matches[0]
}

func TestConsoleServesTheApplication(t *testing.T) {
	h := console.Handler()
	index, err := os.ReadFile(filepath.Join("dist", "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	// The application's own pages all get index.html, never cached.
	for _, path := range []string{"/ui/", "/ui/plugins", "/ui/plugins/analytics-plugin/logs", "/ui/catalog?query=x", "/ui/index.html"} {
		rec := get(t, h, http.MethodGet, path)
		if rec.Code != http.StatusOK || rec.Body.String() != string(index) {
			t.Errorf("GET %s: status %d, index.html: %v", path, rec.Code, rec.Body.String() == string(index))
		}
		if got := rec.Header().Get("Cache-Control"); got != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q", path, got)
		}
		if !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
			t.Errorf("GET %s: Content-Type %q", path, rec.Header().Get("Content-Type"))
		}
		csp := rec.Header().Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: Content-Security-Policy %q lacks %q", path, csp, want)
			}
		}
		if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", path)
		}
	}
	// Hashed assets are cached for good, with their own type.
	for ext, typ := range map[string]string{".js": "text/javascript", ".css": "text/css"} {
		path := anAsset(t, ext)
		rec := get(t, h, http.MethodGet, path)
		if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), typ) {
			t.Errorf("GET %s: status %d, Content-Type %q", path, rec.Code, rec.Header().Get("Content-Type"))
		}
		if got := rec.Header().Get("Cache-Control"); !strings.Contains(got, "immutable") {
			t.Errorf("GET %s: Cache-Control %q", path, got)
		}
		if rec := get(t, h, http.MethodHead, path); rec.Code != http.StatusOK {
			t.Errorf("HEAD %s: status %d", path, rec.Code)
		}
	}
	// A missing asset is missing, not the page (a stale tab must not run HTML as a script).
	if rec := get(t, h, http.MethodGet, "/ui/assets/index-missing.js"); rec.Code != http.StatusNotFound {
		t.Errorf("missing asset: status %d", rec.Code)
	}
	// Nothing escapes the bundle.
	for _, path := range []string{"/ui/../console.go", "/ui/assets/../../console.go", "/ui/%2e%2e/console.go"} {
		rec := get(t, h, http.MethodGet, path)
		if strings.Contains(rec.Body.String(), "package console") {
			t.Errorf("GET %s served a file outside the bundle", path)
		}
	}
	if rec := get(t, h, http.MethodPost, "/ui/"); rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /ui/: status %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

// Scripts and styles go out gzipped to browsers that take it, and as they are to others.
func TestConsoleCompressesAssets(t *testing.T) {
	h := console.Handler()
	path := anAsset(t, ".js")
	raw, err := os.ReadFile(filepath.Join("dist", strings.TrimPrefix(path, console.Prefix)))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		accept string
		gzip   bool
	}{{"gzip, deflate, br", true}, {"br;q=1.0, gzip;q=0.8", true}, {"", false}, {"gzip;q=0", false}, {"identity", false}} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Accept-Encoding", c.accept)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		body := rec.Body.Bytes()
		if got := rec.Header().Get("Content-Encoding") == "gzip"; got != c.gzip {
			t.Fatalf("Accept-Encoding %q: Content-Encoding %q", c.accept, rec.Header().Get("Content-Encoding"))
		}
		if c.gzip {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if body, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
			if rec.Body.Len() > len(raw)/2 {
				t.Errorf("gzipped %d of %d bytes", rec.Body.Len(), len(raw))
			}
		}
		if !bytes.Equal(body, raw) || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/javascript") || rec.Header().Get("Vary") != "Accept-Encoding" {
			t.Errorf("Accept-Encoding %q: not the file, or Content-Type %q, Vary %q", c.accept, rec.Header().Get("Content-Type"), rec.Header().Get("Vary"))
		}
	}
}
