package quorum

import (
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// MemberInfo is one member of the cluster. Its position in Config.Members
// (1-based) is the low byte of its raft IDs (see RaftID), so every member
// derives the same positions from the shared cluster config.
type MemberInfo struct {
	Name string
	Data bool // a data node; false for the witness
}

// Timing is the control plane's clock, in ticks of the driver (10 ms in
// grbd's LAN defaults). See docs/quorum.md for how they combine.
type Timing struct {
	RaftHeartbeat int // ticks between raft heartbeats of the raft leader
	Election      int // raft election timeout, randomized in [Election, 2*Election)
	Heartbeat     int // ticks between lease requests of the primary
	Lease         int // lease length
	Failover      int // ticks without the primary before a candidate proposes itself
	Stagger       int // extra ticks per rank among data nodes
	Retry         int // ticks between retries of an unapplied proposal
}

// DefaultTiming suits a LAN with a 10 ms tick.
func DefaultTiming() Timing {
	return Timing{RaftHeartbeat: 5, Election: 15, Heartbeat: 5, Lease: 25, Failover: 25, Stagger: 10, Retry: 20}
}

// LeaseWait is how long a newly promoted primary waits before it serves: a
// lease with room for clock-rate differences (docs/quorum.md).
func (t Timing) LeaseWait() int { return t.Lease*5/4 + 2 }

func (t Timing) validate() error {
	switch {
	case t.RaftHeartbeat < 1 || t.Election <= t.RaftHeartbeat:
		return fmt.Errorf("%w: election (%d) must exceed raft heartbeat (%d) >= 1", ErrInvalid, t.Election, t.RaftHeartbeat)
	case t.Heartbeat < 1 || t.Lease <= t.Heartbeat:
		return fmt.Errorf("%w: lease (%d) must exceed heartbeat (%d) >= 1", ErrInvalid, t.Lease, t.Heartbeat)
	case t.Failover < 1 || t.Stagger < 0 || t.Retry < 1:
		return fmt.Errorf("%w: failover, stagger and retry must be positive", ErrInvalid)
	}
	return nil
}

// Config configures a Member.
type Config struct {
	Self    string
	Members []MemberInfo
	// Storage is the member's persisted raft log, as read back from disk.
	// Empty for a member without control-plane state: it never creates a
	// cluster on its own but probes the others first (docs/quorum.md,
	// "Membership and replaced members").
	Storage *raft.MemoryStorage
	// JoinID is the member's join identity (NewJoinID), generated and
	// persisted by the driver: with an empty Storage the identity it
	// announces and joins under after a replace; with a non-empty Storage
	// the raft ID it joined under (0: the initial incarnation).
	JoinID uint64
	// Fresh reports that the member holds no block data: always true for
	// the witness; for a data node, its store holds no write. A member
	// without state joins a new cluster only if every data node is fresh.
	Fresh bool
	// NewCluster lets a member without state create the cluster without
	// hearing from every member (grbd node/witness --new-cluster): for a
	// brand-new cluster whose members are not all up. Dangerous otherwise.
	NewCluster   bool
	Timing       Timing
	AutoFailover bool
	Seed         uint64      // election jitter and the tag of this run's Promotes; any value, drawn anew per run by real members
	Logger       raft.Logger // nil: discard
}

// Role is what a member currently is.
type Role uint8

// Roles.
const (
	RoleWitness   Role = iota // a dataless voter
	RoleSecondary             // a data node that is not primary
	RolePrimary               // primary of the current epoch in this run
)

func (r Role) String() string {
	return [...]string{"Witness", "Secondary", "Primary"}[r]
}

// Member is one voter's control plane. See the package documentation.
type Member struct {
	cfg       Config
	self      string
	id        uint64
	names     []string // by position - 1
	dataNodes []string
	rn        *raft.RawNode // nil until the member has raft state (phase Member or Joining)
	storage   *raft.MemoryStorage
	confState pb.ConfState // the applied raft configuration
	logger    raft.Logger

	// Membership (membership.go).
	pos         int
	phase       Phase
	reason      string
	joinID      uint64
	fresh       bool
	joinedFresh bool                    // a data node that joined with an empty store in this run
	rewound     string                  // why this member dropped its state in this run (rewoundBy); "" none
	lastProbe   int64                   // tick of the last probe sent
	probes      map[string]probeAnswer  // answers to the current probe
	counted     map[string]uint64       // members counted empty (their join identity) when this one created the cluster
	newcomers   map[string]bool         // members missing when this one created the cluster (--new-cluster), not heard from since
	announced   map[string]announcement // join identities of members that lost their state
	removed     map[uint64]bool         // IDs removed by conf changes applied in this run
	wantReplace map[string]replaceWant

	now     int64
	rng     uint64
	elapsed int // ticks since the raft leader was heard from (or since campaigning)
	// sinceLeader: ticks since a raft leader's message (or since this member
	// led), for leader stickiness; its own campaigns do not reset it.
	sinceLeader int
	electionTO  int
	// The leadership transfer this raft leader has in progress, and the tick
	// it was first seen (see abortStaleTransfer).
	transferTo    uint64
	transferSince int64
	snapSince     map[uint64]int64 // follower ID -> tick its pending snapshot was first seen

	state      State
	applied    uint64
	bootCommit uint64 // entries up to here were applied before this run

	// Primary side.
	promotedAt   int64 // tick our own promotion was applied in this run; -1 none
	leaseAcks    map[string]int64
	lastLease    int64
	lastTransfer int64 // tick of the last leadership transfer request

	// Every data node.
	heardPrimary int64
	consistent   bool
	stale        string            // why this node's disk must not serve as primary (SetStale); "" none
	tookEpoch    uint64            // the epoch this member's own Promote of this run began (Status.TookRole)
	tookFromSelf bool              // that Promote followed this member's own role (Status.Reestablished)
	runTag       string            // names this run in its Promotes (By, which Apply ignores for them)
	disk         uint64            // this data node's disk identity (SetDisk)
	pending      map[uint64]uint64 // log index -> FromEpoch of persisted, unapplied Promotes

	// Proposals retried until applied or moot.
	wantPromote *Command
	wantDemote  bool
	wantOutdate map[string]uint64 // peer -> generation when asked: done once outdated above it
	wantClear   map[string]uint64 // peer -> generation the Clear names
	clearDisk   map[string]uint64 // peer -> disk the Clear records
	lastPropose map[string]int64

	dirty bool // storage changed since the last Persisted
	msgs  []Message
	rd    *raft.Ready
}

// NewMember restores a member from its persisted log.
func NewMember(cfg Config) (*Member, error) {
	if err := cfg.Timing.validate(); err != nil {
		return nil, err
	}
	m := &Member{
		cfg: cfg, self: cfg.Self, storage: cfg.Storage, promotedAt: -1,
		leaseAcks: map[string]int64{}, pending: map[uint64]uint64{}, snapSince: map[uint64]int64{},
		wantOutdate: map[string]uint64{}, wantClear: map[string]uint64{}, clearDisk: map[string]uint64{}, lastPropose: map[string]int64{},
		rng: cfg.Seed*0x9e3779b97f4a7c15 + 1, consistent: true, fresh: cfg.Fresh, runTag: fmt.Sprintf("run-%016x", cfg.Seed),
		probes: map[string]probeAnswer{}, counted: map[string]uint64{}, newcomers: map[string]bool{}, announced: map[string]announcement{},
		removed: map[uint64]bool{}, wantReplace: map[string]replaceWant{},
	}
	if m.storage == nil {
		return nil, fmt.Errorf("%w: no storage", ErrInvalid)
	}
	if len(cfg.Members) > MaxMembers {
		return nil, fmt.Errorf("%w: %d members, at most %d", ErrInvalid, len(cfg.Members), MaxMembers)
	}
	for i, mi := range cfg.Members {
		if slices.Contains(m.names, mi.Name) || mi.Name == "" {
			return nil, fmt.Errorf("%w: member name %q empty or repeated", ErrInvalid, mi.Name)
		}
		m.names = append(m.names, mi.Name)
		if mi.Data {
			m.dataNodes = append(m.dataNodes, mi.Name)
		}
		if mi.Name == cfg.Self {
			m.pos = i + 1
		}
	}
	if m.pos == 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnknownMember, cfg.Self)
	}
	if cfg.JoinID != 0 && (PositionOf(cfg.JoinID) != m.pos || IncarnationOf(cfg.JoinID) == 0) {
		return nil, fmt.Errorf("%w: join identity %#x is not one of position %d", ErrInvalid, cfg.JoinID, m.pos)
	}
	m.rng ^= uint64(m.pos) * 0xd1b54a32d192ed03 // distinct jitter per member, even with one seed
	m.logger = cfg.Logger
	if m.logger == nil {
		m.logger = discardLogger{}
	}
	empty, err := m.emptyStorage()
	if err != nil {
		return nil, err
	}
	if empty {
		if cfg.JoinID == 0 {
			return nil, fmt.Errorf("%w: a member without state needs a join identity", ErrInvalid)
		}
		m.phase, m.joinID = PhaseProbing, cfg.JoinID
		m.reason = "no control-plane state: asking the other members"
		m.sendProbes()
		m.evaluate() // a lone member creates its cluster at once
		return m, nil
	}
	m.id = RaftID(0, m.pos)
	if cfg.JoinID != 0 {
		m.id = cfg.JoinID
	}
	if err := m.restore(); err != nil {
		return nil, err
	}
	if cur := m.curID(m.pos); cur != m.id {
		m.becomeReplaced(fmt.Sprintf("the log gives position %d to raft ID %#x, this member is %#x", m.pos, cur, m.id))
		return m, nil
	}
	if err := m.startRaft(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Member) emptyStorage() (bool, error) {
	hs, _, err := m.storage.InitialState()
	if err != nil {
		return false, fmt.Errorf("quorum: storage: %w", err)
	}
	last, _ := m.storage.LastIndex()
	snap, err := m.storage.Snapshot()
	if err != nil {
		return false, fmt.Errorf("quorum: storage: %w", err)
	}
	return raft.IsEmptyHardState(hs) && last == 0 && raft.IsEmptySnap(snap), nil
}

// restore reads the state machine and the configuration back from the
// snapshot and notes the persisted, unapplied Promotes.
func (m *Member) restore() error {
	hs, _, err := m.storage.InitialState()
	if err != nil {
		return fmt.Errorf("quorum: storage: %w", err)
	}
	snap, err := m.storage.Snapshot()
	if err != nil {
		return fmt.Errorf("quorum: storage: %w", err)
	}
	if m.state, err = DecodeState(snap.Data); err != nil {
		return fmt.Errorf("quorum: snapshot: %w", err)
	}
	if err := checkConfState(snap.Metadata.ConfState, len(m.names)); err != nil {
		return err
	}
	m.confState = snap.Metadata.ConfState
	m.applied = snap.Metadata.Index
	m.bootCommit = max(hs.Commit, m.applied)
	first, _ := m.storage.FirstIndex()
	last, _ := m.storage.LastIndex()
	if last >= first {
		ents, err := m.storage.Entries(first, last+1, 1<<30)
		if err != nil {
			return fmt.Errorf("quorum: storage: %w", err)
		}
		m.notePersisted(ents)
	}
	return nil
}

// Persisted returns the raft state to write to disk after Ready reported
// Persist: the hard state, the snapshot and the entries after it.
func (m *Member) Persisted() (pb.HardState, pb.Snapshot, []pb.Entry) {
	hs, _, _ := m.storage.InitialState()
	snap, _ := m.storage.Snapshot()
	first, _ := m.storage.FirstIndex()
	last, _ := m.storage.LastIndex()
	var ents []pb.Entry
	if last >= first {
		ents, _ = m.storage.Entries(first, last+1, 1<<30)
	}
	return hs, snap, ents
}

// State is the applied control-plane state.
func (m *Member) State() State { return m.state.Clone() }

// ID is the member's raft ID; 0 while it has none (no state yet).
func (m *Member) ID() uint64 { return m.id }

// Phase is where the member stands in the membership.
func (m *Member) Phase() Phase { return m.phase }

// JoinID is the join identity a member without state announces (phases
// Probing and AwaitReplace), or the one it joins under; 0 for an initial
// member with state.
func (m *Member) JoinID() uint64 { return m.joinID }

// Now is the member's tick counter.
func (m *Member) Now() int64 { return m.now }

// Ready is what the driver must do next, in order: persist (Persisted())
// when Persist is set, send Messages, then call Advance.
type Ready struct {
	Persist  bool
	Messages []Message
}

// HasReady reports whether Ready has work.
func (m *Member) HasReady() bool {
	return (m.dirty && !m.holdPersist()) || len(m.msgs) > 0 || (m.rn != nil && m.rn.HasReady())
}

// holdPersist: a joiner has nothing worth keeping before its snapshot;
// after a crash it starts over under its join identity.
func (m *Member) holdPersist() bool {
	if m.phase != PhaseJoining {
		return false
	}
	snap, _ := m.storage.Snapshot()
	return raft.IsEmptySnap(snap)
}

// Ready collects the work since the last Advance. The raft log entries are
// already in the member's storage: the driver persists Persisted() before it
// sends any message.
func (m *Member) Ready() Ready {
	if m.rd != nil {
		panic("quorum: Ready called twice without Advance")
	}
	var out Ready
	if m.rn != nil && m.rn.HasReady() {
		rd := m.rn.Ready()
		m.rd = &rd
		if !raft.IsEmptySnap(rd.Snapshot) {
			if err := m.storage.ApplySnapshot(rd.Snapshot); err != nil && !errors.Is(err, raft.ErrSnapOutOfDate) {
				panic(fmt.Sprintf("quorum: apply snapshot: %v", err))
			}
			m.dirty = true
		}
		if !raft.IsEmptyHardState(rd.HardState) {
			_ = m.storage.SetHardState(rd.HardState)
			m.dirty = true
		}
		if len(rd.Entries) > 0 {
			if err := m.storage.Append(rd.Entries); err != nil {
				panic(fmt.Sprintf("quorum: append: %v", err))
			}
			m.notePersisted(rd.Entries)
			m.dirty = true
		}
		for _, rm := range rd.Messages {
			m.msgs = append(m.msgs, Message{Type: MsgRaft, From: m.self, To: m.nameOf(rm.To), Raft: rm})
		}
	}
	if m.holdPersist() {
		out.Messages, m.msgs = m.msgs, nil
		return out
	}
	out.Persist, m.dirty = m.dirty, false
	out.Messages, m.msgs = m.msgs, nil
	return out
}

// Advance applies what the last Ready committed. Call it after persisting
// and sending.
func (m *Member) Advance() {
	rd := m.rd
	m.rd = nil
	if rd == nil {
		return
	}
	if !raft.IsEmptySnap(rd.Snapshot) && rd.Snapshot.Metadata.Index > m.applied {
		st, err := DecodeState(rd.Snapshot.Data)
		if err != nil {
			panic(fmt.Sprintf("quorum: leader sent a corrupt snapshot: %v", err))
		}
		m.setState(st, rd.Snapshot.Metadata.Index)
		m.applied = rd.Snapshot.Metadata.Index
		m.confState = rd.Snapshot.Metadata.ConfState
		if m.phase == PhaseJoining {
			m.phase, m.reason = PhaseMember, ""
		}
		for idx := range m.pending {
			if idx <= m.applied {
				delete(m.pending, idx)
			}
		}
	}
	for _, e := range rd.CommittedEntries {
		if e.Index <= m.applied {
			continue
		}
		m.applied = e.Index
		delete(m.pending, e.Index)
		switch e.Type {
		case pb.EntryConfChange:
			var cc pb.ConfChange
			if cc.Unmarshal(e.Data) == nil {
				m.applyConf(cc)
			}
			continue
		case pb.EntryConfChangeV2:
			var cc pb.ConfChangeV2
			if cc.Unmarshal(e.Data) == nil {
				m.applyConf(cc)
			}
			continue
		}
		if len(e.Data) == 0 {
			continue
		}
		c, err := DecodeCommand(e.Data)
		if err != nil {
			// Every member skips it alike: the log is the same everywhere.
			continue
		}
		st := m.state.Clone()
		if st.Apply(c, m.dataNodes) {
			if c.Type == CmdPromote && c.Node == m.self && c.By == m.runTag {
				m.tookEpoch = st.Epoch // proposed in this run, not replayed from the log
				m.tookFromSelf = m.state.Primary == m.self
			}
			m.setState(st, e.Index)
		}
	}
	if m.rn != nil {
		m.rn.Advance(*rd)
	}
	m.maybeCompact()
}

// compaction bounds the raft log kept after the snapshot.
const (
	compactAfter = 256
	compactKeep  = 32
)

func (m *Member) maybeCompact() {
	first, _ := m.storage.FirstIndex()
	if m.applied < first+compactAfter {
		return
	}
	data, err := m.state.Encode()
	if err != nil {
		return
	}
	if _, err := m.storage.CreateSnapshot(m.applied, &m.confState, data); err != nil {
		return
	}
	_ = m.storage.Compact(m.applied - compactKeep)
	m.dirty = true
}

// setState installs a new applied state and reacts to the change of epoch
// or role.
func (m *Member) setState(st State, index uint64) {
	old := m.state
	m.state = st
	if st.Epoch != old.Epoch || st.Primary != old.Primary {
		m.heardPrimary = m.now
		m.leaseAcks = map[string]int64{}
		m.wantOutdate, m.wantClear, m.clearDisk = map[string]uint64{}, map[string]uint64{}, map[string]uint64{}
		m.promotedAt = -1
		if st.Primary == m.self && st.Epoch != old.Epoch && index > m.bootCommit && m.ownsRecordedDisk(st) {
			m.promotedAt = m.now
		}
	}
	if m.wantPromote != nil && (st.Epoch != m.wantPromote.Epoch || (!m.wantPromote.Force && !promotable(st, m.self, m.wantPromote.Disk))) {
		m.wantPromote = nil // done, or moot: it would be refused
	}
	if m.joinedFresh && st.GenOf(m.self) > old.GenOf(m.self) && !st.IsOutdated(m.self) {
		m.joinedFresh = false // the primary cleared it: it holds every write
	}
	if m.wantDemote && st.Primary != m.self {
		m.wantDemote = false
	}
	for n, g := range m.wantOutdate {
		if st.IsOutdated(n) && st.GenOf(n) > g {
			delete(m.wantOutdate, n)
		}
	}
	for n, g := range m.wantClear {
		if st.GenOf(n) != g || (!st.IsOutdated(n) && (m.clearDisk[n] == 0 || st.Disks[n] == m.clearDisk[n])) {
			delete(m.wantClear, n) // done, or moot: an Outdate came first
			delete(m.clearDisk, n)
		}
	}
}

// notePersisted records the Promotes among entries about to be persisted,
// dropping those of an overwritten log suffix.
func (m *Member) notePersisted(ents []pb.Entry) {
	if len(ents) == 0 {
		return
	}
	for idx := range m.pending {
		if idx >= ents[0].Index {
			delete(m.pending, idx)
		}
	}
	for _, e := range ents {
		if e.Index <= m.applied || e.Type != pb.EntryNormal {
			continue
		}
		if c, err := DecodeCommand(e.Data); err == nil && c.Type == CmdPromote {
			m.pending[e.Index] = c.Epoch
		}
	}
}

// promisable reports whether this member may acknowledge a lease of epoch
// (rule 2 of docs/quorum.md).
func (m *Member) promisable(epoch uint64) bool {
	for _, from := range m.pending {
		if from >= epoch {
			return false
		}
	}
	return m.state.Epoch == epoch
}

// nameOf is the member a raft ID belongs to (by its position), or "".
func (m *Member) nameOf(id uint64) string {
	p := PositionOf(id)
	if id == 0 || p < 1 || p > len(m.names) {
		return ""
	}
	return m.names[p-1]
}

// random is splitmix64 on the configured seed: deterministic in tests,
// drawn anew per run by real members.
func (m *Member) random() uint64 {
	m.rng += 0x9e3779b97f4a7c15
	z := m.rng
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// isData reports whether this member is a data node.
func (m *Member) isData() bool { return slices.Contains(m.dataNodes, m.self) }

// ownsRecordedDisk: this node's disk is the one st records for it. A
// Promote proposed before the node's disk was replaced can commit after it
// restarted on the new one; such a node must not take the role (it is not
// primary and gives the role back, see maybeFailover).
func (m *Member) ownsRecordedDisk(st State) bool {
	return st.Forced || m.disk == 0 || st.Disks[m.self] == 0 || st.Disks[m.self] == m.disk
}

func promotable(st State, name string, disk uint64) bool {
	ok, _ := st.Promotable(name, disk)
	return ok
}

type discardLogger struct{}

func (discardLogger) Debug(...any)            {}
func (discardLogger) Debugf(string, ...any)   {}
func (discardLogger) Error(...any)            {}
func (discardLogger) Errorf(string, ...any)   {}
func (discardLogger) Info(...any)             {}
func (discardLogger) Infof(string, ...any)    {}
func (discardLogger) Warning(...any)          {}
func (discardLogger) Warningf(string, ...any) {}
func (discardLogger) Fatal(v ...any)          { panic(fmt.Sprint(v...)) }
func (discardLogger) Fatalf(f string, v ...any) {
	panic(fmt.Sprintf(f, v...))
}
func (discardLogger) Panic(v ...any)            { panic(fmt.Sprint(v...)) }
func (discardLogger) Panicf(f string, v ...any) { panic(fmt.Sprintf(f, v...)) }
