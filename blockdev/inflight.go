package blockdev

import "sync"

// budget bounds the requests of one connection between "header read" and
// "reply written": at most maxN of them, holding at most maxBytes of
// payload. A single request may exceed maxBytes alone (it then runs by
// itself), so a legal request can always make progress.
//
// Only the connection's reader acquires; workers and the writer release.
type budget struct {
	mu       sync.Mutex
	cond     sync.Cond
	n, maxN  int
	bytes    int64
	maxBytes int64
}

func (b *budget) init(maxN int, maxBytes int64) {
	b.cond.L = &b.mu
	b.maxN, b.maxBytes = maxN, maxBytes
}

// acquire blocks until a request with cost payload bytes fits.
func (b *budget) acquire(cost int64) {
	b.mu.Lock()
	for b.n >= b.maxN || (b.n > 0 && b.bytes+cost > b.maxBytes) {
		b.cond.Wait()
	}
	b.n++
	b.bytes += cost
	b.mu.Unlock()
}

// release returns what acquire(cost) took.
func (b *budget) release(cost int64) {
	b.mu.Lock()
	b.n--
	b.bytes -= cost
	b.mu.Unlock()
	b.cond.Signal() // the reader is the only possible waiter
}

// epoch is a run of write requests (WRITE, TRIM, WRITE_ZEROES) received
// between two FLUSHes on one connection.
type epoch struct {
	pending int           // writes of this epoch not yet completed
	sealed  bool          // a FLUSH ended this epoch
	done    chan struct{} // closed once this and every earlier epoch has pending == 0
	next    *epoch
}

// flushTracker orders FLUSH after the writes received before it.
//
// The spec only requires a FLUSH to cover writes already replied to; we are
// more conservative and cover every write received before the FLUSH, while a
// write received after it never delays it (no starvation under a steady
// write stream).
//
// Invariant: epochs form a list oldest → … → cur in wire order; every epoch
// before cur is sealed; an epoch's done is closed only after all earlier
// epochs' are.
type flushTracker struct {
	mu     sync.Mutex
	oldest *epoch
	cur    *epoch
}

func (t *flushTracker) init() {
	t.cur = &epoch{done: make(chan struct{})}
	t.oldest = t.cur
}

// begin registers a write received now and returns its epoch. Reader only.
func (t *flushTracker) begin() *epoch {
	t.mu.Lock()
	e := t.cur
	e.pending++
	t.mu.Unlock()
	return e
}

// end marks a write of epoch e completed.
func (t *flushTracker) end(e *epoch) {
	t.mu.Lock()
	e.pending--
	t.advance()
	t.mu.Unlock()
}

// seal is called for a FLUSH received now. It returns the channel to wait
// on before flushing the device, or nil if no earlier write is pending.
// Reader only.
func (t *flushTracker) seal() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.cur
	if plantFlushBug || (t.oldest == e && e.pending == 0) {
		return nil // nothing in flight: reuse the epoch, no allocation
	}
	e.sealed = true
	t.cur = &epoch{done: make(chan struct{})}
	e.next = t.cur
	t.advance()
	return e.done
}

// advance closes done for the completed prefix of sealed epochs.
func (t *flushTracker) advance() {
	for t.oldest != t.cur && t.oldest.sealed && t.oldest.pending == 0 {
		close(t.oldest.done)
		t.oldest = t.oldest.next
	}
}
