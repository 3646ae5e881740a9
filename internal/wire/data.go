package wire

import "github.com/grbd/grbd/internal/crc32c"

// Messages of the data stream: Write, Zero and Flush from the primary; Ack,
// FlushAck and Nack back. Body layouts are in docs/wire.md and beside each
// type. Part of the format: do not change.

// Ack levels: how far a peer has taken writes. Part of the format.
const (
	AckReceived  uint8 = 1 // in the peer's memory
	AckJournaled uint8 = 2 // in the peer's journal (its image write may follow; reads there wait for it)
	AckDurable   uint8 = 3 // synced on the peer
)

// Nack codes: why a peer refused a message. Part of the format; any other
// value is ErrMalformed.
const (
	NackStaleEpoch uint32 = 1 // the message's epoch is older than the peer's
	NackSeqOrder   uint32 = 2 // the sequence is not above the peer's last one
	NackOutOfRange uint32 = 3 // offset/length beyond the device
	NackIO         uint32 = 4 // the peer's journal or disk failed
	NackState      uint32 = 5 // not acceptable in the peer's state (e.g. before Hello)
)

// nackMaxCode is the highest defined Nack code.
const nackMaxCode = NackState

// Write is a journaled client write, shipped in sequence order. FUA travels as
// FlagFUA in the frame flags.
//
//	0      8        16       24
//	| seq  | epoch  | offset | data[length-24]
//	| u64  | u64    | u64    |
//
// BlockSums is not sent. It holds the CRC32C of each 4 KiB block of Data
// (little-endian uint32s, as crc32c.Blocks makes them) when the sender has
// them, and the frame's CRC is then joined from them instead of read from
// Data again: they must be Data's. A Reader leaves it nil.
type Write struct {
	Seq, Epoch uint64
	Offset     uint64
	FUA        bool
	Data       []byte
	BlockSums  []byte
}

// BlockSumsMin is the least data on whole 4 KiB blocks for which a sender
// gains by computing BlockSums once for every peer's frame (or while the
// data is in cache, as a resync source does) rather than letting each
// frame's CRC read the data again.
const BlockSumsMin = 64 << 10

// BlockSummed reports whether Write data of n bytes is worth BlockSums.
func BlockSummed(n int) bool { return n >= BlockSumsMin && n%crc32c.BlockSize == 0 }

// Type implements Message.
func (*Write) Type() Type { return TypeWrite }

func (m *Write) code(c *codec) {
	c.flag(FlagFUA, &m.FUA)
	c.u64s(&m.Seq, &m.Epoch, &m.Offset)
	c.tail(&m.Data)
	c.fits("data bytes", len(m.Data), MaxBody-writeFixed)
	c.blockSums(m.Data, &m.BlockSums)
}

// blockSums codes the block checksums of data, which are not sent: the
// sender's, which the frame's CRC is then joined from; none decoding.
func (c *codec) blockSums(data []byte, sums *[]byte) {
	switch {
	case c.decoding:
		*sums = nil
	case len(*sums) == 0:
	case len(data)%crc32c.BlockSize != 0 || len(*sums) != 4*(len(data)/crc32c.BlockSize):
		c.fail(ErrMalformed, "%d bytes of block sums for %d data bytes", len(*sums), len(data))
	default:
		c.rawSums = *sums
	}
}

// Zero is a journaled write of Length zero bytes at Offset (NBD
// WRITE_ZEROES). FUA travels as FlagFUA in the frame flags.
//
//	0      8        16       24       32
//	| seq  | epoch  | offset | length |
//	| u64  | u64    | u64    | u64    |
type Zero struct {
	Seq, Epoch     uint64
	Offset, Length uint64
	FUA            bool
}

// Type implements Message.
func (*Zero) Type() Type { return TypeZero }

func (m *Zero) code(c *codec) {
	c.flag(FlagFUA, &m.FUA)
	c.u64s(&m.Seq, &m.Epoch, &m.Offset, &m.Length)
}

// Ack is cumulative: every write with sequence <= Seq reached Level
// (AckReceived, AckJournaled or AckDurable) on the sender.
//
//	0      8       9
//	| seq  | level |
//	| u64  | u8    |
type Ack struct {
	Seq   uint64
	Level uint8
}

// Type implements Message.
func (*Ack) Type() Type { return TypeAck }

func (m *Ack) code(c *codec) {
	c.u64s(&m.Seq)
	c.u8(&m.Level)
	c.within("level", int(m.Level), int(AckReceived), int(AckDurable))
}

// Flush asks the peer to make every write with sequence <= Seq durable and
// answer with a FlushAck carrying the same ID.
//
//	0      8      16
//	| id   | seq  |
//	| u64  | u64  |
type Flush struct {
	ID, Seq uint64
}

// Type implements Message.
func (*Flush) Type() Type { return TypeFlush }

func (m *Flush) code(c *codec) { c.u64s(&m.ID, &m.Seq) }

// FlushAck answers Flush ID. Err is 0 when every write up to Seq is durable,
// otherwise the Linux errno of the failed sync (e.g. 5, EIO); it is not
// interpreted by this package.
//
//	0      8      16     20
//	| id   | seq  | err  |
//	| u64  | u64  | u32  |
type FlushAck struct {
	ID, Seq uint64
	Err     uint32
}

// Type implements Message.
func (*FlushAck) Type() Type { return TypeFlushAck }

func (m *FlushAck) code(c *codec) {
	c.u64s(&m.ID, &m.Seq)
	c.u32(&m.Err)
}

// Nack refuses the message with sequence Seq (or the session, with Seq 0):
// Code is one of the Nack constants, Reason a human-readable detail of at
// most MaxString bytes.
//
//	0      8      12           14
//	| seq  | code | reason len | reason
//	| u64  | u32  | u16        | bytes
type Nack struct {
	Seq    uint64
	Code   uint32
	Reason string
}

// NewNack is a Nack with reason cut to MaxString bytes: a refusal's detail
// (often a wrapped error) must not make the refusal itself fail to encode.
func NewNack(seq uint64, code uint32, reason string) *Nack {
	return &Nack{Seq: seq, Code: code, Reason: reason[:min(len(reason), MaxString)]}
}

// Type implements Message.
func (*Nack) Type() Type { return TypeNack }

func (m *Nack) code(c *codec) {
	c.u64s(&m.Seq)
	c.u32(&m.Code)
	c.within("code", int(m.Code), int(NackStaleEpoch), int(nackMaxCode))
	c.str("reason", &m.Reason)
}
