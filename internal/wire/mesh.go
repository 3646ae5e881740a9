package wire

import "github.com/grbd/grbd/internal/extent"

// Messages of member links (docs/wire.md, "Member links"): the stream
// preamble, control-plane traffic (raft and leases) and the data-generation
// exchange of the data stream. Part of the format: do not change.

// Stream kinds in StreamOpen. Part of the format; any other value is
// ErrMalformed.
const (
	StreamControl uint8 = 1 // session handshake, raft and lease messages
	StreamData    uint8 = 2 // the primary's replication stream to one peer
	StreamResync  uint8 = 3 // bulk region copies
	StreamAdmin   uint8 = 4 // verify and other operator requests
)

// Control kinds. Part of the format.
const (
	ControlRaft         uint8 = 1 // Data is a raftpb.Message
	ControlLeaseRequest uint8 = 2
	ControlLeaseAck     uint8 = 3
	ControlProbe        uint8 = 4 // Data is a Probe (membership.go)
	ControlProbeReply   uint8 = 5 // Data is a ProbeReply
	ControlReplaced     uint8 = 6 // Data is a Replaced
)

// History entry flags. Part of the format.
const (
	HistoryForced uint8 = 1 << 0 // the epoch began with a forced promotion
)

// Extents flags. Part of the format.
const (
	// ExtentsAll: the sender changed too much to list; resync everything.
	ExtentsAll uint32 = 1 << 0
)

// Limits of the list messages.
const (
	MaxHistory = 4096
	MaxExtents = (MaxBody - extentsFixed) / 16
	// MaxProgressExtents bounds ResyncProgress.Copied.
	MaxProgressExtents = (MaxBody - progressFixed) / 16
)

// StreamOpen is the first frame on every stream, from the member that
// opened it: which stream this is and who is talking to whom. On the first
// (control) stream of a session the other member answers with its own
// StreamOpen, which completes the session handshake.
//
//	0      1             .           .
//	| kind | cluster str | from str  | to str
//	| u8   |             |           |
type StreamOpen struct {
	Kind              uint8
	Cluster, From, To string
}

// Type implements Message.
func (*StreamOpen) Type() Type { return TypeStreamOpen }

func validStreamKind(k uint8) bool { return k >= StreamControl && k <= StreamAdmin }

func (m *StreamOpen) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeStreamOpen)
	}
	if !validStreamKind(m.Kind) {
		return plan{}, encodeErr(TypeStreamOpen, ErrMalformed, "kind %d", m.Kind)
	}
	for _, f := range [...]struct{ name, v string }{{"cluster", m.Cluster}, {"from", m.From}, {"to", m.To}} {
		if err := checkString(TypeStreamOpen, f.name, f.v); err != nil {
			return plan{}, err
		}
	}
	dst = append(dst, m.Kind)
	dst = appendString(dst, m.Cluster)
	dst = appendString(dst, m.From)
	dst = appendString(dst, m.To)
	return plan{typ: TypeStreamOpen, buf: dst}, nil
}

func (m *StreamOpen) decode(flags uint16, b []byte) error {
	if err := checkVariable(flags, 0, b, 1); err != nil {
		return err
	}
	if !validStreamKind(b[0]) {
		return malformed("kind %d, want %d..%d", b[0], StreamControl, StreamAdmin)
	}
	cluster, rest, err := getString("cluster", b[1:])
	if err != nil {
		return err
	}
	from, rest, err := getString("from", rest)
	if err != nil {
		return err
	}
	to, rest, err := getString("to", rest)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return malformed("%d trailing bytes", len(rest))
	}
	*m = StreamOpen{Kind: b[0], Cluster: cluster, From: from, To: to}
	return nil
}

// Control carries one control-plane message: a raft message (Data), a
// lease request or acknowledgement (Epoch, Sent; Data: the sender's raft
// ID), or a membership message (Data: Probe, ProbeReply, Replaced).
//
//	0      1       9      17
//	| kind | epoch | sent | data[length-17]
//	| u8   | u64   | u64  |
type Control struct {
	Kind  uint8
	Epoch uint64
	Sent  uint64
	Data  []byte
}

// Type implements Message.
func (*Control) Type() Type { return TypeControl }

func (m *Control) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeControl)
	}
	if m.Kind < ControlRaft || m.Kind > ControlReplaced {
		return plan{}, encodeErr(TypeControl, ErrMalformed, "kind %d", m.Kind)
	}
	if err := checkControlData(m.Kind, m.Data); err != nil {
		return plan{}, encodeErr(TypeControl, ErrMalformed, "%v", err)
	}
	if len(m.Data) > MaxBody-controlFixed {
		return plan{}, encodeErr(TypeControl, ErrTooLarge, "%d data bytes", len(m.Data))
	}
	dst = append(dst, m.Kind)
	dst = appendU64s(dst, m.Epoch, m.Sent)
	return plan{typ: TypeControl, buf: dst, raw: m.Data}, nil
}

func (m *Control) decode(flags uint16, b []byte) error {
	if err := checkVariable(flags, 0, b, controlFixed); err != nil {
		return err
	}
	if b[0] < ControlRaft || b[0] > ControlReplaced {
		return malformed("kind %d, want %d..%d", b[0], ControlRaft, ControlReplaced)
	}
	if err := checkControlData(b[0], b[controlFixed:]); err != nil {
		return err
	}
	*m = Control{Kind: b[0], Epoch: le.Uint64(b[1:]), Sent: le.Uint64(b[9:]), Data: payload(b[controlFixed:])}
	return nil
}

// HistoryEntry marks where a node's journal entered an epoch.
type HistoryEntry struct {
	Epoch, FirstSeq uint64
	Flags           uint8
}

// History is a data node's data-generation history and journal position,
// sent by the primary after the Hellos (docs/quorum.md, "Data generations").
//
//	0         8       10
//	| lastSeq | count | count x (epoch u64 | firstSeq u64 | flags u8)
//	| u64     | u16   |
type History struct {
	LastSeq uint64
	Entries []HistoryEntry
}

// Type implements Message.
func (*History) Type() Type { return TypeHistory }

func (m *History) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeHistory)
	}
	if len(m.Entries) > MaxHistory {
		return plan{}, encodeErr(TypeHistory, ErrTooLarge, "%d entries, max %d", len(m.Entries), MaxHistory)
	}
	dst = le.AppendUint64(dst, m.LastSeq)
	dst = le.AppendUint16(dst, uint16(len(m.Entries)))
	var raw []byte
	if len(m.Entries) > 0 {
		raw = make([]byte, 0, 17*len(m.Entries))
	}
	for _, e := range m.Entries {
		if e.Flags&^HistoryForced != 0 {
			return plan{}, encodeErr(TypeHistory, ErrMalformed, "entry flags %#x", e.Flags)
		}
		raw = le.AppendUint64(raw, e.Epoch)
		raw = le.AppendUint64(raw, e.FirstSeq)
		raw = append(raw, e.Flags)
	}
	return plan{typ: TypeHistory, buf: dst, raw: raw}, nil
}

func (m *History) decode(flags uint16, b []byte) error {
	if err := checkVariable(flags, 0, b, historyFixed); err != nil {
		return err
	}
	n := int(le.Uint16(b[8:]))
	if n > MaxHistory {
		return malformed("%d entries, max %d", n, MaxHistory)
	}
	if err := checkSize(b, historyFixed+17*n); err != nil {
		return err
	}
	var entries []HistoryEntry
	if n > 0 {
		entries = make([]HistoryEntry, n)
	}
	for i := range entries {
		p := b[historyFixed+17*i:]
		entries[i] = HistoryEntry{Epoch: le.Uint64(p), FirstSeq: le.Uint64(p[8:]), Flags: p[16]}
		if entries[i].Flags&^HistoryForced != 0 {
			return malformed("entry %d flags %#x", i, entries[i].Flags)
		}
	}
	*m = History{LastSeq: le.Uint64(b[0:]), Entries: entries}
	return nil
}

// Extents lists device ranges: a diverged secondary's own changes since the
// divergence point, which the primary adds to its resync.
//
//	0       4       8
//	| flags | count | count x (offset u64 | length u64)
//	| u32   | u32   |
type Extents struct {
	Flags   uint32
	Extents []extent.Extent
}

// Type implements Message.
func (*Extents) Type() Type { return TypeExtents }

func (m *Extents) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeExtents)
	}
	if m.Flags&^ExtentsAll != 0 {
		return plan{}, encodeErr(TypeExtents, ErrMalformed, "flags %#x", m.Flags)
	}
	if len(m.Extents) > MaxExtents {
		return plan{}, encodeErr(TypeExtents, ErrTooLarge, "%d extents, max %d", len(m.Extents), MaxExtents)
	}
	dst = le.AppendUint32(dst, m.Flags)
	dst = le.AppendUint32(dst, uint32(len(m.Extents)))
	var raw []byte
	if len(m.Extents) > 0 {
		raw = extent.Append(make([]byte, 0, extent.Size*len(m.Extents)), m.Extents)
	}
	return plan{typ: TypeExtents, buf: dst, raw: raw}, nil
}

func (m *Extents) decode(flags uint16, b []byte) error {
	if err := checkVariable(flags, 0, b, extentsFixed); err != nil {
		return err
	}
	f := le.Uint32(b[0:])
	if f&^ExtentsAll != 0 {
		return malformed("flags %#x", f)
	}
	n := le.Uint32(b[4:])
	if uint64(n) > uint64(MaxExtents) {
		return malformed("%d extents, max %d", n, MaxExtents)
	}
	if err := checkSize(b, extentsFixed+16*int(n)); err != nil {
		return err
	}
	ext := extent.Decode(b[extentsFixed:], int(n))
	*m = Extents{Flags: f, Extents: ext}
	return nil
}

// ResyncProgress reports how far an interrupted resync got
// (docs/replication.md, "Resuming a resync"). From a peer, after its Extents
// (only when both Hellos carry the resume capability): every range in
// Copied holds the data the primary whose disk is Source had after its
// record AsOf, of epoch Epoch. From the primary, as the first message of
// the resync that answers it: the ranges it keeps from that report (AsOf
// echoed; no ranges and AsOf 0 when it does not trust the report).
//
//	0      8       16       24      28
//	| asOf | epoch | source | count | count x (offset u64 | length u64)
//	| u64  | u64   | u64    | u32   |
type ResyncProgress struct {
	AsOf, Epoch, Source uint64
	Copied              []extent.Extent
}

// Type implements Message.
func (*ResyncProgress) Type() Type { return TypeResyncProgress }

func (m *ResyncProgress) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeResyncProgress)
	}
	if len(m.Copied) > MaxProgressExtents {
		return plan{}, encodeErr(TypeResyncProgress, ErrTooLarge, "%d extents, max %d", len(m.Copied), MaxProgressExtents)
	}
	dst = appendU64s(dst, m.AsOf, m.Epoch, m.Source)
	dst = le.AppendUint32(dst, uint32(len(m.Copied)))
	var raw []byte
	if len(m.Copied) > 0 {
		raw = extent.Append(make([]byte, 0, extent.Size*len(m.Copied)), m.Copied)
	}
	return plan{typ: TypeResyncProgress, buf: dst, raw: raw}, nil
}

func (m *ResyncProgress) decode(flags uint16, b []byte) error {
	if err := checkVariable(flags, 0, b, progressFixed); err != nil {
		return err
	}
	n := le.Uint32(b[24:])
	if uint64(n) > uint64(MaxProgressExtents) {
		return malformed("%d extents, max %d", n, MaxProgressExtents)
	}
	if err := checkSize(b, progressFixed+16*int(n)); err != nil {
		return err
	}
	ext := extent.Decode(b[progressFixed:], int(n))
	*m = ResyncProgress{AsOf: le.Uint64(b), Epoch: le.Uint64(b[8:]), Source: le.Uint64(b[16:]), Copied: ext}
	return nil
}
