package quorum

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// Membership: raft IDs, the bootstrap rule and the replacement of a member
// that lost its control-plane state (docs/quorum.md, "Membership and
// replaced members").
//
// A raft ID encodes the member's position in the config and an
// incarnation:
//
//	id = incarnation<<8 | position      position 1..255, incarnation 0 = initial member
//
// The current ID of each position is in the raft ConfState (voters and
// learners), which the log maintains through conf-change entries. A member
// that lost its state never reuses an ID: it joins under a random
// incarnation through a replace (RemoveNode(old), AddLearnerNode(new)),
// and the raft leader promotes the learner to voter once it caught up.

// positionBits is the width of the position in a raft ID.
const positionBits = 8

// MaxMembers is the largest number of members a config may list.
const MaxMembers = 1<<positionBits - 1

// RaftID is the raft ID of incarnation inc of the member at position pos
// (1-based).
func RaftID(inc uint64, pos int) uint64 { return inc<<positionBits | uint64(pos) }

// PositionOf is the config position (1-based) a raft ID belongs to.
func PositionOf(id uint64) int { return int(id & MaxMembers) }

// IncarnationOf is the incarnation part of a raft ID.
func IncarnationOf(id uint64) uint64 { return id >> positionBits }

// NewJoinID turns 64 random bits from the driver into the join identity of
// the member at position pos: a random, non-zero incarnation.
func NewJoinID(random uint64, pos int) uint64 {
	inc := random >> positionBits
	if inc == 0 {
		inc = 1
	}
	return RaftID(inc, pos)
}

// Phase is where a member stands in the cluster's membership.
type Phase uint8

// Phases.
const (
	// PhaseMember: the member runs raft under its current ID.
	PhaseMember Phase = iota
	// PhaseProbing: the member has no control-plane state and asks every
	// other member whether they have some, before it creates a cluster.
	PhaseProbing
	// PhaseAwaitReplace: the member has no state but others have: it lost
	// its state and must be replaced (grbd member replace) before it takes
	// part again. It announces its join identity.
	PhaseAwaitReplace
	// PhaseJoining: the replace committed; the member waits for the
	// leader's snapshot.
	PhaseJoining
	// PhaseReplaced: another incarnation holds this member's position:
	// this one never votes or acknowledges a lease again.
	PhaseReplaced
)

func (p Phase) String() string {
	switch p {
	case PhaseMember:
		return "member"
	case PhaseProbing:
		return "probing members (no control-plane state)"
	case PhaseAwaitReplace:
		return "awaiting replace (control-plane state lost)"
	case PhaseJoining:
		return "joining (receiving the control-plane snapshot)"
	case PhaseReplaced:
		return "replaced (another incarnation holds this member's place)"
	}
	return fmt.Sprintf("phase(%d)", p)
}

// probeAnswer is another member's answer to this member's probe.
type probeAnswer struct {
	id       uint64 // the answerer's raft ID, or its join identity when it is empty
	hasState bool
	fresh    bool
	counted  bool // the answerer created the cluster counting us empty under our join identity
	newcomer bool // the answerer created the cluster without us and has not heard from us since
}

// announcement is a join identity an empty member announced in its probes.
type announcement struct {
	id uint64
	at int64
}

// announceTTL is how long, in probe periods, an announcement stays valid
// without a new probe (the member is then taken as gone).
const announceTTL = 5

// replaceWant is a replace this member proposes until it applied or is moot.
type replaceWant struct{ old, new uint64 }

// checkConfState verifies that every ID of cs belongs to a position of an
// n-member config and that each position has at most one current ID.
func checkConfState(cs pb.ConfState, n int) error {
	for _, set := range [][]uint64{cs.Voters, cs.Learners, cs.VotersOutgoing, cs.LearnersNext} {
		for _, id := range set {
			if p := PositionOf(id); p < 1 || p > n {
				return fmt.Errorf("%w: raft ID %#x of the log is not a position of the config's %d members", ErrInvalid, id, n)
			}
		}
	}
	seen := map[int]uint64{}
	for _, id := range currentIDs(cs) {
		if o, ok := seen[PositionOf(id)]; ok {
			return fmt.Errorf("%w: raft IDs %#x and %#x of the log hold one position", ErrInvalid, o, id)
		}
		seen[PositionOf(id)] = id
	}
	return nil
}

// currentIDs are the IDs that hold a position: incoming voters and
// learners (an outgoing voter of a joint config is on its way out).
func currentIDs(cs pb.ConfState) []uint64 {
	out := slices.Concat(cs.Voters, cs.Learners, cs.LearnersNext)
	slices.Sort(out)
	return slices.Compact(out)
}

// currentID is the ID holding position pos in cs, or 0.
func currentID(cs pb.ConfState, pos int) uint64 {
	for _, id := range currentIDs(cs) {
		if PositionOf(id) == pos {
			return id
		}
	}
	return 0
}

// inConf reports whether id appears anywhere in cs.
func inConf(cs pb.ConfState, id uint64) bool {
	for _, set := range [][]uint64{cs.Voters, cs.Learners, cs.VotersOutgoing, cs.LearnersNext} {
		if slices.Contains(set, id) {
			return true
		}
	}
	return false
}

// checkConfChange decides whether a committed conf change applies; every
// member decides alike (it depends on the replicated ConfState only), and
// one that does not apply is skipped. Allowed: a replace
// [RemoveNode(old), AddLearnerNode(new)] of one position while no other
// change is under way, the promotion of a learner, and raft's automatic
// leaving of the joint configuration a replace entered.
func checkConfChange(cs pb.ConfState, cc pb.ConfChangeV2, n int) error {
	joint := len(cs.VotersOutgoing) > 0
	if cc.LeaveJoint() {
		if !joint {
			return fmt.Errorf("%w: leave joint outside a joint config", ErrInvalid)
		}
		return nil
	}
	if joint {
		return fmt.Errorf("%w: a membership change is under way", ErrReplaceBusy)
	}
	ch := cc.Changes
	switch {
	case len(ch) == 1 && ch[0].Type == pb.ConfChangeAddNode && slices.Contains(cs.Learners, ch[0].NodeID):
		return nil
	case len(ch) == 2 && ch[0].Type == pb.ConfChangeRemoveNode && ch[1].Type == pb.ConfChangeAddLearnerNode:
		old, nw := ch[0].NodeID, ch[1].NodeID
		p := PositionOf(old)
		switch {
		case p < 1 || p > n || PositionOf(nw) != p || IncarnationOf(nw) == 0:
			return fmt.Errorf("%w: replace %#x by %#x", ErrInvalid, old, nw)
		case len(cs.Learners) > 0:
			return fmt.Errorf("%w: a learner has not been promoted yet", ErrReplaceBusy)
		case currentID(cs, p) != old || inConf(cs, nw):
			return fmt.Errorf("%w: %#x is not the current ID of position %d, or %#x was used", ErrInvalid, old, p, nw)
		}
		return nil
	}
	return fmt.Errorf("%w: conf change %v", ErrInvalid, cc)
}

// curID is the current raft ID of the member at position pos.
func (m *Member) curID(pos int) uint64 { return currentID(m.confState, pos) }

func (m *Member) posOf(name string) int { return slices.Index(m.names, name) + 1 }

// startRaft creates the RawNode under m.id on the member's storage.
func (m *Member) startRaft() error {
	rn, err := raft.NewRawNode(&raft.Config{
		ID:              m.id,
		ElectionTick:    1 << 20, // elections are driven by Tick (see campaign)
		HeartbeatTick:   m.cfg.Timing.RaftHeartbeat,
		Storage:         m.storage,
		Applied:         m.applied,
		MaxSizePerMsg:   64 << 10,
		MaxInflightMsgs: 64,
		PreVote:         true,
		Logger:          m.logger,
	})
	if err != nil {
		return fmt.Errorf("quorum: raft: %w", err)
	}
	m.rn = rn
	m.resetElection()
	// A member that just started gives the links a failover period to
	// come up before it takes the primary's silence for its death.
	m.heardPrimary = m.now + int64(m.cfg.Timing.Failover)
	return nil
}

// bootstrap creates the cluster's initial configuration (every position
// at incarnation 0), identical on every member that creates it.
func (m *Member) bootstrap() {
	var cs pb.ConfState
	for i := range m.names {
		cs.Voters = append(cs.Voters, RaftID(0, i+1))
	}
	data, _ := State{}.Encode()
	snap := pb.Snapshot{Data: data, Metadata: pb.SnapshotMetadata{Index: 1, Term: 1, ConfState: cs}}
	if err := m.storage.ApplySnapshot(snap); err != nil {
		panic(fmt.Sprintf("quorum: bootstrap: %v", err))
	}
	m.confState, m.applied, m.bootCommit = cs, 1, 1
	m.id = RaftID(0, m.pos)
	for _, n := range m.names {
		if a, ok := m.probes[n]; ok && !a.hasState {
			m.counted[n] = a.id
		} else if !ok && n != m.self {
			// Created with --new-cluster without n: n never held state,
			// and it may create the same initial configuration when it
			// comes, until this member hears from it.
			m.newcomers[n] = true
		}
	}
	m.phase, m.reason, m.dirty = PhaseMember, "", true
	if err := m.startRaft(); err != nil {
		panic(err) // the storage was just built: a broken invariant
	}
}

// sendProbes asks every other member whether it holds control-plane
// state, announcing this member's join identity.
func (m *Member) sendProbes() {
	m.lastProbe = m.now
	for _, n := range m.names {
		if n != m.self {
			m.msgs = append(m.msgs, Message{Type: MsgProbe, From: m.self, To: n, ID: m.joinID, Fresh: m.fresh})
		}
	}
}

// tickEmpty is Tick for a member without raft state.
func (m *Member) tickEmpty() {
	if m.now-m.lastProbe >= int64(m.cfg.Timing.Retry) {
		m.sendProbes()
	}
	m.evaluate()
}

// evaluate decides, while probing, whether to create the cluster, to wait,
// or to await a replace.
func (m *Member) evaluate() {
	if m.phase != PhaseProbing {
		return
	}
	var missing, stale, counted, newcomer []string
	for _, n := range m.names {
		if n == m.self {
			continue
		}
		a, ok := m.probes[n]
		switch {
		case !ok:
			missing = append(missing, n)
		case a.hasState && a.counted:
			counted = append(counted, n)
		case a.hasState && a.newcomer:
			newcomer = append(newcomer, n)
		case a.hasState:
			stale = append(stale, n)
		}
	}
	if len(stale) > 0 {
		m.phase = PhaseAwaitReplace
		m.reason = fmt.Sprintf("control-plane state lost: %s hold the cluster's log: this member must be replaced: run \"grbd member replace %s --config FILE\" on any host",
			strings.Join(stale, ", "), m.self)
		if m.rewound != "" {
			m.reason = m.rewound + "; " + m.reason
		}
		return
	}
	if len(counted)+len(newcomer) > 0 && len(missing) == 0 {
		// Every member with state created the cluster counting this one
		// empty under this join identity (or without it, by --new-cluster,
		// and never heard from it since): it never held state. A newcomer
		// mark alone is not enough while a member is missing: this member
		// may have joined and talked only to that one (the raft leader)
		// before its disk was wiped.
		m.bootstrap()
		return
	}
	var full []string
	// A node with data but no control-plane state may create a cluster
	// only as the sole member of a new config with --new-cluster: an
	// operator's explicit recovery from that one copy.
	if m.isData() && !m.fresh && !(m.cfg.NewCluster && len(m.names) == 1) {
		full = append(full, m.self)
	}
	for _, n := range slices.Sorted(maps.Keys(m.probes)) {
		if a := m.probes[n]; !a.fresh && slices.Contains(m.dataNodes, n) {
			full = append(full, n)
		}
	}
	switch {
	case len(full) > 0:
		m.reason = fmt.Sprintf("refusing to create a new cluster: data node %s holds data but no control-plane state (its raft.state was lost; start the members that hold the cluster's log, or empty that data directory)",
			strings.Join(full, ", "))
	case len(missing) == 0:
		m.bootstrap()
	case m.cfg.NewCluster && len(newcomer) == 0 && m.now >= int64(2*m.cfg.Timing.Retry) && len(m.names)-len(missing) >= Majority(len(m.names)):
		// The override waits for a majority of empty members: a member
		// that lost its state alone (or with a slow answer from one with
		// state) can never create a cluster by it. A member with state
		// that counted this join identity in at its creation vouches for
		// it; a newcomer mark does not (see above).
		m.bootstrap()
	case len(newcomer) > 0:
		m.reason = fmt.Sprintf("no control-plane state: %s created the cluster without this member and never heard from it; waiting for %s to answer too (it may have, and then this member must be replaced)",
			strings.Join(newcomer, ", "), strings.Join(missing, ", "))
	default:
		m.reason = fmt.Sprintf("no control-plane state: waiting for %s to answer before creating a new cluster (every member must be empty; --new-cluster creates it without them)",
			strings.Join(missing, ", "))
	}
}

// onProbe answers another member's probe; a member with state notes the
// join identity of a member that lost its state.
func (m *Member) onProbe(msg Message) {
	pos := m.posOf(msg.From)
	reply := Message{Type: MsgProbeReply, From: m.self, To: msg.From, Echo: msg.ID, Fresh: m.fresh}
	switch m.phase {
	case PhaseProbing, PhaseAwaitReplace:
		reply.ID = m.joinID
	case PhaseJoining:
		reply.ID, reply.HasState = m.id, true
	default:
		reply.ID, reply.HasState = m.id, true
		reply.Counted = msg.ID != 0 && m.counted[msg.From] == msg.ID
		reply.Newcomer = !reply.Counted && m.newcomers[msg.From]
		if !reply.Counted && !reply.Newcomer && PositionOf(msg.ID) == pos && IncarnationOf(msg.ID) != 0 && msg.ID != m.curID(pos) {
			m.announced[msg.From] = announcement{id: msg.ID, at: m.now}
		}
	}
	m.msgs = append(m.msgs, reply)
}

// onProbeReply records an answer to this member's current probe.
func (m *Member) onProbeReply(msg Message) {
	if (m.phase != PhaseProbing && m.phase != PhaseAwaitReplace) || msg.Echo != m.joinID {
		return // an answer to another run's probe, or no longer needed
	}
	m.probes[msg.From] = probeAnswer{id: msg.ID, hasState: msg.HasState, fresh: msg.Fresh, counted: msg.Counted, newcomer: msg.Newcomer}
	m.evaluate()
}

// onReplaced handles another member's word that this member's ID was
// removed from the cluster.
func (m *Member) onReplaced(msg Message) {
	if m.phase != PhaseMember || msg.ID != m.id || msg.Echo == m.id {
		return
	}
	m.becomeReplaced(fmt.Sprintf("%s says raft ID %#x of this member was replaced by %#x", msg.From, m.id, msg.Echo))
}

func (m *Member) becomeReplaced(why string) {
	m.phase, m.reason = PhaseReplaced, why
	m.promotedAt, m.leaseAcks = -1, map[string]int64{}
	m.wantPromote, m.wantDemote = nil, false
}

// rewoundBy checks a raft leader's heartbeat against this member's log. A
// leader commits on a heartbeat no further than the member acknowledged,
// and the member persisted every entry before it acknowledged it: a commit
// index past the log's end means the log lost acknowledged entries, as one
// restored with its data directory from an older copy does. Raft's rule
// that a voter never forgets is broken, and raft itself would panic
// ("tocommit out of range"). The member drops its state instead and awaits
// a replace under a new join identity, as a wiped member does
// (docs/quorum.md, "A restored control-plane log").
func (m *Member) rewoundBy(r pb.Message) bool {
	if r.Type != pb.MsgHeartbeat {
		return false
	}
	last, _ := m.storage.LastIndex()
	if r.Commit <= last {
		return false
	}
	m.becomeRewound(fmt.Sprintf("control-plane log rewound (restored from an older copy?): it ends at index %d, but raft leader %s committed index %d on this member's acknowledgement",
		last, m.names[PositionOf(r.From)-1], r.Commit))
	return true
}

// becomeRewound rebuilds the member without state under a new join
// identity, keeping its clock. Ready then persists the empty state (the
// driver saves the new join identity with it) before the first probe goes
// out.
func (m *Member) becomeRewound(why string) {
	cfg := m.cfg
	cfg.Storage, cfg.JoinID, cfg.NewCluster = raft.NewMemoryStorage(), NewJoinID(m.random(), m.pos), false
	fresh, err := NewMember(cfg)
	if err != nil {
		panic(fmt.Sprintf("quorum: rebuild a rewound member: %v", err)) // its config built this member
	}
	now, rng := m.now, m.rng
	*m = *fresh
	m.now, m.rng, m.lastProbe, m.rewound, m.dirty = now, rng, now, why, true
	m.reason = why + "; asking the other members"
}

// join starts raft under the join identity: the leader added it as a
// learner and is about to send its snapshot.
func (m *Member) join() {
	m.id, m.phase = m.joinID, PhaseJoining
	m.reason = "the replace committed: receiving the control-plane snapshot"
	m.joinedFresh = m.isData() && m.fresh
	if err := m.startRaft(); err != nil {
		panic(err) // empty storage: a broken invariant
	}
}

// applyConf applies a committed conf change, or skips it if it is not one
// grbd allows (checkConfChange).
func (m *Member) applyConf(cc pb.ConfChangeI) {
	v2 := cc.AsV2()
	if err := checkConfChange(m.confState, v2, len(m.names)); err != nil {
		return
	}
	m.confState = *m.rn.ApplyConfChange(cc)
	for _, ch := range v2.Changes {
		if ch.Type != pb.ConfChangeRemoveNode {
			continue
		}
		m.removed[ch.NodeID] = true
		// The removed incarnation's acknowledgements no longer count.
		delete(m.leaseAcks, m.nameOf(ch.NodeID))
		if ch.NodeID == m.id {
			m.becomeReplaced(fmt.Sprintf("raft ID %#x of this member was removed from the cluster (grbd member replace)", m.id))
		}
	}
	for n, w := range m.wantReplace {
		if c := m.curID(PositionOf(w.old)); c != w.old {
			delete(m.wantReplace, n) // done, or moot
		}
	}
	// Snapshot at once: a new learner is sent the leader's snapshot, which
	// must already name it (raft drops a snapshot that does not).
	if data, err := m.state.Encode(); err == nil {
		if _, err := m.storage.CreateSnapshot(m.applied, &m.confState, data); err == nil {
			m.dirty = true
		}
	}
}

// maybePromoteLearner makes the raft leader propose a learner as voter
// once its log reached the leader's commit index.
func (m *Member) maybePromoteLearner() {
	if len(m.confState.Learners) == 0 || len(m.confState.VotersOutgoing) > 0 || m.rn.BasicStatus().RaftState != raft.StateLeader {
		return
	}
	st := m.rn.Status()
	for _, id := range m.confState.Learners {
		if pr, ok := st.Progress[id]; ok && pr.Match >= st.Commit {
			key := fmt.Sprintf("promote-learner/%d", id)
			if last, ok := m.lastPropose[key]; ok && m.now-last < int64(m.cfg.Timing.Retry) {
				continue
			}
			if m.rn.ProposeConfChange(pb.ConfChange{Type: pb.ConfChangeAddNode, NodeID: id}) == nil {
				m.lastPropose[key] = m.now
			}
		}
	}
}

// RequestReplace proposes that name, a member that lost its control-plane
// state and announced a join identity, takes its place again under that
// identity: ConfChangeV2{RemoveNode(old), AddLearnerNode(new)} (grbd member
// replace). It returns the new raft ID; the change is retried until it
// applied or became moot. Refused for this member itself, for the primary
// (move the primary first), for a member that announced no join identity,
// and while another membership change is under way.
func (m *Member) RequestReplace(name string) (uint64, error) {
	pos := m.posOf(name)
	switch {
	case pos == 0:
		return 0, fmt.Errorf("%w: %s", ErrUnknownMember, name)
	case m.phase != PhaseMember:
		return 0, fmt.Errorf("%w: %s is %s", ErrNotMember, m.self, m.phase)
	case name == m.self:
		return 0, fmt.Errorf("%w: %s cannot replace itself: ask another member", ErrInvalid, name)
	case m.state.Primary == name:
		return 0, fmt.Errorf("%w: %s is the primary of epoch %d: move the primary first (grbd primary OTHER)", ErrIsPrimary, name, m.state.Epoch)
	}
	a, ok := m.announced[name]
	if !ok || m.now-a.at > int64(announceTTL*m.cfg.Timing.Retry) {
		return 0, fmt.Errorf("%w: %s is not connected or announced no join identity (a member that still holds its state needs no replace)", ErrNotAnnounced, name)
	}
	old := m.curID(pos)
	if old == a.id {
		return a.id, nil // done already
	}
	cc := pb.ConfChangeV2{Changes: []pb.ConfChangeSingle{{Type: pb.ConfChangeRemoveNode, NodeID: old}, {Type: pb.ConfChangeAddLearnerNode, NodeID: a.id}}}
	if err := checkConfChange(m.confState, cc, len(m.names)); err != nil {
		return 0, err
	}
	if m.rn.BasicStatus().Lead == raft.None {
		return 0, fmt.Errorf("%w: a majority of the members must be up to replace %s", ErrNoLeader, name)
	}
	m.wantReplace[name] = replaceWant{old: old, new: a.id}
	delete(m.lastPropose, "replace/"+name)
	m.retryProposals()
	return a.id, nil
}

func (m *Member) retryReplaces() {
	for _, n := range slices.Sorted(maps.Keys(m.wantReplace)) {
		w := m.wantReplace[n]
		key := "replace/" + n
		if last, ok := m.lastPropose[key]; ok && m.now-last < int64(m.cfg.Timing.Retry) {
			continue
		}
		cc := pb.ConfChangeV2{Changes: []pb.ConfChangeSingle{{Type: pb.ConfChangeRemoveNode, NodeID: w.old}, {Type: pb.ConfChangeAddLearnerNode, NodeID: w.new}}}
		if m.rn.ProposeConfChange(cc) == nil {
			m.lastPropose[key] = m.now
		}
	}
}

// lostState lists the members that announced a join identity recently
// (they lost their state and wait for a replace).
func (m *Member) lostState() []string {
	var out []string
	for _, n := range m.names {
		if a, ok := m.announced[n]; ok && m.now-a.at <= int64(announceTTL*m.cfg.Timing.Retry) && m.curID(m.posOf(n)) != a.id {
			out = append(out, n)
		}
	}
	return out
}
