// Package console serves the web console, the administrator's view of every plugin, at /ui/.
//
// The console is a single-page application written in TypeScript under clients/console and
// bundled by Vite into dist/, which is committed so that `go build` needs no Node.js; `make
// test` rebuilds it and fails when the committed bundle is stale. The page talks to the API
// with the generated Connect client, on the same origin, with the token the user signs in with.
package console

import (
	"bytes"
	"compress/gzip"
	"embed"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

// Prefix is where the console is served.
const Prefix = "/ui/"

//go:embed all:dist
var dist embed.FS

// contentSecurityPolicy lets the page load only its own scripts and styles and talk only to
// its own origin: an injected script or a framing page gets nowhere.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the bundle under Prefix. Hashed assets are cached for good; any other path
// under Prefix is one of the application's own pages and gets index.html, which is never
// cached, so a new server's console is picked up at the next load.
func Handler() http.Handler {
	files, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // the embedded tree always has dist
	}
	index, err := fs.ReadFile(files, "index.html")
	if err != nil {
		panic("console: dist/index.html is missing: run make console")
	}
	static := http.FileServerFS(files)
	packed := compressAssets(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(path.Clean(r.URL.Path), strings.TrimSuffix(Prefix, "/"))
		name = strings.TrimPrefix(name, "/")
		if strings.HasPrefix(name, "assets/") {
			if _, err := fs.Stat(files, name); err != nil {
				http.NotFound(w, r)
				return
			}
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
			if gz, ok := packed[name]; ok {
				h.Add("Vary", "Accept-Encoding")
				if acceptsGzip(r) {
					h.Set("Content-Encoding", "gzip")
					h.Set("Content-Type", mime.TypeByExtension(path.Ext(name)))
					http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(gz))
					return
				}
			}
			r2 := r.Clone(r.Context())
			r2.URL.Path = "/" + name
			static.ServeHTTP(w, r2)
			return
		}
		if name != "" && name != "index.html" {
			if st, err := fs.Stat(files, name); err == nil && !st.IsDir() {
				h.Set("Cache-Control", "no-cache")
				r2 := r.Clone(r.Context())
				r2.URL.Path = "/" + name
				static.ServeHTTP(w, r2)
				return
			}
		}
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(index)
	})
}

// compressAssets gzips the bundle's scripts and styles once, at start: the script is a few
// hundred kilobytes, a quarter of that compressed.
func compressAssets(files fs.FS) map[string][]byte {
	out := map[string][]byte{}
	names, _ := fs.Glob(files, "assets/*")
	for _, name := range names {
		if ext := path.Ext(name); ext != ".js" && ext != ".css" {
			continue
		}
		raw, err := fs.ReadFile(files, name)
		if err != nil {
			continue
		}
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		_, _ = zw.Write(raw)
		if zw.Close() == nil && b.Len() < len(raw) {
			out[name] = b.Bytes()
		}
	}
	return out
}

// acceptsGzip reports whether the request's Accept-Encoding takes gzip (and does not refuse
// it with q=0).
func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			q := strings.ReplaceAll(params, " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}
