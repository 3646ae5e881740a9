package journal

import "fmt"

// WriteInPlace writes w to the data file without a journal record: a
// resync target's region copy (docs/journal.md, "Writes in place"). It
// takes w.Seq (which must be above LastSeq) as its position: LastSeq()
// reports it, the region table marks w's regions with it, and later
// records must be above it. It is ordered with logged writes as Apply is,
// and ReadAt waits for it.
//
// Only a Checkpoint that follows it makes it count: Sync covers records
// only, a crash before the checkpoint may leave any part of it in the data
// file, and replay may write older records over it. A caller relies on it
// surviving a crash only after such a checkpoint (which also stops the
// replay of every older record), and Seals before it serves journal
// catch-up from below it (ReadRecords would pass over it).
func (j *Journal) WriteInPlace(w Write) error {
	l, err := j.LogInPlace(w)
	if err != nil {
		return err
	}
	return j.ApplyInPlace(l)
}

// LogInPlace is the first half of WriteInPlace: it takes w's position and
// orders w with the writes logged before and after it, and returns it for
// ApplyInPlace, which the caller may run on another goroutine. w.Data must
// stay valid and unchanged until ApplyInPlace returns. (Measured: a resync
// target writing two copies at once on this machine's one shared disk was
// no faster than one; docs/journal.md.)
func (j *Journal) LogInPlace(w Write) (Logged, error) {
	if err := checkWrite(&w); err != nil {
		return Logged{}, err
	}
	if w.Resize != 0 || w.Seq == 0 {
		return Logged{}, fmt.Errorf("%w: an in-place write carries data and a seq", ErrInvalidWrite)
	}
	if err := j.checkInside(&w); err != nil { // no record: any size MaxWriteSize allows
		return Logged{}, err
	}
	if err := j.failed(); err != nil {
		return Logged{}, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if last := j.highSeq(); w.Seq <= last {
		return Logged{}, fmt.Errorf("%w: in-place seq %d, last %d", ErrSeqOrder, w.Seq, last)
	}
	j.applyMu.Lock()
	ticket := j.nextTicket
	j.nextTicket++
	j.applying[ticket] = blockRange(&w)
	j.applyMu.Unlock()
	j.markRegions(&w)
	j.inPlaceSeq = w.Seq
	j.lastSeqA.Store(w.Seq)
	j.inPlace.Add(uint64(len(w.Data)) + uint64(w.ZeroLength))
	return Logged{Write: w, ticket: ticket}, nil
}

// ApplyInPlace writes l, from LogInPlace, to the data file (once every
// overlapping write logged before it landed, as Apply).
func (j *Journal) ApplyInPlace(l Logged) error {
	return j.applyLogged(l, true)
}

// highSeq is the position: the last record's seq or the checkpoint's, or
// an in-place write's above them. Caller holds mu.
func (j *Journal) highSeq() uint64 { return max(j.lastSeq, j.inPlaceSeq) }

// Seal checkpoints and starts the journal afresh at LastSeq: every older
// segment is freed, so ReadRecords serves nothing at or below the seal and
// a peer that needs older writes gets a region resync from the (now
// checkpointed) region table. A resync target seals when its copies are
// complete, because its in-place writes are in no record. The caller must
// not Append, WriteInPlace or ReadRecords concurrently.
func (j *Journal) Seal() error {
	if j.closing.Load() {
		return ErrClosed
	}
	return j.rewind(j.LastSeq(), 0, "sealed")
}
