package journal

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/vfs"
)

// listSegments returns the segment numbers in the journal directory,
// sorted. It removes the spare segment files it finds (see retire).
func (j *Journal) listSegments() ([]uint64, error) {
	names, err := j.fs.ReadDir(j.jdir)
	if err != nil {
		return nil, fmt.Errorf("journal: list segments: %w", err)
	}
	var nums []uint64
	var spares []string
	for _, name := range names {
		if isSpare(name) {
			spares = append(spares, name)
			continue
		}
		base, ok := strings.CutSuffix(name, ".seg")
		num, err := strconv.ParseUint(base, 10, 64)
		if !ok || err != nil || segName(num) != name || num == 0 {
			j.log.Warn("journal: ignoring unexpected file", "dir", j.jdir, "name", name)
			continue
		}
		nums = append(nums, num) // ReadDir sorts, and %08d keeps numeric order
	}
	j.removeSpares(spares)
	return nums, nil
}

// segmentHasRecords reports whether segment num holds a decodable record
// after its header.
func (j *Journal) segmentHasRecords(num uint64) bool {
	f, err := j.fs.OpenFile(filepath.Join(j.jdir, segName(num)), os.O_RDONLY, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return false
	}
	r := &segReader{f: f, end: size}
	_, _, derr, ioerr := r.record(segHeaderSize)
	return derr == nil && ioerr == nil
}

// replay opens the segments and re-applies the records past the checkpoint
// ckpt to the data file and the region table. Rules (docs/journal.md):
// segments in order, seqs strictly increasing; a bad record is a torn tail
// (cut there, later segments dropped) unless something proves the bytes
// there had been made durable: the segment's sync mark, a later record's
// sync hint, or any sync of a later segment (endHere). Zeros after the
// records of a non-last segment are its untrimmed end, not damage.
func (j *Journal) replay(ckpt uint64) error {
	nums, err := j.listSegments()
	if err != nil {
		return err
	}
	if len(nums) == 0 {
		return fmt.Errorf("%w: no segments in %s", ErrCorrupt, j.jdir)
	}
	// Segments before a gap in the numbering were freed by a checkpoint
	// whose removals were not all made durable; they hold only records <=
	// ckpt (checked below through the first segment after the gap).
	var stale []uint64
	for i := len(nums) - 1; i > 0; i-- {
		if nums[i-1] != nums[i]-1 {
			stale, nums = nums[:i], nums[i:]
			break
		}
	}
	var prev uint64 // seq of the last record seen
	for i, num := range nums {
		// The first segment must start at or below ckpt+1, each later one
		// right after its predecessor's records.
		seg, cut, err := j.replaySegment(num, nums[i+1:], ckpt, &prev)
		if errors.Is(err, errRecordsMissing) && i > 0 {
			// The previous segment lost its tail (it was rotated out and
			// not yet synced): the same as a torn end, if nothing from
			// here on was made durable.
			if err := j.endAfter(nums[i:], prev); err != nil {
				return err
			}
			break
		}
		if err != nil {
			return err
		}
		j.segs = append(j.segs, seg)
		j.journalBytes += seg.size
		if cut {
			break // it ended torn and the later segments were dropped
		}
	}
	lastRec := prev
	prev = max(prev, ckpt)
	j.lastSeq = prev
	j.lastSeqA.Store(prev)
	// Everything replayed is in the page cache, maybe not on disk (a process
	// crash): make it durable before DurableSeq claims it, oldest segment
	// first, each but the last trimmed to its records (a process crash
	// leaves rotated-out segments untrimmed and unsynced).
	for i, s := range j.segs {
		if i < len(j.segs)-1 {
			if err := s.f.Truncate(s.size); err != nil {
				return fmt.Errorf("journal: trim segment %d: %w", s.num, err)
			}
		}
		if err := j.fdatasync(s); err != nil {
			return err
		}
	}
	active := j.segs[len(j.segs)-1]
	if err := j.fs.SyncDir(j.jdir); err != nil {
		return fmt.Errorf("journal: sync dir %s: %w", j.jdir, err)
	}
	for _, s := range j.segs {
		s.dirSynced = true
	}
	active.synced.Store(active.size)
	j.writeMark(active, active.size)
	if err := j.verifyExtents(); err != nil {
		return err
	}
	j.durable.Store(prev)
	for _, num := range stale {
		if err := j.fs.Remove(filepath.Join(j.jdir, segName(num))); err != nil {
			j.log.Warn("journal: remove stale segment", "segment", num, "err", err)
		}
	}
	j.log.Info("journal: opened", "dir", j.dir, "checkpoint_seq", ckpt, "last_seq", prev,
		"last_record_seq", lastRec, "segments", len(j.segs), "stale_segments_removed", len(stale))
	return j.failed()
}

// replaySegment replays one segment; later are the segments after it. prev
// is the seq of the last record seen so far, and is advanced. cut: the
// segment ended torn, so it is the last one now (the later ones, never
// made durable, were dropped).
func (j *Journal) replaySegment(num uint64, later []uint64, ckpt uint64, prev *uint64) (seg *segment, cut bool, err error) {
	name := filepath.Join(j.jdir, segName(num))
	f, err := j.fs.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, false, fmt.Errorf("journal: open segment: %w", err)
	}
	seg, cut, err = j.replayFile(f, num, later, ckpt, prev)
	if err != nil {
		_ = f.Close()
		return nil, false, err
	}
	return seg, cut, nil
}

func (j *Journal) replayFile(f vfs.File, num uint64, later []uint64, ckpt uint64, prev *uint64) (*segment, bool, error) {
	size, err := f.Size()
	if err != nil {
		return nil, false, fmt.Errorf("journal: stat segment %d: %w", num, err)
	}
	r := &segReader{f: f, end: size}
	seg, reinit, err := j.replayHeader(r, num, later, ckpt, *prev)
	if err != nil || reinit {
		return seg, true, err
	}
	off, cut, err := j.replayRecords(r, seg, later, ckpt, max(*prev, seg.firstSeq-1))
	if err != nil {
		return nil, false, err
	}
	seg.size = off
	*prev = max(*prev, seg.lastSeq)
	if len(later) == 0 || cut {
		if err := j.preallocate(f, num); err != nil {
			return nil, false, err
		}
	}
	return seg, cut, nil
}

// errRecordsMissing: a segment starts past the records before it.
var errRecordsMissing = errors.New("records missing")

// endAfter makes the last segment replayed so far the last one, dropping
// the segments nums after it, if endHere allows; else the gap is corrupt.
func (j *Journal) endAfter(nums []uint64, prev uint64) error {
	ok, err := j.endHere(nums)
	if err != nil {
		return err
	}
	last := j.segs[len(j.segs)-1]
	if !ok {
		// Point at where the records end, the likely damage, rather than
		// at the intact segment after it.
		why := fmt.Sprintf("the records end after record %d", prev)
		if last.endErr != nil {
			why = fmt.Sprintf("the record after record %d does not decode (%v)", prev, last.endErr)
		}
		return segCorrupt(last.num, last.size, fmt.Errorf("%s, and segment %s, which starts at record %d, or a later one was made durable: %w",
			why, segName(nums[0]), j.firstSeqOf(nums[0]), errRecordsMissing))
	}
	return j.preallocate(last.f, last.num)
}

// endHere decides whether a segment followed by the segments later may end
// torn, as the last segment may: only if nothing after it was ever made
// durable. Rotation does not sync the segment it rotates out; the next Sync
// leader syncs it before any newer segment (syncActive). So a later segment
// with a sync mark or a record with a sync hint proves the damage is
// corruption (false). Otherwise the later segments hold only records never
// promised durable, or records the checkpoint covers (in the data file,
// durable): they are dropped (before the torn segment is cut, so that a
// crash in between leaves a journal that replays the same way) and endHere
// returns true.
func (j *Journal) endHere(later []uint64) (bool, error) {
	if len(later) == 0 {
		return true, nil
	}
	if j.laterSynced(later) {
		return false, nil
	}
	for _, num := range later {
		if err := j.fs.Remove(filepath.Join(j.jdir, segName(num))); err != nil {
			return false, fmt.Errorf("journal: drop unsynced segment %d: %w", num, err)
		}
	}
	if err := j.fs.SyncDir(j.jdir); err != nil {
		return false, fmt.Errorf("journal: sync dir %s: %w", j.jdir, err)
	}
	j.log.Warn("journal: a rotated-out segment ends torn; dropping the later segments, never made durable", "segments", later)
	return true, nil
}

// laterSynced reports whether any of the segments nums was ever synced: a
// valid sync mark in its header, or a record of this journal with a sync
// hint. One it cannot read counts as synced (report, do not guess).
func (j *Journal) laterSynced(nums []uint64) bool {
	for _, num := range nums {
		f, err := j.fs.OpenFile(filepath.Join(j.jdir, segName(num)), os.O_RDONLY, 0)
		if err != nil {
			return true
		}
		synced := j.segmentSynced(f, num)
		_ = f.Close()
		if synced {
			return true
		}
	}
	return false
}

func (j *Journal) segmentSynced(f vfs.File, num uint64) bool {
	size, err := f.Size()
	if err != nil {
		return true
	}
	r := &segReader{f: f, end: size}
	hb, err := r.peek(0, segHeaderSize)
	if err != nil || len(hb) < segHeaderSize {
		hb = nil
	}
	if _, ok := j.ownHeader(hb, num); ok && decodeMark(hb[48:64]) > 0 {
		return true
	}
	// A record hint is a synced byte count, at least a header's worth:
	// scanLater from just before the first record finds any hint > 0.
	_, proof := j.scanLater(r, segHeaderSize-8, 0, j.candidateSalts(num, hb)...)
	return proof
}

// segCorrupt is the error for damage at off of segment num.
func segCorrupt(num uint64, off int64, why error) error {
	return fmt.Errorf("%w: segment %s offset %d: %w", ErrCorrupt, segName(num), off, why)
}

// replayHeader checks segment num's header against the journal (its salt,
// no records missing after prev and the checkpoint ckpt) and returns the
// segment with its synced mark. A torn header of the last segment (created
// just before a crash) is reinitialized: reinit, and seg is the new one.
func (j *Journal) replayHeader(r *segReader, num uint64, later []uint64, ckpt, prev uint64) (seg *segment, reinit bool, err error) {
	hb, err := r.peek(0, segHeaderSize)
	if err != nil {
		return nil, false, fmt.Errorf("journal: read segment %d: %w", num, err)
	}
	hdr, herr := decodeSegHeader(hb)
	if herr == nil && hdr.salt == j.salt && hdr.num < num {
		// A reused file (segfile.go) whose new header did not reach the
		// disk: torn the same way, since nothing of its new life was synced
		// without the header.
		herr = fmt.Errorf("%w: header of the file's earlier life as segment %d", ErrCorrupt, hdr.num)
	}
	if herr != nil {
		if errors.Is(herr, ErrVersion) {
			return nil, false, segCorrupt(num, 0, herr)
		}
		if ok, err := j.endHere(later); err != nil || !ok {
			return nil, false, cmp.Or(err, segCorrupt(num, 0, fmt.Errorf("%w before segments made durable", herr)))
		}
		// Nothing in a segment with a torn header can have been made
		// durable unless a record says so.
		if valid, proof := j.scanLater(r, 0, prev, j.candidateSalts(num, hb)...); proof {
			return nil, false, segCorrupt(num, 0, fmt.Errorf("bad header before %d durable records: %w", valid, herr))
		}
		j.log.Warn("journal: reinitializing segment with a torn header", "segment", num, "err", herr)
		seg, err := j.reinitSegment(r.f, num, max(prev, ckpt)+1)
		return seg, true, err
	}
	switch {
	case hdr.num != num || hdr.salt != j.salt:
		return nil, false, segCorrupt(num, 0, fmt.Errorf("header names segment %d salt %#x", hdr.num, hdr.salt))
	case hdr.firstSeq == 0:
		return nil, false, segCorrupt(num, 0, fmt.Errorf("first seq 0"))
	case hdr.firstSeq > max(prev, ckpt)+1:
		return nil, false, segCorrupt(num, 0, fmt.Errorf("first seq %d after record %d and checkpoint %d: %w", hdr.firstSeq, prev, ckpt, errRecordsMissing))
	case hdr.firstSeq > prev+1 && len(j.segs) > 0 && j.segs[len(j.segs)-1].endErr != nil:
		// The checkpoint covers the records missing between the last
		// segment and this one, but that segment ended at a damaged record
		// of its own: the same question as for records the checkpoint does
		// not cover (endAfter), whether it had been made durable. Left
		// unasked, a flip in a checkpointed record went unreported and the
		// journal kept a hole that catch-up would have passed over (the
		// chaos soak, seed 302).
		return nil, false, segCorrupt(num, 0, fmt.Errorf("first seq %d after record %d: %w", hdr.firstSeq, prev, errRecordsMissing))
	}
	seg = newSegment(hdr, r.f, 0)
	seg.synced.Store(decodeMark(hb[48:64]))
	return seg, false, nil
}

// replayRecords replays seg's records after its header (lastGood: the
// sequence number the first one must exceed) and returns where they end.
// A bad record ends the last segment if it can be a torn tail (after the
// synced mark, no durable record behind it): the tail is cut. Anything
// else is ErrCorrupt.
func (j *Journal) replayRecords(r *segReader, seg *segment, later []uint64, ckpt, lastGood uint64) (end int64, cut bool, err error) {
	num, mark := seg.num, seg.synced.Load()
	off := int64(segHeaderSize)
	for off < r.end {
		rec, n, derr, ioerr := r.record(off)
		if ioerr != nil {
			return 0, false, fmt.Errorf("journal: read segment %d: %w", num, ioerr)
		}
		if derr == nil && rec.Salt != seg.salt && seg.version == segVersion2 {
			// A record of the file's earlier life (segfile.go), or of
			// another segment: not one of this segment's.
			derr = fmt.Errorf("%w: record of segment salt %#x", ErrCorrupt, rec.Salt)
		}
		if derr == nil && (rec.Salt != seg.salt || rec.Seq <= lastGood) {
			// Intact bytes, but not the next record of this journal: no
			// crash produces that.
			return 0, false, segCorrupt(num, off, fmt.Errorf("record seq %d salt %#x after seq %d", rec.Seq, rec.Salt, lastGood))
		}
		if errors.Is(derr, ErrVersion) {
			return 0, false, segCorrupt(num, off, derr)
		}
		if derr != nil {
			if off < mark {
				return 0, false, segCorrupt(num, off, fmt.Errorf("%w inside the synced prefix (%d bytes)", derr, mark))
			}
			if len(later) > 0 && j.segmentEnds(r, seg, off, lastGood, later[0]) {
				// The preallocated rest of a segment rotated out and not yet
				// trimmed, or the rest of a reused file (a version-2
				// segment is never trimmed; nothing of its own follows):
				// its normal end. The next segment's first seq says whether
				// records are missing.
				if r.damagedHeaderAt(off, seg.salt, lastGood) {
					seg.endErr = derr
				}
				return off, false, nil
			}
			if ok, err := j.endHere(later); err != nil || !ok {
				return 0, false, cmp.Or(err, segCorrupt(num, off, fmt.Errorf("%w before segments made durable", derr)))
			}
			return off, true, j.cutTornTail(r, seg, off, lastGood, derr)
		}
		if err := j.replayRecord(num, off, &rec, ckpt); err != nil {
			return 0, false, err
		}
		lastGood, seg.lastSeq = rec.Seq, rec.Seq
		off += int64(n)
	}
	return off, false, nil
}

// cutTornTail truncates the last segment at off, where a record does not
// decode (derr), unless a later record proves that this offset was synced.
func (j *Journal) cutTornTail(r *segReader, seg *segment, off int64, lastGood uint64, derr error) error {
	num := seg.num
	valid, proof := j.scanLater(r, off, lastGood, seg.salt)
	if proof {
		return segCorrupt(num, off, fmt.Errorf("%w followed by a record written after this offset was synced", derr))
	}
	// A version-1 segment ends in zeros; a version-2 one may end in a
	// reused file's older bytes, so only a header of its own is a torn write.
	torn := !r.zeroFrom(off)
	if seg.version == segVersion2 {
		torn = r.ownHeaderAt(off, seg.salt)
	}
	if valid > 0 || torn {
		j.log.Warn("journal: cutting torn tail", "segment", num, "offset", off, "size", r.end,
			"err", derr, "discarded_unsynced_records", valid)
	} // else: the preallocated rest of the segment, or of a reused file: its normal end
	if err := r.f.Truncate(off); err != nil {
		return fmt.Errorf("journal: cut segment %d: %w", num, err)
	}
	return nil
}

// replayRecord applies w, the record at off of segment num, to the image
// unless the checkpoint ckpt covers it.
func (j *Journal) replayRecord(num uint64, off int64, rec *Record, ckpt uint64) error {
	w := &rec.Write
	if n := w.ZeroLength + int64(len(w.Data)) + rec.Length; w.Offset+n > j.devSize.Load() {
		return segCorrupt(num, off, fmt.Errorf("record [%d,+%d) beyond device", w.Offset, n))
	}
	switch {
	case w.Seq <= ckpt:
		return nil
	case rec.InPlace:
		j.replayExtent(rec)
		j.touch(w.Offset, w.Offset+rec.Length)
	case w.Resize > 0:
		// Idempotent: the data file may have grown before the crash.
		j.touch(j.devSize.Load(), w.Resize)
		if err := j.grow(w.Resize); err != nil {
			return fmt.Errorf("journal: replay resize seq %d: %w", w.Seq, err)
		}
	default:
		j.touch(w.Offset, w.Offset+int64(len(w.Data))+w.ZeroLength)
		if err := j.apply(w); err != nil {
			return fmt.Errorf("journal: replay seq %d: %w", w.Seq, err)
		}
		j.markRegions(w)
		j.markPlaced(w, false)
		j.replayOverExtents(w)
	}
	j.replayed++
	return nil
}

// touch notes that replay wrote (or grew) [off, end): the block checksums
// data.sum holds there may be older than the blocks (setupSums re-reads
// them). Adjacent ranges merge as they come.
func (j *Journal) touch(off, end int64) {
	if end <= off {
		return
	}
	if n := len(j.touched); n > 0 && int64(j.touched[n-1].End()) == off {
		j.touched[n-1].Length += uint64(end - off)
		return
	}
	j.touched = append(j.touched, extent.Extent{Offset: uint64(off), Length: uint64(end - off)})
}

// zeroFrom reports whether every byte from off to the end is zero.
func (r *segReader) zeroFrom(off int64) bool {
	for off < r.end {
		b, err := r.peek(off, readChunk)
		if err != nil || len(b) == 0 {
			return false
		}
		for _, c := range b {
			if c != 0 {
				return false
			}
		}
		off += int64(len(b))
	}
	return true
}

// scanLater looks past a bad record at off for valid records carrying one
// of salts (the segment's record salt) with a seq above after. It returns
// how many it found and whether one of them proves, by its sync hint, that off had been made durable
// before it was written (synced > off), i.e. that the bad bytes are
// corruption rather than an unsynced write lost in the crash.
func (j *Journal) scanLater(r *segReader, off int64, after uint64, salts ...uint64) (valid int, proof bool) {
	for p := (off + 8) &^ 7; p+RecordHeaderSize <= r.end; p += 8 {
		b, err := r.peek(p, 4)
		if err != nil || len(b) < 4 || binary.LittleEndian.Uint32(b) != recordMagic {
			continue
		}
		rec, n, derr, ioerr := r.record(p)
		if ioerr != nil || derr != nil || !slices.Contains(salts, rec.Salt) || rec.Seq <= after {
			continue
		}
		valid++
		if rec.Synced > off {
			return valid, true
		}
		after = rec.Seq
		p += int64(n) - 8
	}
	return valid, false
}

// reinitSegment rewrites a segment whose header was torn as an empty one.
func (j *Journal) reinitSegment(f vfs.File, num, firstSeq uint64) (*segment, error) {
	hdr := segHeader{version: segVersion2, num: num, firstSeq: firstSeq, salt: j.salt}
	var b [segHeaderSize]byte
	encodeSegHeader(b[:], hdr)
	if err := f.Truncate(0); err != nil {
		return nil, fmt.Errorf("journal: reinit segment %d: %w", num, err)
	}
	if _, err := f.WriteAt(b[:], 0); err != nil {
		return nil, fmt.Errorf("journal: reinit segment %d: %w", num, err)
	}
	return newSegment(hdr, f, segHeaderSize), nil
}

// writeMark records in the segment header that its first synced bytes are
// durable. Called after the fdatasync that made them so; the mark itself
// becomes durable with the next one. An error only costs a weaker proof at
// the next replay, so it is logged, not fatal.
func (j *Journal) writeMark(s *segment, synced int64) {
	var b [16]byte
	encodeMark(b[:], synced)
	if _, err := s.f.WriteAt(b[:], 48); err != nil {
		j.log.Warn("journal: write sync mark", "segment", s.num, "err", err)
	}
}

// segReader reads a segment file through a window buffer, so replay and
// ReadRecords use bounded memory (one record at most, plus a chunk).
type segReader struct {
	f    vfs.File
	end  int64 // bytes of the file to consider
	buf  []byte
	base int64 // file offset of buf[0]
}

const readChunk = 1 << 20

// peek returns up to want bytes at off; fewer only at r.end.
func (r *segReader) peek(off int64, want int) ([]byte, error) {
	if avail := r.end - off; int64(want) > avail {
		want = int(max(avail, 0))
	}
	if off >= r.base && off+int64(want) <= r.base+int64(len(r.buf)) {
		s := off - r.base
		return r.buf[s : s+int64(want)], nil
	}
	n := int(min(int64(max(want, readChunk)), r.end-off))
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	r.buf = r.buf[:n]
	got, err := r.f.ReadAt(r.buf, off)
	if got < n {
		r.buf = r.buf[:0]
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	r.base = off
	return r.buf[:want], nil
}

// record decodes the record at off. derr is a decoding error, ioerr a read
// error.
func (r *segReader) record(off int64) (rec Record, n int, derr, ioerr error) {
	b, err := r.peek(off, RecordHeaderSize)
	if err != nil {
		return rec, 0, nil, err
	}
	rec, n, derr = DecodeRecord(b)
	if errors.Is(derr, ErrTruncated) && n > len(b) && off+int64(n) <= r.end {
		if b, err = r.peek(off, n); err != nil {
			return rec, 0, nil, err
		}
		rec, n, derr = DecodeRecord(b)
	}
	return rec, n, derr, nil
}
