package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"slices"

	"github.com/grbd/grbd/internal/crc32c"
	"github.com/grbd/grbd/internal/vfs"
)

// Meta file, part of the format: do not change. Written whole to meta.tmp,
// fdatasynced, renamed over meta and the directory synced, so a reader sees
// either the old or the new file, never a torn one.
//
//	 0       4         6       8        16           24           32              40     48        56                 56+8n  60+8n  64+8n
//	+-------+---------+-------+--------+------------+------------+---------------+------+---------+------------------+------+------+
//	| magic | version | flags | length | deviceSize | regionSize | checkpointSeq | salt | regions | table[regions]   | crc  | pad  |
//	+-------+---------+-------+--------+------------+------------+---------------+------+---------+------------------+------+------+
//
// length is the whole file; table[i] is the seq of the last write to region
// i at the checkpoint (0: never written); crc is the CRC32C of [0, 56+8n).
const (
	metaHeaderSize = 56
	metaName       = "meta"
	metaTmpName    = "meta.tmp"

	maxRegions        = 1 << 22 // 4M entries, a 32 MiB table
	defaultRegionSize = 4 << 10
	minRegionSize     = 512
)

type meta struct {
	deviceSize    int64
	regionSize    int64
	checkpointSeq uint64
	salt          uint64
	regions       []uint64
}

func metaLen(regions int) int { return metaHeaderSize + 8*regions + 8 }

// encodeMeta appends the encoding of m to dst.
func encodeMeta(dst []byte, m *meta) []byte {
	n := metaLen(len(m.regions))
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	b := dst[start:]
	le := binary.LittleEndian
	le.PutUint32(b[0:], metaMagic)
	le.PutUint16(b[4:], formatVersion)
	le.PutUint16(b[6:], 0)
	le.PutUint64(b[8:], uint64(n))
	le.PutUint64(b[16:], uint64(m.deviceSize))
	le.PutUint64(b[24:], uint64(m.regionSize))
	le.PutUint64(b[32:], m.checkpointSeq)
	le.PutUint64(b[40:], m.salt)
	le.PutUint64(b[48:], uint64(len(m.regions)))
	for i, s := range m.regions {
		le.PutUint64(b[metaHeaderSize+8*i:], s)
	}
	le.PutUint32(b[n-8:], crc32.Checksum(b[:n-8], crc32c.Table))
	le.PutUint32(b[n-4:], 0)
	return dst
}

// decodeMeta decodes a whole meta file. It allocates only the region table,
// whose size is bounded by len(b).
func decodeMeta(b []byte) (*meta, error) {
	le := binary.LittleEndian
	if len(b) < metaHeaderSize+8 {
		return nil, fmt.Errorf("%w: meta is %d bytes", ErrTruncated, len(b))
	}
	if le.Uint32(b) != metaMagic {
		return nil, fmt.Errorf("%w: bad meta magic %#x", ErrCorrupt, le.Uint32(b))
	}
	if l := le.Uint64(b[8:]); l != uint64(len(b)) {
		return nil, fmt.Errorf("%w: meta length field %d, file %d bytes", ErrCorrupt, l, len(b))
	}
	n := len(b)
	if got, want := crc32.Checksum(b[:n-8], crc32c.Table), le.Uint32(b[n-8:]); got != want {
		return nil, fmt.Errorf("%w: meta crc %#x, want %#x", ErrCorrupt, got, want)
	}
	if v := le.Uint16(b[4:]); v != formatVersion {
		return nil, fmt.Errorf("%w: meta version %d", ErrVersion, v)
	}
	m := &meta{
		deviceSize:    int64(le.Uint64(b[16:])),
		regionSize:    int64(le.Uint64(b[24:])),
		checkpointSeq: le.Uint64(b[32:]),
		salt:          le.Uint64(b[40:]),
	}
	count := le.Uint64(b[48:])
	switch {
	case le.Uint16(b[6:]) != 0 || le.Uint32(b[n-4:]) != 0:
		return nil, fmt.Errorf("%w: meta reserved fields", ErrCorrupt)
	case m.deviceSize <= 0 || m.regionSize < minRegionSize || bits.OnesCount64(uint64(m.regionSize)) != 1:
		return nil, fmt.Errorf("%w: meta device size %d region size %d", ErrCorrupt, m.deviceSize, m.regionSize)
	case count != uint64(regionCount(m.deviceSize, m.regionSize)) || count > maxRegions ||
		uint64(n) != uint64(metaLen(int(count))):
		return nil, fmt.Errorf("%w: meta has %d regions for %d bytes", ErrCorrupt, count, m.deviceSize)
	}
	m.regions = make([]uint64, count)
	for i := range m.regions {
		s := le.Uint64(b[metaHeaderSize+8*i:])
		if s > m.checkpointSeq {
			return nil, fmt.Errorf("%w: meta region %d seq %d above checkpoint %d", ErrCorrupt, i, s, m.checkpointSeq)
		}
		m.regions[i] = s
	}
	return m, nil
}

// regionCount is ceil(deviceSize/regionSize), saturating instead of
// overflowing.
func regionCount(deviceSize, regionSize int64) int64 {
	if regionSize <= 0 || deviceSize <= 0 {
		return math.MaxInt64
	}
	return (deviceSize-1)/regionSize + 1
}

// regionSizeFor returns want (default 4 KiB) doubled until the region table
// of a device of the given size has at most maxRegions entries.
func regionSizeFor(deviceSize, want int64) (int64, error) {
	if want == 0 {
		want = defaultRegionSize
	}
	if want < minRegionSize || bits.OnesCount64(uint64(want)) != 1 {
		return 0, fmt.Errorf("%w: region size %d is not a power of two >= %d", ErrInvalidOptions, want, minRegionSize)
	}
	for regionCount(deviceSize, want) > maxRegions {
		want *= 2
	}
	return want, nil
}

// StoreExists reports whether dir holds a store (its meta file), so that a
// caller can tell creation from reopening before it picks Options.DeviceSize.
func StoreExists(fs vfs.FS, dir string) (bool, error) {
	if fs == nil {
		fs = vfs.Default
	}
	_, err := fs.Stat(filepath.Join(dir, metaName))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("journal: %w", err)
}

// readMeta reads and decodes dir/meta; (nil, nil) when it does not exist.
func (j *Journal) readMeta() (*meta, error) {
	name := filepath.Join(j.dir, metaName)
	f, err := j.fs.OpenFile(name, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: open meta: %w", err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, fmt.Errorf("journal: stat meta: %w", err)
	}
	if size > int64(metaLen(maxRegions)) {
		return nil, fmt.Errorf("%w: meta is %d bytes", ErrCorrupt, size)
	}
	b := make([]byte, size)
	if n, err := f.ReadAt(b, 0); n != len(b) {
		return nil, fmt.Errorf("journal: read meta: %w", err)
	}
	m, err := decodeMeta(b)
	if err != nil {
		return nil, fmt.Errorf("journal: %s: %w", name, err)
	}
	return m, nil
}

// writeMeta replaces dir/meta by b atomically and durably. sticky reports an
// error after which it is unknown which meta a crash would leave (the final
// SyncDir failed): the caller must then fail the store rather than free what
// the new meta makes redundant.
func (j *Journal) writeMeta(b []byte) (sticky bool, err error) {
	err = vfs.WriteFileAtomic(j.fs, filepath.Join(j.dir, metaName), b)
	if errors.Is(err, vfs.ErrDirSync) {
		return true, fmt.Errorf("journal: %w", err)
	}
	if err != nil {
		return false, fmt.Errorf("journal: write meta: %w", err)
	}
	return false, nil
}
