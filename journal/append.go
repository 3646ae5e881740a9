package journal

import (
	"errors"
	"fmt"
	"io"

	"github.com/grbd/grbd/internal/vfs"
)

// punchAlign is the granularity at which write-zeroes records deallocate the
// data file; the unaligned edges are written as zeros.
const punchAlign = 4096

var zeros [64 << 10]byte

// Append journals w and applies it to the data file. With w.Seq == 0 the
// record gets LastSeq()+1; otherwise w.Seq must be above LastSeq (gaps are
// allowed) or ErrSeqOrder is returned. When Append returns, a ReadAt sees
// the write; it is durable after Sync(seq). Append blocks while the journal
// is at MaxSize until a checkpoint frees space. It does not retain w.Data.
func (j *Journal) Append(w Write) (uint64, error) {
	if err := checkWrite(&w); err != nil {
		return 0, err
	}
	if w.Resize > 0 {
		return j.appendResize(w)
	}
	// The size only grows, so a write inside it stays inside.
	if end, size := w.Offset+int64(len(w.Data))+w.ZeroLength, j.devSize.Load(); end > size {
		return 0, fmt.Errorf("%w: write [%d,%d) beyond device size %d", ErrOutOfRange, w.Offset, end, size)
	}
	n := recordLen(&w)
	if n > j.maxSize-2*segHeaderSize {
		return 0, fmt.Errorf("%w: %d byte record, journal MaxSize %d", ErrTooLarge, n, j.maxSize)
	}
	j.mu.Lock()
	seq, ticket, err := j.appendLocked(&w, n)
	j.mu.Unlock()
	if err != nil {
		return 0, err
	}
	// Apply to the data file outside the append lock, in ticket (= append)
	// order: the next record's journal write overlaps this data write, and
	// overlapping writes still land in sequence order.
	j.waitTurn(ticket)
	err = j.apply(&w)
	j.endTurn(ticket)
	if err != nil {
		// The record is in the journal: the journal and the data file
		// disagree until a replay, so stop here.
		return 0, j.fail(fmt.Errorf("journal: apply seq %d: %w", seq, err))
	}
	return seq, nil
}

// appendLocked writes w's record to the journal and returns its seq and its
// apply ticket. Caller holds mu.
func (j *Journal) appendLocked(w *Write, n int64) (uint64, uint64, error) {
	if err := j.reserve(n); err != nil {
		return 0, 0, err
	}
	switch {
	case w.Seq == 0:
		w.Seq = j.lastSeq + 1
	case w.Seq <= j.lastSeq:
		return 0, 0, fmt.Errorf("%w: seq %d, last %d", ErrSeqOrder, w.Seq, j.lastSeq)
	}
	if j.hooks.beforeWrite != nil {
		j.hooks.beforeWrite(*w)
	}
	seg := j.segs[len(j.segs)-1]
	buf, err := EncodeRecord(j.buf[:0], Record{Write: *w, Salt: j.salt, Synced: seg.synced.Load()})
	if err != nil {
		return 0, 0, err
	}
	if cap(buf) <= 4<<20 {
		j.buf = buf // keep the scratch buffer unless a huge write grew it
	}
	// A failed journal write changes nothing: the next record overwrites
	// whatever part of it reached the file.
	if _, err := seg.f.WriteAt(buf, seg.size); err != nil {
		return 0, 0, fmt.Errorf("journal: write segment %d: %w", seg.num, err)
	}
	seg.size += n
	seg.lastSeq = w.Seq
	j.journalBytes += n
	j.appended += n
	j.lastSeq = w.Seq
	j.lastSeqA.Store(w.Seq)
	j.writes.Add(1)
	j.markRegions(w)
	if j.appended-j.ckptAppended > j.maxSize/4 {
		j.requestCheckpoint()
	}
	ticket := j.nextTicket
	j.nextTicket++
	return w.Seq, ticket, nil
}

// waitTurn returns when every apply with a lower ticket has finished. The
// turn may be past ticket already when waitApplied asks: appends that came
// after it read the ticket counter may have finished meanwhile.
func (j *Journal) waitTurn(ticket uint64) {
	j.applyMu.Lock()
	if j.applyTurn >= ticket {
		j.applyMu.Unlock()
		return
	}
	ch := make(chan struct{})
	j.turnWaiters[ticket] = append(j.turnWaiters[ticket], ch)
	j.applyMu.Unlock()
	<-ch
}

// endTurn passes the turn to the next ticket.
func (j *Journal) endTurn(ticket uint64) {
	j.applyMu.Lock()
	j.applyTurn = ticket + 1
	chs := j.turnWaiters[ticket+1]
	delete(j.turnWaiters, ticket+1)
	j.applyMu.Unlock()
	for _, ch := range chs {
		close(ch)
	}
}

// waitApplied returns when every record appended so far is in the data
// file (checkpoints sync the data file only after that).
func (j *Journal) waitApplied() {
	j.mu.Lock()
	end := j.nextTicket
	j.mu.Unlock()
	j.waitTurn(end)
}

// reserve waits, with mu held, until a record of n bytes fits in the journal,
// rotating segments as needed.
func (j *Journal) reserve(n int64) error {
	for {
		if j.closed {
			return ErrClosed
		}
		if err := j.failed(); err != nil {
			return err
		}
		active := j.segs[len(j.segs)-1]
		rotate := !active.empty() && active.size+n > j.segSize
		need := n
		if rotate {
			need += segHeaderSize
		}
		if j.journalBytes+need <= j.maxSize {
			if rotate {
				return j.rotate()
			}
			return nil
		}
		// Full. A checkpoint frees every segment but the active one, so
		// close the active one first if it holds records (the limits on
		// record size in Append guarantee there is room for a header).
		if !active.empty() && j.journalBytes+segHeaderSize <= j.maxSize {
			if err := j.rotate(); err != nil {
				return err
			}
			continue
		}
		j.requestCheckpoint()
		fails := j.ckptFails
		j.waiters++
		j.spaceCond.Wait()
		j.waiters--
		if j.ckptFails != fails {
			return fmt.Errorf("journal: full and checkpoint failed: %w", j.ckptErr)
		}
	}
}

// rotate, with mu held, makes the active segment durable and starts a new
// one. Syncing first keeps the replay rule simple: every segment but the
// last is whole on disk, so damage there is corruption, not a torn tail.
func (j *Journal) rotate() error {
	old := j.segs[len(j.segs)-1]
	if err := j.fdatasync(old); err != nil {
		return err
	}
	old.synced.Store(old.size)
	j.advanceDurable(old.lastSeq)
	seg, err := j.createSegment(old.num+1, j.lastSeq+1)
	if err != nil {
		return err
	}
	j.segs = append(j.segs, seg)
	j.journalBytes += seg.size
	return nil
}

// advanceDurable raises DurableSeq to seq.
func (j *Journal) advanceDurable(seq uint64) {
	j.smu.Lock()
	if seq > j.durable.Load() {
		j.durable.Store(seq)
	}
	j.smu.Unlock()
}

// apply writes w to the data file. Called in ticket order (or during Open).
func (j *Journal) apply(w *Write) error {
	if w.ZeroLength == 0 {
		_, err := j.data.WriteAt(w.Data, w.Offset)
		return err
	}
	off, end := w.Offset, w.Offset+w.ZeroLength
	if j.punch != nil {
		lo := (off + punchAlign - 1) &^ (punchAlign - 1)
		hi := end &^ (punchAlign - 1)
		if lo < hi {
			err := j.punch.PunchHole(lo, hi-lo)
			switch {
			case err == nil:
				if err := j.writeZeros(off, lo); err != nil {
					return err
				}
				return j.writeZeros(hi, end)
			case errors.Is(err, vfs.ErrNotSupported):
				j.log.Info("journal: data file cannot punch holes, writing zeros", "err", err)
				j.punch = nil
			default:
				return err
			}
		}
	}
	return j.writeZeros(off, end)
}

func (j *Journal) writeZeros(off, end int64) error {
	for off < end {
		n := min(end-off, int64(len(zeros)))
		if _, err := j.data.WriteAt(zeros[:n], off); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// markRegions records w as the last write of the regions it touches.
func (j *Journal) markRegions(w *Write) {
	if w.Resize > 0 {
		return // touches no data: the grown regions start unwritten
	}
	length := int64(len(w.Data)) + w.ZeroLength
	for r := w.Offset / j.regionSize; r <= (w.Offset+length-1)/j.regionSize; r++ {
		j.regions[r] = w.Seq
	}
}

// ReadAt reads len(p) bytes of the device at off. It sees every completed
// Append.
func (j *Journal) ReadAt(p []byte, off int64) error {
	if size := j.devSize.Load(); off < 0 || off > size || int64(len(p)) > size-off {
		return fmt.Errorf("%w: read [%d,+%d) of %d", ErrOutOfRange, off, len(p), size)
	}
	j.life.RLock()
	defer j.life.RUnlock()
	if j.lifeClosed {
		return ErrClosed
	}
	n, err := j.data.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("journal: read data file at %d: %w", off, err)
}
