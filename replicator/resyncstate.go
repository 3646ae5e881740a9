package replicator

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Extent is a byte range of the device.
type Extent struct {
	Offset, Length uint64
}

// ResyncState is what a secondary persists while its disk is Inconsistent:
// it holds the primary's writes only up to From, and additionally needs the
// listed regions (its own writes after From that it discarded when it
// rewound), or everything when All is set. Written before the first region
// copy is applied, removed when the primary's ResyncDone arrives.
type ResyncState struct {
	From    uint64
	All     bool
	Extents []Extent
}

// Resync-state file format. Part of the format: do not change.
//
//	| magic "GRBS" u32 | version u8 (1) | flags u8 (bit 0: all) | reserved 2 |
//	| count u32 | crc32c u32 | from u64 | count x (offset u64 | length u64) |
//
// Little-endian; the CRC-32C covers header bytes [0:12] and everything after
// the CRC field.
const (
	resyncMagic   = 0x53425247
	resyncVersion = 1
	resyncHeader  = 16
	maxResyncExt  = 1 << 22
)

// Encode returns the file image.
func (r ResyncState) Encode() []byte {
	b := make([]byte, resyncHeader, resyncHeader+8+16*len(r.Extents))
	binary.LittleEndian.PutUint32(b, resyncMagic)
	b[4] = resyncVersion
	b[5] = boolByte(r.All)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(r.Extents)))
	b = binary.LittleEndian.AppendUint64(b, r.From)
	for _, e := range r.Extents {
		b = binary.LittleEndian.AppendUint64(b, e.Offset)
		b = binary.LittleEndian.AppendUint64(b, e.Length)
	}
	crc := crc32.Update(crc32.Checksum(b[:12], castagnoli), castagnoli, b[resyncHeader:])
	binary.LittleEndian.PutUint32(b[12:], crc)
	return b
}

// DecodeResyncState parses a file image. Errors wrap ErrCorrupt.
func DecodeResyncState(b []byte) (ResyncState, error) {
	var r ResyncState
	if len(b) < resyncHeader+8 {
		return r, fmt.Errorf("%w: resync state of %d bytes", ErrCorrupt, len(b))
	}
	if binary.LittleEndian.Uint32(b) != resyncMagic || b[4] != resyncVersion || b[5] > 1 || b[6]|b[7] != 0 {
		return r, fmt.Errorf("%w: resync state header", ErrCorrupt)
	}
	n := binary.LittleEndian.Uint32(b[8:])
	if n > maxResyncExt || len(b) != resyncHeader+8+16*int(n) {
		return r, fmt.Errorf("%w: resync state of %d extents in %d bytes", ErrCorrupt, n, len(b))
	}
	if crc32.Update(crc32.Checksum(b[:12], castagnoli), castagnoli, b[resyncHeader:]) != binary.LittleEndian.Uint32(b[12:]) {
		return r, fmt.Errorf("%w: resync state checksum", ErrCorrupt)
	}
	r.All = b[5] == 1
	r.From = binary.LittleEndian.Uint64(b[resyncHeader:])
	for i := range int(n) {
		p := b[resyncHeader+8+16*i:]
		r.Extents = append(r.Extents, Extent{Offset: binary.LittleEndian.Uint64(p), Length: binary.LittleEndian.Uint64(p[8:])})
	}
	return r, nil
}
