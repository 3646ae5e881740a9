package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"sync/atomic"

	"github.com/grbd/grbd/internal/blockid"
	"github.com/grbd/grbd/internal/crc32c"
)

// Block checksums (docs/journal.md, "Block checksums"). The store keeps the
// block ID (internal/blockid) of every SumBlockSize block of the data file
// in memory: apply updates it after every data-file write, ReadAt checks
// every block it returns against it, and a block that fails is reported as
// a *ChecksumError, never returned as data. The table is kept in data.sum
// (sumfile.go, sumstore.go), so that it outlives a crash too.

// SumBlockSize is the checksum granularity: a read of one corrupt byte
// fails the whole block around it.
const SumBlockSize = 4096

// sumChunkBlocks is the number of blocks per table chunk (256 MiB of
// device): the table grows by chunks, so a grow never copies entries that
// concurrent applies are updating.
const sumChunkBlocks = 1 << 16

// zeroBlockSum is the checksum of a block of zeros: of every block of a
// new, grown or zeroed range.
var zeroBlockSum = blockid.Of(zeros[:SumBlockSize])

// blockPool holds scratch blocks for partial-block writes and rechecks.
var blockPool = sync.Pool{New: func() any { return new([SumBlockSize]byte) }}

// ErrChecksum reports a block of the data file whose bytes do not match
// their checksum: the disk changed them. Callers branch on it to repair the
// block from a peer.
var ErrChecksum = errors.New("journal: block checksum mismatch")

// ChecksumError lists the corrupt blocks of a read (offsets of
// SumBlockSize blocks, ascending). It wraps ErrChecksum.
type ChecksumError struct {
	Blocks []int64
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("%v: %d block(s) of %d bytes at offset %d", ErrChecksum, len(e.Blocks), SumBlockSize, e.Blocks[0])
}

// Unwrap makes errors.Is(err, ErrChecksum) hold.
func (e *ChecksumError) Unwrap() error { return ErrChecksum }

// sumTable is the per-block checksum table, safe for concurrent get/set.
// Only Open and a grow (under the append lock) change its length.
type sumTable struct {
	chunks atomic.Pointer[[]*sumChunk]
}

// sumGenBlocks is how many blocks share one change counter (256 KiB of
// device; 4 bytes of counter per 64 blocks).
const sumGenBlocks = 64

// sumChunk is one chunk of the table: the checksums, and a counter per
// sumGenBlocks blocks that every set bumps. recheck tells a block that a
// write changed during its read by the counter, not by the checksum: two
// writes can bring a block back to the bytes it had (data, then zeros), and
// its checksum with it.
type sumChunk struct {
	sums [sumChunkBlocks]uint32
	gens [sumChunkBlocks / sumGenBlocks]uint32
}

func newSumTable(blocks int64) *sumTable {
	t := &sumTable{}
	empty := []*sumChunk{}
	t.chunks.Store(&empty)
	t.grow(blocks)
	return t
}

// grow makes room for blocks entries; new entries hold zeroBlockSum. The
// caller serializes grows.
func (t *sumTable) grow(blocks int64) {
	old := *t.chunks.Load()
	need := int((blocks + sumChunkBlocks - 1) / sumChunkBlocks)
	if need <= len(old) {
		return
	}
	next := append(make([]*sumChunk, 0, need), old...)
	for len(next) < need {
		c := new(sumChunk)
		for i := range c.sums {
			c.sums[i] = zeroBlockSum
		}
		next = append(next, c)
	}
	t.chunks.Store(&next)
}

func (t *sumTable) chunk(b int64) *sumChunk { return (*t.chunks.Load())[b/sumChunkBlocks] }

// genOf is the change counter block b of this chunk shares.
func (c *sumChunk) genOf(b int64) *uint32 { return &c.gens[b%sumChunkBlocks/sumGenBlocks] }

func (t *sumTable) get(b int64) uint32 {
	return atomic.LoadUint32(&t.chunk(b).sums[b%sumChunkBlocks])
}

// set stores block b's checksum, then bumps its counter.
func (t *sumTable) set(b int64, v uint32) {
	c := t.chunk(b)
	atomic.StoreUint32(&c.sums[b%sumChunkBlocks], v)
	atomic.AddUint32(c.genOf(b), 1)
}

// gensInto appends the change counters of the first blocks blocks.
func (t *sumTable) gensInto(dst []uint32, blocks int64) []uint32 {
	for b := int64(0); b < blocks; b += sumGenBlocks {
		dst = append(dst, t.gen(b))
	}
	return dst
}

// gen is block b's change counter: it moves with every set of b (and of
// the blocks that share its counter).
func (t *sumTable) gen(b int64) uint32 {
	return atomic.LoadUint32(t.chunk(b).genOf(b))
}

// blockSum is the checksum of block data p: its block ID, not its CRC-32C,
// so that a block the disk left stale or misplaced is told from the one
// written even where both end in the CRC-32C of their bytes (a common page
// layout, whose blocks all share one CRC-32C: docs/journal.md, "Block
// IDs"). A block cut short by the end of the device counts as padded with
// zeros, so a grow keeps it valid.
func blockSum(p []byte) uint32 {
	if len(p) >= SumBlockSize {
		return blockid.Of(p)
	}
	bp := blockPool.Get().(*[SumBlockSize]byte)
	defer blockPool.Put(bp)
	n := copy(bp[:], p)
	clear(bp[n:])
	return blockid.Of(bp[:])
}

// blockSpan is the block range [first, last] that [off, end) touches.
func blockSpan(off, end int64) (first, last int64) {
	return off / SumBlockSize, (end - 1) / SumBlockSize
}

// readBlock reads block b of the data file into buf (SumBlockSize bytes)
// and returns the part inside the device.
func (j *Journal) readBlock(b int64, buf []byte) ([]byte, error) {
	off := b * SumBlockSize
	p := buf[:min(SumBlockSize, j.devSize.Load()-off)]
	if n, err := j.data.ReadAt(p, off); n < len(p) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("journal: read data file at %d: %w", off, err)
	}
	return p, nil
}

// edgeBlocks returns the blocks that a write of [off, end) covers only in
// part (at most two), -1 for none.
func edgeBlocks(off, end int64) (lo, hi int64) {
	lo, hi = -1, -1
	first, last := blockSpan(off, end)
	if off%SumBlockSize != 0 || (first == last && end%SumBlockSize != 0) {
		lo = first
	}
	if end%SumBlockSize != 0 && last != lo {
		hi = last
	}
	return lo, hi
}

// edgesIntact reports, for the partly written blocks of w, whether their
// current bytes match their checksums. A partial write into a corrupt block
// must leave it failing: its new checksum would bless the corrupt rest.
func (j *Journal) edgesIntact(w *Write, buf []byte) (lo, hi bool, err error) {
	off, end := w.Offset, w.Offset+int64(len(w.Data))+w.ZeroLength
	bl, bh := edgeBlocks(off, end)
	check := func(b int64) (bool, error) {
		if b < 0 {
			return false, nil
		}
		p, err := j.readBlock(b, buf)
		if err != nil {
			return false, err
		}
		return blockSum(p) == j.sums.get(b), nil
	}
	if lo, err = check(bl); err != nil {
		return false, false, err
	}
	hi, err = check(bh)
	return lo, hi, err
}

// updateSums sets the checksums of the blocks w wrote: computed from
// w.Data for whole blocks (or taken from sums, the block IDs of w's extent
// record), read back for the partly written ones (unless they were corrupt
// before, see edgesIntact). Apply serializes writes that
// share a block, so the read-back sees this write's result.
func (j *Journal) updateSums(w *Write, loOK, hiOK bool, buf, sums []byte) error {
	off, end := w.Offset, w.Offset+int64(len(w.Data))+w.ZeroLength
	first, last := blockSpan(off, end)
	bl, bh := edgeBlocks(off, end)
	size := j.devSize.Load()
	for b := first; b <= last; b++ {
		if b == bl || b == bh {
			if (b == bl && !loOK) || (b == bh && !hiOK) {
				continue
			}
			p, err := j.readBlock(b, buf)
			if err != nil {
				return err
			}
			j.sums.set(b, blockSum(p))
			continue
		}
		if w.ZeroLength > 0 {
			j.sums.set(b, zeroBlockSum)
			continue
		}
		lo := b*SumBlockSize - off
		if sums != nil { // an extent record's, on whole blocks
			j.sums.set(b, binary.LittleEndian.Uint32(sums[lo/SumBlockSize*4:]))
			continue
		}
		hi := min(lo+SumBlockSize, size-off, int64(len(w.Data)))
		j.sums.set(b, blockSum(w.Data[lo:hi]))
	}
	return nil
}

// verify checks the blocks of p, read from the aligned offset off, against
// the table and rechecks the ones that fail (see recheck), copying a good
// re-read into p. It returns the blocks that are corrupt. With sums, it
// appends to it the CRC-32C of each block of p as it leaves (p is whole
// blocks then: ReadSummed).
func (j *Journal) verify(p []byte, off int64, sums *[]byte) ([]int64, error) {
	var bad []int64
	var buf []byte
	for i := int64(0); i < int64(len(p)); i += SumBlockSize {
		blk := p[i:min(i+SumBlockSize, int64(len(p)))]
		b := (off + i) / SumBlockSize
		if blockSum(blk) == j.sums.get(b) {
			if sums != nil {
				*sums = binary.LittleEndian.AppendUint32(*sums, crc32.Checksum(blk, crc32c.Table))
			}
			continue
		}
		if buf == nil {
			buf = make([]byte, SumBlockSize)
		}
		good, err := j.recheck(b, buf)
		if err != nil {
			return nil, err
		}
		if !good {
			bad = append(bad, b*SumBlockSize)
			continue
		}
		copy(blk, buf)
		if sums != nil {
			*sums = binary.LittleEndian.AppendUint32(*sums, crc32.Checksum(blk, crc32c.Table))
		}
	}
	if len(bad) > 0 {
		j.checksumErrors.Add(uint64(len(bad)))
		j.log.Error("journal: block checksum mismatch", "blocks", len(bad), "first_offset", bad[0])
	}
	return bad, nil
}

// recheck tells a corrupt block from one a concurrent write was changing
// while ReadAt read it: it re-reads the block until the bytes match the
// table (good: buf holds them), or until they do not while no write to the
// block was pending and the block's change counter did not move across the
// read (corrupt). Apply updates the entry (and the counter) before it drops
// the write from applying, so a write that raced the read shows up in one
// or the other. (Comparing the entry itself, as this did, took a block
// that two writes brought back to its old bytes during the read for
// corrupt.)
func (j *Journal) recheck(b int64, buf []byte) (bool, error) {
	off, end := b*SumBlockSize, (b+1)*SumBlockSize
	for try := 0; ; try++ {
		before := j.sums.gen(b)
		p, err := j.readBlock(b, buf)
		if err != nil {
			return false, err
		}
		sum := blockSum(p)
		j.applyMu.Lock()
		busy := j.overlapsBefore(^uint64(0), off, end)
		if sum == j.sums.get(b) {
			j.applyMu.Unlock()
			return true, nil
		}
		if !busy && before == j.sums.gen(b) {
			j.applyMu.Unlock()
			return false, nil
		}
		for j.overlapsBefore(^uint64(0), off, end) {
			j.applyCond.Wait()
		}
		j.applyMu.Unlock()
		if try >= 1000 {
			return false, fmt.Errorf("journal: block at %d kept changing while its checksum was rechecked", off)
		}
	}
}
