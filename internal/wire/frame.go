package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/grbd/grbd/internal/crc32c"
	"slices"
	"strconv"
)

// Errors. Every encode or decode error wraps exactly one of these (the
// Reader's truncation errors also wrap io.ErrUnexpectedEOF); errors of the
// underlying stream are wrapped as they are. Test with errors.Is. ErrShort is
// the only one that is not a fault: DecodeFrame needs more bytes. Every other
// decode error means the peer or the stream is broken and the session must be
// dropped: after it the stream position is unknown.
var (
	// ErrBadMagic: the frame does not start with Magic (not a grbd peer, or
	// the stream lost synchronisation).
	ErrBadMagic = errors.New("wire: bad magic")
	// ErrVersion: the frame's version is not Version. Refused, never guessed.
	ErrVersion = errors.New("wire: unsupported version")
	// ErrTooLarge: the body length exceeds MaxBody (checked from the header,
	// before any allocation), or a message to encode does not fit.
	ErrTooLarge = errors.New("wire: frame too large")
	// ErrChecksum: the CRC32C over header and body does not match.
	ErrChecksum = errors.New("wire: checksum mismatch")
	// ErrShort: DecodeFrame was given a prefix of a frame; retry with more
	// bytes.
	ErrShort = errors.New("wire: short buffer")
	// ErrTruncated: the Reader's stream ended inside a frame.
	ErrTruncated = errors.New("wire: truncated frame")
	// ErrMalformed: the body does not match its type's layout (wrong size,
	// string too long, bad boolean, unknown enum, reserved flag set), or a
	// message to encode has such a field.
	ErrMalformed = errors.New("wire: malformed message")
	// ErrUnknownType: the frame's type is not one of the Type constants.
	ErrUnknownType = errors.New("wire: unknown message type")
)

// Frame constants. Part of the format: do not change.
//
//	0       4        5        6        8         12        16
//	| magic | version| type   | flags  | length  | crc32c  | body[length]
//	| u32   | u8 (1) | u8     | u16    | u32     | u32     |
//
// All integers are little-endian. crc32c is CRC-32C (Castagnoli) over header
// bytes [0:12] followed by the body.
const (
	// HeaderSize is the size of a frame header.
	HeaderSize = 16
	// Magic opens every frame; on the wire it reads "GRBD".
	Magic uint32 = 0x44425247
	// Version is the only frame version this package speaks.
	Version uint8 = 1
	// MaxBody bounds a frame body: a 32 MiB payload plus room for fields.
	MaxBody = 32<<20 + 4<<10
	// MaxData is the largest Data a sender may put in a Write or ResyncData
	// and be sure it fits (the exact limits are MaxBody minus the fixed
	// fields, a little more).
	MaxData = 32 << 20
	// MaxString is the longest string field, in bytes.
	MaxString = 255
	// FlagFUA in a Write or Zero frame: the client asked for this write to
	// be durable before it completes, so the peer syncs it promptly and
	// acknowledges it at AckDurable. FUA on other types is ErrMalformed.
	FlagFUA uint16 = 1 << 0
	// FlagIDs in a VerifyRequest asks for chunk IDs (internal/blockid)
	// instead of CRC32Cs; in a VerifyReply it says the sums are IDs. On
	// other types, as every other bit, ErrMalformed.
	FlagIDs uint16 = 1 << 1
)

// Header field offsets. Part of the format: do not change.
const (
	offMagic   = 0
	offVersion = 4
	offType    = 5
	offFlags   = 6
	offLength  = 8
	offCRC     = 12
)

var le = binary.LittleEndian

// Type identifies a message. Part of the format: do not change the values.
type Type uint8

// Message types. 0 is never valid.
const (
	TypeHello          Type = 1
	TypeWrite          Type = 2
	TypeZero           Type = 3
	TypeAck            Type = 4
	TypeFlush          Type = 5
	TypeFlushAck       Type = 6
	TypeResyncRequest  Type = 7
	TypeResyncData     Type = 8
	TypeResyncDone     Type = 9
	TypeNack           Type = 10
	TypePing           Type = 11
	TypePong           Type = 12
	TypeVerifyRequest  Type = 13
	TypeVerifyReply    Type = 14
	TypeStreamOpen     Type = 15
	TypeControl        Type = 16
	TypeHistory        Type = 17
	TypeExtents        Type = 18
	TypeAuthChallenge  Type = 19
	TypeAuthProof      Type = 20
	TypeResize         Type = 21
	TypeBlockRequest   Type = 22
	TypeBlockData      Type = 23
	TypeResyncProgress Type = 24
	// 25..39 are unassigned. Erasure-coded failover (shard.go):
	TypeCommit          Type = 40
	TypeShardState      Type = 41
	TypeShardStateReply Type = 42
	TypeShardSettle     Type = 43
	TypeShardRead       Type = 44
	TypeShardData       Type = 45
)

var typeNames = [...]string{
	TypeHello:           "Hello",
	TypeWrite:           "Write",
	TypeZero:            "Zero",
	TypeAck:             "Ack",
	TypeFlush:           "Flush",
	TypeFlushAck:        "FlushAck",
	TypeResyncRequest:   "ResyncRequest",
	TypeResyncData:      "ResyncData",
	TypeResyncDone:      "ResyncDone",
	TypeNack:            "Nack",
	TypePing:            "Ping",
	TypePong:            "Pong",
	TypeVerifyRequest:   "VerifyRequest",
	TypeVerifyReply:     "VerifyReply",
	TypeStreamOpen:      "StreamOpen",
	TypeControl:         "Control",
	TypeHistory:         "History",
	TypeExtents:         "Extents",
	TypeAuthChallenge:   "AuthChallenge",
	TypeAuthProof:       "AuthProof",
	TypeResize:          "Resize",
	TypeBlockRequest:    "BlockRequest",
	TypeBlockData:       "BlockData",
	TypeResyncProgress:  "ResyncProgress",
	TypeCommit:          "Commit",
	TypeShardState:      "ShardState",
	TypeShardStateReply: "ShardStateReply",
	TypeShardSettle:     "ShardSettle",
	TypeShardRead:       "ShardRead",
	TypeShardData:       "ShardData",
}

func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

// Message is one peer-protocol message: a pointer to one of the message
// structs of this package (*Hello, *Write, ...). The interface is sealed.
type Message interface {
	// Type is the frame type the message travels as.
	Type() Type
	// code states the message's layout and checks to c: encoding, it
	// appends the fixed fields and plans the rest; decoding, it replaces the
	// message with the body's content (which it may alias).
	code(c *codec)
}

// plan is a message ready to frame: buf holds the caller's prefix followed
// by the fixed fields (and a list); raw (the Data of Write, ResyncData, ...)
// or sums (VerifyReply) follow them in the body.
type plan struct {
	typ   Type
	flags uint16
	buf   []byte
	raw   []byte
	sums  []uint32
	// rawSums are the CRC32Cs of raw's blocks (Write.BlockSums), when the
	// sender has them: the frame's CRC is joined from them.
	rawSums []byte
}

// planOf validates m and plans its frame, the caller's dst then m's fixed
// fields in buf. It dispatches on the concrete type instead of calling
// m.code through the interface: the compiler can then prove that m does not
// escape, so a caller's &Write{...} stays on its stack and WriteMsg does not
// allocate.
func planOf(m Message, dst []byte) (plan, error) {
	c := codec{plan: plan{buf: dst}}
	switch v := m.(type) {
	case *Hello:
		encode(&c, v.Type(), v, (*Hello).code)
	case *Write:
		encode(&c, v.Type(), v, (*Write).code)
	case *Zero:
		encode(&c, v.Type(), v, (*Zero).code)
	case *Ack:
		encode(&c, v.Type(), v, (*Ack).code)
	case *Flush:
		encode(&c, v.Type(), v, (*Flush).code)
	case *FlushAck:
		encode(&c, v.Type(), v, (*FlushAck).code)
	case *ResyncRequest:
		encode(&c, v.Type(), v, (*ResyncRequest).code)
	case *ResyncData:
		encode(&c, v.Type(), v, (*ResyncData).code)
	case *ResyncDone:
		encode(&c, v.Type(), v, (*ResyncDone).code)
	case *Nack:
		encode(&c, v.Type(), v, (*Nack).code)
	case *Ping:
		encode(&c, v.Type(), v, (*Ping).code)
	case *Pong:
		encode(&c, v.Type(), v, (*Pong).code)
	case *VerifyRequest:
		encode(&c, v.Type(), v, (*VerifyRequest).code)
	case *VerifyReply:
		encode(&c, v.Type(), v, (*VerifyReply).code)
	case *StreamOpen:
		encode(&c, v.Type(), v, (*StreamOpen).code)
	case *Control:
		encode(&c, v.Type(), v, (*Control).code)
	case *History:
		encode(&c, v.Type(), v, (*History).code)
	case *Extents:
		encode(&c, v.Type(), v, (*Extents).code)
	case *AuthChallenge:
		encode(&c, v.Type(), v, (*AuthChallenge).code)
	case *AuthProof:
		encode(&c, v.Type(), v, (*AuthProof).code)
	case *Resize:
		encode(&c, v.Type(), v, (*Resize).code)
	case *BlockRequest:
		encode(&c, v.Type(), v, (*BlockRequest).code)
	case *BlockData:
		encode(&c, v.Type(), v, (*BlockData).code)
	case *ResyncProgress:
		encode(&c, v.Type(), v, (*ResyncProgress).code)
	case *Commit:
		encode(&c, v.Type(), v, (*Commit).code)
	case *ShardState:
		encode(&c, v.Type(), v, (*ShardState).code)
	case *ShardStateReply:
		encode(&c, v.Type(), v, (*ShardStateReply).code)
	case *ShardSettle:
		encode(&c, v.Type(), v, (*ShardSettle).code)
	case *ShardRead:
		encode(&c, v.Type(), v, (*ShardRead).code)
	case *ShardData:
		encode(&c, v.Type(), v, (*ShardData).code)
	default:
		// Only nil reaches here (the interface is sealed). Formatting m
		// would make it escape.
		return plan{}, fmt.Errorf("wire: encode nil message: %w", ErrMalformed)
	}
	switch {
	case c.err == errNil:
		return plan{}, encodeErr(c.typ, ErrMalformed, "nil message")
	case c.err != nil:
		return plan{}, c.err
	}
	return c.plan, nil
}

// bodyLen is the body size of p, whose buf starts at start.
func (p *plan) bodyLen(start int) int {
	return len(p.buf) - start + len(p.raw) + 4*len(p.sums)
}

// putHeader writes header bytes [0:12] into b.
func putHeader(b []byte, t Type, flags uint16, length int) {
	le.PutUint32(b[offMagic:], Magic)
	b[offVersion] = Version
	b[offType] = byte(t)
	le.PutUint16(b[offFlags:], flags)
	le.PutUint32(b[offLength:], uint32(length))
}

// header is a parsed frame header.
type header struct {
	typ    Type
	flags  uint16
	length int
	crc    uint32
}

// parseHeader checks magic, version and length of the HeaderSize bytes in b.
// It runs before the body is read or allocated.
func parseHeader(b []byte) (header, error) {
	if m := le.Uint32(b[offMagic:]); m != Magic {
		return header{}, fmt.Errorf("wire: magic %#08x, want %#08x: %w", m, Magic, ErrBadMagic)
	}
	if v := b[offVersion]; v != Version {
		return header{}, fmt.Errorf("wire: version %d, want %d: %w", v, Version, ErrVersion)
	}
	n := le.Uint32(b[offLength:])
	if n > MaxBody {
		return header{}, fmt.Errorf("wire: body of %d bytes, max %d: %w", n, MaxBody, ErrTooLarge)
	}
	return header{
		typ:    Type(b[offType]),
		flags:  le.Uint16(b[offFlags:]),
		length: int(n),
		crc:    le.Uint32(b[offCRC:]),
	}, nil
}

// checkCRC verifies h against header bytes hdr[0:12] and body, in one pass.
// (A Reader used to checksum large data block by block and hand the block
// checksums to the journal; the journal's block checksums are block IDs
// now, docs/journal.md, "Block IDs", so nothing on the receiving side needs
// them.)
func checkCRC(h header, hdr, body []byte) error {
	c := crc32.Update(0, crc32c.Table, hdr[:offCRC])
	c = crc32.Update(c, crc32c.Table, body)
	if c != h.crc {
		return fmt.Errorf("wire: %v frame crc %#08x, computed %#08x: %w", h.typ, h.crc, c, ErrChecksum)
	}
	return nil
}

// AppendFrame appends m's frame to dst and returns the extended slice. It is
// meant for tests, fuzzing and tools; streams use Writer. It panics if m is
// invalid (WriteMsg returns the same condition as an error).
func AppendFrame(dst []byte, m Message) []byte {
	start := len(dst)
	dst = slices.Grow(dst, HeaderSize+64)[:start+HeaderSize]
	p, err := planOf(m, dst)
	if err != nil {
		panic(err)
	}
	n := p.bodyLen(start + HeaderSize)
	if n > MaxBody {
		panic(fmt.Errorf("wire: encode %v: body of %d bytes, max %d: %w", p.typ, n, MaxBody, ErrTooLarge))
	}
	dst = slices.Grow(p.buf, len(p.raw)+4*len(p.sums))
	dst = append(dst, p.raw...)
	for _, s := range p.sums {
		dst = le.AppendUint32(dst, s)
	}
	f := dst[start:]
	putHeader(f, p.typ, p.flags, n)
	c := crc32.Update(0, crc32c.Table, f[:offCRC])
	le.PutUint32(f[offCRC:], crc32.Update(c, crc32c.Table, f[HeaderSize:]))
	return dst
}

// DecodeFrame decodes the frame at the start of b and returns it with the
// number of bytes it occupies. It has no side effects; the message's byte
// slices alias b. ErrShort means b holds only a prefix of a frame.
func DecodeFrame(b []byte) (Message, int, error) {
	if len(b) < HeaderSize {
		return nil, 0, fmt.Errorf("wire: %d of %d header bytes: %w", len(b), HeaderSize, ErrShort)
	}
	h, err := parseHeader(b)
	if err != nil {
		return nil, 0, err
	}
	end := HeaderSize + h.length
	if len(b) < end {
		return nil, 0, fmt.Errorf("wire: %d of %d frame bytes: %w", len(b), end, ErrShort)
	}
	body := b[HeaderSize:end:end]
	if err := checkCRC(h, b, body); err != nil {
		return nil, 0, err
	}
	m := newMessage(h.typ)
	if m == nil {
		return nil, 0, fmt.Errorf("wire: type %d: %w", uint8(h.typ), ErrUnknownType)
	}
	if err := decodeBody(m, h, body, new(codec)); err != nil {
		return nil, 0, err
	}
	return m, end, nil
}

// newMessage returns a zero message of type t, or nil if t is unknown.
func newMessage(t Type) Message {
	switch t {
	case TypeHello:
		return new(Hello)
	case TypeWrite:
		return new(Write)
	case TypeZero:
		return new(Zero)
	case TypeAck:
		return new(Ack)
	case TypeFlush:
		return new(Flush)
	case TypeFlushAck:
		return new(FlushAck)
	case TypeResyncRequest:
		return new(ResyncRequest)
	case TypeResyncData:
		return new(ResyncData)
	case TypeResyncDone:
		return new(ResyncDone)
	case TypeNack:
		return new(Nack)
	case TypePing:
		return new(Ping)
	case TypePong:
		return new(Pong)
	case TypeVerifyRequest:
		return new(VerifyRequest)
	case TypeVerifyReply:
		return new(VerifyReply)
	case TypeStreamOpen:
		return new(StreamOpen)
	case TypeControl:
		return new(Control)
	case TypeHistory:
		return new(History)
	case TypeExtents:
		return new(Extents)
	case TypeAuthChallenge:
		return new(AuthChallenge)
	case TypeAuthProof:
		return new(AuthProof)
	case TypeResize:
		return new(Resize)
	case TypeBlockRequest:
		return new(BlockRequest)
	case TypeBlockData:
		return new(BlockData)
	case TypeResyncProgress:
		return new(ResyncProgress)
	case TypeCommit:
		return new(Commit)
	case TypeShardState:
		return new(ShardState)
	case TypeShardStateReply:
		return new(ShardStateReply)
	case TypeShardSettle:
		return new(ShardSettle)
	case TypeShardRead:
		return new(ShardRead)
	case TypeShardData:
		return new(ShardData)
	}
	return nil
}
