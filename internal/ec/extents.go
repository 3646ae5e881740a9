package ec

import "github.com/grbd/grbd/internal/extent"

// StripeAligned reports whether device range [off, end) is whole stripes
// (the last may end the device).
func (g Geometry) StripeAligned(off, end int64) bool {
	sb := g.StripeBytes()
	return off%sb == 0 && (end%sb == 0 || end == g.Size)
}

// SplitZero splits zeroing device range [off, end) into an unaligned head,
// whole stripes and an unaligned tail, so that no shard message carries
// more than a stripe of data for it.
func (g Geometry) SplitZero(off, end int64) [][2]int64 {
	sb := g.StripeBytes()
	first := (off + sb - 1) / sb * sb
	last := end / sb * sb
	if end == g.Size {
		last = end
	}
	if first >= last {
		return [][2]int64{{off, end}}
	}
	var out [][2]int64
	if off < first {
		out = append(out, [2]int64{off, first})
	}
	out = append(out, [2]int64{first, last})
	if last < end {
		out = append(out, [2]int64{last, end})
	}
	return out
}

// ShardToDevice converts shard-image extents (a shard peer's own changes)
// to the device ranges of the stripes they belong to, merged.
func (g Geometry) ShardToDevice(ext []extent.Extent) []extent.Extent {
	out := make([]extent.Extent, 0, len(ext))
	for _, e := range ext {
		off, end := g.DeviceSpan(int64(e.Offset), min(int64(e.End()), g.ShardSize()))
		if end > off {
			out = append(out, extent.Extent{Offset: uint64(off), Length: uint64(end - off)})
		}
	}
	return extent.Merge(out)
}

// StripeExtents widens device extents to whole stripes, merged.
func (g Geometry) StripeExtents(ext []extent.Extent) []extent.Extent {
	sb := uint64(g.StripeBytes())
	out := make([]extent.Extent, 0, len(ext))
	for _, e := range ext {
		off := e.Offset / sb * sb
		end := min((e.End()+sb-1)/sb*sb, uint64(g.Size))
		out = append(out, extent.Extent{Offset: off, Length: end - off})
	}
	return extent.Merge(out)
}
