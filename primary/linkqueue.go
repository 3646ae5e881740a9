package primary

import (
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
)

// A link's send queue: live writes, catch-up records and resync chunks wait
// here for the link's sender, which writes them to the data stream in
// order. The queue counts its bytes: catch-up and resync wait for room
// (queueLimit), live writes for a congested peer (on-congestion: block).

// queued is a message waiting to be sent, with the pooled buffer its data
// lives in (nil: the message owns its bytes).
type queued struct {
	m   wire.Message
	buf *sharedBuf
}

// enqueue adds m to the send queue without waiting.
func (l *link) enqueue(m wire.Message) { l.enqueueShared(m, nil) }

// enqueueShared adds m, whose data lives in buf (or nil), to the send queue
// without waiting; the queue holds buf until m is sent or dropped.
func (l *link) enqueueShared(m wire.Message, buf *sharedBuf) {
	l.qmu.Lock()
	if !l.closed {
		buf.hold()
		l.q = append(l.q, queued{m, buf})
		l.qbytes += msgBytes(m)
		if s := seqOf(m); s > l.sentSeq.Load() {
			l.sentSeq.Store(s)
		}
	}
	l.qmu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// dropQueueLocked empties the queue (the session ended) and sets closed.
// Caller holds qmu.
func (l *link) dropQueueLocked(closed bool) {
	for _, q := range l.q {
		q.buf.release()
	}
	l.q, l.qbytes, l.closed = nil, 0, closed
}

// enqueueLive queues a live write, whose data lives in buf (or nil). With
// on-congestion: disconnect a congested peer stops being live and its
// session is ended; it comes back through catch-up. With block, Write
// waited for the queue (waitUncongested) before the write was logged.
// Caller holds mu.
func (l *link) enqueueLive(m wire.Message, buf *sharedBuf) {
	congested := false
	if l.p.cfg.DisconnectOnCongestion {
		l.qmu.Lock()
		congested = l.qbytes > int(l.p.cfg.CongestionFill)
		l.qmu.Unlock()
	}
	if !congested {
		l.enqueueShared(m, buf)
		return
	}
	l.live.Store(false)
	l.log.Warn("peer congested: disconnecting it, it will catch up", "queued_bytes", l.p.cfg.CongestionFill)
	l.kickSession()
}

// enqueueRecord queues a journal record for catch-up once the queue has
// room; false when the session ended. The record's data is copied (the
// journal reuses its read buffer) into a pooled buffer, as a live write's:
// a fresh 1 MiB allocation per record cost catch-up its page faults and
// garbage collection.
func (l *link) enqueueRecord(w journal.Write) bool {
	if !l.waitRoom() {
		return false
	}
	m, buf := shippedWrite(w, nil, l.p.epoch, false, nil)
	l.enqueueShared(m, buf)
	buf.release() // the queue holds its own reference
	return true
}

// waitRoom waits until the queue is below queueLimit; false when the session
// ended.
func (l *link) waitRoom() bool { return l.waitBelow(queueLimit) }

// waitBelow waits until at most limit bytes are queued; false when the
// session ended.
func (l *link) waitBelow(limit int) bool {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	for l.qbytes > limit && !l.closed {
		l.qcond.Wait()
	}
	return !l.closed
}

// waitUncongested holds a new write while this live peer is more than the
// congestion fill behind (on-congestion: block), as DRBD's sender blocks
// the writer when its buffer is full: the peer sets the pace instead of
// being cut off and resynced again and again under a sustained load. It returns
// once the sender drained the queue below the limit, or the session ended
// (a peer that stops acknowledging is cut off within the peer timeout by
// the watchdog, which ends the wait).
func (l *link) waitUncongested() {
	if l.live.Load() {
		l.waitBelow(int(l.p.cfg.CongestionFill))
	}
}

// seqOf is the journal sequence a message carries (0 for none).
func seqOf(m wire.Message) uint64 {
	switch m := m.(type) {
	case *wire.Write:
		return m.Seq
	case *wire.Zero:
		return m.Seq
	case *wire.ResyncData:
		return m.AsOf
	case *wire.ResyncDone:
		return m.AsOf
	case *wire.Resize:
		return m.Seq
	}
	return 0
}

func msgBytes(m wire.Message) int {
	switch m := m.(type) {
	case *wire.Write:
		return 64 + len(m.Data)
	case *wire.ResyncData:
		return 64 + len(m.Data)
	}
	return 64
}

// send writes queued messages, flushing the socket only when the queue is
// empty so bursts share one write.
func (l *link) send(w *wire.Writer, done <-chan struct{}) error {
	for {
		select {
		case <-done:
			return nil
		case <-l.wake:
		}
		for {
			l.qmu.Lock()
			batch := l.q
			l.q = nil
			l.qmu.Unlock()
			if len(batch) == 0 {
				break
			}
			// qbytes counts until a message is handed to the stream: the
			// batch held here is part of what the peer is behind by.
			sent := 0
			for _, q := range batch {
				if err := w.WriteMsg(q.m); err != nil {
					return err // what is left of batch is never sent: the GC takes its buffers
				}
				q.buf.release() // WriteMsg does not retain the message
				sent += msgBytes(q.m)
			}
			l.qmu.Lock()
			l.qbytes -= sent
			l.qcond.Broadcast()
			l.qmu.Unlock()
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}
