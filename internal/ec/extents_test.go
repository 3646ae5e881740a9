package ec

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/grbd/grbd/internal/extent"
)

// 2+1 with 4 KiB chunks: stripes of 8 KiB; a 20 KiB device has 3 stripes,
// the last partial, and shard images of 12 KiB.
var small = Geometry{K: 2, M: 1, Chunk: 4096, Size: 20 << 10}

func TestStripeAligned(t *testing.T) {
	for _, c := range []struct {
		off, end int64
		want     bool
	}{
		{0, 8192, true},
		{8192, 16384, true},
		{16384, 20 << 10, true}, // the last, partial stripe ends the device
		{0, 4096, false},
		{4096, 8192, false},
		{8192, 12288, false},
	} {
		require.Equal(t, c.want, small.StripeAligned(c.off, c.end), "[%d,%d)", c.off, c.end)
	}
}

func TestSplitZero(t *testing.T) {
	for _, c := range []struct {
		off, end int64
		want     [][2]int64
	}{
		{0, 4096, [][2]int64{{0, 4096}}},                             // inside one stripe
		{4096, 12288, [][2]int64{{4096, 12288}}},                     // no whole stripe
		{0, 16384, [][2]int64{{0, 16384}}},                           // whole stripes only
		{4096, 20 << 10, [][2]int64{{4096, 8192}, {8192, 20 << 10}}}, // head, stripes to the end
		{4096, 18432, [][2]int64{{4096, 8192}, {8192, 16384}, {16384, 18432}}},
	} {
		require.Equal(t, c.want, small.SplitZero(c.off, c.end), "[%d,%d)", c.off, c.end)
	}
}

func TestShardToDevice(t *testing.T) {
	// Shard bytes [0,4096) are chunk 0 of stripe 0: device [0, 8192).
	require.Equal(t, []extent.Extent{{Offset: 0, Length: 8192}},
		small.ShardToDevice([]extent.Extent{{Offset: 100, Length: 10}}))
	// Stripes 0 and 2, the last cut at the device's end; past the shard
	// image nothing.
	require.Equal(t, []extent.Extent{{Offset: 0, Length: 8192}, {Offset: 16384, Length: 4096}},
		small.ShardToDevice([]extent.Extent{{Offset: 0, Length: 1}, {Offset: 8192, Length: 1}, {Offset: 12288, Length: 4096}}))
	// Adjacent stripes merge.
	require.Equal(t, []extent.Extent{{Offset: 0, Length: 16384}},
		small.ShardToDevice([]extent.Extent{{Offset: 4095, Length: 2}}))
}

func TestStripeExtents(t *testing.T) {
	require.Equal(t, []extent.Extent{{Offset: 0, Length: 8192}},
		small.StripeExtents([]extent.Extent{{Offset: 10, Length: 10}}))
	require.Equal(t, []extent.Extent{{Offset: 8192, Length: 12288}},
		small.StripeExtents([]extent.Extent{{Offset: 8191 + 1, Length: 1}, {Offset: 19000, Length: 1000}}))
	require.Empty(t, small.StripeExtents(nil))
}
