package journal

// Drop gives up a logged write without writing it to the data file: reads
// and checkpoints stop waiting for it, and the block checksums are left as
// they are (the data file keeps its old bytes there). The record stays in
// the journal, so the data file and the journal disagree until the caller
// rewinds below the dropped record (Rewind checkpoints first and then
// forgets every record above its target): Drop is for a shard peer
// settling its journal at a committed position (docs/erasure.md,
// "Failover"), and for a resync target's in-place copy (LogInPlace) queued
// behind one that failed: it has no record, its disk is Inconsistent, and
// no resync progress names it. The caller must not Apply l afterwards, and must persist
// that its data file may lack dropped records before it drops any, in case
// it crashes before the rewind (a checkpoint in between would record them
// as applied).
func (j *Journal) Drop(l Logged) {
	if l.Resize > 0 {
		return // never waited for
	}
	j.applyMu.Lock()
	delete(j.applying, l.ticket)
	j.applyCond.Broadcast()
	j.applyMu.Unlock()
}
