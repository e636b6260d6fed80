// Package logsink takes plugin log lines (captured output and log frames), removes secrets,
// stores them in batches with a retention bound, keeps each plugin's newest records in memory
// for the detail view, and fans them out to live tails. Memory is bounded: when plugins log
// faster than the store takes it, lines are dropped and the drop is itself logged.
package logsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// RecentKept is how many of each plugin's newest records the sink keeps in memory.
const RecentKept = 10

const (
	queueSize  = 4096
	batchSize  = 256
	flushEvery = 200 * time.Millisecond
)

// ErrClosed is returned by Purge once the sink has stopped.
var ErrClosed = errors.New("logsink: closed")

// Sink is the log sink. Add and AddLine never block; Run is the writer and must be running
// for records to be stored.
type Sink struct {
	st   store.Store
	log  *slog.Logger
	keep int

	in      chan entry    // bounded queue to the writer
	stopped chan struct{} // closed when Run has returned

	mu sync.Mutex // guards the fields below
	// redactors hide each plugin's secret values (none when a plugin has none): its secret
	// configuration values (secrets) and the token of its current launch (tokens).
	redactors map[string]*redactor
	secrets   map[string][]string
	tokens    map[string]string
	dropped   map[string]int
	tails     map[string]map[*tail]struct{}
	// recent are each plugin's newest stored records, newest first.
	recent map[string][]store.LogRecord
}

// entry is a record to store, or a purge of one plugin's logs (done is then set).
type entry struct {
	rec   store.LogRecord
	purge string
	done  chan error
}

// tail is one live subscriber of a plugin's logs.
type tail struct {
	ch     chan store.LogRecord
	missed int // guarded by Sink.mu
}

// New returns a sink over st that keeps at most keep records per plugin in the store. It
// starts nothing: see Run.
func New(st store.Store, log *slog.Logger, keep int) *Sink {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sink{
		st: st, log: log, keep: keep,
		in: make(chan entry, queueSize), stopped: make(chan struct{}),
		redactors: map[string]*redactor{}, secrets: map[string][]string{}, tokens: map[string]string{}, dropped: map[string]int{}, tails: map[string]map[*tail]struct{}{},
		recent: map[string][]store.LogRecord{},
	}
}

// Prime loads the newest stored records of each plugin into memory (for Recent).
func (s *Sink) Prime(ctx context.Context, pluginIDs []string) error {
	for _, id := range pluginIDs {
		var recs []store.LogRecord
		err := s.st.Read(ctx, func(tx store.Tx) error {
			var err error
			recs, _, err = tx.Logs(store.LogFilter{PluginID: id, Page: 1, PerPage: RecentKept})
			return err
		})
		if err != nil {
			return fmt.Errorf("logsink: read the recent logs of %s: %w", id, err)
		}
		s.mu.Lock()
		s.recent[id] = recs
		s.mu.Unlock()
	}
	return nil
}

// SetSecrets sets the secret values that must never appear in a plugin's stored logs (nor in
// what Redact returns), replacing those set before. Values shorter than 4 bytes are not
// treated as secrets. Each value is hidden as it is and in the forms JSON encoders give it
// (quotes and backslashes escaped; <, > and & as \u003c, \u003e and \u0026 the way Go
// writes them; / as \/; characters beyond ASCII as \uXXXX), also in a JSON document
// carried inside a JSON string.
func (s *Sink) SetSecrets(pluginID string, values []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets[pluginID] = slices.Clone(values)
	s.rebuildLocked(pluginID)
}

// SetLaunchToken sets the token the plugin's current process was launched with, hidden like
// its secrets (replacing the previous launch's; "" for none): anyone who may read the
// plugin's logs could otherwise act as the plugin while it runs.
func (s *Sink) SetLaunchToken(pluginID, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[pluginID] = token
	s.rebuildLocked(pluginID)
}

// rebuildLocked rebuilds the plugin's redactor from its secrets and launch token.
func (s *Sink) rebuildLocked(pluginID string) {
	values := s.secrets[pluginID]
	if t := s.tokens[pluginID]; t != "" {
		values = append(slices.Clone(values), t)
	}
	if r := newRedactor(values); r == nil {
		delete(s.redactors, pluginID)
		delete(s.secrets, pluginID)
		delete(s.tokens, pluginID)
	} else {
		s.redactors[pluginID] = r
	}
}

// Redact hides the plugin's secrets (see SetSecrets) in text, as its log records have them
// hidden.
func (s *Sink) Redact(pluginID, text string) string {
	return s.redactor(pluginID).text(text)
}

func (s *Sink) redactor(pluginID string) *redactor {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.redactors[pluginID]
}

// The range of the plugin-given times Add keeps (see Add).
var (
	earliestLogTime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	latestLogTime   = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Add queues a record; it never blocks. Records that do not fit are counted as dropped.
// The plugin's secrets are hidden in its message and anywhere in its metadata first.
func (s *Sink) Add(r store.LogRecord) {
	if rd := s.redactor(r.PluginID); rd != nil {
		r.Message = rd.text(r.Message)
		r.Metadata = rd.json(r.Metadata)
	}
	if r.Time.IsZero() || r.Time.Before(earliestLogTime) || r.Time.After(latestLogTime) {
		// A plugin's own timestamp (a JSON line's "time", a log frame's) that the stores
		// cannot keep (nanoseconds in an int64: 1678 to 2262) would fail the whole batch,
		// other plugins' records included: the time of receipt stands in for it.
		r.Time = time.Now().UTC()
	}
	select {
	case s.in <- entry{rec: r}:
	default:
		s.mu.Lock()
		s.dropped[r.PluginID]++
		s.mu.Unlock()
	}
}

// AddLine parses one line a plugin wrote to stdout or stderr (see parseLogLine) and queues
// it.
func (s *Sink) AddLine(pluginID, stream, line string, truncated bool) {
	rec := parseLogLine(pluginID, stream, line)
	if truncated {
		rec.Message += " …[truncated]"
	}
	s.Add(rec)
}

// Stored tells the sink of records another writer stored (in a transaction of its own), so
// that they reach Recent and the live tails.
func (s *Sink) Stored(recs []store.LogRecord) {
	s.remember(recs)
	s.fanout(recs)
}

// Recent returns a plugin's newest records, newest first.
func (s *Sink) Recent(pluginID string) []store.LogRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.recent[pluginID])
}

// Purge removes every log record of a plugin, the queued ones included: what was queued
// before the call is stored first and then deleted with the rest, in the writer's order, so
// no record of the plugin is stored after Purge returns. It forgets the plugin's secrets and
// recent records too.
func (s *Sink) Purge(ctx context.Context, pluginID string) error {
	done := make(chan error, 1)
	select {
	case s.in <- entry{purge: pluginID, done: done}:
	case <-s.stopped:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-s.stopped:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run stores queued records in batches until ctx ends, then stores what is still queued and
// returns. It must run once.
func (s *Sink) Run(ctx context.Context) {
	defer close(s.stopped)
	ticker := time.NewTicker(flushEvery)
	defer ticker.Stop()
	var batch []store.LogRecord
	take := func(e entry) {
		if e.done == nil {
			batch = append(batch, e.rec)
			if len(batch) >= batchSize {
				batch = s.flush(batch)
			}
			return
		}
		batch = s.flush(batch)
		e.done <- s.purge(e.purge)
	}
	for {
		select {
		case e := <-s.in:
			take(e)
		case <-ticker.C:
			batch = s.flush(batch)
		case <-ctx.Done():
			for {
				select {
				case e := <-s.in:
					take(e)
				default:
					s.flush(batch)
					return
				}
			}
		}
	}
}

// flush stores a batch (and a note of the lines dropped since the last one) and returns the
// emptied batch.
func (s *Sink) flush(batch []store.LogRecord) []store.LogRecord {
	s.mu.Lock()
	for id, n := range s.dropped {
		batch = append(batch, store.LogRecord{PluginID: id, Time: time.Now().UTC(), Level: "WARNING",
			Message: fmt.Sprintf("%d log lines dropped: the plugin logs faster than they can be stored", n)})
	}
	clear(s.dropped)
	s.mu.Unlock()
	if len(batch) == 0 {
		return batch
	}
	err := s.st.Write(context.Background(), func(tx store.Tx) error { return Append(tx, batch, s.keep) })
	if err != nil {
		s.log.Error("storing plugin logs failed", "error", err, "records", len(batch))
	} else {
		s.remember(batch)
	}
	s.fanout(batch)
	return batch[:0]
}

func (s *Sink) purge(pluginID string) error {
	err := s.st.Write(context.Background(), func(tx store.Tx) error { return tx.DeleteLogs(pluginID) })
	s.mu.Lock()
	delete(s.recent, pluginID)
	delete(s.redactors, pluginID)
	delete(s.secrets, pluginID)
	delete(s.tokens, pluginID)
	delete(s.dropped, pluginID)
	s.mu.Unlock()
	return err
}

// Append appends records in tx and trims each plugin's logs to keep records.
func Append(tx store.Tx, recs []store.LogRecord, keep int) error {
	if err := tx.AppendLogs(recs); err != nil {
		return err
	}
	trimmed := map[string]bool{}
	for _, r := range recs {
		if !trimmed[r.PluginID] {
			trimmed[r.PluginID] = true
			if err := tx.TrimLogs(r.PluginID, keep); err != nil {
				return err
			}
		}
	}
	return nil
}

// AppendIn appends records in another writer's transaction (see Append) and, when the
// transaction tells of its commit (registry.Tx's AfterCommit), passes them to Stored once it
// commits.
func (s *Sink) AppendIn(tx store.Tx, recs []store.LogRecord) error {
	if err := Append(tx, recs, s.keep); err != nil {
		return err
	}
	if c, ok := tx.(interface{ AfterCommit(func()) }); ok {
		c.AfterCommit(func() { s.Stored(recs) })
	}
	return nil
}

// remember keeps the newest records of each plugin, newest first.
func (s *Sink) remember(recs []store.LogRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		cur := append(s.recent[r.PluginID], r)
		sort.SliceStable(cur, func(i, j int) bool { return cur[i].Time.After(cur[j].Time) })
		if len(cur) > RecentKept {
			cur = cur[:RecentKept]
		}
		s.recent[r.PluginID] = cur
	}
}

func (s *Sink) fanout(recs []store.LogRecord) {
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
