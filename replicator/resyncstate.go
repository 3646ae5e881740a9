package replicator

import (
	"encoding/binary"
	"fmt"
	"github.com/grbd/grbd/internal/crc32c"
	"github.com/grbd/grbd/internal/extent"
	"hash/crc32"
)

// ResyncState is what a secondary persists while its disk is Inconsistent:
// it holds the primary's writes only up to From, and additionally needs the
// listed regions (its own writes after From that it discarded when it
// rewound), or everything when All is set. Written before the first region
// copy is applied, removed when the primary's ResyncDone arrives.
//
// Progress, when set, is how far an interrupted resync got
// (docs/replication.md, "Resuming a resync").
type ResyncState struct {
	From     uint64
	All      bool
	Extents  []extent.Extent
	Progress *ResyncProgress
}

// ResyncProgress is the part of a resync a secondary may be spared when it
// resumes. Invariant (what makes the claim true): every range in Copied holds,
// durably, exactly the data the primary whose disk is Source had after its
// record AsOf, which its history assigns to Epoch; the secondary's journal
// was synced past AsOf before the progress naming it was persisted, and
// every later change of a Copied range on the secondary came from that
// primary's ordered stream in one session.
type ResyncProgress struct {
	AsOf, Epoch, Source uint64
	Copied              []extent.Extent
}

// Resync-state file format. Part of the format: do not change.
//
//	| magic "GRBS" u32 | version u8 (1, 2) | flags u8 (bit 0: all) | reserved 2 |
//	| count u32 | crc32c u32 | from u64 | count x (offset u64 | length u64) |
//	version 2 only:
//	| asOf u64 | epoch u64 | source u64 | copied u32 | copied x (offset u64 | length u64) |
//
// Little-endian; the CRC-32C covers header bytes [0:12] and everything after
// the CRC field. Version 1 is written when there is no progress (so a state
// written by an older release decodes and re-encodes to the same bytes);
// version 2 always carries progress.
const (
	resyncMagic    = 0x53425247
	resyncVersion1 = 1
	resyncVersion2 = 2
	resyncHeader   = 16
	maxResyncExt   = 1 << 22
)

// Encode returns the file image.
func (r ResyncState) Encode() []byte {
	n := resyncHeader + 8 + 16*len(r.Extents)
	if r.Progress != nil {
		n += 28 + 16*len(r.Progress.Copied)
	}
	b := make([]byte, resyncHeader, n)
	binary.LittleEndian.PutUint32(b, resyncMagic)
	b[4] = resyncVersion1
	b[5] = boolByte(r.All)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(r.Extents)))
	b = binary.LittleEndian.AppendUint64(b, r.From)
	b = extent.Append(b, r.Extents)
	if p := r.Progress; p != nil {
		b[4] = resyncVersion2
		b = binary.LittleEndian.AppendUint64(b, p.AsOf)
		b = binary.LittleEndian.AppendUint64(b, p.Epoch)
		b = binary.LittleEndian.AppendUint64(b, p.Source)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p.Copied)))
		b = extent.Append(b, p.Copied)
	}
	crc := crc32.Update(crc32.Checksum(b[:12], crc32c.Table), crc32c.Table, b[resyncHeader:])
	binary.LittleEndian.PutUint32(b[12:], crc)
	return b
}

// DecodeResyncState parses a file image of either version. Errors wrap
// ErrCorrupt.
func DecodeResyncState(b []byte) (ResyncState, error) {
	var r ResyncState
	if len(b) < resyncHeader+8 {
		return r, fmt.Errorf("%w: resync state of %d bytes", ErrCorrupt, len(b))
	}
	v := b[4]
	if binary.LittleEndian.Uint32(b) != resyncMagic || (v != resyncVersion1 && v != resyncVersion2) || b[5] > 1 || b[6]|b[7] != 0 {
		return r, fmt.Errorf("%w: resync state header", ErrCorrupt)
	}
	n := binary.LittleEndian.Uint32(b[8:])
	end := resyncHeader + 8 + 16*int(n)
	if n > maxResyncExt || len(b) < end || (v == resyncVersion1 && len(b) != end) {
		return r, fmt.Errorf("%w: resync state of %d extents in %d bytes", ErrCorrupt, n, len(b))
	}
	var m uint32
	if v == resyncVersion2 {
		if len(b) < end+28 {
			return r, fmt.Errorf("%w: resync progress of %d bytes", ErrCorrupt, len(b)-end)
		}
		m = binary.LittleEndian.Uint32(b[end+24:])
		if m > maxResyncExt || len(b) != end+28+16*int(m) {
			return r, fmt.Errorf("%w: resync progress of %d extents in %d bytes", ErrCorrupt, m, len(b)-end)
		}
	}
	if crc32.Update(crc32.Checksum(b[:12], crc32c.Table), crc32c.Table, b[resyncHeader:]) != binary.LittleEndian.Uint32(b[12:]) {
		return r, fmt.Errorf("%w: resync state checksum", ErrCorrupt)
	}
	r.All = b[5] == 1
	r.From = binary.LittleEndian.Uint64(b[resyncHeader:])
	r.Extents = extent.Decode(b[resyncHeader+8:], int(n))
	if v == resyncVersion2 {
		p := b[end:]
		r.Progress = &ResyncProgress{AsOf: binary.LittleEndian.Uint64(p), Epoch: binary.LittleEndian.Uint64(p[8:]),
			Source: binary.LittleEndian.Uint64(p[16:]), Copied: extent.Decode(p[28:], int(m))}
	}
	return r, nil
}
