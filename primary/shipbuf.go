package primary

import (
	"sync/atomic"

	"github.com/grbd/grbd/internal/bufpool"
	"github.com/grbd/grbd/internal/peerwire"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
)

// sharedBuf is a pooled buffer holding a client write's bytes, shipped to
// every mirror peer in one message. It is the client's own buffer when the
// client handed it over (WriteOwned: blockdev's payload buffer, which then
// outlives the NBD request), or else a pooled copy: a caller of Write
// reuses its buffer once the write completes, and by then a peer that is no
// longer counted (or any peer, with protocol A or B) may not have been sent
// it. A fresh copy per write cost its page faults every time (21% of the
// primary's CPU under 1 MiB writes); a pooled one is warm; the handed-over
// buffer costs no copy at all (8% of the primary's CPU under 1 MiB writes
// on 2 data nodes).
//
// Its references: the maker's until it has queued the message (and the
// client's until its write completed, for a handed-over buffer), and one
// per link queue that holds the message, released once the message is
// written to the stream (wire.Writer does not retain it) or dropped with
// the queue. The last release returns the buffer to the pool. A reference
// that is never released (a send that failed mid-batch) only leaves the
// buffer to the garbage collector.
type sharedBuf struct {
	refs atomic.Int32
	buf  *[]byte
}

// shippedWrite is the message that ships the logged write w to mirror
// peers (with sums, the CRC32C of its blocks, or nil: peerwire.ShippedWrite),
// and the buffer its data lives in (nil for a zeroing or resize): owned
// when w.Data lives there, else a pooled copy. The caller holds one
// reference to it.
func shippedWrite(w journal.Write, sums []byte, epoch uint64, fua bool, owned *sharedBuf) (wire.Message, *sharedBuf) {
	switch {
	case len(w.Data) == 0:
		return peerwire.WireWrite(w, epoch, fua), nil
	case owned != nil:
		owned.hold()
		return peerwire.ShippedWrite(w, sums, epoch, fua), owned
	}
	s := newSharedBuf(len(w.Data))
	copy(*s.buf, w.Data)
	w.Data = *s.buf
	return peerwire.ShippedWrite(w, sums, epoch, fua), s
}

// newSharedBuf is a pooled buffer of n bytes, its contents undefined. The
// caller holds one reference.
func newSharedBuf(n int) *sharedBuf { return newSharedBufOf(bufpool.Get(n)) }

// newSharedBufOf shares buf, a buffer from internal/bufpool. The caller
// holds one reference.
func newSharedBufOf(buf *[]byte) *sharedBuf {
	s := &sharedBuf{buf: buf}
	s.refs.Store(1)
	return s
}

// hold takes a reference; a nil buffer has none.
func (s *sharedBuf) hold() {
	if s != nil {
		s.refs.Add(1)
	}
}

// release drops a reference; the last returns the buffer to the pool.
func (s *sharedBuf) release() {
	if s == nil {
		return
	}
	switch n := s.refs.Add(-1); {
	case n == 0:
		bufpool.Put(s.buf)
	case n < 0:
		panic("primary: a shipped write's buffer released once too often")
	}
}
