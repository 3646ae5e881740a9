package quorum

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"
	"sort"

	"github.com/grbd/grbd/internal/crc32c"
)

// State is the replicated control-plane state: what every member agrees on
// once it applied the same log prefix. See docs/quorum.md.
type State struct {
	// Epoch increases with every successful promotion.
	Epoch uint64
	// Primary is the data node allowed to be primary in Epoch ("" = none).
	Primary string
	// Forced: Epoch began with a forced promotion.
	Forced bool
	// Outdated lists, sorted, the data nodes that may lack acknowledged
	// writes.
	Outdated []string
	// Gen counts, per data node, the Outdate and Clear commands applied to
	// it. Both name the Gen they expect (compare-and-swap), so a Clear
	// proposed before an Outdate can never apply after it (docs/quorum.md,
	// "Outdating").
	Gen map[string]uint64
	// Disks records, per data node, the identity of the disk (its store's
	// random ID) that holds the node's data as far as the cluster knows:
	// set by the node's promotion and by the primary's Clear once the node
	// holds every acknowledged write. A node whose disk is another one (a
	// replaced, empty disk) is never promoted (docs/quorum.md, "Data
	// identity").
	Disks map[string]uint64
	// Durable is a sequence number every data node that is not Outdated
	// holds durably, with every write before it: the primary of Epoch
	// records the writes a completed FLUSH covered. A node whose journal
	// ends before it lost writes acknowledged as flushed (its data directory
	// restored from an older copy) and must not be promoted until it caught
	// up (docs/quorum.md, "Writes recorded as flushed"). A forced promotion
	// resets it: the new primary may lack writes before it.
	Durable uint64
}

// IsOutdated reports whether name is Outdated.
func (s State) IsOutdated(name string) bool {
	_, found := slices.BinarySearch(s.Outdated, name)
	return found
}

// Clone returns a deep copy.
func (s State) Clone() State {
	s.Outdated = slices.Clone(s.Outdated)
	if s.Gen != nil {
		g := make(map[string]uint64, len(s.Gen))
		for k, v := range s.Gen {
			g[k] = v
		}
		s.Gen = g
	}
	if s.Disks != nil {
		d := make(map[string]uint64, len(s.Disks))
		for k, v := range s.Disks {
			d[k] = v
		}
		s.Disks = d
	}
	return s
}

// Promotable reports whether data node name, whose store has identity
// disk, may be promoted without force, and if not, why. It is the rule
// Apply uses for Promote (docs/quorum.md, "Data identity"): the node is not
// Outdated and its disk is the one the cluster recorded for it. Before the
// first promotion (epoch 0) no write was ever acknowledged, so any disk
// holds them all; a cluster that recorded no disk at all (created by a
// version before data identity) keeps the old rule until its first
// promotion records one.
func (s State) Promotable(name string, disk uint64) (bool, string) {
	rec := s.Disks[name]
	if owner := s.DiskOwner(disk, name); owner != "" {
		// Refused by the cases below too (rec != disk, and the cluster has
		// recorded disks, so its epoch is not 0): only the reason is new,
		// so members of older versions apply the same commands alike.
		return false, foreignDiskReason(disk, owner)
	}
	switch {
	case s.IsOutdated(name):
		return false, "Outdated: it may lack acknowledged writes"
	case disk == 0:
		return true, "" // a command from before data identity: the old rule
	case s.Epoch == 0 || rec == disk || len(s.Disks) == 0:
		return true, ""
	case rec == 0:
		return false, fmt.Sprintf("disk %s is not recorded as holding the data: it needs a sync from the primary", ShortDisk(disk))
	}
	return false, fmt.Sprintf("disk %s is not the recorded disk %s (replaced?): it needs a full sync from an UpToDate node", ShortDisk(disk), ShortDisk(rec))
}

// DiskOwner returns the data node other than name whose recorded disk is
// disk, when disk is not name's own recorded disk ("" for none). Disk
// identities are drawn at random when a store is created, so a node that
// presents another node's disk holds a data directory that was moved or
// copied from that node: disks swapped between hosts, a cloned host. Its
// data is that node's, never this one's. A clone that took its full sync
// keeps its ID, so one disk may be recorded for two nodes: there it is
// each one's own.
func (s State) DiskOwner(disk uint64, name string) string {
	if disk == 0 || s.Disks[name] == disk {
		return ""
	}
	for _, n := range slices.Sorted(maps.Keys(s.Disks)) {
		if n != name && s.Disks[n] == disk {
			return n
		}
	}
	return ""
}

// foreignDiskReason says why a node that holds owner's disk is not
// promoted, and what the operator does about it.
func foreignDiskReason(disk uint64, owner string) string {
	return fmt.Sprintf("disk %s is the recorded disk of %s, not of this node: its data directory was moved or copied from %s "+
		"(start it as %s again, or wipe it to take a full sync as this node)", ShortDisk(disk), owner, owner, owner)
}

// NeedsClear reports whether peer, caught up with disk, still needs the
// primary's Clear: it is Outdated, or disk is not recorded as its disk.
func (s State) NeedsClear(peer string, disk uint64) bool {
	return s.IsOutdated(peer) || (disk != 0 && s.Disks[peer] != disk)
}

// ShortDisk is the short form of a disk identity shown to operators.
func ShortDisk(disk uint64) string {
	if disk == 0 {
		return "-"
	}
	return fmt.Sprintf("%08x", uint32(disk>>32))
}

func (s *State) setDisk(name string, disk uint64) {
	if disk == 0 {
		return
	}
	if s.Disks == nil {
		s.Disks = map[string]uint64{}
	}
	s.Disks[name] = disk
}

// GenOf is name's Outdate/Clear generation.
func (s State) GenOf(name string) uint64 { return s.Gen[name] }

func (s *State) setOutdated(name string, on bool) {
	i, found := slices.BinarySearch(s.Outdated, name)
	switch {
	case on && !found:
		s.Outdated = slices.Insert(s.Outdated, i, name)
	case !on && found:
		s.Outdated = slices.Delete(s.Outdated, i, i+1)
	}
}

// CommandType identifies a command. Part of the format: do not change.
type CommandType uint8

// Commands. 0 is never valid.
const (
	CmdPromote CommandType = 1
	CmdDemote  CommandType = 2
	CmdOutdate CommandType = 3
	CmdClear   CommandType = 4
	CmdDurable CommandType = 5
)

var cmdNames = map[CommandType]string{CmdPromote: "Promote", CmdDemote: "Demote", CmdOutdate: "Outdate", CmdClear: "Clear", CmdDurable: "Durable"}

func (t CommandType) String() string {
	if s, ok := cmdNames[t]; ok {
		return s
	}
	return fmt.Sprintf("Command(%d)", t)
}

// Command is one state change proposed through the log.
//
//   - Promote: Node becomes primary in Epoch+1 if Epoch is current and Node
//     is a data node that is Promotable with Disk (unless Force); Disk
//     becomes Node's recorded disk.
//   - Demote: Node stops being primary if it is the primary of Epoch.
//   - Outdate / Clear: By, the primary of Epoch, marks Node as Outdated or
//     not, if Node's generation is still Gen; the generation then grows. A
//     Clear with a Disk records it as Node's disk: Node holds every
//     acknowledged write on it.
//   - Durable: By, the primary of Epoch, records Seq as State.Durable if it
//     is above it.
type Command struct {
	Type  CommandType
	Node  string
	By    string // Outdate, Clear
	Epoch uint64 // the epoch the proposer saw (Promote: the one it replaces)
	Gen   uint64 // Outdate, Clear: the generation the proposer saw
	Force bool   // Promote
	// Manual marks a Promote an operator asked for (grbd primary): the raft
	// leader lets it depose a live primary, unlike a failover's.
	Manual bool
	// Disk is the identity of Node's disk (Promote, Clear); 0 in commands
	// written before data identity, which apply by the old rules.
	Disk uint64
	Seq  uint64 // Durable
}

func (c Command) String() string {
	switch c.Type {
	case CmdDurable:
		return fmt.Sprintf("Durable{seq %d epoch %d by %s}", c.Seq, c.Epoch, c.By)
	case CmdPromote:
		return fmt.Sprintf("Promote{%s from epoch %d force=%v disk %s}", c.Node, c.Epoch, c.Force, ShortDisk(c.Disk))
	case CmdDemote:
		return fmt.Sprintf("Demote{%s epoch %d}", c.Node, c.Epoch)
	}
	return fmt.Sprintf("%v{%s epoch %d gen %d by %s disk %s}", c.Type, c.Node, c.Epoch, c.Gen, c.By, ShortDisk(c.Disk))
}

// Apply applies c to s if its condition holds and reports whether it did.
// dataNodes are the names of the data nodes. Apply is a pure function of its
// inputs: every member applying the same log reaches the same State.
func (s *State) Apply(c Command, dataNodes []string) bool {
	switch c.Type {
	case CmdPromote:
		if c.Epoch != s.Epoch || !slices.Contains(dataNodes, c.Node) {
			return false
		}
		if ok, _ := s.Promotable(c.Node, c.Disk); !ok && !c.Force {
			return false
		}
		s.Epoch++
		s.Primary, s.Forced = c.Node, c.Force
		if c.Force {
			s.Durable = 0
		}
		s.setOutdated(c.Node, false)
		s.setDisk(c.Node, c.Disk)
		return true
	case CmdDemote:
		if c.Epoch != s.Epoch || s.Primary != c.Node || c.Node == "" {
			return false
		}
		s.Primary = ""
		return true
	case CmdDurable:
		if c.Epoch != s.Epoch || c.By != s.Primary || c.By == "" || c.Seq <= s.Durable {
			return false
		}
		s.Durable = c.Seq
		return true
	case CmdOutdate, CmdClear:
		if c.Epoch != s.Epoch || c.By != s.Primary || c.By == "" || !slices.Contains(dataNodes, c.Node) || c.Gen != s.Gen[c.Node] {
			return false
		}
		if c.Type == CmdOutdate && c.Node == s.Primary {
			return false
		}
		s.setOutdated(c.Node, c.Type == CmdOutdate)
		if c.Type == CmdClear {
			s.setDisk(c.Node, c.Disk)
		}
		if s.Gen == nil {
			s.Gen = map[string]uint64{}
		}
		s.Gen[c.Node]++
		return true
	}
	return false
}

// Command and state encodings. Part of the format: do not change.
//
//	command: | version u8 (2) | type u8 | length u16 | body | crc32c u32 |
//	body:    | epoch u64 | gen u64 | flags u8 | node string | by string | disk u64 |
//	         flags: bit 0 force, bit 1 manual (version 1: force 0 or 1)
//	state:   | version u8 (2) | type u8 (0xff) | length u16 | body | crc32c u32 |
//	body:    | epoch u64 | forced u8 | primary string | count u16 | outdated string... |
//	         | gens u16 | gens x (name string | gen u64) |  (sorted by name, gen > 0)
//	         | disks u16 | disks x (name string | disk u64) | (sorted by name, disk > 0)
//	version 3: a Durable command's body ends in | seq u64 |, and a state
//	         with Durable > 0 ends in | durable u64 |; nothing else is v3
//
// Version 1 (before data identity) has neither disk nor the disks table;
// every version decodes (a v1 command has Disk 0). Version 3 is written only
// where it is needed, so members of older versions go on reading every
// other entry and snapshot. A string is a u8 length
// and that many bytes (member names are at most 63 bytes). Integers are
// little-endian; the CRC-32C covers every byte before it. length counts
// the body bytes.
const (
	codecVersion   = 2
	codecV1        = 1
	codecV3        = 3
	stateType      = 0xff
	codecHeader    = 4
	codecTrailer   = 4
	maxName        = 63
	maxOutdated    = 64
	maxCommandBody = 8 + 8 + 1 + 2*(1+maxName) + 8 + 8
)

func appendName(dst []byte, s string) []byte {
	dst = append(dst, byte(len(s)))
	return append(dst, s...)
}

func getName(b []byte) (string, []byte, error) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return "", nil, fmt.Errorf("%w: truncated name", ErrCorrupt)
	}
	n := int(b[0])
	if n > maxName {
		return "", nil, fmt.Errorf("%w: name of %d bytes", ErrCorrupt, n)
	}
	return string(b[1 : 1+n]), b[1+n:], nil
}

func frame(version, typ byte, body []byte) []byte {
	out := make([]byte, 0, codecHeader+len(body)+codecTrailer)
	out = append(out, version, typ)
	out = binary.LittleEndian.AppendUint16(out, uint16(len(body)))
	out = append(out, body...)
	return binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, crc32c.Table))
}

func unframe(b []byte) (version, typ byte, body []byte, err error) {
	if len(b) < codecHeader+codecTrailer {
		return 0, 0, nil, fmt.Errorf("%w: %d bytes", ErrCorrupt, len(b))
	}
	if b[0] != codecVersion && b[0] != codecV1 && b[0] != codecV3 {
		return 0, 0, nil, fmt.Errorf("%w: version %d", ErrCorrupt, b[0])
	}
	n := int(binary.LittleEndian.Uint16(b[2:]))
	if len(b) != codecHeader+n+codecTrailer {
		return 0, 0, nil, fmt.Errorf("%w: length %d in %d bytes", ErrCorrupt, n, len(b))
	}
	if got, want := crc32.Checksum(b[:codecHeader+n], crc32c.Table), binary.LittleEndian.Uint32(b[codecHeader+n:]); got != want {
		return 0, 0, nil, fmt.Errorf("%w: crc %08x, want %08x", ErrCorrupt, got, want)
	}
	return b[0], b[1], b[codecHeader : codecHeader+n], nil
}

// Encode returns the command's log entry bytes.
func (c Command) Encode() ([]byte, error) {
	if cmdNames[c.Type] == "" {
		return nil, fmt.Errorf("%w: command type %d", ErrInvalid, c.Type)
	}
	if len(c.Node) > maxName || len(c.By) > maxName {
		return nil, fmt.Errorf("%w: name longer than %d bytes", ErrInvalid, maxName)
	}
	body := binary.LittleEndian.AppendUint64(make([]byte, 0, maxCommandBody), c.Epoch)
	body = binary.LittleEndian.AppendUint64(body, c.Gen)
	body = append(body, boolByte(c.Force)|boolByte(c.Manual)<<1)
	body = appendName(body, c.Node)
	body = appendName(body, c.By)
	body = binary.LittleEndian.AppendUint64(body, c.Disk)
	if c.Type == CmdDurable {
		return frame(codecV3, byte(c.Type), binary.LittleEndian.AppendUint64(body, c.Seq)), nil
	}
	return frame(codecVersion, byte(c.Type), body), nil
}

// DecodeCommand parses a log entry. Errors wrap ErrCorrupt.
func DecodeCommand(b []byte) (Command, error) {
	version, typ, body, err := unframe(b)
	if err != nil {
		return Command{}, err
	}
	c := Command{Type: CommandType(typ)}
	if cmdNames[c.Type] == "" {
		return Command{}, fmt.Errorf("%w: command type %d", ErrCorrupt, typ)
	}
	if len(body) < 17 || body[16] > 3 || (version == codecV1 && body[16] > 1) {
		return Command{}, fmt.Errorf("%w: command body", ErrCorrupt)
	}
	c.Epoch, c.Gen = binary.LittleEndian.Uint64(body), binary.LittleEndian.Uint64(body[8:])
	c.Force, c.Manual = body[16]&1 != 0, body[16]&2 != 0
	rest := body[17:]
	if c.Node, rest, err = getName(rest); err != nil {
		return Command{}, err
	}
	if c.By, rest, err = getName(rest); err != nil {
		return Command{}, err
	}
	if version >= 2 {
		if len(rest) < 8 {
			return Command{}, fmt.Errorf("%w: command body", ErrCorrupt)
		}
		c.Disk, rest = binary.LittleEndian.Uint64(rest), rest[8:]
	}
	if (version == codecV3) != (c.Type == CmdDurable) {
		return Command{}, fmt.Errorf("%w: %v in version %d", ErrCorrupt, c.Type, version)
	}
	if version == codecV3 {
		if len(rest) < 8 {
			return Command{}, fmt.Errorf("%w: command body", ErrCorrupt)
		}
		c.Seq, rest = binary.LittleEndian.Uint64(rest), rest[8:]
	}
	if len(rest) != 0 {
		return Command{}, fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(rest))
	}
	return c, nil
}

// Encode returns the state's snapshot bytes.
func (s State) Encode() ([]byte, error) {
	var err error
	if len(s.Outdated) > maxOutdated || len(s.Primary) > maxName {
		return nil, fmt.Errorf("%w: state too large", ErrInvalid)
	}
	body := binary.LittleEndian.AppendUint64(nil, s.Epoch)
	body = append(body, boolByte(s.Forced))
	body = appendName(body, s.Primary)
	body = binary.LittleEndian.AppendUint16(body, uint16(len(s.Outdated)))
	for _, n := range s.Outdated {
		if len(n) > maxName {
			return nil, fmt.Errorf("%w: name longer than %d bytes", ErrInvalid, maxName)
		}
		body = appendName(body, n)
	}
	if body, err = appendTable(body, s.Gen); err != nil {
		return nil, err
	}
	if body, err = appendTable(body, s.Disks); err != nil {
		return nil, err
	}
	if s.Durable > 0 {
		return frame(codecV3, stateType, binary.LittleEndian.AppendUint64(body, s.Durable)), nil
	}
	return frame(codecVersion, stateType, body), nil
}

// DecodeState parses snapshot bytes; empty input is the zero State.
func DecodeState(b []byte) (State, error) {
	if len(b) == 0 {
		return State{}, nil
	}
	version, typ, body, err := unframe(b)
	if err != nil {
		return State{}, err
	}
	if typ != stateType || len(body) < 11 || body[8] > 1 {
		return State{}, fmt.Errorf("%w: state body", ErrCorrupt)
	}
	s := State{Epoch: binary.LittleEndian.Uint64(body), Forced: body[8] == 1}
	rest := body[9:]
	if s.Primary, rest, err = getName(rest); err != nil {
		return State{}, err
	}
	if len(rest) < 2 {
		return State{}, fmt.Errorf("%w: state body", ErrCorrupt)
	}
	n := int(binary.LittleEndian.Uint16(rest))
	rest = rest[2:]
	if n > maxOutdated {
		return State{}, fmt.Errorf("%w: %d outdated nodes", ErrCorrupt, n)
	}
	for range n {
		var name string
		if name, rest, err = getName(rest); err != nil {
			return State{}, err
		}
		if k := len(s.Outdated); k > 0 && s.Outdated[k-1] >= name {
			return State{}, fmt.Errorf("%w: outdated list not sorted", ErrCorrupt)
		}
		s.Outdated = append(s.Outdated, name)
	}
	if s.Gen, rest, err = decodeTable(rest, "generations"); err != nil {
		return State{}, err
	}
	if version >= 2 {
		if s.Disks, rest, err = decodeTable(rest, "disks"); err != nil {
			return State{}, err
		}
	}
	if version == codecV3 {
		if len(rest) < 8 || binary.LittleEndian.Uint64(rest) == 0 {
			return State{}, fmt.Errorf("%w: state durable", ErrCorrupt)
		}
		s.Durable, rest = binary.LittleEndian.Uint64(rest), rest[8:]
	}
	if len(rest) != 0 {
		return State{}, fmt.Errorf("%w: state body", ErrCorrupt)
	}
	return s, nil
}

// appendTable appends a name -> value table (generations, disks): a u16
// count, then each non-zero entry as name string and u64, sorted by name.
func appendTable(body []byte, t map[string]uint64) ([]byte, error) {
	var names []string
	for n, v := range t {
		if v != 0 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) > maxOutdated {
		return nil, fmt.Errorf("%w: state too large", ErrInvalid)
	}
	body = binary.LittleEndian.AppendUint16(body, uint16(len(names)))
	for _, n := range names {
		if len(n) > maxName {
			return nil, fmt.Errorf("%w: name longer than %d bytes", ErrInvalid, maxName)
		}
		body = appendName(body, n)
		body = binary.LittleEndian.AppendUint64(body, t[n])
	}
	return body, nil
}

// decodeTable reads what appendTable wrote (nil for an empty table).
func decodeTable(rest []byte, what string) (map[string]uint64, []byte, error) {
	if len(rest) < 2 {
		return nil, nil, fmt.Errorf("%w: state body", ErrCorrupt)
	}
	n := int(binary.LittleEndian.Uint16(rest))
	rest = rest[2:]
	if n > maxOutdated {
		return nil, nil, fmt.Errorf("%w: %d %s", ErrCorrupt, n, what)
	}
	var t map[string]uint64
	prev := ""
	for i := range n {
		name, r, err := getName(rest)
		if err != nil {
			return nil, nil, err
		}
		if len(r) < 8 || (i > 0 && name <= prev) {
			return nil, nil, fmt.Errorf("%w: %s", ErrCorrupt, what)
		}
		v := binary.LittleEndian.Uint64(r)
		if v == 0 {
			return nil, nil, fmt.Errorf("%w: zero in %s", ErrCorrupt, what)
		}
		if t == nil {
			t = map[string]uint64{}
		}
		t[name], prev, rest = v, name, r[8:]
	}
	return t, rest, nil
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}
