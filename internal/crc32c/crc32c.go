// Package crc32c computes CRC-32C (Castagnoli), the checksum of every grbd
// format, and joins the checksums of consecutive pieces into the checksum of
// their concatenation without reading the bytes again: a large write's
// per-block checksums, computed once, then also give its wire frame's CRC.
package crc32c

import (
	"encoding/binary"
	"hash/crc32"
)

// Table is the CRC-32C table (hardware-accelerated by hash/crc32 where the
// CPU has it).
var Table = crc32.MakeTable(crc32.Castagnoli)

// BlockSize is the piece size Join4K and Blocks work on: the block of the
// journal's checksums and extent records.
const BlockSize = 4096

// join4K maps a CRC c of some bytes A to the CRC register after BlockSize
// more zero bytes, without the pre- and post-inversion: a linear map on
// 32-bit values, tabulated per input byte.
var join4K = newShift(BlockSize)

type shift [4][256]uint32

// newShift tabulates the linear map c -> c * x^(8n) mod P (reflected). With
// raw(r, p) the CRC register after p from r, crc32.Update(c, p) equals
// ^raw(^c, p), so raw(c, zeros) = ^Update(^c, zeros); raw is linear in r.
func newShift(n int) *shift {
	zeros := make([]byte, n)
	var s shift
	for k := range s {
		for v := range s[k] {
			s[k][v] = ^crc32.Update(^(uint32(v) << (8 * k)), Table, zeros)
		}
	}
	return &s
}

func (s *shift) apply(c uint32) uint32 {
	return s[0][c&0xff] ^ s[1][c>>8&0xff] ^ s[2][c>>16&0xff] ^ s[3][c>>24]
}

// Join4K returns the CRC-32C of A followed by B, given crcA of A and crcB of
// B, where B is BlockSize bytes long: crc(A||B) = crcA * x^(8|B|) ^ crcB
// (the inversions cancel).
func Join4K(crcA, crcB uint32) uint32 { return join4K.apply(crcA) ^ crcB }

// Blocks appends to dst the CRC-32C of each BlockSize block of data, as
// little-endian uint32s (the layout of a wire frame's block sums). len(data)
// must be a multiple of BlockSize.
func Blocks(dst, data []byte) []byte {
	for i := 0; i+BlockSize <= len(data); i += BlockSize {
		dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(data[i:i+BlockSize], Table))
	}
	return dst
}

// Extend returns the CRC-32C of A followed by blocks whose checksums are
// sums (little-endian uint32s, as Blocks makes them), given crcA of A.
func Extend(crcA uint32, sums []byte) uint32 {
	for i := 0; i+4 <= len(sums); i += 4 {
		crcA = Join4K(crcA, binary.LittleEndian.Uint32(sums[i:]))
	}
	return crcA
}
