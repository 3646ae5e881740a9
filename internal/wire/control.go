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

func (m *Hello) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeHello)
	}
	if m.Role > RolePrimary {
		return plan{}, encodeErr(TypeHello, ErrMalformed, "role %d", m.Role)
	}
	if err := checkString(TypeHello, "cluster", m.Cluster); err != nil {
		return plan{}, err
	}
	if err := checkString(TypeHello, "from", m.From); err != nil {
		return plan{}, err
	}
	dst = appendU64s(dst, m.Epoch, m.LastSeq, m.DurableSeq)
	dst = append(dst, m.Generation[:]...)
	dst = le.AppendUint32(dst, m.Flags)
	dst = append(dst, m.Role)
	dst = appendString(dst, m.Cluster)
	dst = appendString(dst, m.From)
	return plan{typ: TypeHello, buf: dst}, nil
}

func (m *Hello) decode(flags uint16, b []byte) error {
	if err := checkVariable(flags, 0, b, helloFixed); err != nil {
		return err
	}
	role := b[44]
	if role > RolePrimary {
		return malformed("role %d, want %d or %d", role, RoleSecondary, RolePrimary)
	}
	cluster, rest, err := getString("cluster", b[helloFixed:])
	if err != nil {
		return err
	}
	from, rest, err := getString("from", rest)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return malformed("%d trailing bytes", len(rest))
	}
	*m = Hello{
		Cluster:    cluster,
		From:       from,
		Role:       role,
		Epoch:      le.Uint64(b[0:]),
		LastSeq:    le.Uint64(b[8:]),
		DurableSeq: le.Uint64(b[16:]),
		Flags:      le.Uint32(b[40:]),
	}
	copy(m.Generation[:], b[24:40])
	return nil
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

func (m *ResyncRequest) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeResyncRequest)
	}
	dst = le.AppendUint64(dst, m.FromSeq)
	dst = putBool(dst, m.Full)
	return plan{typ: TypeResyncRequest, buf: dst}, nil
}

func (m *ResyncRequest) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, 0, b, resyncReqSize); err != nil {
		return err
	}
	full, err := getBool("full", b[8])
	if err != nil {
		return err
	}
	*m = ResyncRequest{FromSeq: le.Uint64(b[0:]), Full: full}
	return nil
}

// ResyncData is one region of the primary's device, read at sequence AsOf.
//
//	0      8        16
//	| asOf | offset | data[length-16]
//	| u64  | u64    |
type ResyncData struct {
	AsOf   uint64
	Offset uint64
	Data   []byte
}

// Type implements Message.
func (*ResyncData) Type() Type { return TypeResyncData }

func (m *ResyncData) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeResyncData)
	}
	if len(m.Data) > MaxBody-resyncDataFixed {
		return plan{}, encodeErr(TypeResyncData, ErrTooLarge, "%d data bytes, max %d", len(m.Data), MaxBody-resyncDataFixed)
	}
	dst = appendU64s(dst, m.AsOf, m.Offset)
	return plan{typ: TypeResyncData, buf: dst, raw: m.Data}, nil
}

func (m *ResyncData) decode(flags uint16, b []byte) error {
	if err := checkVariable(flags, 0, b, resyncDataFixed); err != nil {
		return err
	}
	*m = ResyncData{AsOf: le.Uint64(b[0:]), Offset: le.Uint64(b[8:]), Data: payload(b[resyncDataFixed:])}
	return nil
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

func (m *ResyncDone) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeResyncDone)
	}
	return plan{typ: TypeResyncDone, buf: le.AppendUint64(dst, m.AsOf)}, nil
}

func (m *ResyncDone) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, 0, b, resyncDoneSize); err != nil {
		return err
	}
	*m = ResyncDone{AsOf: le.Uint64(b)}
	return nil
}

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

func (m *Ping) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypePing)
	}
	return plan{typ: TypePing, buf: appendPing(dst, m.ID, m.Nanos)}, nil
}

func (m *Ping) decode(flags uint16, b []byte) error {
	id, nanos, err := decodePing(flags, b)
	*m = Ping{ID: id, Nanos: nanos}
	return err
}

// Pong answers a Ping; same layout.
type Pong struct {
	ID, Nanos uint64
}

// Type implements Message.
func (*Pong) Type() Type { return TypePong }

func (m *Pong) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypePong)
	}
	return plan{typ: TypePong, buf: appendPing(dst, m.ID, m.Nanos)}, nil
}

func (m *Pong) decode(flags uint16, b []byte) error {
	id, nanos, err := decodePing(flags, b)
	*m = Pong{ID: id, Nanos: nanos}
	return err
}

func appendPing(dst []byte, id, nanos uint64) []byte {
	return le.AppendUint64(le.AppendUint64(dst, id), nanos)
}

func decodePing(flags uint16, b []byte) (id, nanos uint64, err error) {
	if err := checkFixed(flags, 0, b, pingSize); err != nil {
		return 0, 0, err
	}
	return le.Uint64(b[0:]), le.Uint64(b[8:]), nil
}

// VerifyRequest asks for the CRC32C of every Chunk-sized piece of
// [Offset, Offset+Length); the answer is a VerifyReply with the same ID.
//
//	0      8        16       24      32
//	| id   | offset | length | chunk |
//	| u64  | u64    | u64    | u64   |
type VerifyRequest struct {
	ID, Offset, Length, Chunk uint64
}

// Type implements Message.
func (*VerifyRequest) Type() Type { return TypeVerifyRequest }

func (m *VerifyRequest) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeVerifyRequest)
	}
	dst = appendU64s(dst, m.ID, m.Offset, m.Length, m.Chunk)
	return plan{typ: TypeVerifyRequest, buf: dst}, nil
}

func (m *VerifyRequest) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, 0, b, verifyReqSize); err != nil {
		return err
	}
	*m = VerifyRequest{ID: le.Uint64(b[0:]), Offset: le.Uint64(b[8:]), Length: le.Uint64(b[16:]), Chunk: le.Uint64(b[24:])}
	return nil
}

// VerifyReply carries the CRC32C of consecutive Chunk-sized pieces starting at
// Offset. count must equal the number of sums that follow; it is bounded by
// MaxBody (at most (MaxBody-28)/4).
//
//	0      8        16      24      28
//	| id   | offset | chunk | count | sums[count]
//	| u64  | u64    | u64   | u32   | u32 each
type VerifyReply struct {
	ID, Offset, Chunk uint64
	Sums              []uint32
}

// Type implements Message.
func (*VerifyReply) Type() Type { return TypeVerifyReply }

func (m *VerifyReply) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeVerifyReply)
	}
	if len(m.Sums) > maxSums {
		return plan{}, encodeErr(TypeVerifyReply, ErrTooLarge, "%d sums, max %d", len(m.Sums), maxSums)
	}
	dst = appendU64s(dst, m.ID, m.Offset, m.Chunk)
	dst = le.AppendUint32(dst, uint32(len(m.Sums)))
	return plan{typ: TypeVerifyReply, buf: dst, sums: m.Sums}, nil
}

// decode reuses m.Sums' capacity (the Reader's slot keeps it across reads).
// The allocation is bounded by the body already in memory: count is checked
// against the body length first.
func (m *VerifyReply) decode(flags uint16, b []byte) error {
	if err := checkVariable(flags, 0, b, verifyReplyFixed); err != nil {
		return err
	}
	count := int(le.Uint32(b[24:]))
	if want := verifyReplyFixed + 4*count; len(b) != want {
		return malformed("count %d needs %d bytes", count, want)
	}
	var sums []uint32
	if count > 0 {
		sums = slices.Grow(m.Sums[:0], count)[:count]
		for i := range sums {
			sums[i] = le.Uint32(b[verifyReplyFixed+4*i:])
		}
	}
	*m = VerifyReply{ID: le.Uint64(b[0:]), Offset: le.Uint64(b[8:]), Chunk: le.Uint64(b[16:]), Sums: sums}
	return nil
}

// Clone returns a deep copy of m that shares no memory with it: use it to keep
// a message from Reader.ReadMsg beyond the next read. Clone(nil) is nil.
func Clone(m Message) Message {
	switch v := m.(type) {
	case *Write:
		return cloneWith(v, func(c *Write) { c.Data = cloneBytes(v.Data) })
	case *ResyncData:
		return cloneWith(v, func(c *ResyncData) { c.Data = cloneBytes(v.Data) })
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
