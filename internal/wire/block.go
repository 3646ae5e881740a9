package wire

// Block repair (docs/wire.md, "Block repair"): a primary whose copy of a
// block fails its checksum asks an UpToDate peer for the block on an admin
// stream. The peer answers with a BlockData carrying its bytes and the
// sequence number it had journaled before it read them, or with a Nack
// (Seq = the request's ID) when it cannot serve them.

// MaxBlockRequest bounds BlockRequest.Length.
const MaxBlockRequest = 1 << 20

// BlockRequest asks for the peer's bytes of [Offset, Offset+Length).
//
//	0      8        16
//	| id   | offset | length |
//	| u64  | u64    | u32    |
type BlockRequest struct {
	ID, Offset uint64
	Length     uint32
}

// Type implements Message.
func (*BlockRequest) Type() Type { return TypeBlockRequest }

func (m *BlockRequest) code(c *codec) {
	c.u64s(&m.ID, &m.Offset)
	c.u32(&m.Length)
	c.within("length", int(m.Length), 1, MaxBlockRequest)
}

// BlockData answers the BlockRequest with the same ID: the peer's bytes at
// Offset, read after every write up to Seq was in its journal.
//
//	0      8        16     24
//	| id   | offset | seq  | data[length-24]
//	| u64  | u64    | u64  |
type BlockData struct {
	ID, Offset, Seq uint64
	Data            []byte
}

// Type implements Message.
func (*BlockData) Type() Type { return TypeBlockData }

func (m *BlockData) code(c *codec) {
	c.u64s(&m.ID, &m.Offset, &m.Seq)
	c.tail(&m.Data)
	c.within("data length", len(m.Data), 1, MaxBlockRequest)
}
