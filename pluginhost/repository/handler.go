package repository

import (
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// Handler returns an http.Handler that serves the repository in dir: index.json and the
// *.tar.gz files directly in dir, nothing else. Requests for other names, for anything in a
// subdirectory, for names with "..", for hidden files, directories or non-regular files are
// answered 404 (there is no directory listing); methods other than GET and HEAD get 405.
//
// Files are served with http.ServeContent: Content-Type application/json or application/gzip,
// Content-Length, Last-Modified and an ETag derived from the file's size and modification
// time, so conditional requests (If-None-Match, If-Modified-Since) and ranges work. The index
// is served with "Cache-Control: no-cache" (revalidate every time), packages, whose names
// carry their version, with a day's max-age. Mount it under a prefix with http.StripPrefix.
//
// dir is opened (as an os.Root, which symlinks cannot leave) on every request, so that the
// handler holds no state and sees a rebuilt index at once.
func Handler(dir string) http.Handler {
	return &handler{dir: dir}
}

type handler struct {
	dir string // immutable
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, "/")
	contentType, ok := servedType(name)
	if !ok {
		http.NotFound(w, r)
		return
	}
	root, err := os.OpenRoot(h.dir)
	if err != nil {
		http.Error(w, "repository unavailable", http.StatusServiceUnavailable)
		return
	}
	defer root.Close()
	f, err := root.Open(name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			http.NotFound(w, r)
			return
		}
		http.NotFound(w, r) // symlinks out of dir, permissions: not the client's business
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", contentType)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("ETag", `"`+strconv.FormatInt(fi.Size(), 16)+"-"+strconv.FormatInt(fi.ModTime().UnixNano(), 16)+`"`)
	if name == IndexFile {
		hdr.Set("Cache-Control", "no-cache")
	} else {
		hdr.Set("Cache-Control", "public, max-age=86400")
	}
	http.ServeContent(w, r, name, fi.ModTime(), f)
}

// servedType returns the Content-Type of name when Handler serves it.
func servedType(name string) (string, bool) {
	if name == IndexFile {
		return "application/json", true
	}
	if !strings.HasSuffix(name, ".tar.gz") || !validPackageFileName(name) {
		return "", false
	}
	return "application/gzip", true
}

// validPackageFileName reports whether name is a package file name that BuildIndex and
// Handler accept: letters, digits, ".", "_", "+" and "-", not starting with ".", ending in
// ".tar.gz".
func validPackageFileName(name string) bool {
	if len(name) <= len(".tar.gz") || len(name) > 255 || name[0] == '.' || !strings.HasSuffix(name, ".tar.gz") {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '+' || c == '-') {
			return false
		}
	}
	return !strings.Contains(name, "..")
}
