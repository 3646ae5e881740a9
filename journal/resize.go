package journal

import (
	"errors"
	"fmt"

	"github.com/grbd/grbd/internal/vfs"
)

// Growing the device (docs/journal.md, "Resize"). A resize is a record like
// a write: it takes the next seq, so every write before it fits the old
// size and a write past the old end can only come after it. The meta file
// learns the new size at the next checkpoint; until then replay re-applies
// the record, which is idempotent (grow never shrinks the data file and
// keeps the region table of the bytes it already covers).

// logResize grows the data file, journals a resize record and grows the
// region table and the size. It holds the append lock throughout, so no
// write is appended between the record and the new size. The data file is
// extended first: a full disk refuses the grow with nothing journaled (a
// data file left larger is harmless: Open cuts it, the next grow reuses
// it). A resize to the current size is journaled and changes nothing (the
// primary re-announces its size that way to a peer it resyncs).
func (j *Journal) logResize(w Write) (Logged, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if cur := j.devSize.Load(); w.Resize < cur {
		return Logged{}, fmt.Errorf("%w: resize to %d bytes, device has %d", ErrShrink, w.Resize, cur)
	}
	if err := j.failed(); err != nil {
		return Logged{}, err
	}
	if err := j.extendData(w.Resize); err != nil {
		return Logged{}, fmt.Errorf("journal: grow data file to %d bytes: %w", w.Resize, err)
	}
	var out [1]Logged
	logged, err := j.logLocked([]Write{w}, out[:0], RecordHeaderSize+segHeaderSize)
	if err != nil {
		return Logged{}, err
	}
	j.growTable(w.Resize)
	j.log.Info("journal: device grown", "seq", logged[0].Seq, "size", w.Resize, "region_size", j.regionSize)
	return logged[0], nil
}

// grow is replay's resize: idempotent, a no-op when the store is that big
// already.
func (j *Journal) grow(size int64) error {
	if err := j.extendData(size); err != nil {
		return err
	}
	j.growTable(size)
	return nil
}

// extendData makes the data file at least size bytes, thick-provisioning
// the new range when the FS can (like creation).
func (j *Journal) extendData(size int64) error {
	old := j.devSize.Load()
	if size <= old {
		return nil
	}
	fsize, err := j.data.Size()
	if err != nil {
		return fmt.Errorf("stat data file: %w", err)
	}
	if fsize < size {
		if err := j.data.Truncate(size); err != nil {
			return fmt.Errorf("extend data file: %w", err)
		}
	}
	if a, ok := j.data.(vfs.Allocator); ok {
		if err := a.Allocate(old, size-old); err != nil && !errors.Is(err, vfs.ErrNotSupported) {
			return fmt.Errorf("reserve %d bytes for the data file: %w", size-old, err)
		}
	}
	return nil
}

// growTable extends the region table with unwritten regions (doubling the
// region size while the table would pass maxRegions) and publishes the new
// size. Caller holds mu, or is Open.
func (j *Journal) growTable(size int64) {
	if size <= j.devSize.Load() {
		return
	}
	rs, regions := j.regionSize, j.regions
	for regionCount(size, rs) > maxRegions {
		rs, regions = 2*rs, coarsen(regions)
	}
	j.regionSize = rs
	j.regions = append(regions, make([]uint64, regionCount(size, rs)-int64(len(regions)))...)
	j.placed = nil // the marks may name other regions now; unmarked is safe
	if j.sums != nil {
		// The new blocks are zeros; a block the old end cut short was
		// summed as padded with zeros, so its entry stays right.
		j.sums.grow((size + SumBlockSize - 1) / SumBlockSize)
	}
	j.devSize.Store(size)
}

// coarsen halves a region table: each new region covers two old ones and
// keeps the newer seq, so ChangedSince still reports every change (and at
// most one old region more per change).
func coarsen(regions []uint64) []uint64 {
	out := make([]uint64, (len(regions)+1)/2)
	for i, s := range regions {
		out[i/2] = max(out[i/2], s)
	}
	return out
}

// trimData cuts a data file of fsize bytes that is larger than the replayed
// size: a grow whose resize record was lost in the crash (an unsynced tail).
// The bytes past the size belong to no record that survived.
func (j *Journal) trimData(fsize int64) error {
	size := j.devSize.Load()
	if fsize <= size {
		return nil
	}
	j.log.Warn("journal: data file larger than the device: a grow was lost in a crash, cutting it", "file_size", fsize, "device_size", size)
	if err := j.data.Truncate(size); err != nil {
		return fmt.Errorf("journal: cut data file to %d bytes: %w", size, err)
	}
	if err := j.data.Sync(); err != nil {
		return fmt.Errorf("journal: sync data file: %w", err)
	}
	return nil
}

// ShrinkTo cuts the device to size bytes, below its current size: a
// secondary takes its primary's size that way when it is larger than the
// primary's (it applied a grow that nobody acknowledged, and the new
// primary never had it, or it was created from a larger device.size). The
// bytes past size are dropped. Like Seal, it checkpoints and restarts the
// journal at LastSeq, with the new size in the meta file: after a crash the
// store has the old size or the new one. The caller must not Append,
// WriteInPlace, Sync or ReadRecords concurrently.
func (j *Journal) ShrinkTo(size int64) error {
	if j.closing.Load() {
		return ErrClosed
	}
	cur := j.devSize.Load()
	switch {
	case size <= 0 || size%SumBlockSize != 0:
		return fmt.Errorf("%w: shrink to %d bytes: not a positive multiple of %d", ErrInvalidOptions, size, SumBlockSize)
	case size >= cur:
		return fmt.Errorf("%w: shrink to %d bytes, device has %d", ErrInvalidOptions, size, cur)
	}
	if err := j.rewind(j.LastSeq(), size, "shrunk"); err != nil {
		return err
	}
	j.log.Warn("journal: device shrunk: the bytes past the new end are dropped", "size", size, "was", cur)
	return nil
}

// shrinkLocked makes the in-memory store size bytes: the size first, so
// that readers past it are refused before their checksums turn to zeros'
// (a later grow brings zeros back there). data.sum keeps the dropped
// blocks' pages: Open loads only the pages below the size, and the pages
// of a later grow are re-read by replay (its resize record) or written
// again by the next checkpoint (past the blocks saved last, or their
// counters moved). Caller holds mu.
func (j *Journal) shrinkLocked(size int64) {
	old := j.devSize.Load()
	j.devSize.Store(size)
	j.regions = j.regions[:regionCount(size, j.regionSize)]
	j.placed = nil
	if j.sums != nil {
		for b := size / SumBlockSize; b < (old+SumBlockSize-1)/SumBlockSize; b++ {
			j.sums.set(b, zeroBlockSum)
		}
	}
}
