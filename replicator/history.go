package replicator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"

	"github.com/grbd/grbd/internal/crc32c"
)

// ErrCorrupt marks a history or resync-state encoding that does not decode.
var ErrCorrupt = errors.New("replicator: corrupt encoding")

// HistoryEntry marks where a data node's journal entered an epoch: the
// records from FirstSeq on (until the next entry) were written by the
// primary of Epoch.
type HistoryEntry struct {
	Epoch, FirstSeq uint64
	Forced          bool // the epoch began with a forced promotion
}

// History is a data node's data-generation history, FirstSeq and Epoch
// non-decreasing. See docs/quorum.md, "Data generations".
type History []HistoryEntry

// EpochOf is the epoch that wrote seq according to h (0 before any entry).
func (h History) EpochOf(seq uint64) uint64 {
	var e uint64
	for _, x := range h {
		if x.FirstSeq > seq {
			break
		}
		e = x.Epoch
	}
	return e
}

// Last is the newest entry (zero if none).
func (h History) Last() HistoryEntry {
	if len(h) == 0 {
		return HistoryEntry{}
	}
	return h[len(h)-1]
}

// Enter returns h with epoch e starting at seq appended, unless h already
// ends in e. Entries starting at or after seq go first: they describe
// records this node never received (taken from a primary's history when it
// connected), and the node's own records from seq on are now of epoch e.
func (h History) Enter(e, seq uint64, forced bool) History {
	out := slices.Clone(h)
	for len(out) > 0 && out[len(out)-1].FirstSeq >= seq {
		out = out[:len(out)-1]
	}
	if len(out) > 0 && out[len(out)-1].Epoch >= e {
		return h
	}
	return append(out, HistoryEntry{Epoch: e, FirstSeq: seq, Forced: forced})
}

// Adopt is the history of a secondary that keeps its records up to d and
// takes the primary's after d.
func (h History) Adopt(primary History, d uint64) History {
	var out History
	for _, x := range h {
		if x.FirstSeq <= d {
			out = append(out, x)
		}
	}
	for _, x := range primary {
		if x.FirstSeq > d {
			out = append(out, x)
		}
	}
	// A primary entry that starts at or below d but differs from ours
	// cannot happen (they agree up to d); keep ours for those seqs.
	return out
}

// Divergence compares a secondary's journal (history sec, last record
// secLast) with the primary's (pri, priLast).
type Divergence struct {
	// Common is the last sequence number on which both agree.
	Common uint64
	// Diverged: the secondary holds records after Common that the
	// primary's history does not contain; it must rewind to Common and
	// resync the regions they touched.
	Diverged bool
	// SplitBrain: those records may include acknowledged writes (a forced
	// promotion happened after Common): resolving discards data, so only
	// the operator or a configured policy may do it.
	SplitBrain bool
}

// Diverge computes where two journals part. Both histories describe the
// records their nodes hold; they agree on a prefix by construction (a
// secondary takes the primary's history when it connects).
func Diverge(pri History, priLast uint64, sec History, secLast uint64) Divergence {
	m := min(priLast, secLast)
	points := []uint64{1}
	for _, h := range [2]History{pri, sec} {
		for _, x := range h {
			if x.FirstSeq >= 1 && x.FirstSeq <= m {
				points = append(points, x.FirstSeq)
			}
		}
	}
	slices.Sort(points)
	common := m
	for _, p := range points {
		if p > m {
			break
		}
		if pri.EpochOf(p) != sec.EpochOf(p) {
			common = p - 1
			break
		}
	}
	d := Divergence{Common: common, Diverged: secLast > common}
	if d.Diverged {
		for _, h := range [2]History{pri, sec} {
			for _, x := range h {
				if x.Forced && x.FirstSeq > common {
					d.SplitBrain = true
				}
			}
		}
	}
	return d
}

// History file format. Part of the format: do not change.
//
//	| magic "GRBH" u32 | version u8 (1) | reserved 3 | count u32 | crc32c u32 |
//	| count x (epoch u64 | firstSeq u64 | flags u8 (bit 0: forced)) |
//
// Little-endian; the CRC-32C covers every byte of the header before it and
// all entries.
const (
	historyMagic   = 0x48425247
	historyVersion = 1
	historyHeader  = 16
	historyEntry   = 17
	maxHistory     = 1 << 16
)

// Encode returns the history file image.
func (h History) Encode() []byte {
	b := make([]byte, historyHeader, historyHeader+historyEntry*len(h))
	binary.LittleEndian.PutUint32(b, historyMagic)
	b[4] = historyVersion
	binary.LittleEndian.PutUint32(b[8:], uint32(len(h)))
	for _, x := range h {
		b = binary.LittleEndian.AppendUint64(b, x.Epoch)
		b = binary.LittleEndian.AppendUint64(b, x.FirstSeq)
		b = append(b, boolByte(x.Forced))
	}
	crc := crc32.Update(crc32.Checksum(b[:12], crc32c.Table), crc32c.Table, b[historyHeader:])
	binary.LittleEndian.PutUint32(b[12:], crc)
	return b
}

// DecodeHistory parses a history file image. Errors wrap ErrCorrupt.
func DecodeHistory(b []byte) (History, error) {
	if len(b) < historyHeader {
		return nil, fmt.Errorf("%w: history of %d bytes", ErrCorrupt, len(b))
	}
	if binary.LittleEndian.Uint32(b) != historyMagic || b[4] != historyVersion || b[5]|b[6]|b[7] != 0 {
		return nil, fmt.Errorf("%w: history header", ErrCorrupt)
	}
	n := binary.LittleEndian.Uint32(b[8:])
	if n > maxHistory || len(b) != historyHeader+historyEntry*int(n) {
		return nil, fmt.Errorf("%w: history of %d entries in %d bytes", ErrCorrupt, n, len(b))
	}
	if crc32.Update(crc32.Checksum(b[:12], crc32c.Table), crc32c.Table, b[historyHeader:]) != binary.LittleEndian.Uint32(b[12:]) {
		return nil, fmt.Errorf("%w: history checksum", ErrCorrupt)
	}
	var h History
	for i := range int(n) {
		p := b[historyHeader+historyEntry*i:]
		x := HistoryEntry{Epoch: binary.LittleEndian.Uint64(p), FirstSeq: binary.LittleEndian.Uint64(p[8:]), Forced: p[16] == 1}
		if p[16] > 1 || (i > 0 && (x.Epoch <= h[i-1].Epoch || x.FirstSeq < h[i-1].FirstSeq)) {
			return nil, fmt.Errorf("%w: history entry %d", ErrCorrupt, i)
		}
		h = append(h, x)
	}
	return h, nil
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}
