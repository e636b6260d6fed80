package pluginhost

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// logSink takes plugin log lines (captured output and log frames), removes secrets, stores
// them in batches and fans them out to live tails. Memory is bounded: when plugins log
// faster than the store takes it, lines are dropped and the drop is itself logged.
type logSink struct {
	st   store.Store
	log  *slog.Logger
	keep int

	in   chan store.LogRecord // bounded queue to the writer goroutine
	done chan struct{}        // closed when the writer has exited
	stop context.CancelFunc

	mu      sync.Mutex // guards the fields below
	secrets map[string][]string
	dropped map[string]int
	tails   map[string]map[*logTail]struct{}
}

// logTail is one live subscriber of a plugin's logs.
type logTail struct {
	ch     chan store.LogRecord
	missed int // guarded by logSink.mu
}

const (
	logQueueSize  = 4096
	logBatchSize  = 256
	logFlushEvery = 200 * time.Millisecond
)

func newLogSink(st store.Store, log *slog.Logger, keep int) *logSink {
	ctx, cancel := context.WithCancel(context.Background())
	s := &logSink{
		st: st, log: log, keep: keep,
		in: make(chan store.LogRecord, logQueueSize), done: make(chan struct{}), stop: cancel,
		secrets: map[string][]string{}, dropped: map[string]int{}, tails: map[string]map[*logTail]struct{}{},
	}
	go s.run(ctx)
	return s
}

// setSecrets sets the secret values that must never appear in a plugin's stored logs.
func (s *logSink) setSecrets(pluginID string, values []string) {
	var keep []string
	for _, v := range values {
		if len(v) >= 4 {
			keep = append(keep, v)
		}
	}
	// Longest first, so a secret containing another is replaced whole.
	sort.Slice(keep, func(i, j int) bool { return len(keep[i]) > len(keep[j]) })
	s.mu.Lock()
	s.secrets[pluginID] = keep
	s.mu.Unlock()
}

func (s *logSink) redact(pluginID, text string) string {
	s.mu.Lock()
	secrets := s.secrets[pluginID]
	s.mu.Unlock()
	for _, v := range secrets {
		text = strings.ReplaceAll(text, v, "***hidden***")
	}
	return text
}

// add queues a record; it never blocks. Records that do not fit are counted as dropped.
func (s *logSink) add(r store.LogRecord) {
	r.Message = s.redact(r.PluginID, r.Message)
	if len(r.Metadata) > 0 {
		r.Metadata = []byte(s.redact(r.PluginID, string(r.Metadata)))
	}
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	select {
	case s.in <- r:
	default:
		s.mu.Lock()
		s.dropped[r.PluginID]++
		s.mu.Unlock()
	}
}

// addLine parses one line a plugin wrote to stdout or stderr. JSON objects give the level,
// message and metadata; other lines are INFO (stdout) or ERROR (stderr).
func (s *logSink) addLine(pluginID, stream, line string, truncated bool) {
	rec := parseLogLine(pluginID, stream, line)
	if truncated {
		rec.Message += " …[truncated]"
	}
	s.add(rec)
}

func parseLogLine(pluginID, stream, line string) store.LogRecord {
	rec := store.LogRecord{PluginID: pluginID, Time: time.Now().UTC(), Level: "INFO", Message: line}
	if stream == "stderr" {
		rec.Level = "ERROR"
	}
	trimmed := strings.TrimSpace(line)
	if !strings.HasPrefix(trimmed, "{") {
		return rec
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(trimmed), &obj); err != nil {
		return rec
	}
	level, msg := "", ""
	for _, k := range []string{"level", "lvl", "severity"} {
		if v, ok := obj[k].(string); ok {
			level = v
			delete(obj, k)
			break
		}
	}
	for _, k := range []string{"message", "msg"} {
		if v, ok := obj[k].(string); ok {
			msg = v
			delete(obj, k)
			break
		}
	}
	if level == "" && msg == "" {
		return rec
	}
	for _, k := range []string{"time", "ts", "timestamp"} {
		if v, ok := obj[k].(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				rec.Time = t.UTC()
			}
			delete(obj, k)
			break
		}
	}
	if level != "" {
		rec.Level = normalizeLevel(level)
	}
	rec.Message = msg
	if len(obj) > 0 {
		if b, err := json.Marshal(obj); err == nil {
			rec.Metadata = b
		}
	}
	return rec
}

// normalizeLevel maps common level names to DEBUG, INFO, WARNING or ERROR.
func normalizeLevel(l string) string {
	switch strings.ToUpper(strings.TrimSpace(l)) {
	case "DEBUG", "TRACE":
		return "DEBUG"
	case "WARN", "WARNING":
		return "WARNING"
	case "ERROR", "ERR", "FATAL", "CRITICAL", "PANIC":
		return "ERROR"
	}
	return "INFO"
}

// tail subscribes to a plugin's new log records. The channel is closed by cancel.
func (s *logSink) tail(pluginID string) (<-chan store.LogRecord, func()) {
	t := &logTail{ch: make(chan store.LogRecord, 256)}
	s.mu.Lock()
	if s.tails[pluginID] == nil {
		s.tails[pluginID] = map[*logTail]struct{}{}
	}
	s.tails[pluginID][t] = struct{}{}
	s.mu.Unlock()
	var once sync.Once
	return t.ch, func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.tails[pluginID], t)
			s.mu.Unlock()
			close(t.ch)
		})
	}
}

func (s *logSink) fanout(recs []store.LogRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		for t := range s.tails[r.PluginID] {
			select {
			case t.ch <- r:
			default:
				t.missed++ // a slow tail misses records rather than slowing the host
			}
		}
	}
}

func (s *logSink) run(ctx context.Context) {
	defer close(s.done)
	ticker := time.NewTicker(logFlushEvery)
	defer ticker.Stop()
	var batch []store.LogRecord
	flush := func() {
		s.mu.Lock()
		for id, n := range s.dropped {
			batch = append(batch, store.LogRecord{PluginID: id, Time: time.Now().UTC(), Level: "WARNING",
				Message: fmt.Sprintf("%d log lines dropped: the plugin logs faster than they can be stored", n)})
		}
		clear(s.dropped)
		s.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		err := s.st.Write(context.Background(), func(tx store.Tx) error {
			if err := tx.AppendLogs(batch); err != nil {
				return err
			}
			seen := map[string]bool{}
			for _, r := range batch {
				if !seen[r.PluginID] {
					seen[r.PluginID] = true
					if err := tx.TrimLogs(r.PluginID, s.keep); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			s.log.Error("storing plugin logs failed", "error", err, "records", len(batch))
		}
		s.fanout(batch)
		batch = nil
	}
	for {
		select {
		case r := <-s.in:
			batch = append(batch, r)
			if len(batch) >= logBatchSize {
				flush()
			}
		case <-ticker.C:
			flush()
		case <-ctx.Done():
			for {
				select {
				case r := <-s.in:
					batch = append(batch, r)
				default:
					flush()
					return
				}
			}
		}
	}
}

// close flushes what is queued and stops the writer.
func (s *logSink) close() {
	s.stop()
	<-s.done
}

// TailQuery selects the log records to stream.
type TailQuery struct {
	PluginID string
	// MinLevel keeps records at this level and above ("" keeps all).
	MinLevel string
	// Search keeps records whose message contains it, case-insensitively.
	Search string
	// Backlog sends up to this many stored records first, oldest first.
	Backlog int
}

func (q TailQuery) match(r store.LogRecord) bool {
	if q.MinLevel != "" && store.LevelRank(r.Level) < store.LevelRank(q.MinLevel) {
		return false
	}
	return q.Search == "" || strings.Contains(strings.ToLower(r.Message), strings.ToLower(q.Search))
}

// TailLogs streams an installed plugin's log records as they are stored, after up to
// q.Backlog stored ones. The channel is closed when ctx ends.
func (h *Host) TailLogs(ctx context.Context, q TailQuery) (<-chan store.LogRecord, error) {
	if _, err := h.load(ctx, q.PluginID); err != nil {
		return nil, err
	}
	live, cancel := h.logs.tail(q.PluginID)
	var backlog []store.LogRecord
	if q.Backlog > 0 {
		err := h.st.Read(ctx, func(tx store.Tx) error {
			var err error
			backlog, _, err = tx.Logs(store.LogFilter{PluginID: q.PluginID, MinLevel: q.MinLevel, Search: q.Search, Page: 1, PerPage: q.Backlog})
			return err
		})
		if err != nil {
			cancel()
			return nil, errs.Wrap(errs.Internal, err, "could not read the logs")
		}
	}
	out := make(chan store.LogRecord, 64)
	go func() {
		defer close(out)
		defer cancel()
		for i := len(backlog) - 1; i >= 0; i-- {
			select {
			case out <- backlog[i]:
			case <-ctx.Done():
				return
			}
		}
		for {
			select {
			case r, ok := <-live:
				if !ok {
					return
				}
				if !q.match(r) {
					continue
				}
				select {
				case out <- r:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
