package wire

import "slices"

// Messages of the control and resync streams. Body layouts are in
// docs/wire.md and beside each type. Part of the format: do not change.

// Roles in Hello. Part of the format; any other value is ErrMalformed.
const (
	RoleSecondary uint8 = 0
	RolePrimary   uint8 = 1
)

// Hello is the first message on a session, in each direction: who the sender
// is and how far its journal reaches. Flags are capability bits; none is
// defined in version 1, senders set 0 and receivers ignore bits they do not
// know (optional features; incompatible changes bump Version instead).
//
//	0       8         16           24           40      44     45
//	| epoch | lastSeq | durableSeq | generation | flags | role | cluster | from
//	| u64   | u64     | u64        | [16]byte   | u32   | u8   | string  | string
//
// A string is a u16 length (at most MaxString) followed by that many bytes.
type Hello struct {
	Cluster, From              string
	Role                       uint8
	Epoch, LastSeq, DurableSeq uint64
	Generation                 [16]byte
	Flags                      uint32
}

// Type implements Message.
func (*Hello) Type() Type { return TypeHello }

func (m *Hello) code(c *codec) {
	c.u64s(&m.Epoch, &m.LastSeq, &m.DurableSeq)
	c.array(m.Generation[:])
	c.u32(&m.Flags)
	c.u8(&m.Role)
	c.within("role", int(m.Role), int(RoleSecondary), int(RolePrimary))
	c.str("cluster", &m.Cluster)
	c.str("from", &m.From)
}

// ResyncRequest asks the primary for every change after FromSeq, or for the
// whole device when Full is set.
//
//	0         8      9
//	| fromSeq | full |
//	| u64     | u8   |   full: 0 or 1
type ResyncRequest struct {
	FromSeq uint64
	Full    bool
}

// Type implements Message.
func (*ResyncRequest) Type() Type { return TypeResyncRequest }

func (m *ResyncRequest) code(c *codec) {
	c.u64s(&m.FromSeq)
	c.boolean("full", &m.Full)
}

// ResyncData is one region of the primary's device, read at sequence AsOf.
//
//	0      8        16
//	| asOf | offset | data[length-16]
//	| u64  | u64    |
//
// BlockSums is not sent; it is as Write's: the sender's block checksums of
// Data, which the frame's CRC is joined from (a Reader leaves it nil).
type ResyncData struct {
	AsOf      uint64
	Offset    uint64
	Data      []byte
	BlockSums []byte
}

// Type implements Message.
func (*ResyncData) Type() Type { return TypeResyncData }

func (m *ResyncData) code(c *codec) {
	c.u64s(&m.AsOf, &m.Offset)
	c.tail(&m.Data)
	c.fits("data bytes", len(m.Data), MaxBody-resyncDataFixed)
	c.blockSums(m.Data, &m.BlockSums)
}

// ResyncDone ends a resync: every region changed up to AsOf has been sent.
//
//	0      8
//	| asOf |
//	| u64  |
type ResyncDone struct {
	AsOf uint64
}

// Type implements Message.
func (*ResyncDone) Type() Type { return TypeResyncDone }

func (m *ResyncDone) code(c *codec) { c.u64s(&m.AsOf) }

// Ping is a heartbeat; the receiver answers with a Pong carrying the same ID
// and Nanos (the sender's clock reading, echoed to measure round trips).
//
//	0      8       16
//	| id   | nanos |
//	| u64  | u64   |
type Ping struct {
	ID, Nanos uint64
}

// Type implements Message.
func (*Ping) Type() Type { return TypePing }

func (m *Ping) code(c *codec) { c.u64s(&m.ID, &m.Nanos) }

// Pong answers a Ping; same layout.
type Pong Ping

// Type implements Message.
func (*Pong) Type() Type { return TypePong }

func (m *Pong) code(c *codec) { (*Ping)(m).code(c) }

// VerifyRequest asks for the CRC32C, or with IDs (FlagIDs) the block ID
// (internal/blockid), of every Chunk-sized piece of [Offset,
// Offset+Length); the answer is a VerifyReply with the same ID.
//
//	0      8        16       24      32
//	| id   | offset | length | chunk |
//	| u64  | u64    | u64    | u64   |
type VerifyRequest struct {
	ID, Offset, Length, Chunk uint64
	IDs                       bool
}

// Type implements Message.
func (*VerifyRequest) Type() Type { return TypeVerifyRequest }

func (m *VerifyRequest) code(c *codec) {
	c.u64s(&m.ID, &m.Offset, &m.Length, &m.Chunk)
	c.flag(FlagIDs, &m.IDs)
}

// VerifyReply carries the CRC32C, or with IDs (FlagIDs) the block ID, of
// consecutive Chunk-sized pieces starting at Offset. count must equal the
// number of sums that follow; it is bounded by MaxBody (at most
// (MaxBody-28)/4).
//
//	0      8        16      24      28
//	| id   | offset | chunk | count | sums[count]
//	| u64  | u64    | u64   | u32   | u32 each
type VerifyReply struct {
	ID, Offset, Chunk uint64
	Sums              []uint32
	IDs               bool
}

// Type implements Message.
func (*VerifyReply) Type() Type { return TypeVerifyReply }

// code reuses m.Sums' capacity when decoding (the Reader's slot keeps it
// across reads); count bounds the allocation by the body already in memory.
func (m *VerifyReply) code(c *codec) {
	c.u64s(&m.ID, &m.Offset, &m.Chunk)
	c.flag(FlagIDs, &m.IDs)
	n := c.count("sums", len(m.Sums), 4, maxSums, 4)
	if !c.decoding {
		c.sums = m.Sums
		return
	}
	if n == 0 {
		m.Sums = nil
		return
	}
	m.Sums = slices.Grow(m.Sums[:0], n)[:n]
	for i := range m.Sums {
		c.u32(&m.Sums[i])
	}
}

// Clone returns a deep copy of m that shares no memory with it: use it to keep
// a message from Reader.ReadMsg beyond the next read. Clone(nil) is nil.
func Clone(m Message) Message {
	switch v := m.(type) {
	case *Write:
		return cloneWith(v, func(c *Write) { c.Data, c.BlockSums = cloneBytes(v.Data), cloneBytes(v.BlockSums) })
	case *ResyncData:
		return cloneWith(v, func(c *ResyncData) { c.Data, c.BlockSums = cloneBytes(v.Data), cloneBytes(v.BlockSums) })
	case *Control:
		return cloneWith(v, func(c *Control) { c.Data = cloneBytes(v.Data) })
	case *BlockData:
		return cloneWith(v, func(c *BlockData) { c.Data = cloneBytes(v.Data) })
	case *ShardData:
		return cloneWith(v, func(c *ShardData) { c.Data = cloneBytes(v.Data) })
	case *VerifyReply:
		return cloneWith(v, func(c *VerifyReply) { c.Sums = slices.Clone(v.Sums) })
	case *History:
		return cloneWith(v, func(c *History) { c.Entries = slices.Clone(v.Entries) })
	case *Extents:
		return cloneWith(v, func(c *Extents) { c.Extents = slices.Clone(v.Extents) })
	case *ResyncProgress:
		return cloneWith(v, func(c *ResyncProgress) { c.Copied = slices.Clone(v.Copied) })
	}
	return cloneFlat(m)
}

// cloneFlat copies a message that holds no slices.
func cloneFlat(m Message) Message {
	switch v := m.(type) {
	case *Hello:
		return cloneVal(v)
	case *Zero:
		return cloneVal(v)
	case *Ack:
		return cloneVal(v)
	case *Flush:
		return cloneVal(v)
	case *FlushAck:
		return cloneVal(v)
	case *ResyncRequest:
		return cloneVal(v)
	case *ResyncDone:
		return cloneVal(v)
	case *Nack:
		return cloneVal(v)
	case *Ping:
		return cloneVal(v)
	case *Pong:
		return cloneVal(v)
	case *VerifyRequest:
		return cloneVal(v)
	case *StreamOpen:
		return cloneVal(v)
	case *AuthChallenge:
		return cloneVal(v)
	case *Resize:
		return cloneVal(v)
	case *BlockRequest:
		return cloneVal(v)
	case *AuthProof:
		return cloneVal(v)
	case *Commit:
		return cloneVal(v)
	case *ShardState:
		return cloneVal(v)
	case *ShardStateReply:
		return cloneVal(v)
	case *ShardSettle:
		return cloneVal(v)
	case *ShardRead:
		return cloneVal(v)
	}
	return nil
}

// cloneWith copies *v and then lets deep copy what the copy shares with v;
// nil stays nil.
func cloneWith[T any](v *T, deep func(*T)) *T {
	c := cloneVal(v)
	if c != nil {
		deep(c)
	}
	return c
}

// cloneVal copies *v (strings and arrays are values); nil stays nil.
func cloneVal[T any](v *T) *T {
	if v == nil {
		return nil
	}
	c := *v
	return &c
}

// cloneBytes copies b, keeping nil as nil.
func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return slices.Clone(b)
}
