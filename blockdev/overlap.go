package blockdev

import "sync"

// rangeOrder keeps overlapping requests of one connection in wire order
// (Options.OrderOverlapping): a request that overlaps an earlier one still
// in flight, where at least one of the two writes, runs only after the
// earlier one completed. Reads overlapping reads never wait.
//
// NBD itself gives no order between requests in flight; a device that may
// execute a request twice (grbd proxy re-sends unanswered requests to a new
// primary after a failover) needs this so that a re-sent write cannot land
// after a later overlapping one the client sent.
//
// Only the reader adds; workers end. Invariant: every entry in live was added
// before every entry after it in the slice (wire order), so a request only
// ever waits for earlier ones and there is no cycle.
type rangeOrder struct {
	mu   sync.Mutex
	live []*rangeEntry
}

// rangeEntry is one request in flight on the tracked connection.
type rangeEntry struct {
	off, end int64
	write    bool
	done     chan struct{} // closed by end
}

// add registers a request for [off, off+n) received now and returns its
// entry and the entries it must wait for.
func (o *rangeOrder) add(off, n int64, write bool) (*rangeEntry, []*rangeEntry) {
	e := &rangeEntry{off: off, end: off + n, write: write, done: make(chan struct{})}
	o.mu.Lock()
	defer o.mu.Unlock()
	var before []*rangeEntry
	for _, p := range o.live {
		if (p.write || write) && p.off < e.end && e.off < p.end {
			before = append(before, p)
		}
	}
	o.live = append(o.live, e)
	return e, before
}

// end marks e completed and wakes the requests waiting for it.
func (o *rangeOrder) end(e *rangeEntry) {
	o.mu.Lock()
	for i, p := range o.live {
		if p == e {
			o.live = append(o.live[:i], o.live[i+1:]...)
			break
		}
	}
	o.mu.Unlock()
	close(e.done)
}

// wait blocks until every entry of before completed.
func waitEntries(before []*rangeEntry) {
	for _, p := range before {
		<-p.done
	}
}
