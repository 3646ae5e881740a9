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

func (m *Resize) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeResize)
	}
	if m.Flags&^ResizeResync != 0 || m.Size == 0 {
		return plan{}, encodeErr(TypeResize, ErrMalformed, "size %d flags %#x", m.Size, m.Flags)
	}
	dst = appendU64s(dst, m.Seq, m.Epoch, m.Size)
	dst = le.AppendUint32(dst, m.Flags)
	return plan{typ: TypeResize, buf: dst}, nil
}

func (m *Resize) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, 0, b, resizeSize); err != nil {
		return err
	}
	r := Resize{Seq: le.Uint64(b[0:]), Epoch: le.Uint64(b[8:]), Size: le.Uint64(b[16:]), Flags: le.Uint32(b[24:])}
	if r.Flags&^ResizeResync != 0 || r.Size == 0 {
		return malformed("size %d flags %#x", r.Size, r.Flags)
	}
	*m = r
	return nil
}
