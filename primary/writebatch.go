package primary

import (
	"fmt"
	"runtime"

	"github.com/grbd/grbd/internal/crc32c"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
)

// The primary's client writes are logged in batches. Concurrent writes
// queue; one of them, the leader, takes the queue, logs the whole batch
// into the journal with one system call, hands it to every live peer and to
// the replication core in sequence order under the write lock (mu), and
// passes the lead to the next queued write. Every write then applies its own
// data-file write outside the lock, concurrently with the others (the
// journal keeps overlapping writes in sequence order), and waits for the
// core. Under load the write lock is taken once per batch instead of once
// per write, and the data-file writes no longer queue behind it.

// maxBatchBytes bounds the payload one leader logs at once.
const maxBatchBytes = 4 << 20

// writeReq is one client write from the queue to its completion.
type writeReq struct {
	w journal.Write
	// sums are the CRC32C of each block of a large w.Data, for the peers'
	// wire frames (wire.Write.BlockSums), or nil.
	sums []byte
	fua  bool
	// owned holds w.Data when the client handed it over (WriteOwned).
	owned *sharedBuf
	// ready gets one value: false when the leader logged (or failed) the
	// write, true when this write must lead the next batch.
	ready chan bool

	// Set by the leader under mu.
	logged journal.Logged
	ec     *ecShards // the shard pieces of an erasure-coded write
	wt     *waiter
	done   chan struct{} // the inflight entry: closed once applied and released
	err    error
}

// Write journals w, ships it to every live peer and waits until the protocol
// lets it complete; with fua it then waits for a flush covering it. Mirror
// peers are shipped a pooled copy of w.Data: the caller may reuse it once
// Write returns.
func (p *Side) Write(w journal.Write, fua bool) error { return p.write(w, fua, nil) }

// WriteOwned is Write for data that lives in buf, a buffer from
// internal/bufpool that the caller hands over (w.Data is *buf): mirror peers
// are shipped buf itself instead of a copy, and buf goes back to the pool
// once the write completed and every link has sent or dropped it. The caller
// gives buf up also when WriteOwned fails.
func (p *Side) WriteOwned(w journal.Write, buf *[]byte, fua bool) error {
	owned := newSharedBufOf(buf)
	defer owned.release() // the client's reference
	return p.write(w, fua, owned)
}

// write is Write, with w.Data living in owned when that is not nil.
func (p *Side) write(w journal.Write, fua bool, owned *sharedBuf) error {
	if err := p.store.Validate(w); err != nil {
		return err
	}
	if parts := p.coding.split(w); parts != nil {
		for _, pt := range parts { // pieces of w.Data: shipped as copies
			if err := p.write(pt, fua, nil); err != nil {
				return err
			}
		}
		return nil
	}
	var sums []byte
	if n := len(w.Data); wire.BlockSummed(n) && p.fullCopies {
		// Once, here in the client's goroutine: every peer's frame CRC is
		// joined from them. Never reused: queued wire messages share them.
		sums = crc32c.Blocks(make([]byte, 0, 4*(n/crc32c.BlockSize)), w.Data)
	}
	if !p.cfg.DisconnectOnCongestion {
		for _, l := range p.links {
			l.waitUncongested()
		}
	}
	r := &writeReq{w: w, sums: sums, fua: fua, owned: owned, ready: make(chan bool, 1)}
	p.qmu.Lock()
	p.queue = append(p.queue, r)
	lead := !p.leading
	p.leading = true
	p.qmu.Unlock()
	if lead {
		// Let the writers that are runnable now (the rest of a client's
		// queue depth, read from its socket in one go) queue before the
		// batch is taken: without it a batch held 1.7 writes on average
		// under 4 KiB QD32, and each paid a journal pwrite and a leader
		// hand-off of its own (docs/benchmarks.md, "A leader that yields").
		runtime.Gosched()
		p.leadBatch()
	} else if <-r.ready {
		p.leadBatch()
	}
	return p.complete(r)
}

// complete applies a logged write to the data file, waits for the
// replication core to release it and, for FUA, for a flush covering it.
func (p *Side) complete(r *writeReq) error {
	if r.err != nil {
		return r.err
	}
	aerr := p.store.Apply(r.logged)
	if !plantedEarlyAck { // the fault suite's planted bug: see plantedbug_on.go
		<-r.wt.done
	}
	close(r.done)
	p.rmu.Lock()
	delete(p.inflight, r.logged.Seq)
	p.rmu.Unlock()
	switch {
	case aerr != nil:
		return aerr
	case r.wt.err != nil:
		return r.wt.err
	case r.fua:
		return p.Flush(r.logged.Seq)
	}
	return nil
}

// leadBatch logs the queued writes (the leader's own first), passes the
// lead on and releases the batch.
func (p *Side) leadBatch() {
	// A batch must fit the journal with room to spare (journal.Log refuses
	// one larger than it; the smallest valid journal is 4 MiB).
	limit := min(maxBatchBytes, int(p.cfg.JournalMaxSize)/4)
	p.qmu.Lock()
	n, bytes := 0, 0
	for n < len(p.queue) && (n == 0 || bytes+len(p.queue[n].w.Data) <= limit) {
		bytes += len(p.queue[n].w.Data)
		n++
	}
	batch := make([]*writeReq, n)
	copy(batch, p.queue)
	rest := copy(p.queue, p.queue[n:])
	clear(p.queue[rest:]) // no stale references to completed writes
	p.queue = p.queue[:rest]
	p.qmu.Unlock()

	p.mu.Lock()
	p.logBatch(batch)
	p.mu.Unlock()

	// The next leader logs while this batch applies. The lead passes only
	// after the batch is logged: a leader holds no unapplied write of its
	// own when it waits for journal space (journal.Log).
	p.qmu.Lock()
	if len(p.queue) > 0 {
		p.queue[0].ready <- true
	} else {
		p.leading = false
	}
	p.qmu.Unlock()
	for _, r := range batch[1:] { // batch[0] is the leader itself
		r.ready <- false
	}
}

// logBatch journals batch and hands it to the peers and the core. Caller
// holds mu.
func (p *Side) logBatch(batch []*writeReq) {
	if err := p.failed(); err != nil {
		for _, r := range batch {
			r.err = err
		}
		return
	}
	if err := p.coding.encode(p, batch); err != nil {
		for _, r := range batch {
			r.err = fmt.Errorf("node: erasure-code the write: %w", err)
		}
		return
	}
	ws := p.ws[:0]
	for _, r := range batch {
		ws = append(ws, r.w)
	}
	logged, err := p.store.Log(ws)
	if len(logged) > 0 {
		p.clientSeq = logged[len(logged)-1].Seq
	}
	clear(ws)
	p.ws = ws[:0]
	for i, r := range batch {
		if i >= len(logged) {
			r.err = err
			continue
		}
		l := logged[i]
		r.logged = l
		var msg wire.Message
		var shared *sharedBuf // msg's data, held until every link sent it
		for _, lk := range p.links {
			if !lk.live.Load() {
				continue
			}
			m, own := lk.layout.message(r, l)
			var buf *sharedBuf
			if !own {
				if msg == nil {
					msg, shared = shippedWrite(l.Write, r.sums, p.epoch, r.fua, r.owned)
				}
				m, buf = msg, shared
			}
			if m != nil {
				lk.enqueueLive(m, buf)
			}
		}
		shared.release()
		r.wt = p.submit(func(id replicator.ReqID) error { return p.core.Write(id, l.Seq) })
		r.done = make(chan struct{})
		p.rmu.Lock()
		p.inflight[l.Seq] = inflightWrite{off: l.Offset, end: l.Offset + int64(len(l.Data)) + l.ZeroLength, done: r.done}
		p.rmu.Unlock()
	}
}
