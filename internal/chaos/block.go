package chaos

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/grbd/grbd/internal/crc32c"
)

// BlockSize is the size of one workload block.
const BlockSize = 4096

// blockMagic starts every workload block ("GRCW").
const blockMagic uint32 = 0x57435247

// Layout of a workload block (little-endian). Only this package reads it.
//
//	 off  size  field
//	   0     4  magic  "GRCW"
//	   4     4  block  block number the value was written for
//	   8     8  value  the write's operation id (unique, > 0)
//	  16     4  client worker that wrote it
//	  20     8  run    the run's nonce (a block of another run is corrupt)
//	  28  4064  fill   pseudo-random bytes derived from value and run
//	4092     4  crc    CRC32C(bytes 0..4092)
const (
	blockCRCOff = BlockSize - 4
	blockFill   = 28 // (blockCRCOff - blockFill) is a multiple of 8
)

// Codec writes and recognises the blocks of one run.
type Codec struct {
	Run uint64 // nonce shared by every block of a run
}

// Encode fills dst (BlockSize bytes) with the block for value.
func (c Codec) Encode(dst []byte, block int, value uint64, client int) {
	_ = dst[BlockSize-1]
	binary.LittleEndian.PutUint32(dst[0:], blockMagic)
	binary.LittleEndian.PutUint32(dst[4:], uint32(block))
	binary.LittleEndian.PutUint64(dst[8:], value)
	binary.LittleEndian.PutUint32(dst[16:], uint32(client))
	binary.LittleEndian.PutUint64(dst[20:], c.Run)
	x := value*0x9e3779b97f4a7c15 ^ c.Run | 1 // xorshift64 state, never 0
	for i := blockFill; i+8 <= blockCRCOff; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(dst[i:], x)
	}
	binary.LittleEndian.PutUint32(dst[blockCRCOff:], crc32.Checksum(dst[:blockCRCOff], crc32c.Table))
}

// Decode returns the value a block holds: 0 for a block of zeroes (never
// written, or trimmed), the writing operation's id otherwise. A block that is
// neither is ErrCorruptBlock; an intact block of another block number is
// ErrMisplacedBlock.
func (c Codec) Decode(src []byte, block int) (uint64, error) {
	if len(src) != BlockSize {
		return 0, fmt.Errorf("%w: %d bytes", ErrCorruptBlock, len(src))
	}
	if allZero(src) {
		return 0, nil
	}
	if got := binary.LittleEndian.Uint32(src[blockCRCOff:]); got != crc32.Checksum(src[:blockCRCOff], crc32c.Table) {
		return 0, fmt.Errorf("%w: block %d: CRC mismatch", ErrCorruptBlock, block)
	}
	if binary.LittleEndian.Uint32(src) != blockMagic || binary.LittleEndian.Uint64(src[20:]) != c.Run {
		return 0, fmt.Errorf("%w: block %d: not a block of this run", ErrCorruptBlock, block)
	}
	value := binary.LittleEndian.Uint64(src[8:])
	if b := int(binary.LittleEndian.Uint32(src[4:])); b != block {
		return value, fmt.Errorf("%w: block %d holds value %d written for block %d", ErrMisplacedBlock, block, value, b)
	}
	return value, nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
