package journal

import (
	"fmt"
)

// Sync returns when every record <= seq is durable (seq above LastSeq means
// LastSeq). Concurrent callers share fdatasyncs: one caller at a time leads
// and syncs everything appended so far; the others wait for it and return
// when it covered them, else one of them leads the next round.
func (j *Journal) Sync(seq uint64) error {
	j.smu.Lock()
	defer j.smu.Unlock()
	for {
		if err := j.failed(); err != nil {
			return err
		}
		// Again each round: a Rewind meanwhile lowers LastSeq, and records
		// above it no longer exist.
		seq = min(seq, j.lastSeqA.Load())
		if j.durable.Load() >= seq {
			return nil
		}
		if j.syncClosed {
			return ErrClosed
		}
		if j.syncing {
			j.syncCond.Wait()
			continue
		}
		j.syncing = true
		j.smu.Unlock()
		target, err := j.syncActive()
		j.smu.Lock()
		j.syncing = false
		if err == nil && target > j.durable.Load() {
			j.durable.Store(target)
		}
		j.syncCond.Broadcast()
		if err != nil {
			return err
		}
	}
}

// syncActive makes every record appended so far durable and returns the
// last one's seq: first the segments rotated out since the last leader,
// oldest first (trimmed to their records, then synced), then the active one.
// Only the Sync leader runs it.
func (j *Journal) syncActive() (uint64, error) {
	j.mu.Lock()
	rotated := j.rotated
	j.rotated = nil
	seg := j.segs[len(j.segs)-1]
	seg.refs++
	target, end := j.highSeq(), seg.size
	ext, ticket := j.extentSeq, j.nextTicket
	j.mu.Unlock()
	defer j.release(seg)
	// An extent record is durable only with its data: data.img first.
	if err := j.syncExtents(ext, ticket); err != nil {
		return 0, err
	}
	for i, s := range rotated {
		if err := j.syncRotated(s); err != nil {
			for _, r := range rotated[i+1:] {
				j.release(r)
			}
			return 0, err
		}
	}
	if err := j.fdatasync(seg); err != nil {
		return 0, err
	}
	if end > seg.synced.Load() {
		seg.synced.Store(end)
		j.writeMark(seg, end)
	}
	return target, nil
}

// syncRotated syncs a rotated-out segment (a version-1 one trimmed to its
// records first), then drops the reference rotate took. Also when a
// checkpoint freed it meanwhile: until its removal is durable it may come back after a crash,
// and it must not come back torn next to a newer segment that was synced.
func (j *Journal) syncRotated(s *segment) error {
	defer j.release(s)
	j.mu.Lock()
	size := s.size
	j.mu.Unlock()
	// A version-2 segment stays whole, to be reused: replay ends its
	// records where the next segment's first seq says (docs/journal.md).
	if s.version == segVersion1 {
		if err := s.f.Truncate(size); err != nil {
			return j.fail(fmt.Errorf("journal: trim segment %d: %w", s.num, err))
		}
	}
	if err := j.fdatasync(s); err != nil {
		return err
	}
	s.synced.Store(size)
	return nil
}

// release drops a reference taken under mu, closing a freed segment's file
// when it was the last.
func (j *Journal) release(s *segment) {
	j.mu.Lock()
	defer j.mu.Unlock()
	s.refs--
	if s.freed && s.refs == 0 {
		_ = s.f.Close()
	}
}

// Checkpoint makes the data file durable up to LastSeq, records that in the
// meta file, and frees the journal segments wholly at or below the
// checkpoint and the Retain floor. It holds the append lock only to snapshot
// the region table and to update the segment list, never across an
// fdatasync.
func (j *Journal) Checkpoint() error {
	if j.closing.Load() {
		return ErrClosed
	}
	return j.checkpoint()
}

func (j *Journal) checkpoint() error {
	j.ckMu.Lock()
	defer j.ckMu.Unlock()
	if j.ckClosed {
		return ErrClosed
	}
	if err := j.failed(); err != nil {
		return err
	}
	// Before the applies are waited for: an in-place write activated
	// before this count waits for a later save (activate's pin).
	save := j.sumf.started.Add(1)
	j.mu.Lock()
	ck, appended, extentBytes := j.highSeq(), j.appended, j.extentBytes
	j.metaBuf = encodeMeta(j.metaBuf[:0], &meta{
		deviceSize: j.devSize.Load(), regionSize: j.regionSize, checkpointSeq: ck, salt: j.salt, regions: j.regions,
	})
	j.mu.Unlock()

	err := j.persistCheckpoint(ck, save)
	if err != nil {
		j.mu.Lock()
		j.ckptFails++
		j.ckptErr = err
		j.spaceCond.Broadcast()
		j.mu.Unlock()
		return err
	}

	j.freeCheckpointed(ck, appended, extentBytes)
	return nil
}

// persistCheckpoint makes everything up to ck durable outside the journal:
// the records, the data file, the block checksums (the save numbered save)
// and last the meta file that says ck. Any failure it returns has failed
// the journal where the failure is sticky.
func (j *Journal) persistCheckpoint(ck, save uint64) error {
	// The journal must hold every record up to ck durably before the meta
	// says ck: otherwise a crash could lose records ck-k..ck from the journal
	// while they are skipped as checkpointed, and ReadRecords would silently
	// jump over them.
	err := j.Sync(ck)
	// Every record <= ck reached the data file before it is synced (the
	// caller's snapshot took them all; later ones may land too, harmlessly).
	// A write that failed meanwhile failed the journal: claim nothing.
	j.waitApplied()
	if err == nil {
		err = j.failed()
	}
	if err == nil {
		if serr := j.data.Sync(); serr != nil {
			err = j.fail(fmt.Errorf("journal: sync data file: %w", serr))
		}
	}
	// The checksums of the blocks these records wrote, before the meta
	// file lets replay forget the records.
	if err == nil {
		if serr := j.saveSums(); serr != nil {
			err = j.fail(serr)
		} else {
			j.sumf.done.Store(save)
		}
	}
	if err == nil {
		var sticky bool
		if sticky, err = j.writeMeta(j.metaBuf); sticky {
			err = j.fail(err)
		}
	}
	return err
}

// freeCheckpointed records a completed checkpoint at ck (appended and
// extentBytes were the counters at its snapshot) and frees the segments it
// covers.
func (j *Journal) freeCheckpointed(ck uint64, appended, extentBytes int64) {
	j.mu.Lock()
	j.ckptSeq.Store(ck)
	j.ckptAppended, j.ckptExtentBytes = appended, extentBytes
	free := j.freeable(ck)
	reusable := make([]bool, len(free))
	for i, s := range free {
		j.journalBytes -= s.size
		s.freed = true
		if s.refs == 0 {
			_ = s.f.Close()
			// Nobody reads or syncs it any more: its file may be reused,
			// unless it is version 1, whose records carry the journal's
			// own salt (segfile.go: only version-2 files are reused).
			reusable[i] = s.version == segVersion2
		}
	}
	j.segs = j.segs[len(free):]
	live := len(j.segs)
	j.spaceCond.Broadcast()
	j.mu.Unlock()
	j.advanceDurable(ck)
	j.ckpts.Add(1)

	j.retire(free, reusable, live)
}

// freeable returns, with mu held, the oldest segments that a checkpoint at
// ck lets go: never the active one, only those whose records are all <= ck,
// and only those <= the Retain floor unless the journal is above MaxSize/2
// or a writer waits for space (MaxSize wins over Retain).
func (j *Journal) freeable(ck uint64) []*segment {
	bytes, n := j.journalBytes, 0
	for _, s := range j.segs[:len(j.segs)-1] {
		if s.lastSeq > ck {
			break
		}
		if s.lastSeq > j.retain && j.waiters == 0 && bytes <= j.maxSize/2 {
			break
		}
		bytes -= s.size
		n++
	}
	return j.segs[:n:n]
}
