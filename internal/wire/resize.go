package wire

// Resize grows the device to Size bytes, in sequence order with the writes
// around it: the peer journals it under Seq like a write (docs/wire.md). With
// ResizeResync it is the first message of a region resync (the primary
// announces its size before any region past the peer's old end), and the
// peer treats it like a ResyncData: it persists its Inconsistent state
// first.
//
//	0      8        16     24      28
//	| seq  | epoch  | size | flags |
//	| u64  | u64    | u64  | u32   |
type Resize struct {
	Seq, Epoch uint64
	Size       uint64
	Flags      uint32
}

// Resize flags. Part of the format; unknown bits are ErrMalformed.
const (
	ResizeResync uint32 = 1 // sent as part of a region resync
)

// Type implements Message.
func (*Resize) Type() Type { return TypeResize }

func (m *Resize) code(c *codec) {
	c.u64s(&m.Seq, &m.Epoch, &m.Size)
	c.u32(&m.Flags)
	if m.Flags&^ResizeResync != 0 || m.Size == 0 {
		c.fail(ErrMalformed, "size %d flags %#x", m.Size, m.Flags)
	}
}
