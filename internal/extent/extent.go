// Package extent is grbd's one type for a byte range of the device and the
// set operations on lists of ranges, shared by the journal (what changed
// since a sequence), resync and verify (what to copy), the resync-state
// file and the peer protocol (the 16-byte encoding of a range).
package extent

import (
	"cmp"
	"encoding/binary"
	"slices"
)

// Extent is a byte range of the device.
type Extent struct {
	Offset, Length uint64
}

// End is the first byte after e.
func (e Extent) End() uint64 { return e.Offset + e.Length }

// Merge returns ext sorted, with overlapping or adjacent ranges merged and
// empty ones dropped; ext is not modified.
func Merge(ext []Extent) []Extent {
	s := slices.Clone(ext)
	slices.SortFunc(s, func(a, b Extent) int { return cmp.Compare(a.Offset, b.Offset) })
	var out []Extent
	for _, e := range s {
		if e.Length == 0 {
			continue
		}
		if k := len(out) - 1; k >= 0 && e.Offset <= out[k].End() {
			out[k].Length = max(out[k].Length, e.End()-out[k].Offset)
			continue
		}
		out = append(out, e)
	}
	return out
}

// Union is Merge of both lists.
func Union(a, b []Extent) []Extent { return Merge(append(slices.Clone(a), b...)) }

// Subtract returns the ranges of a that are not in b, merged.
func Subtract(a, b []Extent) []Extent {
	a, b = Merge(a), Merge(b)
	var out []Extent
	j := 0
	for _, e := range a {
		off, end := e.Offset, e.End()
		for j < len(b) && b[j].End() <= off {
			j++
		}
		for k := j; k < len(b) && b[k].Offset < end && off < end; k++ {
			if b[k].Offset > off {
				out = append(out, Extent{Offset: off, Length: b[k].Offset - off})
			}
			off = max(off, b[k].End())
		}
		if off < end {
			out = append(out, Extent{Offset: off, Length: end - off})
		}
	}
	return out
}

// Bytes is the total length of ext.
func Bytes(ext []Extent) uint64 {
	var n uint64
	for _, e := range ext {
		n += e.Length
	}
	return n
}

// Size is the encoded size of one range.
const Size = 16

// Append appends ext in the on-disk and on-wire encoding: per range, offset
// u64 then length u64, little-endian (docs/replication.md, docs/wire.md).
func Append(b []byte, ext []Extent) []byte {
	for _, e := range ext {
		b = binary.LittleEndian.AppendUint64(b, e.Offset)
		b = binary.LittleEndian.AppendUint64(b, e.Length)
	}
	return b
}

// Decode reads n ranges encoded by Append from b, which holds at least
// n*Size bytes. It returns nil for n == 0.
func Decode(b []byte, n int) []Extent {
	if n == 0 {
		return nil
	}
	out := make([]Extent, n)
	for i := range out {
		p := b[Size*i:]
		out[i] = Extent{Offset: binary.LittleEndian.Uint64(p), Length: binary.LittleEndian.Uint64(p[8:])}
	}
	return out
}
