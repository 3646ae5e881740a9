package blockid

import (
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/stretchr/testify/require"
)

// selfSummed is a 4 KiB block that ends in the CRC32C of the bytes before it.
func selfSummed(fill byte) []byte {
	b := make([]byte, 4096)
	for i := range b {
		b[i] = fill + byte(i*7)
	}
	binary.LittleEndian.PutUint32(b[4092:], crc32.Checksum(b[:4092], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// The premise: such blocks, and runs of them, share one CRC32C; their IDs
// differ.
func TestOfSeesBlocksThatEndInTheirOwnCRC32C(t *testing.T) {
	table := crc32.MakeTable(crc32.Castagnoli)
	a, b := selfSummed(1), selfSummed(2)
	require.NotEqual(t, a, b)
	require.Equal(t, crc32.Checksum(a, table), crc32.Checksum(b, table), "CRC32C cannot tell them apart")
	require.NotEqual(t, Of(a), Of(b))
	ab, ba := append(append([]byte{}, a...), b...), append(append([]byte{}, b...), a...)
	require.Equal(t, crc32.Checksum(ab, table), crc32.Checksum(ba, table), "nor runs of them")
	require.NotEqual(t, Of(ab), Of(ba))
}

func TestAppend(t *testing.T) {
	data := append(append(selfSummed(1), selfSummed(2)...), 9)
	got := Append([]byte{7}, data, 4096)
	require.Len(t, got, 1+8, "two whole pieces; the short tail gets none")
	require.Equal(t, byte(7), got[0])
	require.Equal(t, Of(data[:4096]), binary.LittleEndian.Uint32(got[1:]))
	require.Equal(t, Of(data[4096:8192]), binary.LittleEndian.Uint32(got[5:]))
}

// The ID is part of two formats (journal extent records, VerifyReply): pin
// it to XXH3's published 64-bit value for no input (0x2d06800538d394c2).
func TestOfKnownAnswer(t *testing.T) {
	require.Equal(t, uint32(0x38d394c2), Of(nil))
}

func TestOrCRC(t *testing.T) {
	b := selfSummed(3)
	require.Equal(t, Of(b), OrCRC(b, false))
	require.Equal(t, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)), OrCRC(b, true))
}
