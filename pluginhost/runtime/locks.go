package runtime

import (
	"slices"
	"sync"
)

// lifecycleLocks serialise the lifecycle operations of each plugin: install, update,
// rollback, uninstall, enable, disable, restart and configuration and permission changes.
// They are the only locks held across slow work (a package download is done before; a
// plugin's stop, start and configuration push are done under the plugin's own lock), so a
// slow plugin holds up only operations on itself.
//
// Lock order: an operation that needs several plugins' locks takes them in one call, which
// takes them in id order. No other lock of the host is held while waiting for one.
type lifecycleLocks struct {
	mu    sync.Mutex // guards locks
	locks map[string]*lifecycleLock
}

type lifecycleLock struct {
	sync.Mutex
	refs int // holders and waiters; guarded by lifecycleLocks.mu
}

func newLifecycleLocks() *lifecycleLocks {
	return &lifecycleLocks{locks: map[string]*lifecycleLock{}}
}

// lock takes the locks of the given plugins (duplicates and empty ids are ignored) and
// returns the function that releases them.
func (l *lifecycleLocks) lock(ids ...string) (unlock func()) {
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	ids = slices.DeleteFunc(ids, func(id string) bool { return id == "" })
	held := make([]*lifecycleLock, 0, len(ids))
	for _, id := range ids {
		l.mu.Lock()
		e := l.locks[id]
		if e == nil {
			e = &lifecycleLock{}
			l.locks[id] = e
		}
		e.refs++
		l.mu.Unlock()
		e.Lock()
		held = append(held, e)
	}
	return func() {
		for i := len(held) - 1; i >= 0; i-- {
			e := held[i]
			e.Unlock()
			l.mu.Lock()
			if e.refs--; e.refs == 0 {
				delete(l.locks, ids[i])
			}
			l.mu.Unlock()
		}
	}
}
