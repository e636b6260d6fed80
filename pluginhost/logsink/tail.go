package logsink

import (
	"context"
	"strings"
	"sync"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

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

// Tail streams a plugin's log records as they are stored, after up to q.Backlog stored ones.
// The channel is closed when ctx ends; the goroutine that feeds it ends with ctx too.
func (s *Sink) Tail(ctx context.Context, q TailQuery) (<-chan store.LogRecord, error) {
	live, cancel := s.subscribe(q.PluginID)
	var backlog []store.LogRecord
	if q.Backlog > 0 {
		err := s.st.Read(ctx, func(tx store.Tx) error {
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
			case r := <-live:
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

// subscribe registers a live subscriber of a plugin's new records; cancel unregisters it.
func (s *Sink) subscribe(pluginID string) (<-chan store.LogRecord, func()) {
	t := &tail{ch: make(chan store.LogRecord, 256)}
	s.mu.Lock()
	if s.tails[pluginID] == nil {
		s.tails[pluginID] = map[*tail]struct{}{}
	}
	s.tails[pluginID][t] = struct{}{}
	s.mu.Unlock()
	var once sync.Once
	return t.ch, func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.tails[pluginID], t)
			if len(s.tails[pluginID]) == 0 {
				delete(s.tails, pluginID)
			}
			s.mu.Unlock()
		})
	}
}
