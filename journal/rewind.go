package journal

import (
	"fmt"
	"path/filepath"

	"github.com/grbd/grbd/internal/extent"
)

// Rewind moves the journal's position back to seq: afterwards LastSeq() is
// seq and the next Append may use any seq above it. A diverged secondary
// uses it to take the primary's history after their last common point
// (docs/quorum.md, "Data generations").
//
// The data file keeps what the discarded records wrote: Rewind returns the
// regions they touched (ChangedSince(seq) before the rewind) for the caller
// to persist and resync; in the region table their marks drop to seq.
// Rewind checkpoints first, so a discarded record is never replayed; after a
// crash the store is either at its old position or at seq. The caller must
// not Append, Sync or ReadRecords concurrently.
func (j *Journal) Rewind(seq uint64) ([]extent.Extent, error) {
	if j.closing.Load() {
		return nil, ErrClosed
	}
	if seq >= j.LastSeq() {
		return nil, nil
	}
	changed := j.ChangedSince(seq)
	err := j.rewind(seq, 0, "rewound")
	if err != nil {
		return nil, err
	}
	return changed, nil
}

// rewind restarts the journal at seq; size, when not 0, is the device's
// size from then on (ShrinkTo).
func (j *Journal) rewind(seq uint64, size int64, what string) error {
	if err := j.checkpoint(); err != nil {
		return err
	}
	j.ckMu.Lock()
	defer j.ckMu.Unlock()
	if j.ckClosed {
		return ErrClosed
	}
	// Hold off Sync (the background write-behind may call it any time):
	// a leader that snapshot the old LastSeq must not publish it as
	// DurableSeq after the rewind lowered the position.
	defer j.holdSyncs()()
	j.mu.Lock()
	// A gap in the numbering marks every older segment stale for replay
	// (they hold only checkpointed records): after a crash before the meta
	// below is written, Open replays the empty new segment over the old
	// checkpoint, so the position is the old one.
	num := j.segs[len(j.segs)-1].num + 2
	j.mu.Unlock()
	seg, err := j.createSegment(num, seq+1)
	if err != nil {
		return err
	}
	if err := j.fdatasync(seg); err != nil {
		_ = seg.f.Close()
		return err
	}
	j.mu.Lock()
	shrunk := size > 0 && size < j.devSize.Load()
	if shrunk {
		j.shrinkLocked(size)
	}
	regions := make([]uint64, len(j.regions))
	for r, s := range j.regions {
		regions[r] = min(s, seq)
	}
	b := encodeMeta(nil, &meta{deviceSize: j.devSize.Load(), regionSize: j.regionSize, checkpointSeq: seq, salt: j.salt, regions: regions})
	j.mu.Unlock()
	if sticky, err := j.writeMeta(b); err != nil {
		// A shrunk store is smaller in memory already: fail it rather
		// than undo that.
		if sticky || shrunk {
			return j.fail(err)
		}
		_ = seg.f.Close()
		_ = j.fs.Remove(filepath.Join(j.jdir, segName(num)))
		return err
	}
	j.restartAt(seg, seq, regions)
	if shrunk {
		// After the meta: a crash before this leaves a larger data file,
		// which Open cuts (trimData).
		if err := j.data.Truncate(size); err != nil {
			return j.fail(fmt.Errorf("journal: cut data file to %d bytes: %w", size, err))
		}
		if err := j.data.Sync(); err != nil {
			return j.fail(fmt.Errorf("journal: sync data file: %w", err))
		}
	}
	j.log.Info("journal: "+what, "to_seq", seq, "segment", num)
	return nil
}

// holdSyncs waits for the running Sync and keeps others out until the
// returned release is called.
func (j *Journal) holdSyncs() (release func()) {
	j.smu.Lock()
	for j.syncing {
		j.syncCond.Wait()
	}
	j.syncing = true
	j.smu.Unlock()
	return func() {
		j.smu.Lock()
		j.syncing = false
		j.syncCond.Broadcast()
		j.smu.Unlock()
	}
}

// restartAt makes seg, durable and named by the meta file already, the
// journal's only segment at position seq with the region table regions,
// and removes the older segments (once no reader holds them).
func (j *Journal) restartAt(seg *segment, seq uint64, regions []uint64) {
	j.mu.Lock()
	old := j.segs
	j.segs, j.journalBytes = []*segment{seg}, seg.size
	j.regions = regions
	j.lastSeq, j.inPlaceSeq = seq, 0
	j.lastSeqA.Store(seq)
	j.ckptSeq.Store(seq)
	for _, s := range old {
		s.freed = true
		if s.refs == 0 {
			_ = s.f.Close()
		}
	}
	j.spaceCond.Broadcast()
	j.mu.Unlock()
	j.smu.Lock()
	j.durable.Store(seq)
	j.smu.Unlock()
	seg.synced.Store(seg.size)
	for _, s := range old {
		if err := j.fs.Remove(filepath.Join(j.jdir, segName(s.num))); err != nil {
			j.log.Warn("journal: remove rewound segment", "segment", s.num, "err", err)
		}
	}
	if err := j.fs.SyncDir(j.jdir); err != nil {
		j.log.Warn("journal: sync dir after rewind", "err", err)
	}
}

// String names the store for messages.
func (j *Journal) String() string { return fmt.Sprintf("journal %s", j.dir) }
