package journal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/grbd/grbd/internal/crc32c"
)

// The checksum file data.sum (docs/journal.md, "The checksum file"): the
// table of block IDs on disk, so that a restart after a crash re-reads only
// the blocks a crash can have left unexplained, and a block that rotted
// before the crash is still caught by its ID after it.
//
// Version 3 is paged: a 4 KiB header, then one 4 KiB page per sumPageBlocks
// blocks, each with its own index, the store's salt and a CRC-32C, updated
// in place by every checkpoint (the pages whose blocks changed) before the
// checkpoint frees the records that explain them. A page that fails its CRC
// (torn, rotted, never written) costs a re-read of its blocks from
// data.img, never an error. Versions 1 and 2 were whole-file snapshots a
// clean Close wrote (decodeSums): an upgrade reads them once.

const (
	sumName = "data.sum"
	// sumVersion is the paged layout; sumVersionIDs and sumVersionCRC the
	// whole-file ones of earlier builds (block IDs, CRC-32Cs).
	sumVersion    = 3
	sumVersionIDs = 2
	sumVersionCRC = 1
	sumMagic      = 0x4d555347 // "GSUM" little-endian
	// sumPageSize is the size of the header and of each page.
	sumPageSize = 4096
	// sumPageBlocks is the blocks per page: 15 of the table's change
	// counters (sumGenBlocks), so a checkpoint finds a page's changes by
	// counter, and 3840 bytes of IDs, leaving room for the page's trailer.
	sumPageBlocks = 15 * sumGenBlocks
	// sumPageTrailer is where a page's index, salt and CRC start.
	sumPageTrailer = 4 * sumPageBlocks
	// sumCleanFlag in the header's flags: the last run closed cleanly, so
	// every page is current and no extent is in doubt.
	sumCleanFlag = 1
	// sumHeaderSize is the size of the whole-file versions' header.
	sumHeaderSize = 36
)

var le = binary.LittleEndian

// sumOffset is page p's offset in data.sum.
func sumOffset(p int64) int64 { return (p + 1) * sumPageSize }

// sumPages is the number of pages for blocks blocks.
func sumPages(blocks int64) int64 { return (blocks + sumPageBlocks - 1) / sumPageBlocks }

// encodeSumHeader encodes the version-3 header. Layout (little-endian):
// magic u32, version u8, 3 reserved zero bytes, block size u32, page
// blocks u32, salt u64, flags u32, CRC-32C u32 of the 28 bytes before it;
// zeros to sumPageSize.
func encodeSumHeader(dst []byte, salt uint64, clean bool) []byte {
	b := append(dst[:0], make([]byte, sumPageSize)...)
	le.PutUint32(b[0:], sumMagic)
	b[4] = sumVersion
	le.PutUint32(b[8:], SumBlockSize)
	le.PutUint32(b[12:], sumPageBlocks)
	le.PutUint64(b[16:], salt)
	if clean {
		le.PutUint32(b[24:], sumCleanFlag)
	}
	le.PutUint32(b[28:], crc32.Checksum(b[:28], crc32c.Table))
	return b
}

// decodeSumHeader parses a version-3 header (the first 32 bytes of b; the
// rest of the header page is not read).
func decodeSumHeader(b []byte) (salt uint64, clean bool, err error) {
	if len(b) < 32 {
		return 0, false, fmt.Errorf("%w: checksum file header of %d bytes", ErrTruncated, len(b))
	}
	if m := le.Uint32(b[0:]); m != sumMagic {
		return 0, false, fmt.Errorf("%w: checksum file magic %#x", ErrCorrupt, m)
	}
	if got, want := crc32.Checksum(b[:28], crc32c.Table), le.Uint32(b[28:]); got != want {
		return 0, false, fmt.Errorf("%w: checksum file header CRC %#x, want %#x", ErrCorrupt, got, want)
	}
	if v := b[4]; v != sumVersion {
		return 0, false, fmt.Errorf("%w: checksum file version %d", ErrVersion, v)
	}
	switch flags := le.Uint32(b[24:]); {
	case b[5] != 0 || b[6] != 0 || b[7] != 0 || flags&^sumCleanFlag != 0:
		return 0, false, fmt.Errorf("%w: checksum file reserved bits set", ErrCorrupt)
	case le.Uint32(b[8:]) != SumBlockSize || le.Uint32(b[12:]) != sumPageBlocks:
		return 0, false, fmt.Errorf("%w: checksum file of %d-byte blocks, %d per page", ErrCorrupt, le.Uint32(b[8:]), le.Uint32(b[12:]))
	default:
		return le.Uint64(b[16:]), flags&sumCleanFlag != 0, nil
	}
}

// encodeSumPage appends page p of t (whose first blocks entries are the
// device's; the rest of the page holds the zero block's ID).
func encodeSumPage(dst []byte, t *sumTable, p, blocks int64, salt uint64) []byte {
	first := p * sumPageBlocks
	return appendSumPage(dst, p, salt, func(k int64) uint32 {
		if first+k < blocks {
			return t.get(first + k)
		}
		return zeroBlockSum
	})
}

// appendSumPage appends page p with the IDs id(0..sumPageBlocks-1).
// Layout: the sumPageBlocks IDs (u32), page index u64, salt u64, zeros,
// and at sumPageSize-4 the CRC-32C of all the bytes before it.
func appendSumPage(dst []byte, p int64, salt uint64, id func(k int64) uint32) []byte {
	at := len(dst)
	dst = append(dst, make([]byte, sumPageSize)...)
	b := dst[at:]
	for k := int64(0); k < sumPageBlocks; k++ {
		le.PutUint32(b[4*k:], id(k))
	}
	le.PutUint64(b[sumPageTrailer:], uint64(p))
	le.PutUint64(b[sumPageTrailer+8:], salt)
	le.PutUint32(b[sumPageSize-4:], crc32.Checksum(b[:sumPageSize-4], crc32c.Table))
	return dst
}

// decodeSumPage checks a page and returns its index, salt and IDs.
func decodeSumPage(b []byte) (p int64, salt uint64, ids []byte, err error) {
	if len(b) < sumPageSize {
		return 0, 0, nil, fmt.Errorf("%w: checksum page of %d bytes", ErrTruncated, len(b))
	}
	b = b[:sumPageSize]
	if got, want := crc32.Checksum(b[:sumPageSize-4], crc32c.Table), le.Uint32(b[sumPageSize-4:]); got != want {
		return 0, 0, nil, fmt.Errorf("%w: checksum page CRC %#x, want %#x", ErrCorrupt, got, want)
	}
	for _, x := range b[sumPageTrailer+16 : sumPageSize-4] {
		if x != 0 {
			return 0, 0, nil, fmt.Errorf("%w: checksum page reserved bytes set", ErrCorrupt)
		}
	}
	idx := le.Uint64(b[sumPageTrailer:])
	if idx > 1<<40 {
		return 0, 0, nil, fmt.Errorf("%w: checksum page index %d", ErrCorrupt, idx)
	}
	return int64(idx), le.Uint64(b[sumPageTrailer+8:]), b[:sumPageTrailer], nil
}

// sumHeader is the header of the whole-file versions 1 and 2.
type sumHeader struct {
	version   byte
	blockSize uint32
	count     uint64 // blocks
	salt      uint64 // the store's salt: a file from another store is refused
	bodyCRC   uint32
}

// decodeSums parses a whole-file data.sum of an earlier build. The layout:
// magic u32, version u8, 3 reserved zero bytes, block size u32, count u64,
// salt u64, body CRC u32, header CRC u32 (over the 32 bytes before it),
// then count u32 checksums, one per block in device order: block IDs in
// version 2, CRC-32Cs in version 1.
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
	if v := b[4]; v != sumVersionIDs && v != sumVersionCRC {
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
