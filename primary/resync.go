package primary

// Region resync of a peer (docs/replication.md, "Catching up"): the regions
// changed since the peer's position, copied under the write lock so that
// each copy is ordered with live writes.

import (
	"fmt"
	"time"

	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
)

// resync copies every region changed after from, and the extra regions the
// peer asked for, each read under the write lock and journaled as a fresh
// record so that it is ordered with live writes on the data stream
// (docs/replication.md, "Region resync"). With prog (the peer's report of
// an interrupted resync) it first answers the report and leaves out what it
// trusts of it ("Resuming a resync").
func (l *link) resync(from uint64, extra []extent.Extent, prog *wire.ResyncProgress) error {
	p := l.p
	l.disk.Store(DiskInconsistent)
	p.mu.Lock()
	extents, total := l.planResyncLocked(from, extra, prog)
	if err := l.announceSize(wire.ResizeResync); err != nil {
		p.mu.Unlock()
		return err
	}
	rate := p.cfg.ResyncRate
	start := time.Now()
	held := true // p.mu is held from the plan until the first chunk went out
	for _, e := range extents {
		for off, end := int64(e.Offset), int64(e.End()); off < end; {
			if !held {
				p.mu.Lock()
			}
			held = false
			n := min(resyncChunk, end-off)
			copied, err := l.layout.sendChunkLocked(off, n)
			if err != nil {
				return err
			}
			if !copied {
				continue // repaired: copy it again
			}
			off += n
			if !l.waitRoom() {
				return nil
			}
			if rate > 0 && l.layout.paced() {
				// replication.resync-rate: never ahead of done/rate.
				if ahead := time.Duration(l.resyncDone.Load()*int64(time.Second)/rate) - time.Since(start); ahead > 0 {
					time.Sleep(ahead)
				}
			}
		}
	}
	if !held {
		p.mu.Lock()
	}
	l.startLiveLocked(p.store.LastSeq())
	p.mu.Unlock()
	p.node.Event(events.Event{Type: events.TypeResync, Peer: l.name, State: events.StateDone, Bytes: total,
		Detail: fmt.Sprintf("copied %d bytes in %v", total, time.Since(start).Round(time.Millisecond))})
	return nil
}

// planResyncLocked says which extents the resync copies (what changed since
// from, the extra ones, less what a resumed resync keeps) and starts the
// resync's counters and event. Caller holds p.mu: no write comes between
// the changes read here and the first copy, after which the peer is live.
func (l *link) planResyncLocked(from uint64, extra []extent.Extent, prog *wire.ResyncProgress) ([]extent.Extent, int64) {
	p := l.p
	extents := extent.Merge(append(p.store.ChangedSince(from), extra...))
	extents = l.layout.resyncExtents(extents)
	l.resyncKept.Store(0)
	if prog != nil {
		extents = l.resume(from, extents, prog)
	}
	total := int64(extent.Bytes(extents))
	l.resyncTotal.Store(total)
	l.resyncDone.Store(0)
	l.resyncStart.Store(time.Now().UnixNano())
	l.log.Info("region resync", "from", from, "extents", len(extents), "extra", len(extra), "bytes", total)
	p.node.Event(events.Event{Type: events.TypeResync, Peer: l.name, State: events.StateStarted, Bytes: total,
		Cause: resyncCause(from, extra, p.store.Size()), Detail: fmt.Sprintf("%d bytes in %d regions", total, len(extents))})
	return extents, total
}

// resume judges the peer's progress report (replicator.ResumeSource.Check),
// queues the answer and returns what is left to copy of target: the ranges
// not reported copied and every region written after the report's
// position. An untrusted report changes nothing: the whole target is
// copied. Caller holds mu.
func (l *link) resume(from uint64, target []extent.Extent, prog *wire.ResyncProgress) []extent.Extent {
	p := l.p
	rp := replicator.ResyncProgress{AsOf: prog.AsOf, Epoch: prog.Epoch, Source: prog.Source, Copied: prog.Copied}
	src := replicator.ResumeSource{Disk: p.store.ID(), LastSeq: p.store.LastSeq(), Size: uint64(p.store.Size()), History: p.node.History()}
	answer := &wire.ResyncProgress{Source: src.Disk}
	if err := src.Check(rp, from); err != nil {
		l.log.Warn("resync progress not trusted: copying everything", "err", err, "reported_bytes", extent.Bytes(rp.Copied))
		l.enqueue(answer)
		return target
	}
	cp, kept := replicator.Resume(target, rp.Copied, p.store.ChangedSince(rp.AsOf))
	answer.AsOf, answer.Epoch, answer.Copied = rp.AsOf, rp.Epoch, kept
	l.enqueue(answer)
	before, copying := extent.Bytes(target), extent.Bytes(cp)
	l.resyncKept.Store(int64(before - min(before, copying)))
	l.log.Info("resuming an interrupted resync", "as_of", rp.AsOf, "reported_bytes", extent.Bytes(rp.Copied),
		"kept_bytes", extent.Bytes(kept), "copy_bytes", copying)
	return cp
}

// resyncCause explains why a peer needs a region resync.
func resyncCause(from uint64, extra []extent.Extent, size int64) string {
	if len(extra) == 1 && extra[0].Offset == 0 && extra[0].Length >= uint64(size) {
		return "a new or invalidated peer: every region is copied"
	}
	if len(extra) > 0 {
		return fmt.Sprintf("the peer is Inconsistent: its own unfinished or divergent regions plus the primary's changes since seq %d", from)
	}
	return fmt.Sprintf("the journal no longer holds the writes the peer missed since seq %d", from)
}

// resyncHead is how much of a resync chunk the primary journals again.
const resyncHead = 4096

// resyncSeq journals head, the first bytes of a resync chunk at off as
// they are now (read under the write lock), and returns the record's
// sequence: the chunk's AsOf, ordered with live writes on the data stream.
// Only the head: rewriting the primary's own bytes changes nothing there,
// and the record exists for its sequence, so journaling the whole chunk
// (as before issue 17) wrote every resync byte twice more on the primary.
// Catch-up from the journal after it is unchanged: the record holds what
// the primary held at its sequence. Caller holds p.mu.
func (p *Side) resyncSeq(off int64, head []byte) (uint64, error) {
	return p.store.Append(journal.Write{Epoch: p.epoch, Offset: off, Data: head})
}
