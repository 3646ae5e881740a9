package journal

import (
	"fmt"
	"hash/crc32"
	"slices"

	"github.com/grbd/grbd/internal/crc32c"
)

// The activity log's file format (docs/journal.md, "Activity log"). Two
// files, activity.0 and activity.1, take the transactions in turn, so a
// write torn by a crash leaves the other, older one intact; the valid file
// with the higher generation is the log.
//
//	off size field
//	  0    4 magic "GACT" (little-endian 0x54434147)
//	  4    1 version (1)
//	  5    3 reserved, zero
//	  8    4 extent size in bytes
//	 12    4 hot extents H
//	 16    4 suspect extents S
//	 20    8 generation (the higher wins)
//	 28    8 the store's salt (a file of another store is refused)
//	 36    8 the machine's boot (a hash of its boot_id; 0: unknown)
//	 44    4 body CRC32C
//	 48    4 header CRC32C over bytes 0-47
//	 52  4*H hot extent numbers, ascending
//	  .  4*S suspect extent numbers, ascending
//
// Bytes after the body are stale (a file only grows) and ignored.

const (
	actMagic      = 0x54434147 // "GACT" little-endian
	actVersion    = 1
	actHeaderSize = 52
)

// actLog is one decoded activity log transaction.
type actLog struct {
	extentSize uint32
	gen, salt  uint64
	boot       uint64
	hot        []uint32
	suspects   []uint32
}

// encodeAct appends l's encoding to b[:0].
func encodeAct(b []byte, l *actLog) []byte {
	n := actHeaderSize + 4*(len(l.hot)+len(l.suspects))
	b = slices.Grow(b[:0], n)[:n]
	body := b[actHeaderSize:]
	for i, x := range l.hot {
		le.PutUint32(body[4*i:], x)
	}
	for i, x := range l.suspects {
		le.PutUint32(body[4*(len(l.hot)+i):], x)
	}
	le.PutUint32(b[0:], actMagic)
	b[4], b[5], b[6], b[7] = actVersion, 0, 0, 0
	le.PutUint32(b[8:], l.extentSize)
	le.PutUint32(b[12:], uint32(len(l.hot)))
	le.PutUint32(b[16:], uint32(len(l.suspects)))
	le.PutUint64(b[20:], l.gen)
	le.PutUint64(b[28:], l.salt)
	le.PutUint64(b[36:], l.boot)
	le.PutUint32(b[44:], crc32.Checksum(body, crc32c.Table))
	le.PutUint32(b[48:], crc32.Checksum(b[:48], crc32c.Table))
	return b
}

// decodeAct parses an activity log file.
func decodeAct(b []byte) (*actLog, error) {
	if len(b) < actHeaderSize {
		return nil, fmt.Errorf("%w: activity log of %d bytes", ErrTruncated, len(b))
	}
	if m := le.Uint32(b[0:]); m != actMagic {
		return nil, fmt.Errorf("%w: activity log magic %#x", ErrCorrupt, m)
	}
	if got, want := crc32.Checksum(b[:48], crc32c.Table), le.Uint32(b[48:]); got != want {
		return nil, fmt.Errorf("%w: activity log header CRC %#x, want %#x", ErrCorrupt, got, want)
	}
	if v := b[4]; v != actVersion {
		return nil, fmt.Errorf("%w: activity log version %d", ErrVersion, v)
	}
	if b[5] != 0 || b[6] != 0 || b[7] != 0 {
		return nil, fmt.Errorf("%w: activity log reserved bytes set", ErrCorrupt)
	}
	l := &actLog{extentSize: le.Uint32(b[8:]), gen: le.Uint64(b[20:]), salt: le.Uint64(b[28:]), boot: le.Uint64(b[36:])}
	hot, sus := uint64(le.Uint32(b[12:])), uint64(le.Uint32(b[16:]))
	if l.extentSize == 0 {
		return nil, fmt.Errorf("%w: activity log extent size 0", ErrCorrupt)
	}
	if 4*(hot+sus) > uint64(len(b)-actHeaderSize) {
		return nil, fmt.Errorf("%w: activity log of %d bytes for %d extents", ErrTruncated, len(b), hot+sus)
	}
	body := b[actHeaderSize : actHeaderSize+4*(hot+sus)]
	if got, want := crc32.Checksum(body, crc32c.Table), le.Uint32(b[44:]); got != want {
		return nil, fmt.Errorf("%w: activity log body CRC %#x, want %#x", ErrCorrupt, got, want)
	}
	l.hot, l.suspects = make([]uint32, hot), make([]uint32, sus)
	for i := range l.hot {
		l.hot[i] = le.Uint32(body[4*i:])
	}
	for i := range l.suspects {
		l.suspects[i] = le.Uint32(body[4*(int(hot)+i):])
	}
	if !ascending(l.hot) || !ascending(l.suspects) {
		return nil, fmt.Errorf("%w: activity log extents not in ascending order", ErrCorrupt)
	}
	return l, nil
}

func ascending(xs []uint32) bool {
	for i := 1; i < len(xs); i++ {
		if xs[i] <= xs[i-1] {
			return false
		}
	}
	return true
}
