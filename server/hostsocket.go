package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// hostSockets serves the server for each confined plugin on a Unix socket of its own: a
// plugin in a network namespace with only loopback reaches the host that way. Each socket
// belongs to its plugin's uid (mode 0600), so no other plugin can connect to it.
type hostSockets struct {
	mu    sync.Mutex
	dir   string                  // created with the first socket: a short path, for sun_path's 108 bytes
	serve func(net.Listener)      // serves a listener like the main one; nil until Serve runs
	socks map[string]net.Listener // plugin id -> listener
}

// forPlugin returns the URL of plugin id's socket, creating and serving it on first use,
// and gives it to uid and gid (-1: the server's).
func (h *hostSockets) forPlugin(id string, uid, gid int) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.serve == nil {
		return "", errors.New("the server is not serving")
	}
	if h.dir == "" {
		dir, err := os.MkdirTemp("", "nexus-host-")
		if err != nil {
			return "", err
		}
		// Plugins under their own uids must reach their sockets through it.
		if err := os.Chmod(dir, 0o711); err != nil {
			return "", err
		}
		h.dir = dir
	}
	path := filepath.Join(h.dir, id+".sock")
	if _, ok := h.socks[id]; !ok {
		_ = os.Remove(path)
		ln, err := net.Listen("unix", path)
		if err != nil {
			return "", fmt.Errorf("listen on %s: %w", path, err)
		}
		if err := os.Chmod(path, 0o600); err != nil {
			ln.Close()
			return "", err
		}
		if h.socks == nil {
			h.socks = map[string]net.Listener{}
		}
		h.socks[id] = ln
		h.serve(ln)
	}
	if uid >= 0 {
		if err := os.Lchown(path, uid, gid); err != nil {
			return "", err
		}
	} else if err := os.Lchown(path, os.Getuid(), os.Getgid()); err != nil {
		return "", err
	}
	return "unix://" + path, nil
}

// start makes forPlugin serve new sockets with serve.
func (h *hostSockets) start(serve func(net.Listener)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.serve = serve
}

// close stops serving every socket and removes them.
func (h *hostSockets) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.serve = nil
	for id, ln := range h.socks {
		_ = ln.Close()
		delete(h.socks, id)
	}
	if h.dir != "" {
		_ = os.RemoveAll(h.dir)
		h.dir = ""
	}
}
