package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/grbd/grbd/internal/crc32c"
	"github.com/grbd/grbd/internal/vfs"
)

// The checksum file data.sum (docs/journal.md, "Block checksums"): a clean
// Close writes it, Open reads it and removes it before the store takes
// writes. Its absence after a crash is what tells Open to rebuild the table
// from the data file: a write the crash cut off may have reached data.img
// without its record, and a checksum saved earlier would call it corrupt.

const (
	sumName       = "data.sum"
	sumHeaderSize = 36
	// sumVersion 2 holds block IDs; version 1, written by earlier builds,
	// CRC-32Cs, which the table no longer holds: such a file is decoded (it
	// still says the store was closed cleanly) and the table rebuilt.
	sumVersion    = 2
	sumVersionCRC = 1
	sumMagic      = 0x4d555347 // "GSUM" little-endian
)

var le = binary.LittleEndian

// sumHeader is data.sum's header.
type sumHeader struct {
	version   byte
	blockSize uint32
	count     uint64 // blocks
	salt      uint64 // the store's salt: a file from another store is refused
	bodyCRC   uint32
}

// encodeSums encodes blocks entries of t with the store's salt.
func encodeSums(t *sumTable, blocks int64, salt uint64) []byte {
	b := make([]byte, sumHeaderSize+4*blocks)
	body := b[sumHeaderSize:]
	for i := int64(0); i < blocks; i++ {
		le.PutUint32(body[4*i:], t.get(i))
	}
	le.PutUint32(b[0:], sumMagic)
	b[4] = sumVersion
	le.PutUint32(b[8:], SumBlockSize)
	le.PutUint64(b[12:], uint64(blocks))
	le.PutUint64(b[20:], salt)
	le.PutUint32(b[28:], crc32.Checksum(body, crc32c.Table))
	le.PutUint32(b[32:], crc32.Checksum(b[:32], crc32c.Table))
	return b
}

// decodeSums parses a data.sum file. The layout: magic u32, version u8,
// 3 reserved zero bytes, block size u32, count u64, salt u64, body CRC u32,
// header CRC u32 (over the 32 bytes before it), then count u32 checksums,
// one per block in device order: block IDs in version 2, CRC-32Cs in
// version 1.
func decodeSums(b []byte) (sumHeader, []byte, error) {
	var h sumHeader
	if len(b) < sumHeaderSize {
		return h, nil, fmt.Errorf("%w: checksum file of %d bytes", ErrTruncated, len(b))
	}
	if m := le.Uint32(b[0:]); m != sumMagic {
		return h, nil, fmt.Errorf("%w: checksum file magic %#x", ErrCorrupt, m)
	}
	if got, want := crc32.Checksum(b[:32], crc32c.Table), le.Uint32(b[32:]); got != want {
		return h, nil, fmt.Errorf("%w: checksum file header CRC %#x, want %#x", ErrCorrupt, got, want)
	}
	if v := b[4]; v != sumVersion && v != sumVersionCRC {
		return h, nil, fmt.Errorf("%w: checksum file version %d", ErrVersion, v)
	}
	if b[5] != 0 || b[6] != 0 || b[7] != 0 {
		return h, nil, fmt.Errorf("%w: checksum file reserved bytes set", ErrCorrupt)
	}
	h = sumHeader{version: b[4], blockSize: le.Uint32(b[8:]), count: le.Uint64(b[12:]), salt: le.Uint64(b[20:]), bodyCRC: le.Uint32(b[28:])}
	body := b[sumHeaderSize:]
	if h.blockSize != SumBlockSize {
		return h, nil, fmt.Errorf("%w: checksum block size %d, want %d", ErrCorrupt, h.blockSize, SumBlockSize)
	}
	if h.count > uint64(len(body))/4 || uint64(len(body)) != 4*h.count {
		return h, nil, fmt.Errorf("%w: checksum file holds %d bytes for %d blocks", ErrCorrupt, len(body), h.count)
	}
	if got := crc32.Checksum(body, crc32c.Table); got != h.bodyCRC {
		return h, nil, fmt.Errorf("%w: checksum file body CRC %#x, want %#x", ErrCorrupt, got, h.bodyCRC)
	}
	return h, body, nil
}

// setupSums gives the opened store its checksum table: from data.sum when
// a clean Close left one that fits, else rebuilt from the data file. Then
// it removes data.sum (durably) before the first write can change a block.
func (j *Journal) setupSums() error {
	blocks := (j.devSize.Load() + SumBlockSize - 1) / SumBlockSize
	name := filepath.Join(j.dir, sumName)
	t, clean, why := j.loadSums(name, blocks)
	j.openedClean = clean
	if t == nil {
		start := time.Now()
		var err error
		if t, err = j.rebuildSums(blocks); err != nil {
			return err
		}
		j.log.Info("journal: rebuilt block checksums from the data file", "reason", why,
			"bytes", j.devSize.Load(), "took", time.Since(start).Round(time.Millisecond))
	}
	err := j.fs.Remove(name)
	switch {
	case err == nil:
		if err := j.fs.SyncDir(j.dir); err != nil {
			return fmt.Errorf("journal: sync dir %s: %w", j.dir, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("journal: remove %s: %w", sumName, err)
	}
	j.sums = t
	return nil
}

// loadSums reads data.sum, or says why it cannot be used. clean reports
// that the file is this store's, written by a clean Close: also so for a
// version-1 file, whose CRC-32Cs the table cannot take (the table is then
// rebuilt, but the activity log need not treat the stop as a crash).
func (j *Journal) loadSums(name string, blocks int64) (t *sumTable, clean bool, why string) {
	if j.replayed > 0 {
		return nil, false, fmt.Sprintf("the journal replayed %d records", j.replayed)
	}
	b, err := vfs.ReadFile(j.fs, name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, "no checksum file: the store was not closed cleanly"
	}
	if err != nil {
		return nil, false, err.Error()
	}
	h, body, err := decodeSums(b)
	switch {
	case err != nil:
		return nil, false, err.Error()
	case h.salt != j.salt:
		return nil, false, "the checksum file belongs to another store"
	case int64(h.count) != blocks:
		return nil, false, fmt.Sprintf("the checksum file has %d blocks, the device %d", h.count, blocks)
	case h.version == sumVersionCRC:
		return nil, true, "the checksum file holds an earlier build's CRC-32Cs, not block IDs"
	}
	t = newSumTable(blocks)
	for i := int64(0); i < blocks; i++ {
		t.set(i, le.Uint32(body[4*i:]))
	}
	return t, true, ""
}

// rebuildSums computes the table from the data file. Only the file's data
// ranges are read: a hole reads back as zeros, whose checksum every entry
// of a new table already holds. (Reading a sparse 1 GiB data.img took 3.5 s
// at each restart after a crash on this machine, nearly all of it the
// kernel zero-filling page-cache pages for the holes.)
func (j *Journal) rebuildSums(blocks int64) (*sumTable, error) {
	t := newSumTable(blocks)
	size := j.devSize.Load()
	buf := make([]byte, 1<<20)
	err := dataRanges(j.data, size, func(start, end int64) error {
		for off := start; off < end; off += int64(len(buf)) {
			p := buf[:min(int64(len(buf)), end-off)]
			if n, err := j.data.ReadAt(p, off); n < len(p) {
				return fmt.Errorf("journal: read data file at %d for checksums: %w", off, err)
			}
			for i := 0; i < len(p); i += SumBlockSize {
				t.set((off+int64(i))/SumBlockSize, blockSum(p[i:min(i+SumBlockSize, len(p))]))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// dataRanges calls fn, in order, for the ranges of f's first size bytes
// that may hold data, widened to whole checksum blocks and never
// overlapping: all of it where f cannot tell (vfs.DataFinder). It syncs f
// first, so that the file system answers from its allocation rather than
// from dirty pages: OpenZFS 2.2 could report freshly written data as a hole
// (openzfs/zfs#15526).
func dataRanges(f vfs.File, size int64, fn func(start, end int64) error) error {
	df, ok := f.(vfs.DataFinder)
	if !ok {
		return fn(0, size)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("journal: sync the data file: %w", err)
	}
	for off := int64(0); off < size; {
		start, end, err := df.NextData(off)
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, vfs.ErrNotSupported):
			return fn(off, size)
		case err != nil:
			return fmt.Errorf("journal: find data in the data file: %w", err)
		case end <= start || start < off:
			return fmt.Errorf("journal: data file reports data range [%d, %d) after %d", start, end, off)
		}
		start = max(off, start/SumBlockSize*SumBlockSize)
		if start >= size {
			return nil
		}
		end = min(size, (end+SumBlockSize-1)/SumBlockSize*SumBlockSize)
		if err := fn(start, end); err != nil {
			return err
		}
		off = end
	}
	return nil
}

// saveSums writes data.sum for the next Open: the last step of a clean
// Close, when every write is applied and checkpointed.
func (j *Journal) saveSums() error {
	if j.sums == nil {
		return nil
	}
	blocks := (j.devSize.Load() + SumBlockSize - 1) / SumBlockSize
	if err := vfs.WriteFileAtomic(j.fs, filepath.Join(j.dir, sumName), encodeSums(j.sums, blocks, j.salt)); err != nil {
		return fmt.Errorf("journal: save block checksums: %w", err)
	}
	return nil
}
