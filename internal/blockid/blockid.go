// Package blockid names bytes for the checks that ask whether a block or a
// chunk holds these bytes and not others: an extent record's blocks
// (journal replay, catch-up) and grbd verify's chunks. It uses XXH3, not
// the CRC32C of every grbd format: a CRC is affine, so every block that
// ends in the CRC32C of the bytes before it (a common checksummed page
// layout) has one and the same CRC32C, and so has any run of such blocks
// (docs/journal.md, "Block IDs").
package blockid

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/grbd/grbd/internal/crc32c"
	"github.com/zeebo/xxh3"
)

// Of is the ID of b: the low 32 bits of its XXH3 (64-bit, seed 0). XXH3,
// not XXH64: 37 GB/s against 10-12 on this machine's 4 KiB blocks (CRC-32C:
// 19-21), and every large write pays it on every node.
func Of(b []byte) uint32 { return uint32(xxh3.Hash(b)) }

// OrCRC is b's ID, or with crc its CRC-32C: what the records and messages
// of earlier builds carry where this one carries an ID (a version-1 write
// record, a version-3 extent record, a VerifyReply without flag IDs).
func OrCRC(b []byte, crc bool) uint32 {
	if crc {
		return crc32.Checksum(b, crc32c.Table)
	}
	return Of(b)
}

// Append appends to dst the ID of each size-byte piece of data, as
// little-endian uint32s; a shorter last piece gets none.
func Append(dst, data []byte, size int) []byte {
	for i := 0; i+size <= len(data); i += size {
		dst = binary.LittleEndian.AppendUint32(dst, Of(data[i:i+size]))
	}
	return dst
}
