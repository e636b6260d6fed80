package busmem

// Footprint reports what plugin's inbox holds, for tests of its memory bounds: entries in
// the ready queue (tombstones included) and the queue's capacity, in-flight entries,
// entries indexed by ID, remembered IDs and cancellations.
func (b *Bus) Footprint(plugin string) (ready, readyCap, inflight, byID, seen, cancels int) {
	ib := b.inbox(plugin, false)
	if ib == nil {
		return
	}
	ib.mu.Lock()
	defer ib.mu.Unlock()
	return ib.ready.len(), len(ib.ready.buf), len(ib.inflight), len(ib.byID), ib.seenOrder.len(), len(ib.cancels)
}
