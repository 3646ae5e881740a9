package wire

import (
	"slices"

	"github.com/grbd/grbd/internal/extent"
)

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

func (m *StreamOpen) code(c *codec) {
	c.u8(&m.Kind)
	c.within("kind", int(m.Kind), int(StreamControl), int(StreamAdmin))
	c.str("cluster", &m.Cluster)
	c.str("from", &m.From)
	c.str("to", &m.To)
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

func (m *Control) code(c *codec) {
	c.u8(&m.Kind)
	c.within("kind", int(m.Kind), int(ControlRaft), int(ControlReplaced))
	c.u64s(&m.Epoch, &m.Sent)
	c.tail(&m.Data)
	if err := checkControlData(m.Kind, m.Data); err != nil {
		c.failWith(err)
	}
	c.fits("data bytes", len(m.Data), MaxBody-controlFixed)
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

func (m *History) code(c *codec) {
	c.u64s(&m.LastSeq)
	n := c.count("entries", len(m.Entries), 2, MaxHistory, historyEntrySize)
	if c.decoding {
		m.Entries = nil
		if n > 0 {
			m.Entries = make([]HistoryEntry, n)
		}
	} else {
		c.buf = slices.Grow(c.buf, historyEntrySize*n)
	}
	for i := range n {
		e := &m.Entries[i]
		c.u64s(&e.Epoch, &e.FirstSeq)
		c.u8(&e.Flags)
		if e.Flags&^HistoryForced != 0 {
			c.fail(ErrMalformed, "entry %d flags %#x", i, e.Flags)
		}
	}
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

func (m *Extents) code(c *codec) {
	c.u32(&m.Flags)
	if m.Flags&^ExtentsAll != 0 {
		c.fail(ErrMalformed, "flags %#x", m.Flags)
	}
	c.extents(&m.Extents, MaxExtents)
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

func (m *ResyncProgress) code(c *codec) {
	c.u64s(&m.AsOf, &m.Epoch, &m.Source)
	c.extents(&m.Copied, MaxProgressExtents)
}
