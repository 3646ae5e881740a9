package journal

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/grbd/grbd/internal/vfs"
)

// punchAlign is the granularity at which write-zeroes records deallocate the
// data file; the unaligned edges are written as zeros.
const punchAlign = 4096

var zeros [64 << 10]byte

// Logged is a write whose record is in the journal, with its sequence
// number (a crash replays it), but whose data-file write is still to come:
// Apply does it. Until then ReadAt of an overlapping range waits, so a
// logged write is never half visible. Write.Data must stay valid and
// unchanged until Apply returns.
type Logged struct {
	Write
	// Extent: the record holds no data (an extent record, "Large writes
	// in place"), so until Apply returns a crash loses the write. A
	// replica acknowledges it only after Apply.
	Extent bool
	ticket uint64
	sums   []byte // an extent record's block IDs (little-endian), for the checksum table
}

// Append journals w and applies it to the data file. With w.Seq == 0 the
// record gets LastSeq()+1; otherwise w.Seq must be above LastSeq (gaps are
// allowed) or ErrSeqOrder is returned. When Append returns, a ReadAt sees
// the write; it is durable after Sync(seq). Append blocks while the journal
// is at MaxSize until a checkpoint frees space. It does not retain w.Data.
func (j *Journal) Append(w Write) (uint64, error) {
	if err := j.Validate(w); err != nil {
		return 0, err
	}
	if w.Resize > 0 {
		l, err := j.logResize(w)
		return l.Seq, err
	}
	var out [1]Logged
	logged, err := j.logWrites([]Write{w}, out[:0])
	if err != nil {
		return 0, err
	}
	return logged[0].Seq, j.Apply(logged[0])
}

// Validate reports whether w is a write this journal can take: well formed,
// inside the device, and small enough for one record.
func (j *Journal) Validate(w Write) error {
	if err := checkWrite(&w); err != nil {
		return err
	}
	if w.Resize > 0 {
		return nil // Append checks it against the size under the lock
	}
	if err := j.checkInside(&w); err != nil {
		return err
	}
	if n := recordLen(&w); n > j.maxSize-2*segHeaderSize {
		return fmt.Errorf("%w: %d byte record, journal MaxSize %d", ErrTooLarge, n, j.maxSize)
	}
	return nil
}

// checkInside refuses a write that ends beyond the device. The size only
// grows, so a write inside it stays inside.
func (j *Journal) checkInside(w *Write) error {
	if end, size := w.Offset+int64(len(w.Data))+w.ZeroLength, j.devSize.Load(); end > size {
		return fmt.Errorf("%w: write [%d,%d) beyond device size %d", ErrOutOfRange, w.Offset, end, size)
	}
	return nil
}

// Log journals ws, in order, with as few system calls as the segments
// allow (one for a batch inside one segment), and returns them logged but
// not applied: the caller must Apply each, from any goroutine and in any
// order (overlapping writes still land in sequence order). Every write must
// pass Validate. With an error, the writes logged before it are returned
// too and must be applied; the others were not journaled. Log waits for
// journal space before it writes anything, for checkpoints that wait for
// earlier logged writes to be applied: a goroutine must Apply what it
// logged before it calls Log again.
func (j *Journal) Log(ws []Write) ([]Logged, error) {
	if len(ws) == 1 && ws[0].Resize != 0 {
		if err := checkWrite(&ws[0]); err != nil {
			return nil, err
		}
		l, err := j.logResize(ws[0])
		if err != nil {
			return nil, err
		}
		return []Logged{l}, nil
	}
	for i := range ws {
		if ws[i].Resize != 0 {
			return nil, fmt.Errorf("%w: a resize is logged on its own", ErrInvalidWrite)
		}
		if err := j.Validate(ws[i]); err != nil {
			return nil, err
		}
	}
	return j.logWrites(ws, make([]Logged, 0, len(ws)))
}

// Apply writes a logged write to the data file once every earlier logged
// write that overlaps it has landed. So one goroutine applying several of
// its own logged writes must apply them in log order; any order is fine
// when each has a goroutine of its own.
func (j *Journal) Apply(l Logged) error { return j.applyLogged(l, false) }

// applyLogged is Apply, and with inPlace ApplyInPlace. (A flag, not a
// func value: a method value passed here cost an allocation per write.)
func (j *Journal) applyLogged(l Logged, inPlace bool) error {
	if l.Resize > 0 {
		return nil // logging it grew the device already
	}
	off, end := l.Offset, l.Offset+int64(len(l.Data))+l.ZeroLength
	// The activity log first: a crash must find every data.img byte that
	// no durable record explains inside a logged extent.
	err := j.activate(l.Seq, off, end, inPlace)
	j.applyMu.Lock()
	for j.overlapsBefore(l.ticket, off, end) {
		j.applyCond.Wait()
	}
	j.applyMu.Unlock()
	if err == nil {
		err = j.applyAs(&l.Write, inPlace, l.sums)
	}
	if err != nil && !errors.Is(err, ErrFailed) {
		// The record is in the journal: the journal and the data file
		// disagree until a replay, so stop here. Failed before the ticket
		// goes: a checkpoint waiting for it must see the failure.
		err = j.fail(fmt.Errorf("journal: apply seq %d: %w", l.Seq, err))
	}
	j.applyMu.Lock()
	delete(j.applying, l.ticket)
	j.applyCond.Broadcast()
	j.applyMu.Unlock()
	return err
}

// applyRange is a logged write's byte range while its data-file write is
// pending.
type applyRange struct{ off, end int64 }

// blockRange is w's byte range widened to whole checksum blocks: writes
// sharing a block apply one after the other, so each one's checksum
// read-back is exact.
func blockRange(w *Write) applyRange {
	end := w.Offset + int64(len(w.Data)) + w.ZeroLength
	return applyRange{w.Offset &^ (SumBlockSize - 1), (end + SumBlockSize - 1) &^ (SumBlockSize - 1)}
}

// overlapsBefore reports whether a write logged before ticket and not yet
// applied overlaps [off, end). Caller holds applyMu.
func (j *Journal) overlapsBefore(ticket uint64, off, end int64) bool {
	for t, r := range j.applying {
		if t < ticket && r.off < end && off < r.end {
			return true
		}
	}
	return false
}

// waitApplied returns when every record logged so far is in the data file
// (checkpoints sync the data file only after that).
func (j *Journal) waitApplied() {
	j.mu.Lock()
	end := j.nextTicket
	j.mu.Unlock()
	j.applyMu.Lock()
	for j.anyBefore(end) {
		j.applyCond.Wait()
	}
	j.applyMu.Unlock()
}

func (j *Journal) anyBefore(ticket uint64) bool {
	for t := range j.applying {
		if t < ticket {
			return true
		}
	}
	return false
}

// logWrites is Log without validation, appending to out.
func (j *Journal) logWrites(ws []Write, out []Logged) ([]Logged, error) {
	need := int64(0)
	for i := range ws {
		need += recordLen(&ws[i]) + segHeaderSize // a rotation per record at most
	}
	if need > j.maxSize-segHeaderSize {
		return out, fmt.Errorf("%w: %d byte batch, journal MaxSize %d", ErrTooLarge, need, j.maxSize)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.logLocked(ws, out, need)
}

// logLocked is logWrites' body. Caller holds mu.
func (j *Journal) logLocked(ws []Write, out []Logged, need int64) ([]Logged, error) {
	if err := j.reserve(need); err != nil {
		return out, err
	}
	last := j.highSeq()
	for i := range ws {
		switch {
		case ws[i].Seq == 0:
			last++
		case ws[i].Seq <= last:
			return out, fmt.Errorf("%w: seq %d, last %d", ErrSeqOrder, ws[i].Seq, last)
		default:
			last = ws[i].Seq
		}
	}
	last = j.highSeq()
	for i := range ws {
		if ws[i].Seq == 0 {
			ws[i].Seq = last + 1
		}
		last = ws[i].Seq
	}
	buf, first := j.buf[:0], 0
	placed := j.placedBuf[:0]
	var err error
	for i := range ws {
		w := &ws[i]
		inPlace := j.takesInPlace(ws[:i], placed, w)
		placed = append(placed, inPlace)
		n := recordLen(w)
		if inPlace {
			n = extentRecordLen(int64(len(w.Data)))
		}
		if seg := j.segs[len(j.segs)-1]; (!seg.empty() || len(buf) > 0) && seg.size+int64(len(buf))+n > j.segSize {
			if out, err = j.writeLogged(buf, ws[first:i], placed[first:i], out); err != nil {
				return out, err
			}
			buf, first = buf[:0], i
			if err = j.rotate(); err != nil {
				return out, err
			}
		}
		if j.hooks.beforeWrite != nil {
			j.hooks.beforeWrite(*w, inPlace)
		}
		seg := j.segs[len(j.segs)-1]
		if buf, err = EncodeRecord(buf, Record{Write: *w, Salt: seg.salt, Synced: seg.synced.Load(), InPlace: inPlace}); err != nil {
			return out, err
		}
	}
	out, err = j.writeLogged(buf, ws[first:], placed[first:], out)
	if cap(buf) <= 4<<20 {
		j.buf = buf[:0] // keep the scratch buffer unless a huge batch grew it
	}
	j.placedBuf = placed[:0]
	// Extent records are small: their data has a bound of its own, so that
	// replay's check of their blocks (verifyExtents) stays bounded.
	if j.appended-j.ckptAppended > j.maxSize/4 || j.extentBytes-j.ckptExtentBytes > j.extentWindow() {
		j.requestCheckpoint()
	}
	if seg := j.segs[len(j.segs)-1]; seg.size-seg.synced.Load() > j.syncAhead() {
		select { // requests coalesce
		case j.aheadReq <- struct{}{}:
		default:
		}
	}
	return out, err
}

// writeLogged writes the encoded records buf of ws to the active segment
// and registers them as logged. Caller holds mu.
func (j *Journal) writeLogged(buf []byte, ws []Write, placed []bool, out []Logged) ([]Logged, error) {
	if len(ws) == 0 {
		return out, nil
	}
	seg := j.segs[len(j.segs)-1]
	// A failed journal write changes nothing: the next record overwrites
	// whatever part of it reached the file.
	if _, err := seg.f.WriteAt(buf, seg.size); err != nil {
		return out, fmt.Errorf("journal: write segment %d: %w", seg.num, err)
	}
	j.applyMu.Lock()
	pos := int64(0) // of w's record in buf
	for i := range ws {
		w := &ws[i]
		n := recordLen(w)
		var sums []byte
		if placed[i] {
			n = extentRecordLen(int64(len(w.Data)))
			j.extentSeq = w.Seq
			j.extentBytes += int64(len(w.Data))
			// The checksum table takes the record's block IDs: Data is
			// not hashed again. Copied: buf is reused by the next batch.
			sums = bytes.Clone(buf[pos+RecordHeaderSize:][:4*len(w.Data)/SumBlockSize])
		}
		pos += n
		seg.size += n
		seg.lastSeq = w.Seq
		j.journalBytes += n
		j.appended += n
		j.lastSeq = w.Seq
		j.markRegions(w)
		j.markPlaced(w, placed[i])
		if w.Resize == 0 { // a resize has no data-file write to wait for
			j.applying[j.nextTicket] = blockRange(w)
		}
		out = append(out, Logged{Write: *w, Extent: placed[i], ticket: j.nextTicket, sums: sums})
		j.nextTicket++
		if placed[i] {
			j.extents.Add(1)
		}
	}
	j.applyMu.Unlock()
	j.writes.Add(uint64(len(ws)))
	j.lastSeqA.Store(j.lastSeq)
	return out, nil
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

// rotate, with mu held, starts a new segment. It does not sync the old one:
// an fdatasync under mu stalls every writer (it cost the 1 MiB job half its
// throughput). The old segment joins j.rotated, and the next Sync leader
// trims it to its records and syncs it before it syncs anything newer, so
// that a record in a later segment is never made durable before every
// record before it (replay's rule for segments that end torn, docs/journal.md).
func (j *Journal) rotate() error {
	old := j.segs[len(j.segs)-1]
	seg, err := j.createSegment(old.num+1, j.lastSeq+1)
	if err != nil {
		return err
	}
	old.refs++ // the Sync leader's, released once it synced old
	j.rotated = append(j.rotated, old)
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

// apply writes w to the data file, from Apply or during Open, and keeps
// the block checksums in step (not during Open's replay: Open sets them
// up afterwards).
func (j *Journal) apply(w *Write) error { return j.applyAs(w, false, nil) }

// applyAs is apply; inPlace writes whole aligned blocks with O_DIRECT
// (writeDirect).
func (j *Journal) applyAs(w *Write, inPlace bool, sums []byte) error {
	if j.sums == nil {
		return j.writeData(w, inPlace)
	}
	var buf []byte
	var loOK, hiOK bool
	if lo, hi := edgeBlocks(w.Offset, w.Offset+int64(len(w.Data))+w.ZeroLength); lo >= 0 || hi >= 0 {
		bp := blockPool.Get().(*[SumBlockSize]byte)
		defer blockPool.Put(bp)
		buf = bp[:]
		var err error
		if loOK, hiOK, err = j.edgesIntact(w, buf); err != nil {
			return err
		}
	}
	if err := j.writeData(w, inPlace); err != nil {
		return err
	}
	return j.updateSums(w, loOK, hiOK, buf, sums)
}

// writeData writes w to the data file, with inPlace as writeDirect does.
func (j *Journal) writeData(w *Write, inPlace bool) error {
	if inPlace {
		return j.writeDirect(w)
	}
	return j.applyData(w)
}

// applyChunk is the largest piece of a logged write that goes to the data
// file in one pwrite. A buffered pwrite leaves a folio of its size in the
// page cache, and a later 4 KiB write into it pays for every buffer head of
// that folio: 27-40 us after 1 MiB pwrites instead of 3 (docs/journal.md,
// "Where a write's time goes"). Small pieces cost the large writes instead:
// each piece is a syscall and a folio. Measured on one node, 1 MiB QD8 writes
// then 4 KiB QD32 writes (docs/journal.md, "Write once"): 16 KiB pieces gave
// 1.2 GB/s at 1.0 CPU s per GiB; 64 KiB pieces 1.55 GB/s at 0.72, and the 4 KiB
// job 0.92x the IOPS; 256 KiB pieces 0.8x the 4 KiB IOPS. (O_DIRECT for large
// writes spared both, but every read of them then went to the disk: random
// 4 KiB reads fell to 0.53-0.74x; docs/benchmarks.md.)
const applyChunk = 64 << 10

// applyData writes w to the data file, in pieces of applyChunk.
func (j *Journal) applyData(w *Write) error {
	if w.ZeroLength == 0 {
		for off := 0; off < len(w.Data); off += applyChunk {
			end := min(off+applyChunk, len(w.Data))
			if _, err := j.data.WriteAt(w.Data[off:end], w.Offset+int64(off)); err != nil {
				return err
			}
		}
		return nil
	}
	off, end := w.Offset, w.Offset+w.ZeroLength
	if j.punch != nil && !j.noPunch.Load() {
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
				if !j.noPunch.Swap(true) {
					j.log.Info("journal: data file cannot punch holes, writing zeros", "err", err)
				}
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
// Append and every write logged before the call (it waits for their data).
// It returns a *ChecksumError (ErrChecksum) if a block it reads does not
// match its checksum; p's contents are then undefined.
func (j *Journal) ReadAt(p []byte, off int64) error {
	return j.readAt(p, off, nil)
}

// ReadSummed is ReadAt of whole blocks at a block boundary that also
// appends to sums, and returns, the CRC32C of each block read
// (little-endian, as crc32c.Blocks makes them), computed while the block
// is in cache after its check, so that a caller who frames the data (a
// resync copy, wire.ResyncData.BlockSums) need not read it again.
func (j *Journal) ReadSummed(p []byte, off int64, sums []byte) ([]byte, error) {
	if off%SumBlockSize != 0 || len(p)%SumBlockSize != 0 {
		return sums, fmt.Errorf("%w: summed read [%d,+%d)", ErrNotWholeBlocks, off, len(p))
	}
	if sums == nil {
		sums = make([]byte, 0, 4*len(p)/SumBlockSize)
	}
	err := j.readAt(p, off, &sums)
	return sums, err
}

// readAt is ReadAt; with sums, verify appends each block's checksum to it.
func (j *Journal) readAt(p []byte, off int64, sums *[]byte) error {
	if size := j.devSize.Load(); off < 0 || off > size || int64(len(p)) > size-off {
		return fmt.Errorf("%w: read [%d,+%d) of %d", ErrOutOfRange, off, len(p), size)
	}
	j.applyMu.Lock()
	for end := j.nextTicket; j.overlapsBefore(end, off, off+int64(len(p))); {
		j.applyCond.Wait()
	}
	j.applyMu.Unlock()
	j.life.RLock()
	defer j.life.RUnlock()
	if j.lifeClosed {
		return ErrClosed
	}
	if len(p) == 0 {
		return nil
	}
	// Whole blocks are checked: an unaligned read reads the blocks around it.
	aoff := off &^ (SumBlockSize - 1)
	aend := min((off+int64(len(p))+SumBlockSize-1)&^(SumBlockSize-1), j.devSize.Load())
	buf := p
	if aoff != off || aend != off+int64(len(p)) {
		buf = make([]byte, aend-aoff)
	}
	n, err := j.data.ReadAt(buf, aoff)
	if n < len(buf) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("journal: read data file at %d: %w", aoff, err)
	}
	bad, err := j.verify(buf, aoff, sums)
	if err != nil {
		return err
	}
	if len(bad) > 0 {
		return &ChecksumError{Blocks: bad}
	}
	if len(buf) != len(p) {
		copy(p, buf[off-aoff:])
	}
	return nil
}
