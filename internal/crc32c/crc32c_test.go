package crc32c

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestExtendEqualsOnePass: the CRC joined from block checksums is the CRC of
// the bytes read in one pass, for prefixes of every length and any blocks.
func TestExtendEqualsOnePass(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct{ prefix, blocks int }{
		{0, 1}, {1, 1}, {12, 16}, {36, 256}, {4095, 3}, {4096, 2}, {100000, 5},
	} {
		b := make([]byte, tc.prefix+tc.blocks*BlockSize)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		want := crc32.Checksum(b, Table)
		sums := Blocks(nil, b[tc.prefix:])
		require.Len(t, sums, 4*tc.blocks)
		got := Extend(crc32.Checksum(b[:tc.prefix], Table), sums)
		require.Equal(t, want, got, "prefix %d, %d blocks", tc.prefix, tc.blocks)
	}
}

// TestExtendDetectsChange: a flipped bit in any block, or two blocks
// swapped, changes the joined CRC (the join is position-aware).
func TestExtendDetectsChange(t *testing.T) {
	b := make([]byte, 8*BlockSize)
	for i := range b {
		b[i] = byte(i*7 + i/BlockSize)
	}
	sums := Blocks(nil, b)
	base := Extend(0, sums)
	b[5*BlockSize+17] ^= 0x10
	require.NotEqual(t, base, Extend(0, Blocks(nil, b)))
	swapped := append([]byte(nil), sums...)
	copy(swapped[0:4], sums[4:8])
	copy(swapped[4:8], sums[0:4])
	require.NotEqual(t, sums[0:4], sums[4:8])
	require.NotEqual(t, base, Extend(0, swapped))
}

func BenchmarkBlocksAndExtend1M(b *testing.B) {
	data := make([]byte, 1<<20)
	sums := make([]byte, 0, 1024)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sums = Blocks(sums[:0], data)
		Extend(0, sums)
	}
}

func BenchmarkOnePass1M(b *testing.B) {
	data := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		crc32.Checksum(data, Table)
	}
}
