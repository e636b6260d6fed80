// Command analytics-plugin is the example analytics plugin of the reference document: it
// subscribes to `user.*` events, batches them, flushes batches on an interval (emitting
// `analytics.batch_processed` and keeping each user's figures in its key-value store),
// answers `data_request` and `user_stats_request` messages with a user's activity, and
// reports its health.
//
// Configuration: enabled (false: events are not counted), batch_size, flush_interval
// (restart required), storage_backend (database, file or redis; this example writes batches
// to a file in its data directory for every backend) and the secret api_key.
//
// Its version is stamped at build time (`-ldflags "-X main.version=1.3.0"`, as `make
// demo-repo` builds the demo repository's newer version); its reports carry it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
)

// activity is what the plugin knows of one user. The mutex of stats guards it.
type activity struct {
	Sessions int            `json:"total_sessions"`
	Minutes  float64        `json:"total_time_minutes"`
	Pages    map[string]int `json:"-"`
}

type stats struct {
	mu      sync.Mutex
	users   map[string]*activity
	pending []map[string]any // events not yet flushed
	flushed int
	// watchers are the live feeds (GET /api/v1/analytics/live), each fed the events recorded.
	watchers map[chan []byte]struct{}
}

// version is the plugin's version, reported in its hello, its startup log and its reports.
var version = "1.2.0"

func main() {
	s := &stats{users: map[string]*activity{}, watchers: map[chan []byte]struct{}{}}
	err := plugin.Run(context.Background(), plugin.Plugin{
		HTTP:         s.httpHandler(),
		Version:      version,
		Services:     []string{"analytics"},
		MessageTypes: []string{"data_request", "user_stats_request"},
		OnStart: func(ctx context.Context, sess *plugin.Session) error {
			interval := time.Duration(number(sess.Config(), "flush_interval", 30)) * time.Second
			go s.flushLoop(ctx, sess, interval)
			sess.Logger().Info("Plugin initialized successfully", "version", version, "flush_interval_seconds", interval.Seconds())
			return nil
		},
		OnEvent: func(ctx context.Context, e plugin.Event) error {
			if sess := plugin.SessionFromContext(ctx); sess != nil && sess.Config()["enabled"] == false {
				return nil // collection is switched off: the event is acknowledged, not counted
			}
			s.record(e)
			if sess := plugin.SessionFromContext(ctx); sess != nil && len(s.pendingCopy()) >= int(number(sess.Config(), "batch_size", 50)) {
				return s.flush(sess)
			}
			return nil
		},
		OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
			if m.Type != "data_request" && m.Type != "user_stats_request" {
				return nil, errors.New("unknown message type " + m.Type)
			}
			user, _ := m.Data["user_id"].(string)
			if user == "" {
				return nil, errors.New("data_request needs user_id")
			}
			return s.report(user), nil
		},
		OnHealthCheck: func(ctx context.Context) []plugin.Check {
			sess := plugin.SessionFromContext(ctx)
			limit := 50.0
			if sess != nil {
				limit = number(sess.Config(), "batch_size", 50)
			}
			queue := float64(len(s.pendingCopy()))
			checks := []plugin.Check{plugin.Pass("batch_queue").WithValue(queue, limit*2, "events")}
			if queue > limit*2 {
				checks[0] = plugin.Warn("batch_queue", "batches are not flushed fast enough").WithValue(queue, limit*2, "events")
			}
			start := time.Now()
			if err := os.MkdirAll(dataDir(), 0o700); err != nil {
				checks = append(checks, plugin.Fail("storage", err.Error()))
			} else {
				checks = append(checks, plugin.Pass("storage").WithResponseTime(time.Since(start)))
			}
			return checks
		},
		OnConfigChange: func(ctx context.Context, c plugin.ConfigChange) error {
			if b, ok := c.Config["storage_backend"].(string); ok && b != "database" && b != "file" && b != "redis" {
				return errors.New("unsupported storage backend " + b)
			}
			if sess := plugin.SessionFromContext(ctx); sess != nil {
				sess.Logger().Info("Configuration applied", "updated_fields", c.UpdatedFields, "restart_required", c.RestartRequired)
			}
			return nil
		},
		OnShutdown: func(ctx context.Context, reason string) {
			if sess := plugin.SessionFromContext(ctx); sess != nil {
				_ = s.flush(sess)
				sess.Logger().Info("Shutting down", "reason", reason)
			}
		},
	})
	if err != nil {
		os.Stderr.WriteString("analytics-plugin: " + err.Error() + "\n")
		os.Exit(1)
	}
}

func (s *stats) record(e plugin.Event) {
	user, _ := e.Data["user_id"].(string)
	s.mu.Lock()
	defer s.mu.Unlock()
	entry := map[string]any{"type": e.Type, "user_id": user, "data": e.Data}
	s.pending = append(s.pending, entry)
	if b, err := json.Marshal(entry); err == nil {
		for ch := range s.watchers {
			select {
			case ch <- b:
			default: // a watcher that does not keep up misses events rather than holding the plugin up
			}
		}
	}
	if user == "" {
		return
	}
	a := s.users[user]
	if a == nil {
		a = &activity{Pages: map[string]int{}}
		s.users[user] = a
	}
	switch e.Type {
	case "user.login":
		a.Sessions++
	case "user.logout":
		if mins, ok := e.Data["session_minutes"].(float64); ok {
			a.Minutes += mins
		}
	case "user.page_view":
		if page, ok := e.Data["page"].(string); ok {
			a.Pages[page]++
		}
	}
}

func (s *stats) pendingCopy() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.pending...)
}

func (s *stats) report(user string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.users[user]
	if a == nil {
		return map[string]any{"total_sessions": 0, "total_time_minutes": 0, "most_visited_pages": []any{}, "plugin_version": version}
	}
	pages := make([]string, 0, len(a.Pages))
	for p := range a.Pages {
		pages = append(pages, p)
	}
	sort.Slice(pages, func(i, j int) bool {
		return a.Pages[pages[i]] > a.Pages[pages[j]] || a.Pages[pages[i]] == a.Pages[pages[j]] && pages[i] < pages[j]
	})
	if len(pages) > 5 {
		pages = pages[:5]
	}
	list := make([]any, len(pages))
	for i, p := range pages {
		list[i] = p
	}
	return map[string]any{"total_sessions": a.Sessions, "total_time_minutes": a.Minutes, "most_visited_pages": list, "plugin_version": version}
}

func (s *stats) flushLoop(ctx context.Context, sess *plugin.Session, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.flush(sess); err != nil {
				sess.Logger().Error("Flushing the batch failed", "error", err.Error())
			}
		}
	}
}

// flush appends the pending events to the batch file of the data directory.
func (s *stats) flush(sess *plugin.Session) error {
	s.mu.Lock()
	batch := s.pending
	s.pending = nil
	s.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	start := time.Now()
	if err := os.MkdirAll(dataDir(), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dataDir(), "batches.jsonl"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, ev := range batch {
		if err := enc.Encode(ev); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	s.mu.Lock()
	s.flushed += len(batch)
	users := map[string]map[string]any{}
	for _, ev := range batch {
		if id, _ := ev["user_id"].(string); id != "" && s.users[id] != nil {
			a := s.users[id]
			users[id] = map[string]any{"total_sessions": a.Sessions, "total_time_minutes": a.Minutes}
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The figures outlive the process in the host's key-value store (database:write).
	for id, figures := range users {
		if _, err := sess.KV().Put(ctx, "users/"+id, figures); err != nil {
			sess.Logger().Warn("Could not store user figures", "user_id", id, "error", err.Error())
		}
	}
	if _, err := sess.Emit(ctx, "analytics.batch_processed", map[string]any{"batch_size": len(batch)}); err != nil {
		sess.Logger().Warn("Could not emit analytics.batch_processed", "error", err.Error())
	}
	sess.Logger().Info("Processing analytics batch", "batch_size", len(batch),
		"processing_time_ms", time.Since(start).Milliseconds(), "storage_backend", sess.Config()["storage_backend"])
	return nil
}

// dataDir is the plugin's own data directory (the host sets HOME to it).
func dataDir() string {
	if h := os.Getenv("HOME"); h != "" {
		return h
	}
	return os.TempDir()
}

func number(cfg map[string]any, key string, def float64) float64 {
	if v, ok := cfg[key].(float64); ok && v > 0 {
		return v
	}
	return def
}

// httpHandler serves the plugin's endpoints: GET /api/v1/analytics/report (?user_id= for one
// user's activity, else a summary) and GET /api/v1/analytics/live, a Server-Sent Events feed
// of the events the plugin records.
func (s *stats) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/analytics/report", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if user := r.URL.Query().Get("user_id"); user != "" {
			_ = json.NewEncoder(w).Encode(s.report(user))
			return
		}
		s.mu.Lock()
		summary := map[string]any{"users": len(s.users), "pending_events": len(s.pending), "flushed_batches": s.flushed}
		s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(summary)
	})
	mux.HandleFunc("GET /api/v1/analytics/live", func(w http.ResponseWriter, r *http.Request) {
		ch := make(chan []byte, 64)
		s.mu.Lock()
		s.watchers[ch] = struct{}{}
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.watchers, ch)
			s.mu.Unlock()
		}()
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		fmt.Fprint(w, ": live analytics events\n\n")
		w.(http.Flusher).Flush()
		keepAlive := time.NewTicker(15 * time.Second)
		defer keepAlive.Stop()
		for {
			select {
			case b := <-ch:
				fmt.Fprintf(w, "event: activity\ndata: %s\n\n", b)
			case <-keepAlive.C:
				fmt.Fprint(w, ": keep-alive\n\n")
			case <-r.Context().Done():
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	return mux
}
