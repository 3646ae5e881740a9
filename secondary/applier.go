package secondary

import (
	"cmp"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/peerwire"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
)

// applier is one session's pipeline. The reader goroutine decodes the
// primary's messages; consecutive writes that arrive together (already
// buffered from the network) are copied into one arena and journaled as one
// batch (one pwrite, journal.Log), then applied to the data file in order.
// Whenever nothing more is buffered it sends one cumulative ack for the
// burst, and every ackInterval within a burst that goes on (a resync).
// Other messages apply one by one, after the writes before them. Flushes
// sync in goroutines of their own and answer through the same writer.
type applier struct {
	s     *Side
	epoch uint64 // of the session's primary

	pending []journal.Write // writes read, not yet journaled
	arena   []byte          // their data (messages point into the Reader)

	wmu         sync.Mutex // guards w, out, sentJournal, sentHeld
	w           *wire.Writer
	out         []wire.Message
	sentJournal uint64
	sentHeld    uint64 // the highest journaled seq acked as Received only

	// holdJournal: this disk is Inconsistent (a resync runs) until the
	// primary's ResyncDone. Its journaled acks go out as Received (they
	// still show the session alive) so that the primary counts this node,
	// and the control plane Clears it, only once it is Consistent: a
	// Journaled ack of the last copy came before the ResyncDone behind it,
	// and a promotion in between found the node Inconsistent.
	holdJournal atomic.Bool

	syncs sync.WaitGroup

	// Resync progress (resume.go): the primary's disk, the progress this
	// node reported (until the primary's answer), and the ranges copied
	// in this session (with those the answer kept), bytes since the last
	// save.
	source   uint64
	offered  *offer
	tracking bool
	copied   []extent.Extent
	copiedN  uint64
	lastSave time.Time
	inPlace  bool // a copy was written in place in this session
	saves    sync.WaitGroup
	saving   atomic.Bool // a background progress save runs (saveInBackground)
	saveErr  atomic.Pointer[error]

	copies *copier // writes in-place copies behind the reader (nil until the first)
}

func (a *applier) reply(m wire.Message) {
	a.wmu.Lock()
	a.out = append(a.out, m)
	a.wmu.Unlock()
}

// Bounds of one batch of writes on a secondary.
const (
	maxApplyBatch = 256
	maxApplyBytes = 4 << 20
)

// run reads, applies and acknowledges until the stream ends or a message
// is refused.
func (a *applier) run(r *wire.Reader) error {
	lastOut := time.Now()
	defer a.stopCopies()
	for {
		m, err := r.ReadMsg()
		if err != nil {
			// Intact frames before the break are still worth journaling.
			_ = a.drainCopies()
			_ = a.applyPending()
			return err
		}
		if !a.copiesInPlace(m) {
			// Nothing overtakes a copy on its way to the disk.
			if err := a.drainCopies(); err != nil {
				_ = a.flushOut()
				return err
			}
		}
		if w, ok := a.batchable(m); ok {
			more := r.Buffered() > 0 && len(a.pending)+1 < maxApplyBatch && len(a.arena)+len(w.Data) < maxApplyBytes
			if more || a.keepsLogged() {
				// Copied: the next read overwrites the Reader's buffers.
				a.queue(w)
			} else {
				// A mirror applies the batch before the next read: its last
				// write goes from the Reader's buffers as it is (a 1 MiB
				// write usually arrives alone, and was copied for nothing).
				a.pending = append(a.pending, w)
			}
			if more {
				continue
			}
			err = a.applyPending()
		} else if err = a.applyPending(); err == nil {
			err = a.applyOne(m)
		}
		if err != nil {
			_ = a.flushOut()
			return err
		}
		// Acknowledge when the burst is over, and at least every
		// ackInterval within one: a resync keeps the stream full while
		// this disk is the slower side, and without acks the primary
		// takes this peer for dead (peer-timeout) and drops the session.
		if r.Buffered() == 0 || time.Since(lastOut) >= ackInterval {
			if err := a.flushOut(); err != nil {
				return err
			}
			lastOut = time.Now()
		}
	}
}

// ackInterval bounds the wait of an ack behind a burst that never ends
// (a resync): far below any peer-timeout (at least the tick, 100 ms).
const ackInterval = 20 * time.Millisecond

// holdsJournal says whether an Inconsistent disk holds back its Journaled
// acks until ResyncDone (holdJournal): a mirror does; an erasure-coded store
// keeps acking as before (its stripe commits count shard acks).
func (a *applier) holdsJournal() bool { return !a.s.cfg.ErasureCoded && !a.s.Consistent() }

// keepsLogged says whether this node holds on to logged writes' data after
// the journal write: a shard peer keeps it until the primary commits.
func (a *applier) keepsLogged() bool { return a.s.node.ShardApplier() != nil }

// batchable returns m as a journal write if it is a client write (or
// zeroing) of a primary that is not deposed.
func (a *applier) batchable(m wire.Message) (journal.Write, bool) {
	w, ok := peerwire.ClientWrite(m)
	if !ok {
		return w, false
	}
	if known := a.s.epoch.Load(); w.Epoch < known && w.Epoch != 0 {
		return w, false // applyOne refuses it
	}
	return w, true
}

// queue keeps w for the next batch, its data copied out of the Reader (the
// next read overwrites it).
func (a *applier) queue(w journal.Write) {
	w.Data = a.keep(w.Data)
	a.pending = append(a.pending, w)
}

// keep copies b into the arena; nil stays nil.
func (a *applier) keep(b []byte) []byte {
	if len(b) == 0 {
		return b
	}
	off := len(a.arena)
	a.arena = append(a.arena, b...)
	return a.arena[off:len(a.arena):len(a.arena)]
}

// appendOneByOne journals and applies the queued writes one at a time,
// after the journal refused them as a batch (say one write out of order):
// the writes before the bad one are journaled and acknowledged as they
// would have been alone.
func (a *applier) appendOneByOne(sa *ShardApply) error {
	if sa != nil {
		// Append applies at once: nothing may wait before it.
		if err := sa.ApplyAll(); err != nil {
			return a.nack(a.pending[0].Seq, err)
		}
	}
	for _, w := range a.pending {
		if _, err := a.s.store.Append(w); err != nil {
			return a.nack(w.Seq, err)
		}
		if sa != nil {
			sa.Appended(w.Seq)
		}
		a.s.journaled.Store(w.Seq)
	}
	return nil
}

// applyPending journals the queued writes as one batch and applies them.
func (a *applier) applyPending() error {
	if len(a.pending) == 0 {
		return nil
	}
	s := a.s
	defer func() {
		clear(a.pending)
		a.pending, a.arena = a.pending[:0], a.arena[:0]
	}()
	if s.cfg.Protocol == replicator.ProtocolB {
		// Protocol B completes a write once every peer has it in memory:
		// say so before the journal write.
		if err := a.ackReceived(a.pending[len(a.pending)-1].Seq); err != nil {
			return err
		}
	}
	sa := s.node.ShardApplier()
	if sa != nil {
		sa.BeginLog()
	}
	logged, err := s.store.Log(a.pending)
	if sa != nil {
		sa.EndLog()
	}
	if err != nil && len(logged) == 0 {
		return a.appendOneByOne(sa)
	}
	// Journaled is what the ack promises: send it before the data-file
	// writes, which replay would redo and which reads here wait for
	// (journal.ReadAt). Every logged write is applied whatever happens.
	// An extent record holds no data: its write is journaled only once
	// applied, so the ack of it and of what follows waits for that.
	acked := len(logged)
	for i, l := range logged {
		if l.Extent {
			acked = i
			break
		}
	}
	if acked > 0 {
		s.journaled.Store(logged[acked-1].Seq)
	}
	ackErr := a.flushOut()
	if sa != nil && len(logged) > 0 {
		// A shard peer applies them once committed (shardapply.go); their
		// data stays in this arena, which the next batch must not reuse.
		sa.Add(logged)
		logged = nil
		a.arena = nil
	}
	for _, l := range logged {
		if aerr := s.store.Apply(l); aerr != nil {
			return a.nack(l.Seq, aerr)
		}
	}
	if acked < len(logged) {
		s.journaled.Store(logged[len(logged)-1].Seq)
		ackErr = cmp.Or(ackErr, a.flushOut())
	}
	switch {
	case err != nil:
		return a.nack(a.pending[len(logged)].Seq, err)
	case ackErr != nil:
		return ackErr
	}
	return nil
}

// applyOne applies one message from the primary.
func (a *applier) applyOne(m wire.Message) error {
	s := a.s
	w, ok := peerwire.JournalWrite(m, a.epoch)
	if !ok {
		return a.applyControl(m)
	}
	switch m := m.(type) {
	case *wire.ResyncData:
		if err := s.markInconsistent(); err != nil {
			return a.nack(m.AsOf, err)
		}
		a.holdJournal.Store(a.holdsJournal())
	case *wire.Resize:
		if m.Flags&wire.ResizeResync != 0 {
			if err := s.markInconsistent(); err != nil {
				return a.nack(m.Seq, err)
			}
			a.holdJournal.Store(a.holdsJournal())
		}
	}
	if known := s.epoch.Load(); w.Epoch < known && w.Epoch != 0 {
		// A deposed primary: refuse, and end the session so that it can
		// complete nothing more through this node.
		a.reply(&wire.Nack{Seq: w.Seq, Code: wire.NackStaleEpoch, Reason: fmt.Sprintf("epoch %d < %d", w.Epoch, known)})
		return fmt.Errorf("%w: write of epoch %d, newest known %d", peerwire.ErrHandshake, w.Epoch, known)
	}
	return a.appendWrite(m, w)
}

// applyControl handles the primary's messages that carry no write.
func (a *applier) applyControl(m wire.Message) error {
	s := a.s
	switch m := m.(type) {
	case *wire.Commit:
		sa := s.node.ShardApplier()
		if sa == nil {
			return fmt.Errorf("%w: Commit on a full copy", peerwire.ErrHandshake)
		}
		sa.SetCommit(m.Seq)
		return nil
	case *wire.ResyncProgress:
		if err := a.resumed(m); err != nil {
			return a.nack(0, err)
		}
		return nil
	case *wire.ResyncDone:
		a.copied, a.tracking, a.copiedN = nil, false, 0
		if err := a.waitSaved(); err != nil {
			return a.nack(m.AsOf, err)
		}
		if err := s.markConsistent(); err != nil {
			return a.nack(m.AsOf, err)
		}
		a.holdJournal.Store(false)
		s.caughtUp.Store(true)
		return nil
	case *wire.Flush:
		id, seq := m.ID, m.Seq
		a.syncs.Go(func() {
			ack := &wire.FlushAck{ID: id, Seq: seq}
			if err := s.store.Sync(seq); err != nil {
				_ = s.node.CheckDisk("flush", err)
				ack.Err = uint32(syscall.EIO)
			}
			a.reply(ack)
			_ = a.flushOut()
		})
		return nil
	default:
		return fmt.Errorf("%w: unexpected %v from primary", peerwire.ErrHandshake, m.Type())
	}
}

// appendWrite journals w, the write m carries (a shard peer applies what
// it holds first), or writes a full copy's region copy in place, and
// records a resync copy's range.
func (a *applier) appendWrite(m wire.Message, w journal.Write) error {
	s := a.s
	before := s.store.Size()
	sa := s.node.ShardApplier()
	if sa != nil {
		// Append applies at once: nothing may wait before it.
		if err := sa.ApplyAll(); err != nil {
			return a.nack(w.Seq, err)
		}
	}
	rd, copying := m.(*wire.ResyncData)
	if a.copiesInPlace(m) {
		// A full copy is Inconsistent until ResyncDone: its region copies
		// need no record (docs/journal.md, "Writes in place"). The copier
		// applies it and counts it (journaled, copied range).
		if a.copies == nil {
			// Set once, before the copier's goroutine (which reads it)
			// and any background save starts: see saveInBackground.
			a.inPlace = true
			a.copies = newCopier(a)
		}
		return a.copies.submit(w)
	}
	if w.Resize > 0 && w.Resize < before && sa == nil && !s.cfg.ErasureCoded {
		if err := a.takeSmallerSize(w); err != nil {
			return a.nack(w.Seq, err)
		}
	}
	if _, err := s.store.Append(w); err != nil {
		return a.nack(w.Seq, err)
	}
	if sa != nil {
		sa.Appended(w.Seq)
	}
	s.journaled.Store(w.Seq)
	if copying {
		if err := a.copiedRange(rd.Offset, uint64(len(rd.Data))); err != nil {
			return a.nack(w.Seq, err)
		}
	}
	if w.Resize > before {
		s.node.Grown(fmt.Sprintf("applied the primary's grow at seq %d", w.Seq))
	}
	return nil
}

// takeSmallerSize cuts this full copy to the size in the primary's resize
// record w, below its own. The bytes past it hold no acknowledged write: a
// grow that was acknowledged is on every node the control plane lets be
// primary, this one included. So this node grew by a record nobody
// acknowledged (it was primary, journaled its grow and was killed before
// its peers had it; the rewind of that record keeps the size), or it was
// created from a larger device.size than the cluster's. Without this it
// refused the primary's record at every reconnect and never caught up.
func (a *applier) takeSmallerSize(w journal.Write) error {
	s := a.s
	if err := a.drainCopies(); err != nil {
		return err
	}
	was := s.store.Size()
	if err := s.store.ShrinkTo(w.Resize); err != nil {
		return err
	}
	s.node.Shrunk(fmt.Sprintf("took the primary's size at seq %d: %d bytes, was %d (the bytes past it came from no acknowledged write)", w.Seq, w.Resize, was))
	return nil
}

// copiesInPlace says whether m is a region copy this node writes in place,
// behind the reader (copier): a full copy's.
func (a *applier) copiesInPlace(m wire.Message) bool {
	_, copying := m.(*wire.ResyncData)
	return copying && a.s.node.ShardApplier() == nil && !a.s.cfg.ErasureCoded
}

// drainCopies waits for the in-place copies queued so far.
func (a *applier) drainCopies() error {
	if a.copies == nil {
		return nil
	}
	return a.copies.drain()
}

// stopCopies ends the copier once its copies are applied.
func (a *applier) stopCopies() {
	if a.copies != nil {
		_ = a.copies.stop()
		a.copies = nil
	}
}

func (a *applier) nack(seq uint64, err error) error {
	code := wire.NackIO
	switch {
	case errors.Is(err, journal.ErrSeqOrder):
		code = wire.NackSeqOrder
	case errors.Is(err, journal.ErrOutOfRange), errors.Is(err, journal.ErrShrink):
		code = wire.NackOutOfRange
	}
	reason := err.Error()
	err = a.s.node.CheckDisk("apply the primary's write", err)
	a.s.log.Error("cannot apply primary's write", "seq", seq, "err", err)
	a.reply(wire.NewNack(seq, code, reason))
	return fmt.Errorf("secondary: apply seq %d: %w", seq, err)
}

// ackReceived sends a cumulative Received ack for seq at once.
func (a *applier) ackReceived(seq uint64) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	if err := a.w.WriteMsg(&wire.Ack{Seq: seq, Level: wire.AckReceived}); err != nil {
		return err
	}
	return a.w.Flush()
}

// flushOut sends the cumulative ack (received and journaled: a message is
// acknowledged once applied) and the queued replies, in one socket write.
func (a *applier) flushOut() error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	switch j := a.s.journaled.Load(); {
	case j <= a.sentJournal:
	case a.holdJournal.Load():
		if j > a.sentHeld {
			if err := a.w.WriteMsg(&wire.Ack{Seq: j, Level: wire.AckReceived}); err != nil {
				return err
			}
			a.sentHeld = j
		}
	default:
		if err := a.w.WriteMsg(&wire.Ack{Seq: j, Level: wire.AckJournaled}); err != nil {
			return err
		}
		a.sentJournal = j
	}
	for _, m := range a.out {
		if err := a.w.WriteMsg(m); err != nil {
			return err
		}
	}
	a.out = a.out[:0]
	return a.w.Flush()
}
