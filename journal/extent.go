package journal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"

	"github.com/grbd/grbd/internal/blockid"
	"github.com/grbd/grbd/internal/crc32c"
	"github.com/grbd/grbd/internal/extent"
)

// Large writes in place (docs/journal.md, "Large writes in place"). A write
// of at least InPlaceMin bytes on whole blocks is journaled as an extent
// record: its seq, range and an ID per block (blockid), not its bytes. Its data
// is written once, to data.img, by Apply. The rules that keep that safe:
//
//   - Replay never applies an older record over it: a write becomes an
//     extent record only if no record that replay would apply (a data or
//     zero record above the checkpoint) touched its regions (takesInPlace).
//   - Sync makes its data durable (fdatasync of data.img) before it claims
//     the record durable (syncExtents), so DurableSeq, FLUSH and the
//     activity log's eviction cover the data too.
//   - An extent record whose blocks replay finds without its data (a crash
//     between the record and the data-file write) makes those blocks
//     suspects (verifyExtents): the write was never acknowledged, but this
//     replica's LastSeq covers it, so it must not count as equal to a peer
//     there.
//   - ReadRecords serves it from data.img only while the blocks still hold
//     it (their IDs match); otherwise ErrCompacted sends the peer to a
//     region resync.

// The block of ReadSummed's CRC32Cs is the one crc32c joins: a
// compile-time check that they stay equal (a negative constant does not
// convert to uint).
const _ = uint(crc32c.BlockSize-SumBlockSize) + uint(SumBlockSize-crc32c.BlockSize)

// DefaultInPlaceMin is the smallest write done in place by default.
const DefaultInPlaceMin = 64 << 10

// encodeExtent is EncodeRecord for an extent record: the sums are taken
// from r.Sums when they are whole (a decoded record re-encodes to the same
// bytes, its version included), else computed from r.Data.
func encodeExtent(dst []byte, r *Record) ([]byte, error) {
	length := r.Length
	if r.Data != nil {
		length = int64(len(r.Data))
	}
	whole := int64(len(r.Sums)) == 4*(length/SumBlockSize)
	switch {
	case r.ZeroLength != 0 || r.Resize != 0 || length <= 0 || length > MaxWriteSize || length%SumBlockSize != 0 ||
		r.Offset < 0 || r.Offset%SumBlockSize != 0 || r.Offset > math.MaxInt64-length:
		return dst, fmt.Errorf("%w: extent record of [%d,+%d) not on whole blocks", ErrInvalidWrite, r.Offset, length)
	case r.Data == nil && !whole:
		return dst, fmt.Errorf("%w: extent record of %d bytes with %d bytes of sums", ErrInvalidWrite, length, len(r.Sums))
	case r.CRC && !whole:
		return dst, fmt.Errorf("%w: a CRC32C extent record is only re-encoded", ErrInvalidWrite)
	}
	if err := checkRecordHeader(r); err != nil {
		return dst, err
	}
	n := int(extentRecordLen(length))
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	b := dst[start:]
	sums := b[RecordHeaderSize:]
	if whole {
		copy(sums, r.Sums)
	} else {
		blockid.Append(sums[:0], r.Data, SumBlockSize)
	}
	clear(sums[length/SumBlockSize*4:])
	version := byte(idVersion)
	if r.CRC {
		version = extentVersion
	}
	putRecordHeader(b, r, version, typeExtent, uint64(length), crc32.Checksum(sums, crc32c.Table))
	return dst, nil
}

// takesInPlace reports whether w, the next write of batch (placed says
// which of batch's writes became extent records), may become an extent
// record. Caller holds mu.
func (j *Journal) takesInPlace(batch []Write, placed []bool, w *Write) bool {
	n := int64(len(w.Data))
	if j.inPlaceMin <= 0 || n < j.inPlaceMin || !blockAligned(w) {
		return false
	}
	lo, hi := w.Offset/j.regionSize, (w.Offset+n-1)/j.regionSize
	if !plantedIgnoreReplayWindow { // the planted bug: plantedbug_inplace_on.go
		ck := j.ckptSeq.Load()
		for r := lo; r <= hi; r++ {
			if j.regions[r] > ck && !j.placedRegion(r) {
				return false
			}
		}
	}
	for i := range batch {
		b := &batch[i]
		if placed[i] || b.Resize > 0 {
			continue
		}
		blo, bhi := b.Offset/j.regionSize, (b.Offset+int64(len(b.Data))+b.ZeroLength-1)/j.regionSize
		if blo <= hi && lo <= bhi {
			return false
		}
	}
	return true
}

// placedRegion reports whether region r's last write was an extent record.
// Caller holds mu.
func (j *Journal) placedRegion(r int64) bool {
	return r/64 < int64(len(j.placed)) && j.placed[r/64]&(1<<(r%64)) != 0
}

// markPlaced records whether the last write of w's regions was an extent
// record. Caller holds mu (or is Open).
func (j *Journal) markPlaced(w *Write, placed bool) {
	if w.Resize > 0 {
		return
	}
	if need := (len(j.regions) + 63) / 64; len(j.placed) != need {
		// The table grew or was replaced: forget every mark (a region not
		// marked only keeps an extent record from being taken).
		j.placed = make([]uint64, need)
	}
	length := int64(len(w.Data)) + w.ZeroLength
	for r := w.Offset / j.regionSize; r <= (w.Offset+length-1)/j.regionSize; r++ {
		if placed {
			j.placed[r/64] |= 1 << (r % 64)
		} else {
			j.placed[r/64] &^= 1 << (r % 64)
		}
	}
}

// syncExtents makes the data of every extent record logged before the
// snapshot (ext: the last one's seq, ticket: the next log ticket) durable
// in data.img, once they are applied. Only the Sync leader runs it.
func (j *Journal) syncExtents(ext, ticket uint64) error {
	if ext <= j.imageSynced.Load() || plantedNoImageSync {
		return nil
	}
	j.applyMu.Lock()
	for j.anyBefore(ticket) {
		j.applyCond.Wait()
	}
	j.applyMu.Unlock()
	if err := j.failed(); err != nil {
		return err
	}
	if err := j.data.Sync(); err != nil {
		return j.fail(fmt.Errorf("journal: sync data file for extent records: %w", err))
	}
	j.imageSynced.Store(ext)
	return nil
}

// verifyRunMax bounds one read of verifyExtents.
const verifyRunMax = 1 << 20

// replayExtent takes an extent record above the checkpoint during Open:
// its data is in data.img already, or never got there (verifyExtents).
func (j *Journal) replayExtent(rec *Record) {
	w := Write{Seq: rec.Seq, Offset: rec.Offset, ZeroLength: rec.Length} // its range, for the tables
	j.markRegions(&w)
	j.markPlaced(&w, true)
	if j.extentBlocks == nil {
		j.extentBlocks = map[int64]extentBlock{}
	}
	for i := int64(0); i < rec.Length; i += SumBlockSize {
		j.extentBlocks[rec.Offset+i] = extentBlock{sum: binary.LittleEndian.Uint32(rec.Sums[i/SumBlockSize*4:]), crc: rec.CRC}
	}
}

// extentBlock is a block of an extent record Open replayed, kept until
// verifyExtents checked it.
type extentBlock struct {
	sum     uint32
	crc     bool // sum is a CRC32C (a version-3 record), not a block ID
	partial bool // a later record wrote part of the block: it cannot be checked
}

// replayOverExtents notes, during Open, that the data or zero record w
// (replayed after them) wrote over blocks of extent records: a whole block
// is w's now; a partly written one can no longer be checked.
func (j *Journal) replayOverExtents(w *Write) {
	if len(j.extentBlocks) == 0 {
		return
	}
	lo, hi := w.Offset, w.Offset+int64(len(w.Data))+w.ZeroLength
	over := func(b int64) {
		if lo <= b && b+SumBlockSize <= hi {
			delete(j.extentBlocks, b)
		} else if x, ok := j.extentBlocks[b]; ok && b < hi && lo < b+SumBlockSize {
			x.partial = true
			j.extentBlocks[b] = x
		}
	}
	first := lo / SumBlockSize * SumBlockSize
	if (hi-first)/SumBlockSize > int64(len(j.extentBlocks)) { // a large zero record
		for b := range j.extentBlocks {
			over(b)
		}
		return
	}
	for b := first; b < hi; b += SumBlockSize {
		over(b)
	}
}

// verifyExtents checks, after replay, the blocks of replayed extent
// records that no later record wrote: one that does not hold the record's
// data lost it to a crash before the data-file write. Such blocks become
// suspects (openActivity), and so do blocks a later record wrote only in
// part (their ID no longer tells). The data file is then synced: a crash
// of the process left the extents' data in the page cache only, and
// DurableSeq is about to claim it.
func (j *Journal) verifyExtents() error {
	if j.extentBlocks == nil {
		return nil
	}
	// In offset order and in runs of adjacent blocks: after a power loss
	// the blocks come from the disk, and 4 KiB reads in map order took
	// 9-10 s per GiB of extents on this machine's disk.
	offs := make([]int64, 0, len(j.extentBlocks))
	for off := range j.extentBlocks {
		offs = append(offs, off)
	}
	slices.Sort(offs)
	buf := make([]byte, min(len(offs)*SumBlockSize, verifyRunMax))
	for len(offs) > 0 {
		n := 1
		for n < len(offs) && n*SumBlockSize < verifyRunMax && offs[n] == offs[0]+int64(n)*SumBlockSize {
			n++
		}
		run := buf[:n*SumBlockSize]
		if _, err := j.data.ReadAt(run, offs[0]); err != nil {
			return fmt.Errorf("journal: read data file at %d: %w", offs[0], err)
		}
		for i, off := range offs[:n] {
			x := j.extentBlocks[off]
			if !x.partial && blockid.OrCRC(run[i*SumBlockSize:(i+1)*SumBlockSize], x.crc) == x.sum {
				continue
			}
			j.torn = append(j.torn, extent.Extent{Offset: uint64(off), Length: SumBlockSize})
		}
		offs = offs[n:]
	}
	if j.torn = extent.Merge(j.torn); len(j.torn) > 0 {
		j.log.Warn("journal: blocks of extent records that replay cannot vouch for (never acknowledged)",
			"ranges", len(j.torn), "first", j.torn[0])
	}
	j.imageSynced.Store(j.lastSeq)
	j.extentBlocks = nil
	if err := j.data.Sync(); err != nil {
		return fmt.Errorf("journal: sync data file after replay: %w", err)
	}
	return nil
}

// readExtent reads the data of extent record rec from data.img into buf
// (grown as needed) and checks it against the record's sums: a later
// write, or a crash before the data-file write, leaves other bytes there,
// and the record can no longer be served (ErrCompacted).
func (j *Journal) readExtent(rec *Record, buf []byte) ([]byte, error) {
	buf = append(buf[:0], make([]byte, rec.Length)...)
	if err := j.ReadAt(buf, rec.Offset); err != nil {
		return buf, fmt.Errorf("journal: read extent record seq %d: %w", rec.Seq, err)
	}
	le := binary.LittleEndian
	for i := int64(0); i < rec.Length; i += SumBlockSize {
		if blockid.OrCRC(buf[i:i+SumBlockSize], rec.CRC) != le.Uint32(rec.Sums[i/SumBlockSize*4:]) {
			return buf, fmt.Errorf("%w: %w: seq %d, block at %d", ErrCompacted, ErrExtentGone, rec.Seq, rec.Offset+i)
		}
	}
	return buf, nil
}
