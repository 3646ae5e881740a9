package wire

// Erasure-coded failover (docs/erasure.md, "Failover"; docs/wire.md,
// "Shard failover"). Commit travels on the data stream from the primary to
// a shard peer; the others on an admin stream from a shard peer taking
// over to another shard peer. Part of the format: do not change.

// MaxShardRead bounds ShardRead.Length and ShardData.Data.
const MaxShardRead = 1 << 20

// ShardStateConsistent in ShardStateReply.Flags: the peer's disk is
// consistent (no unfinished resync, no split brain).
const ShardStateConsistent uint32 = 1

// Commit tells a shard peer that every write up to Seq is acknowledged on
// every counted peer: it may apply them to its shard image.
//
//	0
//	| seq |
//	| u64 |
type Commit struct{ Seq uint64 }

// ShardState asks a shard peer for its journal position, fencing every
// primary of an epoch below Epoch on it first.
//
//	0      8
//	| id   | epoch |
//	| u64  | u64   |
type ShardState struct{ ID, Epoch uint64 }

// ShardStateReply answers ShardState or ShardSettle with the same ID:
// LastSeq is the peer's last journaled write, Applied the last one in its
// shard image, Epoch the newest it knows.
//
//	0      8         16        24      32
//	| id   | lastseq | applied | epoch | flags |
//	| u64  | u64     | u64     | u64   | u32   |
type ShardStateReply struct {
	ID, LastSeq, Applied, Epoch uint64
	Flags                       uint32
}

// ShardSettle tells a shard peer to settle at Seq: apply its journaled
// writes up to Seq, drop those above, and rewind its journal to Seq.
//
//	0      8       16
//	| id   | epoch | seq |
//	| u64  | u64   | u64 |
type ShardSettle struct{ ID, Epoch, Seq uint64 }

// ShardRead asks a shard peer settled at Seq for its shard image bytes of
// [Offset, Offset+Length).
//
//	0      8       16     24       32
//	| id   | epoch | seq  | offset | length |
//	| u64  | u64   | u64  | u64    | u32    |
type ShardRead struct {
	ID, Epoch, Seq, Offset uint64
	Length                 uint32
}

// ShardData answers the ShardRead with the same ID: the shard image bytes
// at Offset, as of journal position Seq.
//
//	0      8        16     24
//	| id   | offset | seq  | data[length-24]
//	| u64  | u64    | u64  |
type ShardData struct {
	ID, Offset, Seq uint64
	Data            []byte
}

// Type implements Message.
func (*Commit) Type() Type { return TypeCommit }

// Type implements Message.
func (*ShardState) Type() Type { return TypeShardState }

// Type implements Message.
func (*ShardStateReply) Type() Type { return TypeShardStateReply }

// Type implements Message.
func (*ShardSettle) Type() Type { return TypeShardSettle }

// Type implements Message.
func (*ShardRead) Type() Type { return TypeShardRead }

// Type implements Message.
func (*ShardData) Type() Type { return TypeShardData }

func (m *Commit) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeCommit)
	}
	return plan{typ: TypeCommit, buf: le.AppendUint64(dst, m.Seq)}, nil
}

func (m *Commit) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, 0, b, commitSize); err != nil {
		return err
	}
	*m = Commit{Seq: le.Uint64(b)}
	return nil
}

func (m *ShardState) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeShardState)
	}
	dst = le.AppendUint64(dst, m.ID)
	return plan{typ: TypeShardState, buf: le.AppendUint64(dst, m.Epoch)}, nil
}

func (m *ShardState) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, 0, b, shardStateSize); err != nil {
		return err
	}
	*m = ShardState{ID: le.Uint64(b), Epoch: le.Uint64(b[8:])}
	return nil
}

func (m *ShardStateReply) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeShardStateReply)
	}
	if m.Flags&^ShardStateConsistent != 0 {
		return plan{}, encodeErr(TypeShardStateReply, ErrMalformed, "flags %#x", m.Flags)
	}
	if m.Applied > m.LastSeq {
		return plan{}, encodeErr(TypeShardStateReply, ErrMalformed, "applied %d past last %d", m.Applied, m.LastSeq)
	}
	dst = appendU64s(dst, m.ID, m.LastSeq, m.Applied, m.Epoch)
	return plan{typ: TypeShardStateReply, buf: le.AppendUint32(dst, m.Flags)}, nil
}

func (m *ShardStateReply) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, 0, b, shardStateReplySize); err != nil {
		return err
	}
	r := ShardStateReply{ID: le.Uint64(b), LastSeq: le.Uint64(b[8:]), Applied: le.Uint64(b[16:]), Epoch: le.Uint64(b[24:]), Flags: le.Uint32(b[32:])}
	if r.Flags&^ShardStateConsistent != 0 {
		return malformed("flags %#x", r.Flags)
	}
	if r.Applied > r.LastSeq {
		return malformed("applied %d past last %d", r.Applied, r.LastSeq)
	}
	*m = r
	return nil
}

func (m *ShardSettle) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeShardSettle)
	}
	dst = appendU64s(dst, m.ID, m.Epoch)
	return plan{typ: TypeShardSettle, buf: le.AppendUint64(dst, m.Seq)}, nil
}

func (m *ShardSettle) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, 0, b, shardSettleSize); err != nil {
		return err
	}
	*m = ShardSettle{ID: le.Uint64(b), Epoch: le.Uint64(b[8:]), Seq: le.Uint64(b[16:])}
	return nil
}

func (m *ShardRead) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeShardRead)
	}
	if m.Length == 0 || m.Length > MaxShardRead {
		return plan{}, encodeErr(TypeShardRead, ErrMalformed, "length %d, want 1..%d", m.Length, MaxShardRead)
	}
	dst = appendU64s(dst, m.ID, m.Epoch, m.Seq, m.Offset)
	return plan{typ: TypeShardRead, buf: le.AppendUint32(dst, m.Length)}, nil
}

func (m *ShardRead) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, 0, b, shardReadSize); err != nil {
		return err
	}
	r := ShardRead{ID: le.Uint64(b), Epoch: le.Uint64(b[8:]), Seq: le.Uint64(b[16:]), Offset: le.Uint64(b[24:]), Length: le.Uint32(b[32:])}
	if r.Length == 0 || r.Length > MaxShardRead {
		return malformed("length %d, want 1..%d", r.Length, MaxShardRead)
	}
	*m = r
	return nil
}

func (m *ShardData) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeShardData)
	}
	if len(m.Data) == 0 || len(m.Data) > MaxShardRead {
		return plan{}, encodeErr(TypeShardData, ErrMalformed, "%d data bytes, want 1..%d", len(m.Data), MaxShardRead)
	}
	dst = appendU64s(dst, m.ID, m.Offset, m.Seq)
	return plan{typ: TypeShardData, buf: dst, raw: m.Data}, nil
}

func (m *ShardData) decode(flags uint16, b []byte) error {
	if err := checkVariable(flags, 0, b, shardDataFixed); err != nil {
		return err
	}
	if n := len(b) - shardDataFixed; n == 0 || n > MaxShardRead {
		return malformed("%d data bytes, want 1..%d", n, MaxShardRead)
	}
	*m = ShardData{ID: le.Uint64(b), Offset: le.Uint64(b[8:]), Seq: le.Uint64(b[16:]), Data: payload(b[shardDataFixed:])}
	return nil
}
