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

func (m *BlockRequest) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeBlockRequest)
	}
	if m.Length == 0 || m.Length > MaxBlockRequest {
		return plan{}, encodeErr(TypeBlockRequest, ErrMalformed, "length %d, want 1..%d", m.Length, MaxBlockRequest)
	}
	dst = appendU64s(dst, m.ID, m.Offset)
	dst = le.AppendUint32(dst, m.Length)
	return plan{typ: TypeBlockRequest, buf: dst}, nil
}

func (m *BlockRequest) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, 0, b, blockRequestSize); err != nil {
		return err
	}
	r := BlockRequest{ID: le.Uint64(b[0:]), Offset: le.Uint64(b[8:]), Length: le.Uint32(b[16:])}
	if r.Length == 0 || r.Length > MaxBlockRequest {
		return malformed("length %d, want 1..%d", r.Length, MaxBlockRequest)
	}
	*m = r
	return nil
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

func (m *BlockData) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeBlockData)
	}
	if len(m.Data) == 0 || len(m.Data) > MaxBlockRequest {
		return plan{}, encodeErr(TypeBlockData, ErrMalformed, "%d data bytes, want 1..%d", len(m.Data), MaxBlockRequest)
	}
	dst = appendU64s(dst, m.ID, m.Offset, m.Seq)
	return plan{typ: TypeBlockData, buf: dst, raw: m.Data}, nil
}

func (m *BlockData) decode(flags uint16, b []byte) error {
	if err := checkVariable(flags, 0, b, blockDataFixed); err != nil {
		return err
	}
	if n := len(b) - blockDataFixed; n == 0 || n > MaxBlockRequest {
		return malformed("%d data bytes, want 1..%d", n, MaxBlockRequest)
	}
	*m = BlockData{ID: le.Uint64(b[0:]), Offset: le.Uint64(b[8:]), Seq: le.Uint64(b[16:]), Data: payload(b[blockDataFixed:])}
	return nil
}
