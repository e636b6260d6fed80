package plugin

import (
	"container/list"
	"sync"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// seenState is what the dedupe knows of a delivery id.
type seenState int

const (
	seenNew seenState = iota
	seenInFlight
	seenDone
)

// outcome is how a delivery was settled, to settle its duplicates the same way.
type outcome struct {
	action pluginhostv1.AckAction
	reason string
}

// dedupe remembers the most recent delivery ids (a bounded LRU) and how each was settled.
// An id is remembered from the moment its handling begins; it is forgotten when the
// handler fails transiently, so that the host's redelivery is handled again.
type dedupe struct {
	max int
	// mu guards order and index.
	mu    sync.Mutex
	order *list.List // of *seenEntry, most recently used first
	index map[string]*list.Element
}

type seenEntry struct {
	key     string
	done    bool
	outcome outcome
}

func newDedupe(max int) *dedupe {
	return &dedupe{max: max, order: list.New(), index: map[string]*list.Element{}}
}

// begin records that key is being handled, unless it already is or was; then it says so,
// with the earlier outcome. The empty key is always new.
func (d *dedupe) begin(key string) (outcome, seenState) {
	if key == "" {
		return outcome{}, seenNew
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if el, ok := d.index[key]; ok {
		d.order.MoveToFront(el)
		e := el.Value.(*seenEntry)
		if e.done {
			return e.outcome, seenDone
		}
		return outcome{}, seenInFlight
	}
	d.index[key] = d.order.PushFront(&seenEntry{key: key})
	for d.order.Len() > d.max {
		oldest := d.order.Back()
		d.order.Remove(oldest)
		delete(d.index, oldest.Value.(*seenEntry).key)
	}
	return outcome{}, seenNew
}

// finish records how key was settled.
func (d *dedupe) finish(key string, o outcome) {
	if key == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if el, ok := d.index[key]; ok {
		e := el.Value.(*seenEntry)
		e.done, e.outcome = true, o
	}
}

// forget drops key, so that its next delivery is handled.
func (d *dedupe) forget(key string) {
	if key == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if el, ok := d.index[key]; ok {
		d.order.Remove(el)
		delete(d.index, key)
	}
}
