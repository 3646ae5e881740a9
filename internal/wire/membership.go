package wire

// Bodies of the membership control kinds (docs/wire.md, "Control (16)"):
// the Data of a Control frame of kind ControlProbe, ControlProbeReply,
// ControlReplaced, and the sender's raft ID in lease messages. Each starts
// with its own version byte and has a fixed length; the frame's CRC covers
// it. Part of the format: do not change.

// ControlVersion is the version byte of the membership bodies.
const ControlVersion uint8 = 1

// Body lengths of the membership control kinds.
const (
	probeSize       = 10 // version | flags | join id
	probeReplySize  = 18 // version | flags | id | echo
	replacedSize    = 17 // version | stale | current
	leaseIDSize     = 8  // sender's raft id
	probeFlags      = ProbeFresh
	probeReplyFlags = ProbeFresh | ProbeHasState | ProbeCounted | ProbeNewcomer
)

// Probe flags. Part of the format; other bits are ErrMalformed.
const (
	ProbeFresh    uint8 = 1 << 0 // the sender holds no block data
	ProbeHasState uint8 = 1 << 1 // reply: the sender holds control-plane state
	ProbeCounted  uint8 = 1 << 2 // reply: the sender created the cluster counting the prober empty
	ProbeNewcomer uint8 = 1 << 3 // reply: the sender created the cluster without the prober and has not heard from it since
)

// Probe asks a member whether it holds control-plane state; sent by a
// member without any, announcing its join identity.
//
//	0         1       2
//	| version | flags | join id |
//	| u8 (1)  | u8    | u64     |
type Probe struct {
	JoinID uint64
	Flags  uint8
}

// ProbeReply answers a Probe: ID is the sender's raft ID (or its own join
// identity when it has no state), Echo the join identity probed with.
//
//	0         1       2    10
//	| version | flags | id | echo |
//	| u8 (1)  | u8    | u64| u64  |
type ProbeReply struct {
	ID, Echo uint64
	Flags    uint8
}

// Replaced tells a stale incarnation that its raft ID Stale was replaced
// by Current.
//
//	0         1       9
//	| version | stale | current |
//	| u8 (1)  | u64   | u64     |
type Replaced struct {
	Stale, Current uint64
}

// Append appends p's body.
func (p Probe) Append(dst []byte) []byte {
	dst = append(dst, ControlVersion, p.Flags)
	return le.AppendUint64(dst, p.JoinID)
}

// Append appends r's body.
func (r ProbeReply) Append(dst []byte) []byte {
	dst = append(dst, ControlVersion, r.Flags)
	dst = le.AppendUint64(dst, r.ID)
	return le.AppendUint64(dst, r.Echo)
}

// Append appends r's body.
func (r Replaced) Append(dst []byte) []byte {
	dst = append(dst, ControlVersion)
	dst = le.AppendUint64(dst, r.Stale)
	return le.AppendUint64(dst, r.Current)
}

// AppendLeaseID appends the body of a lease request or ack: the sender's
// raft ID.
func AppendLeaseID(dst []byte, id uint64) []byte { return le.AppendUint64(dst, id) }

// ParseProbe decodes a Probe body.
func ParseProbe(b []byte) (Probe, error) {
	if err := checkMembership(b, probeSize, probeFlags); err != nil {
		return Probe{}, err
	}
	return Probe{Flags: b[1], JoinID: le.Uint64(b[2:])}, nil
}

// ParseProbeReply decodes a ProbeReply body.
func ParseProbeReply(b []byte) (ProbeReply, error) {
	if err := checkMembership(b, probeReplySize, probeReplyFlags); err != nil {
		return ProbeReply{}, err
	}
	return ProbeReply{Flags: b[1], ID: le.Uint64(b[2:]), Echo: le.Uint64(b[10:])}, nil
}

// ParseReplaced decodes a Replaced body.
func ParseReplaced(b []byte) (Replaced, error) {
	if err := checkMembership(b, replacedSize, 0); err != nil {
		return Replaced{}, err
	}
	return Replaced{Stale: le.Uint64(b[1:]), Current: le.Uint64(b[9:])}, nil
}

// ParseLeaseID decodes the body of a lease request or ack: the sender's
// raft ID, or 0 for an empty body (a sender that predates raft IDs with
// incarnations).
func ParseLeaseID(b []byte) (uint64, error) {
	switch len(b) {
	case 0:
		return 0, nil
	case leaseIDSize:
		return le.Uint64(b), nil
	}
	return 0, malformed("lease body of %d bytes, want 0 or %d", len(b), leaseIDSize)
}

func checkMembership(b []byte, size int, flags uint8) error {
	if len(b) != size {
		return malformed("membership body of %d bytes, want %d", len(b), size)
	}
	if b[0] != ControlVersion {
		return malformed("membership body version %d, want %d", b[0], ControlVersion)
	}
	if size != replacedSize && b[1]&^flags != 0 {
		return malformed("membership flags %#x", b[1])
	}
	return nil
}

// checkControlData checks the Data of a Control frame against its kind.
func checkControlData(kind uint8, b []byte) error {
	var err error
	switch kind {
	case ControlLeaseRequest, ControlLeaseAck:
		_, err = ParseLeaseID(b)
	case ControlProbe:
		_, err = ParseProbe(b)
	case ControlProbeReply:
		_, err = ParseProbeReply(b)
	case ControlReplaced:
		_, err = ParseReplaced(b)
	}
	return err
}
