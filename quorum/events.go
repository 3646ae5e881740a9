package quorum

import (
	"bytes"
	"fmt"
	"maps"
	"slices"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// MessageType identifies a control-plane message.
type MessageType uint8

// Message types.
const (
	MsgRaft         MessageType = 1 // a raft message
	MsgLeaseRequest MessageType = 2 // primary -> voter: acknowledge my lease of Epoch
	MsgLeaseAck     MessageType = 3 // voter -> primary
	MsgProbe        MessageType = 4 // member without state -> every member: do you hold state?
	MsgProbeReply   MessageType = 5 // the answer
	MsgReplaced     MessageType = 6 // to a stale incarnation: your ID was replaced
)

// Message is one control-plane message between members.
type Message struct {
	Type     MessageType
	From, To string
	Raft     pb.Message // MsgRaft
	Epoch    uint64     // lease messages
	Sent     int64      // lease messages: the primary's tick at sending
	// ID is the sender's raft ID (lease messages; 0 from a sender that
	// predates raft IDs with incarnations: its initial ID), its join
	// identity (MsgProbe; MsgProbeReply from a member without state), or
	// the stale ID (MsgReplaced).
	ID uint64
	// Echo is the join identity a MsgProbeReply answers, or the current ID
	// of the position (MsgReplaced).
	Echo uint64
	// Probe flags.
	HasState bool // MsgProbeReply: the sender holds control-plane state
	Fresh    bool // MsgProbe, MsgProbeReply: the sender holds no block data
	Counted  bool // MsgProbeReply: the sender created the cluster counting the prober empty under Echo
	// Newcomer (MsgProbeReply): the sender created the cluster without the
	// prober (--new-cluster) and has not heard from its position since. A
	// weaker word than Counted: another member may have heard from it.
	Newcomer bool
}

// Tick advances the member's clock by one tick: raft heartbeats and
// elections, lease requests, automatic failover and proposal retries.
func (m *Member) Tick() {
	m.now++
	switch m.phase {
	case PhaseProbing, PhaseAwaitReplace:
		m.tickEmpty()
		return
	case PhaseJoining:
		m.rn.Tick()
		return
	case PhaseReplaced:
		return
	}
	m.rn.Tick()
	m.sinceLeader++
	if st := m.rn.BasicStatus(); st.RaftState == raft.StateLeader {
		m.elapsed, m.sinceLeader = 0, 0
		m.abortStaleTransfer(st.LeadTransferee)
		m.retryLostSnapshots()
	} else {
		clear(m.snapSince) // a leader again starts counting afresh
		if m.elapsed++; m.elapsed >= m.electionTO {
			_ = m.rn.Campaign()
			m.resetElection()
		}
	}
	if m.IsPrimary() && m.now-m.lastLease >= int64(m.cfg.Timing.Heartbeat) {
		m.lastLease = m.now
		for _, n := range m.names {
			if n != m.self {
				m.msgs = append(m.msgs, Message{Type: MsgLeaseRequest, From: m.self, To: n, Epoch: m.state.Epoch, Sent: m.now, ID: m.id})
			}
		}
	}
	m.maybeFailover()
	m.retryProposals()
	m.maybeLead()
	m.maybePromoteLearner()
}

// maybeLead asks the raft leader to hand leadership to this member while it
// is primary: its Outdates then commit in one round trip, and losing a
// secondary never waits for a raft election.
func (m *Member) maybeLead() {
	if !m.IsPrimary() || m.now-m.lastTransfer < int64(2*m.cfg.Timing.Election) {
		return
	}
	if st := m.rn.BasicStatus(); st.Lead != 0 && st.Lead != m.id {
		m.lastTransfer = m.now
		m.rn.TransferLeader(m.id)
	}
}

func (m *Member) resetElection() {
	m.elapsed = 0
	e := m.cfg.Timing.Election
	m.electionTO = e + int(m.random()%uint64(e))
}

// Step feeds a message from another member. Raft and lease messages count
// only from the current raft ID of their sender's position: a removed
// incarnation is told so (MsgReplaced), others are dropped.
func (m *Member) Step(msg Message) error {
	pos := m.posOf(msg.From)
	if pos == 0 || msg.To != m.self {
		return fmt.Errorf("%w: message from %q to %q", ErrUnknownMember, msg.From, msg.To)
	}
	fromID, done, err := m.senderID(msg, pos)
	if done || err != nil {
		return err
	}
	if m.phase != PhaseMember {
		return nil // no state: never votes nor acknowledges
	}
	if cur := m.curID(pos); fromID != cur {
		if m.removed[fromID] {
			m.msgs = append(m.msgs, Message{Type: MsgReplaced, From: m.self, To: msg.From, ID: fromID, Echo: cur})
			return nil
		}
		if !fromUnknownLeader(msg) {
			return nil // a stale incarnation, or one this member does not know yet
		}
	}
	delete(m.newcomers, msg.From) // it holds state now
	switch msg.Type {
	case MsgRaft:
		return m.stepRaft(msg.Raft)
	case MsgLeaseRequest:
		if msg.Epoch >= m.state.Epoch {
			m.heardPrimary = m.now
		}
		if m.state.Primary == msg.From && m.promisable(msg.Epoch) {
			m.msgs = append(m.msgs, Message{Type: MsgLeaseAck, From: m.self, To: msg.From, Epoch: msg.Epoch, Sent: msg.Sent, ID: m.id})
		}
	case MsgLeaseAck:
		if msg.Epoch == m.state.Epoch && m.IsPrimary() && msg.Sent > m.leaseAcks[msg.From] {
			m.leaseAcks[msg.From] = msg.Sent
		}
	}
	return nil
}

// fromUnknownLeader reports whether msg is what only a raft leader sends
// (appends, heartbeats, snapshots), from an incarnation this member does
// not know yet: the member is behind, and the replace that added the
// sender is in the log the sender leads. Refused, it could never catch up
// while that member leads (the simulation found a data node stuck so,
// seed 9063 of 20000). Taking it is safe: only a member that a majority of
// its configuration elected sends these, raft checks their term and log,
// and nothing else from an unknown incarnation counts (no vote, no lease).
func fromUnknownLeader(msg Message) bool {
	return msg.Type == MsgRaft && fromLeader(msg.Raft.Type)
}

// fromLeader: only a raft leader sends messages of type t.
func fromLeader(t pb.MessageType) bool {
	return t == pb.MsgApp || t == pb.MsgHeartbeat || t == pb.MsgSnap
}

// senderID handles the messages that need no incarnation check (probes,
// replacement notices, raft messages while joining) and returns the raft
// id of the sender (at position pos) of the others; done: msg was
// handled.
func (m *Member) senderID(msg Message, pos int) (fromID uint64, done bool, err error) {
	switch msg.Type {
	case MsgProbe:
		m.onProbe(msg)
		return 0, true, nil
	case MsgProbeReply:
		m.onProbeReply(msg)
		return 0, true, nil
	case MsgReplaced:
		m.onReplaced(msg)
		return 0, true, nil
	case MsgRaft:
		r := msg.Raft
		if PositionOf(r.From) != pos || PositionOf(r.To) != m.pos {
			return 0, true, fmt.Errorf("%w: raft ids %#x->%#x from %s", ErrUnknownMember, r.From, r.To, msg.From)
		}
		if m.phase == PhaseAwaitReplace && r.To == m.joinID {
			m.join() // the leader added this member under its join identity
		}
		if m.phase == PhaseJoining {
			if r.To == m.id {
				return 0, true, m.rn.Step(r) // no configuration yet to check the sender against
			}
			return 0, true, nil
		}
		return r.From, false, nil
	case MsgLeaseRequest, MsgLeaseAck:
		if msg.ID == 0 {
			return RaftID(0, pos), false, nil
		}
		if PositionOf(msg.ID) != pos {
			return 0, true, fmt.Errorf("%w: lease from raft id %#x of %s", ErrUnknownMember, msg.ID, msg.From)
		}
		return msg.ID, false, nil
	default:
		return 0, true, fmt.Errorf("%w: message type %d", ErrCorrupt, msg.Type)
	}
}

// stepRaft hands a raft message from a current member to raft, unless it
// is for another incarnation of this member, a disrupting vote request
// while a live leader is heard, or a failover proposal the leader drops.
func (m *Member) stepRaft(r pb.Message) error {
	if r.To != m.id || m.rewoundBy(r) {
		return nil // for another incarnation of this member, or this member's log lost entries
	}
	switch {
	case fromLeader(r.Type):
		m.elapsed, m.sinceLeader = 0, 0
	case r.Type == pb.MsgPreVote || r.Type == pb.MsgVote:
		// Leader stickiness (raft's CheckQuorum lease, kept here since
		// elections are driven by Tick): a member that heard from a live
		// leader recently ignores a disrupting candidate, but not one the
		// leader handed over to. Only a leader's messages count, not this
		// member's own campaigns: a learner that missed its promotion
		// campaigns in vain every election timeout and would otherwise
		// ignore every candidate for good.
		transfer := bytes.Equal(r.Context, []byte("CampaignTransfer"))
		if st := m.rn.BasicStatus(); !transfer && st.Lead != 0 && r.Term > st.Term && m.sinceLeader < m.cfg.Timing.Election {
			return nil
		}
	}
	if r.Type == pb.MsgProp && m.dropsPromote(r) {
		return nil
	}
	return m.rn.Step(r)
}

// dropsPromote: the raft leader refuses a failover proposal (a Promote
// neither forced nor asked for by an operator) that would depose a primary
// it still hears from. A secondary cut off from the primary in one direction
// stops hearing its lease requests and proposes itself; without this the
// witness's vote would let it depose a healthy primary, which deposes it
// back (a flap that fails the writes in flight). Dropping a proposal never
// affects safety; when the primary is really gone the leader (then another
// member) no longer hears it and lets the proposal through.
func (m *Member) dropsPromote(r pb.Message) bool {
	if m.rn.BasicStatus().RaftState != raft.StateLeader || m.state.Primary == "" {
		return false
	}
	heard := m.now-m.heardPrimary < int64(m.cfg.Timing.Failover) || (m.IsPrimary() && m.Serving())
	if !heard {
		return false
	}
	for _, e := range r.Entries {
		if e.Type != pb.EntryNormal {
			continue
		}
		c, err := DecodeCommand(e.Data)
		if err == nil && c.Type == CmdPromote && !c.Force && !c.Manual && c.Epoch == m.state.Epoch && c.Node != m.state.Primary {
			return true
		}
	}
	return false
}

// IsPrimary reports whether this member was promoted in this run and is the
// primary of the applied epoch (serving or not).
func (m *Member) IsPrimary() bool {
	return m.phase == PhaseMember && m.state.Primary == m.self && m.promotedAt >= 0
}

// ServingUntil is the tick until which this member may complete I/O as
// primary (exclusive); at or below Now() it is fenced. Zero or negative
// values mean "not serving".
func (m *Member) ServingUntil() int64 {
	wait := int64(m.cfg.Timing.LeaseWait())
	if len(m.names) == 1 || m.state.Epoch == 1 {
		// No other member could ever have held a lease: a lone voter, or
		// the cluster's first primary (epoch 0 had none, and a restarted
		// primary of epoch 1 is promoted again, into epoch 2).
		wait = 0
	}
	if !m.IsPrimary() || m.now < m.promotedAt+wait {
		return never
	}
	acked := make([]int64, 0, len(m.names))
	for _, n := range m.names {
		switch {
		case n != m.self:
			if t, ok := m.leaseAcks[n]; ok {
				acked = append(acked, t)
			} else {
				acked = append(acked, never)
			}
		case m.promisable(m.state.Epoch):
			acked = append(acked, m.now)
		default:
			acked = append(acked, never)
		}
	}
	return LeaseExpiry(acked, Majority(len(m.names)), int64(m.cfg.Timing.Lease))
}

// Serving reports whether this member may complete I/O as primary now.
func (m *Member) Serving() bool { return m.now < m.ServingUntil() }

// SetStale marks this node's disk as unfit to serve as primary, with the
// reason ("" clears it): the node found itself primary of an epoch its
// disk has no record of (docs/quorum.md, "A disk older than its epoch").
// A stale node does not take over, and a manual promotion needs force.
func (m *Member) SetStale(reason string) {
	m.stale = reason
	if reason != "" && m.wantPromote != nil && !m.wantPromote.Force {
		m.wantPromote = nil
	}
}

// SetConsistent tells whether this data node's disk is consistent (no
// unfinished resync, no split brain): only a consistent node proposes itself
// in a failover.
func (m *Member) SetConsistent(ok bool) {
	m.consistent = ok
	if !ok && m.wantPromote != nil && !m.wantPromote.Force {
		m.wantPromote = nil // a resync started: this node may no longer take over
	}
}

// SetDisk tells the identity of this data node's disk (its store's ID):
// every Promote it proposes names it, and Apply refuses a disk that is not
// the one the cluster recorded for the node (docs/quorum.md, "Data
// identity").
func (m *Member) SetDisk(disk uint64) {
	m.disk = disk
	if m.wantPromote != nil {
		m.wantPromote.Disk = disk
	}
}

// Promotable reports whether this data node may be promoted without force
// as far as it knows, and if not, why.
func (m *Member) Promotable() (bool, string) {
	if !m.isData() {
		return false, "a witness holds no data"
	}
	if !m.consistent {
		return false, "its disk is Inconsistent (resync unfinished or split brain)"
	}
	if m.stale != "" {
		return false, m.stale
	}
	return m.state.Promotable(m.self, m.disk)
}

// maybeFailover proposes this node as primary when the primary has been
// silent for long enough (docs/quorum.md, "Failover"), and re-establishes a
// primary that restarted: a promotion from before this run is never served.
func (m *Member) maybeFailover() {
	if !m.isData() || m.wantPromote != nil || m.wantDemote {
		return
	}
	if !m.promotableSelf() {
		return
	}
	if m.state.Primary == m.self && m.promotedAt < 0 && m.applied >= m.bootCommit {
		if ok, _ := m.Promotable(); m.cfg.AutoFailover && ok {
			m.wantPromote = &Command{Type: CmdPromote, Node: m.self, By: m.runTag, Epoch: m.state.Epoch, Disk: m.disk}
		} else {
			m.wantDemote = true
		}
		return
	}
	if ok, _ := m.Promotable(); !m.cfg.AutoFailover || !ok || m.state.Primary == m.self {
		return
	}
	// A lone voter has nobody to wait for. A cluster that never had a
	// primary (epoch 0) has no silence to wait out, only the start-up grace
	// for the links and the rank order, counted from when a raft leader is
	// known: proposals made before that are lost, and the retries would
	// race in no particular order.
	silence := m.cfg.Timing.Failover
	if m.state.Epoch == 0 {
		silence = 0
		if m.rn.BasicStatus().Lead == raft.None {
			m.heardPrimary = max(m.heardPrimary, m.now)
			return
		}
	}
	if len(m.names) == 1 || m.now-m.heardPrimary >= int64(silence+m.rankNow()*m.stagger()) {
		m.wantPromote = &Command{Type: CmdPromote, Node: m.self, By: m.runTag, Epoch: m.state.Epoch, Disk: m.disk}
	}
}

// rankNow is this node's position among the data nodes other than the
// current primary: when the primary is lost, the first of the others
// proposes itself without waiting a stagger.
func (m *Member) rankNow() int {
	r := 0
	for _, n := range m.dataNodes {
		if n == m.self {
			return r
		}
		if n != m.state.Primary {
			r++
		}
	}
	return r
}

// stagger separates the candidates' proposals widely enough that the first
// one usually commits before the next proposes.
func (m *Member) stagger() int { return max(m.cfg.Timing.Stagger, m.cfg.Timing.Failover/2) }

// RequestPromote asks for this node to become primary (grbd primary). The
// request is retried until applied or made moot by another epoch change.
func (m *Member) RequestPromote(force bool) error {
	if !m.isData() {
		return ErrNotDataNode
	}
	if m.phase != PhaseMember {
		return fmt.Errorf("%w: %s is %s", ErrNotMember, m.self, m.phase)
	}
	if !m.promotableSelf() && !force {
		return fmt.Errorf("%w: %s is not a voter yet or joined with an empty store (use force to promote it anyway)", ErrOutdated, m.self)
	}
	if m.state.IsOutdated(m.self) && !force {
		return fmt.Errorf("%w: %s (use force to promote it anyway)", ErrOutdated, m.self)
	}
	why := m.stale
	if ok, w := m.state.Promotable(m.self, m.disk); !ok {
		why = w
	}
	if why != "" && !force {
		return fmt.Errorf("%w: %s: %s (use force to promote it anyway: writes it lacks are lost)", ErrNotPromotable, m.self, why)
	}
	m.wantPromote = &Command{Type: CmdPromote, Node: m.self, By: m.runTag, Epoch: m.state.Epoch, Force: force, Manual: true, Disk: m.disk}
	m.lastPropose["promote"] = never
	m.retryProposals()
	return nil
}

// RequestDemote asks for this node to stop being primary (grbd secondary).
func (m *Member) RequestDemote() {
	if m.state.Primary == m.self {
		m.wantDemote, m.wantPromote = true, nil
		m.lastPropose["demote"] = never
		m.retryProposals()
	}
}

// RequestOutdate asks, as primary, for peer to be marked Outdated at a
// generation above its current one (even if it is Outdated already: that
// voids any Clear still in flight). The driver keeps counting the peer until
// State shows it Outdated above the generation of its last Clear
// (docs/quorum.md, "Outdating").
func (m *Member) RequestOutdate(peer string) {
	if m.IsPrimary() && peer != m.self {
		delete(m.wantClear, peer)
		m.wantOutdate[peer] = m.state.GenOf(peer)
		m.lastPropose["outdate/"+peer] = never
		m.retryProposals()
	}
}

// RequestClear asks, as primary, for a peer that caught up to leave
// Outdated and to have disk recorded as the disk that holds its data
// (a peer that is not Outdated but whose disk is not recorded yet gets only
// the latter). It returns the generation the Clear names: the driver must
// count the peer until an Outdate above that generation is applied.
func (m *Member) RequestClear(peer string, disk uint64) (uint64, bool) {
	if !m.IsPrimary() || !m.NeedsClear(peer, disk) {
		return 0, false
	}
	g := m.state.GenOf(peer)
	delete(m.wantOutdate, peer)
	m.wantClear[peer] = g
	m.clearDisk[peer] = disk
	m.lastPropose["clear/"+peer] = never
	m.retryProposals()
	return g, true
}

// promotableSelf reports whether membership lets this node take over: a
// voter that did not join with an empty store in this run, until the
// primary cleared it after a resync, or unless the cluster records its
// disk and it is not Outdated: that disk holds every acknowledged write
// (docs/quorum.md, "Data identity"), empty or not. Without the exception a
// node that joined before the first write and was never Outdated since
// (so never Cleared) could never take over (simulation seed 108296).
func (m *Member) promotableSelf() bool {
	if m.phase != PhaseMember || !slices.Contains(m.confState.Voters, m.id) {
		return false
	}
	return !m.joinedFresh || (m.disk != 0 && m.state.Disks[m.self] == m.disk && !m.state.IsOutdated(m.self))
}

func (m *Member) retryProposals() {
	m.retryReplaces()
	if m.wantPromote != nil {
		m.propose("promote", *m.wantPromote)
	}
	if m.wantDemote {
		m.propose("demote", Command{Type: CmdDemote, Node: m.self, Epoch: m.state.Epoch})
	}
	// Sorted: the same inputs must give the same log (the simulation
	// replays seeds exactly).
	for _, n := range slices.Sorted(maps.Keys(m.wantOutdate)) {
		m.propose("outdate/"+n, Command{Type: CmdOutdate, Node: n, By: m.self, Epoch: m.state.Epoch, Gen: m.state.GenOf(n)})
	}
	for _, n := range slices.Sorted(maps.Keys(m.wantClear)) {
		m.propose("clear/"+n, Command{Type: CmdClear, Node: n, By: m.self, Epoch: m.state.Epoch, Gen: m.wantClear[n], Disk: m.clearDisk[n]})
	}
}

// NeedsClear reports whether a caught-up peer with disk still needs a
// Clear: it is Outdated, or disk is not recorded as its disk.
func (m *Member) NeedsClear(peer string, disk uint64) bool { return m.state.NeedsClear(peer, disk) }

func (m *Member) propose(key string, c Command) {
	if last, ok := m.lastPropose[key]; ok && m.now-last < int64(m.cfg.Timing.Retry) {
		return
	}
	b, err := c.Encode()
	if err != nil {
		return
	}
	if m.rn.Propose(b) == nil {
		m.lastPropose[key] = m.now
	} // dropped (no leader yet): retried at the next tick
}

// Status is a snapshot for status displays.
type Status struct {
	State
	Role         Role
	Serving      bool
	ServingUntil int64
	Now          int64
	RaftLeader   string
	RaftTerm     uint64
	Applied      uint64
	// Membership.
	Phase       Phase
	PhaseReason string   // why the member is not (yet) in Phase Member
	ID          uint64   // this member's raft ID (0 while it has none)
	JoinID      uint64   // the join identity it announces (phases Probing, AwaitReplace)
	IDs         []uint64 // by position - 1: the current raft ID (0: none)
	Learners    []string // members that joined and are not voters yet
	LostState   []string // members that announced they lost their state: replace them
	// TookRole is the epoch whose Promote this member proposed in this run
	// (0: none): a role it did not take in this run was replayed from the
	// log, from before a restart.
	TookRole uint64
	// Reestablished: the current epoch began with this member's own
	// Promote of this run (TookRole), which followed its own role of the
	// epoch before (a primary that restarted): it led both.
	Reestablished bool
	// Replayed: the member applied every entry its log had committed before
	// this run, so State is at least as new as when it stopped.
	Replayed bool
	// Rewound says why the member dropped its control-plane state in this
	// run (a log restored from an older copy); "" when it did not.
	Rewound string
}

// Status reports the member's view.
func (m *Member) Status() Status {
	st := Status{State: m.State(), Now: m.now, Applied: m.applied, Phase: m.phase, PhaseReason: m.reason, ID: m.id, LostState: m.lostState(), TookRole: m.tookEpoch,
		Reestablished: m.tookFromSelf && m.tookEpoch == m.state.Epoch, Replayed: m.applied >= m.bootCommit, Rewound: m.rewound}
	if m.rn != nil {
		bs := m.rn.BasicStatus()
		st.RaftLeader, st.RaftTerm = m.nameOf(bs.Lead), bs.Term
	}
	if m.phase == PhaseProbing || m.phase == PhaseAwaitReplace {
		st.JoinID = m.joinID
	}
	for p := range m.names {
		st.IDs = append(st.IDs, m.curID(p+1))
	}
	for _, id := range m.confState.Learners {
		st.Learners = append(st.Learners, m.nameOf(id))
	}
	switch {
	case !m.isData():
		st.Role = RoleWitness
	case m.IsPrimary():
		st.Role = RolePrimary
		st.ServingUntil = m.ServingUntil()
		st.Serving = m.now < st.ServingUntil
	default:
		st.Role = RoleSecondary
	}
	return st
}
