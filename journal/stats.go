package journal

// Stats is a snapshot of the journal's counters.
type Stats struct {
	LastSeq          uint64 // highest appended seq
	DurableSeq       uint64 // every record <= DurableSeq survives a crash
	CheckpointSeq    uint64 // records <= CheckpointSeq are durable in the data file
	FirstRetainedSeq uint64 // ReadRecords can start anywhere >= this
	JournalBytes     int64  // bytes of all segment files
	Segments         int
	Writes           uint64 // records appended since Open
	Syncs            uint64 // journal fdatasync calls since Open
	Checkpoints      uint64 // completed checkpoints since Open
	InPlaceBytes     uint64 // bytes written without a record since Open (WriteInPlace)
	ExtentRecords    uint64 // large writes logged as extent records (data in place) since Open
	ChecksumErrors   uint64 // corrupt blocks ReadAt found since Open
	ActivityCommits  uint64 // activity log transactions since Open
	SegmentsReused   uint64 // segments made in a freed segment's file since Open
}

// Stats returns a snapshot of the journal's counters.
func (j *Journal) Stats() Stats {
	j.mu.Lock()
	st := Stats{
		LastSeq:          j.highSeq(),
		FirstRetainedSeq: j.segs[0].firstSeq,
		JournalBytes:     j.journalBytes,
		Segments:         len(j.segs),
	}
	j.mu.Unlock()
	st.DurableSeq = j.durable.Load()
	st.CheckpointSeq = j.ckptSeq.Load()
	st.Writes, st.Syncs, st.Checkpoints = j.writes.Load(), j.syncs.Load(), j.ckpts.Load()
	st.InPlaceBytes = j.inPlace.Load()
	st.ExtentRecords = j.extents.Load()
	st.SegmentsReused = j.reused.Load()
	st.ChecksumErrors = j.checksumErrors.Load()
	j.act.mu.Lock()
	st.ActivityCommits = j.act.commits
	j.act.mu.Unlock()
	return st
}
