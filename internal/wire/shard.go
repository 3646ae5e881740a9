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

func (m *Commit) code(c *codec) { c.u64s(&m.Seq) }

func (m *ShardState) code(c *codec) { c.u64s(&m.ID, &m.Epoch) }

func (m *ShardStateReply) code(c *codec) {
	c.u64s(&m.ID, &m.LastSeq, &m.Applied, &m.Epoch)
	c.u32(&m.Flags)
	if m.Flags&^ShardStateConsistent != 0 {
		c.fail(ErrMalformed, "flags %#x", m.Flags)
	}
	if m.Applied > m.LastSeq {
		c.fail(ErrMalformed, "applied %d past last %d", m.Applied, m.LastSeq)
	}
}

func (m *ShardSettle) code(c *codec) { c.u64s(&m.ID, &m.Epoch, &m.Seq) }

func (m *ShardRead) code(c *codec) {
	c.u64s(&m.ID, &m.Epoch, &m.Seq, &m.Offset)
	c.u32(&m.Length)
	c.within("length", int(m.Length), 1, MaxShardRead)
}

func (m *ShardData) code(c *codec) {
	c.u64s(&m.ID, &m.Offset, &m.Seq)
	c.tail(&m.Data)
	c.within("data length", len(m.Data), 1, MaxShardRead)
}
