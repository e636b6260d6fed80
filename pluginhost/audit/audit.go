// Package audit writes the audit log off the request path: a state-changing call queues
// its entry and returns, and one writer stores the queued entries in batches, one store
// write per batch. Nothing queued is lost on a clean shutdown (Run stores what is queued
// before it returns); a crash loses the entries queued since the last batch, at most
// FlushEvery of calls. A full queue makes callers wait (the log stays complete), and an
// entry queued before Run starts or after it ended is written at once.
package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// FlushEvery bounds how long a queued entry waits for its batch; BatchSize bounds a batch.
const (
	FlushEvery = 50 * time.Millisecond
	BatchSize  = 256
	queueSize  = 4096
)

// Writer queues audit entries and stores them in batches. It is safe for concurrent use.
type Writer struct {
	st  store.Store
	log *slog.Logger
	in  chan store.AuditEntry

	mu      sync.RWMutex // held for reading while queueing; for writing to change running
	running bool
}

// New returns a Writer storing into st. Entries are queued once Run runs.
func New(st store.Store, log *slog.Logger) *Writer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Writer{st: st, log: log, in: make(chan store.AuditEntry, queueSize)}
}

// Add records e: an ID and a time are given when missing, then it is queued (waiting while
// the queue is full, until ctx ends) or, when no Run is storing, written at once.
func (w *Writer) Add(ctx context.Context, e store.AuditEntry) error {
	if e.ID == "" {
		e.ID = NewID()
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	w.mu.RLock()
	if w.running {
		select {
		case w.in <- e:
			w.mu.RUnlock()
			return nil
		case <-ctx.Done():
			w.mu.RUnlock()
			return ctx.Err()
		}
	}
	w.mu.RUnlock()
	return w.st.Write(ctx, func(tx store.Tx) error { return tx.AppendAudit(e) })
}

// Run stores queued entries in batches until ctx ends, then stores what is still queued
// and returns. It must run once at a time.
func (w *Writer) Run(ctx context.Context) {
	w.mu.Lock()
	w.running = true
	w.mu.Unlock()
	ticker := time.NewTicker(FlushEvery)
	defer ticker.Stop()
	batch := make([]store.AuditEntry, 0, BatchSize)
	for {
		select {
		case e := <-w.in:
			if batch = append(batch, e); len(batch) >= BatchSize {
				batch = w.flush(batch)
			}
		case <-ticker.C:
			batch = w.flush(batch)
		case <-ctx.Done():
			// No entry is queued once running is false: Add writes them itself. Callers
			// queueing now hold the read lock, maybe waiting for room: drain while waiting.
			for !w.mu.TryLock() {
				select {
				case e := <-w.in:
					batch = append(batch, e)
				case <-time.After(time.Millisecond):
				}
			}
			w.running = false
			w.mu.Unlock()
			for {
				select {
				case e := <-w.in:
					batch = append(batch, e)
				default:
					w.flush(batch)
					return
				}
			}
		}
	}
}

// flush stores a batch in one write and returns it emptied. A batch the store refuses is
// kept for the next flush, up to a bound past which the oldest entries are logged and let go.
func (w *Writer) flush(batch []store.AuditEntry) []store.AuditEntry {
	if len(batch) == 0 {
		return batch
	}
	err := w.st.Write(context.Background(), func(tx store.Tx) error {
		for _, e := range batch {
			if err := tx.AppendAudit(e); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		return batch[:0]
	}
	w.log.Error("audit log write failed; retrying", "entries", len(batch), "error", err)
	if over := len(batch) - queueSize; over > 0 {
		for _, e := range batch[:over] {
			w.log.Error("audit entry not stored", "id", e.ID, "action", e.Action, "actor", e.Actor, "target", e.Target, "outcome", e.Outcome)
		}
		batch = append(batch[:0], batch[over:]...)
	}
	return batch
}

// NewID returns a new audit entry id.
func NewID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails on supported platforms
	return "aud_" + hex.EncodeToString(b)
}
