package quorum

import (
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// MemberInfo is one voter of the cluster. Raft IDs are positions in
// Config.Members plus one, so every member derives the same IDs from the
// shared cluster config.
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
	// Storage is the member's persisted raft log, as read back from disk;
	// empty for a new member, which then bootstraps the cluster's initial
	// configuration (identical on every member).
	Storage      *raft.MemoryStorage
	Timing       Timing
	AutoFailover bool
	Seed         uint64      // election jitter; any value
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
	names     []string // by raft ID - 1
	dataNodes []string
	rn        *raft.RawNode
	storage   *raft.MemoryStorage
	confState pb.ConfState

	now        int64
	rng        uint64
	elapsed    int // ticks since the raft leader was heard from (or since campaigning)
	electionTO int

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
		leaseAcks: map[string]int64{}, pending: map[uint64]uint64{},
		wantOutdate: map[string]uint64{}, wantClear: map[string]uint64{}, clearDisk: map[string]uint64{}, lastPropose: map[string]int64{},
		rng: cfg.Seed*0x9e3779b97f4a7c15 + 1, consistent: true,
	}
	if m.storage == nil {
		return nil, fmt.Errorf("%w: no storage", ErrInvalid)
	}
	for i, mi := range cfg.Members {
		if slices.Contains(m.names, mi.Name) || mi.Name == "" {
			return nil, fmt.Errorf("%w: member name %q empty or repeated", ErrInvalid, mi.Name)
		}
		m.names = append(m.names, mi.Name)
		m.confState.Voters = append(m.confState.Voters, uint64(i+1))
		if mi.Data {
			m.dataNodes = append(m.dataNodes, mi.Name)
		}
		if mi.Name == cfg.Self {
			m.id = uint64(i + 1)
		}
	}
	if m.id == 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnknownMember, cfg.Self)
	}
	m.rng ^= m.id * 0xd1b54a32d192ed03 // distinct jitter per member, even with one seed
	if err := m.restore(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = discardLogger{}
	}
	rn, err := raft.NewRawNode(&raft.Config{
		ID:              m.id,
		ElectionTick:    1 << 20, // elections are driven by Tick (see campaign)
		HeartbeatTick:   cfg.Timing.RaftHeartbeat,
		Storage:         m.storage,
		Applied:         m.applied,
		MaxSizePerMsg:   64 << 10,
		MaxInflightMsgs: 64,
		PreVote:         true,
		Logger:          logger,
	})
	if err != nil {
		return nil, fmt.Errorf("quorum: raft: %w", err)
	}
	m.rn = rn
	m.resetElection()
	// A member that just started gives the links a failover period to
	// come up before it takes the primary's silence for its death.
	m.heardPrimary = int64(cfg.Timing.Failover)
	return m, nil
}

// restore bootstraps an empty storage or reads the state machine back from
// the snapshot and notes the persisted, unapplied Promotes.
func (m *Member) restore() error {
	hs, _, err := m.storage.InitialState()
	if err != nil {
		return fmt.Errorf("quorum: storage: %w", err)
	}
	last, _ := m.storage.LastIndex()
	snap, err := m.storage.Snapshot()
	if err != nil {
		return fmt.Errorf("quorum: storage: %w", err)
	}
	if raft.IsEmptyHardState(hs) && last == 0 && raft.IsEmptySnap(snap) {
		data, _ := State{}.Encode()
		snap = pb.Snapshot{Data: data, Metadata: pb.SnapshotMetadata{Index: 1, Term: 1, ConfState: m.confState}}
		if err := m.storage.ApplySnapshot(snap); err != nil {
			return fmt.Errorf("quorum: bootstrap: %w", err)
		}
		m.dirty = true
		hs = pb.HardState{}
	}
	if m.state, err = DecodeState(snap.Data); err != nil {
		return fmt.Errorf("quorum: snapshot: %w", err)
	}
	if !slices.Equal(snap.Metadata.ConfState.Voters, m.confState.Voters) {
		return fmt.Errorf("%w: the log's voters %v are not the config's %v", ErrInvalid, snap.Metadata.ConfState.Voters, m.confState.Voters)
	}
	m.applied = snap.Metadata.Index
	m.bootCommit = max(hs.Commit, m.applied)
	first, _ := m.storage.FirstIndex()
	last, _ = m.storage.LastIndex()
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

// Now is the member's tick counter.
func (m *Member) Now() int64 { return m.now }

// Ready is what the driver must do next, in order: persist (Persisted())
// when Persist is set, send Messages, then call Advance.
type Ready struct {
	Persist  bool
	Messages []Message
}

// HasReady reports whether Ready has work.
func (m *Member) HasReady() bool { return m.dirty || len(m.msgs) > 0 || m.rn.HasReady() }

// Ready collects the work since the last Advance. The raft log entries are
// already in the member's storage: the driver persists Persisted() before it
// sends any message.
func (m *Member) Ready() Ready {
	if m.rd != nil {
		panic("quorum: Ready called twice without Advance")
	}
	var out Ready
	if m.rn.HasReady() {
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
		if e.Type != pb.EntryNormal || len(e.Data) == 0 {
			continue
		}
		c, err := DecodeCommand(e.Data)
		if err != nil {
			// Every member skips it alike: the log is the same everywhere.
			continue
		}
		st := m.state.Clone()
		if st.Apply(c, m.dataNodes) {
			m.setState(st, e.Index)
		}
	}
	m.rn.Advance(*rd)
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

func (m *Member) nameOf(id uint64) string {
	if id == 0 || id > uint64(len(m.names)) {
		return ""
	}
	return m.names[id-1]
}

func (m *Member) idOf(name string) uint64 {
	return uint64(slices.Index(m.names, name) + 1)
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
