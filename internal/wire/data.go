package wire

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
type Write struct {
	Seq, Epoch uint64
	Offset     uint64
	FUA        bool
	Data       []byte
}

// Type implements Message.
func (*Write) Type() Type { return TypeWrite }

func (m *Write) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeWrite)
	}
	if len(m.Data) > MaxBody-writeFixed {
		return plan{}, encodeErr(TypeWrite, ErrTooLarge, "%d data bytes, max %d", len(m.Data), MaxBody-writeFixed)
	}
	dst = appendU64s(dst, m.Seq, m.Epoch, m.Offset)
	return plan{typ: TypeWrite, flags: fuaFlag(m.FUA), buf: dst, raw: m.Data}, nil
}

func (m *Write) decode(flags uint16, b []byte) error {
	if err := checkVariable(flags, FlagFUA, b, writeFixed); err != nil {
		return err
	}
	*m = Write{
		Seq:    le.Uint64(b[0:]),
		Epoch:  le.Uint64(b[8:]),
		Offset: le.Uint64(b[16:]),
		FUA:    flags&FlagFUA != 0,
		Data:   payload(b[writeFixed:]),
	}
	return nil
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

func (m *Zero) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeZero)
	}
	dst = appendU64s(dst, m.Seq, m.Epoch, m.Offset, m.Length)
	return plan{typ: TypeZero, flags: fuaFlag(m.FUA), buf: dst}, nil
}

func (m *Zero) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, FlagFUA, b, zeroSize); err != nil {
		return err
	}
	*m = Zero{
		Seq:    le.Uint64(b[0:]),
		Epoch:  le.Uint64(b[8:]),
		Offset: le.Uint64(b[16:]),
		Length: le.Uint64(b[24:]),
		FUA:    flags&FlagFUA != 0,
	}
	return nil
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

func validLevel(l uint8) bool { return l >= AckReceived && l <= AckDurable }

func (m *Ack) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeAck)
	}
	if !validLevel(m.Level) {
		return plan{}, encodeErr(TypeAck, ErrMalformed, "level %d", m.Level)
	}
	dst = le.AppendUint64(dst, m.Seq)
	dst = append(dst, m.Level)
	return plan{typ: TypeAck, buf: dst}, nil
}

func (m *Ack) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, 0, b, ackSize); err != nil {
		return err
	}
	if !validLevel(b[8]) {
		return malformed("level %d, want %d..%d", b[8], AckReceived, AckDurable)
	}
	*m = Ack{Seq: le.Uint64(b[0:]), Level: b[8]}
	return nil
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

func (m *Flush) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeFlush)
	}
	dst = appendU64s(dst, m.ID, m.Seq)
	return plan{typ: TypeFlush, buf: dst}, nil
}

func (m *Flush) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, 0, b, flushSize); err != nil {
		return err
	}
	*m = Flush{ID: le.Uint64(b[0:]), Seq: le.Uint64(b[8:])}
	return nil
}

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

func (m *FlushAck) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeFlushAck)
	}
	dst = appendU64s(dst, m.ID, m.Seq)
	dst = le.AppendUint32(dst, m.Err)
	return plan{typ: TypeFlushAck, buf: dst}, nil
}

func (m *FlushAck) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, 0, b, flushAckSize); err != nil {
		return err
	}
	*m = FlushAck{ID: le.Uint64(b[0:]), Seq: le.Uint64(b[8:]), Err: le.Uint32(b[16:])}
	return nil
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

func validNackCode(c uint32) bool { return c >= NackStaleEpoch && c <= nackMaxCode }

func (m *Nack) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeNack)
	}
	if !validNackCode(m.Code) {
		return plan{}, encodeErr(TypeNack, ErrMalformed, "code %d", m.Code)
	}
	if err := checkString(TypeNack, "reason", m.Reason); err != nil {
		return plan{}, err
	}
	dst = le.AppendUint64(dst, m.Seq)
	dst = le.AppendUint32(dst, m.Code)
	dst = appendString(dst, m.Reason)
	return plan{typ: TypeNack, buf: dst}, nil
}

func (m *Nack) decode(flags uint16, b []byte) error {
	if err := checkVariable(flags, 0, b, nackFixed); err != nil {
		return err
	}
	code := le.Uint32(b[8:])
	if !validNackCode(code) {
		return malformed("code %d, want %d..%d", code, NackStaleEpoch, nackMaxCode)
	}
	reason, rest, err := getString("reason", b[nackFixed:])
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return malformed("%d trailing bytes", len(rest))
	}
	*m = Nack{Seq: le.Uint64(b[0:]), Code: code, Reason: reason}
	return nil
}
