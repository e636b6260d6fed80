package busmem

// ring is a double-ended queue over a circular buffer whose size is a power of two. It
// grows by doubling and shrinks by halving when a quarter full, so its memory follows its
// length. It is not synchronised.
type ring[T any] struct {
	buf  []T
	head int // index of the front element
	n    int // number of elements
}

// minRing is the smallest buffer a ring allocates and the size below which it never shrinks.
const minRing = 16

func (r *ring[T]) len() int { return r.n }

func (r *ring[T]) pushBack(v T) {
	if r.n == len(r.buf) {
		r.resize(max(minRing, 2*len(r.buf)))
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = v
	r.n++
}

func (r *ring[T]) pushFront(v T) {
	if r.n == len(r.buf) {
		r.resize(max(minRing, 2*len(r.buf)))
	}
	r.head = (r.head - 1) & (len(r.buf) - 1)
	r.buf[r.head] = v
	r.n++
}

// front returns the front element; the ring must not be empty.
func (r *ring[T]) front() T { return r.buf[r.head] }

// popFront removes and returns the front element; the ring must not be empty.
func (r *ring[T]) popFront() T {
	var zero T
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	if len(r.buf) > minRing && r.n <= len(r.buf)/4 {
		r.resize(len(r.buf) / 2)
	}
	return v
}

// at returns the i-th element from the front.
func (r *ring[T]) at(i int) T { return r.buf[(r.head+i)&(len(r.buf)-1)] }

// filter keeps, in order, the elements for which keep returns true.
func (r *ring[T]) filter(keep func(T) bool) {
	var zero T
	kept := 0
	for i := range r.n {
		v := r.at(i)
		if keep(v) {
			r.buf[(r.head+kept)&(len(r.buf)-1)] = v
			kept++
		}
	}
	for i := kept; i < r.n; i++ {
		r.buf[(r.head+i)&(len(r.buf)-1)] = zero
	}
	r.n = kept
	size := len(r.buf)
	for size > minRing && r.n <= size/4 {
		size /= 2
	}
	if size != len(r.buf) {
		r.resize(size)
	}
}

// reset empties the ring and frees its buffer.
func (r *ring[T]) reset() { *r = ring[T]{} }

// resize moves the elements to a new buffer of size elements, front first.
func (r *ring[T]) resize(size int) {
	buf := make([]T, size)
	if r.n > 0 {
		end := r.head + r.n
		if end <= len(r.buf) {
			copy(buf, r.buf[r.head:end])
		} else {
			k := copy(buf, r.buf[r.head:])
			copy(buf[k:], r.buf[:end-len(r.buf)])
		}
	}
	r.buf = buf
	r.head = 0
}

// timeoutHeap is a binary min-heap of in-flight entries by visibleAt. Each entry knows its
// index (hidx, -1 when not in the heap) so that Ack and Extend find it in O(1) and fix the
// heap in O(log n). It is not synchronised.
type timeoutHeap []*entry

func (h *timeoutHeap) push(e *entry) {
	e.hidx = len(*h)
	*h = append(*h, e)
	h.up(e.hidx)
}

// remove takes out the entry at index i.
func (h *timeoutHeap) remove(i int) {
	s := *h
	last := len(s) - 1
	e := s[i]
	if i != last {
		s.swap(i, last)
	}
	s[last] = nil
	*h = s[:last]
	e.hidx = -1
	if i != last {
		h.fix(i)
	}
}

// fix restores the heap after the entry at index i changed its visibleAt.
func (h *timeoutHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h timeoutHeap) less(i, j int) bool { return h[i].visibleAt.Before(h[j].visibleAt) }

func (h timeoutHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx = i
	h[j].hidx = j
}

func (h timeoutHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

// down moves the entry at i down and reports whether it moved.
func (h timeoutHeap) down(i int) bool {
	start := i
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			break
		}
		h.swap(i, m)
		i = m
	}
	return i > start
}
