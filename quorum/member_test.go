package quorum

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// cluster is a minimal driver for unit tests: members exchange messages
// instantly unless cut; persisted storage survives a crash.
type cluster struct {
	t       *testing.T
	infos   []MemberInfo
	members map[string]*Member
	disks   map[string]*raft.MemoryStorage
	cut     map[[2]string]bool // from, to
	auto    bool
	joinIDs map[string]uint64  // the drivers' join-identity files
	wiped   int                // wipes so far: fresh randomness for join identities
	fresh   map[string]bool    // data node stores without data (default: all)
	drop    func(Message) bool // loses the messages it returns true for
}

func newCluster(t *testing.T, auto bool, infos ...MemberInfo) *cluster {
	c := &cluster{t: t, infos: infos, members: map[string]*Member{}, disks: map[string]*raft.MemoryStorage{}, cut: map[[2]string]bool{}, auto: auto,
		joinIDs: map[string]uint64{}, fresh: map[string]bool{}}
	for _, mi := range infos {
		c.start(mi.Name)
	}
	return c
}

func dataAndWitness() []MemberInfo {
	return []MemberInfo{{Name: "a", Data: true}, {Name: "b", Data: true}, {Name: "w"}}
}

// start (re)starts a member from what its disk holds.
func (c *cluster) start(name string) {
	st := raft.NewMemoryStorage()
	if d := c.disks[name]; d != nil {
		st = copyOf(c.t, d)
	}
	m, err := NewMember(c.config(name, st))
	require.NoError(c.t, err)
	c.members[name] = m
}

// config is what a driver passes: the join identity from its file (a new
// one when the member has no state and no file), freshness of its store.
func (c *cluster) config(name string, st *raft.MemoryStorage) Config {
	pos := 0
	for i, mi := range c.infos {
		if mi.Name == name {
			pos = i + 1
		}
	}
	if c.disks[name] == nil && c.joinIDs[name] == 0 {
		c.wiped++
		c.joinIDs[name] = NewJoinID(uint64(c.wiped)*0x9e3779b97f4a7c15, pos)
	}
	fresh, ok := c.fresh[name]
	return Config{Self: name, Members: c.infos, Storage: st, Timing: DefaultTiming(), AutoFailover: c.auto,
		Seed: uint64(len(name)) + 7, JoinID: c.joinIDs[name], Fresh: fresh || !ok}
}

// wipe crashes a member and deletes its control-plane state (and its
// join-identity file).
func (c *cluster) wipe(name string) {
	c.crash(name)
	delete(c.disks, name)
	delete(c.joinIDs, name)
}

// storageOf is what a driver reads back from a persisted raft state.
func storageOf(t *testing.T, hs pb.HardState, snap pb.Snapshot, ents []pb.Entry) *raft.MemoryStorage {
	st := raft.NewMemoryStorage()
	if !raft.IsEmptySnap(snap) { // a member that dropped its state saved none
		require.NoError(t, st.ApplySnapshot(snap))
	}
	require.NoError(t, st.SetHardState(hs))
	require.NoError(t, st.Append(ents))
	return st
}

// copyOf is a copy of a member's persisted raft state, as a restart reads
// it or a backup of its data directory holds it.
func copyOf(t *testing.T, d *raft.MemoryStorage) *raft.MemoryStorage {
	hs, snap, ents := persistedOf(d)
	return storageOf(t, hs, snap, ents)
}

func persistedOf(d *raft.MemoryStorage) (pb.HardState, pb.Snapshot, []pb.Entry) {
	hs, _, _ := d.InitialState()
	snap, _ := d.Snapshot()
	first, _ := d.FirstIndex()
	last, _ := d.LastIndex()
	var ents []pb.Entry
	if last >= first {
		ents, _ = d.Entries(first, last+1, 1<<30)
	}
	return hs, snap, ents
}

func (c *cluster) crash(name string) { delete(c.members, name) }

// partition cuts every link between the named member and the others.
func (c *cluster) isolate(name string, on bool) {
	for _, mi := range c.infos {
		if mi.Name != name {
			c.cut[[2]string{name, mi.Name}] = on
			c.cut[[2]string{mi.Name, name}] = on
		}
	}
}

// process runs Ready/Advance on every member until no message is left.
func (c *cluster) process() {
	for range 100 {
		var inflight []Message
		for _, mi := range c.infos {
			m := c.members[mi.Name]
			if m == nil || !m.HasReady() {
				continue
			}
			rd := m.Ready()
			if rd.Persist {
				hs, snap, ents := m.Persisted()
				c.disks[mi.Name] = storageOf(c.t, hs, snap, ents)
				// The driver's join-identity file after a persist: the ID
				// a joined member runs under; none for the initial one.
				switch {
				case m.ID() == 0: // dropped its state: the identity it announces
					c.joinIDs[mi.Name] = m.JoinID()
				case IncarnationOf(m.ID()) == 0:
					delete(c.joinIDs, mi.Name)
				default:
					c.joinIDs[mi.Name] = m.ID()
				}
			}
			inflight = append(inflight, rd.Messages...)
			m.Advance()
		}
		if len(inflight) == 0 {
			return
		}
		for _, msg := range inflight {
			if c.drop != nil && c.drop(msg) {
				continue
			}
			if to := c.members[msg.To]; to != nil && !c.cut[[2]string{msg.From, msg.To}] {
				require.NoError(c.t, to.Step(msg))
			}
		}
	}
	c.t.Fatal("messages did not settle")
}

func (c *cluster) tick(n int) {
	for range n {
		for _, mi := range c.infos {
			if m := c.members[mi.Name]; m != nil {
				m.Tick()
			}
		}
		c.process()
		c.checkOneServer()
	}
}

// checkOneServer is the lease invariant: all clocks run at one rate here,
// so at most one member may be serving at any tick.
func (c *cluster) checkOneServer() {
	var serving []string
	for name, m := range c.members {
		if m.Serving() {
			serving = append(serving, name)
		}
	}
	require.LessOrEqual(c.t, len(serving), 1, "serving at once: %v", serving)
}

// requireTakenOver requires that primary alone serves and that old, the
// primary before it, came back as a secondary.
func (c *cluster) requireTakenOver(primary, old string) {
	c.t.Helper()
	require.Equal(c.t, []string{primary}, c.servers())
	require.Equal(c.t, RoleSecondary, c.members[old].Status().Role)
}

func (c *cluster) servers() []string {
	var out []string
	for _, mi := range c.infos {
		if m := c.members[mi.Name]; m != nil && m.Serving() {
			out = append(out, mi.Name)
		}
	}
	return out
}

func TestAutoFailoverElectsFirstDataNode(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	require.Equal(t, []string{"a"}, c.servers())
	st := c.members["w"].State()
	require.Equal(t, uint64(1), st.Epoch)
	require.Equal(t, "a", st.Primary)
}

// The cluster's first primary serves as soon as its promotion applies: in
// epoch 0 nobody held a lease that it must outwait, and nobody was primary
// whose silence must be waited out. Every later promotion waits a lease
// (TestFailoverAfterPrimaryCrash).
func TestFirstPrimaryServesAtOnce(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	tm := DefaultTiming()
	ticks := 0
	for ; ticks < 300 && c.members["a"].State().Epoch == 0; ticks++ {
		c.tick(1)
	}
	require.Equal(t, "a", c.members["a"].State().Primary)
	require.Less(t, ticks, 2*tm.Failover, "the first promotion waited a failover timeout after the start-up grace")
	promoted := ticks
	for ; ticks < promoted+tm.LeaseWait() && len(c.servers()) == 0; ticks++ {
		c.tick(1) // one round of lease requests and acks
	}
	require.Equal(t, []string{"a"}, c.servers())
	require.LessOrEqual(t, ticks-promoted, tm.Heartbeat+1, "the first primary waited for a lease nobody held")
}

func TestManualModeWaitsForPromote(t *testing.T) {
	c := newCluster(t, false, dataAndWitness()...)
	c.tick(100)
	require.Empty(t, c.servers())
	require.NoError(t, c.members["b"].RequestPromote(false))
	c.tick(60)
	require.Equal(t, []string{"b"}, c.servers())
	require.ErrorIs(t, c.members["w"].RequestPromote(false), ErrNotDataNode)

	c.members["b"].RequestDemote()
	c.tick(30)
	require.Empty(t, c.servers())
	require.Equal(t, "", c.members["a"].State().Primary)
}

func TestFailoverAfterPrimaryCrash(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	require.Equal(t, []string{"a"}, c.servers())
	c.crash("a")
	ticks := 0
	for ; ticks < 300 && len(c.servers()) == 0; ticks++ {
		c.tick(1)
	}
	require.Equal(t, []string{"b"}, c.servers())
	tm := DefaultTiming()
	require.GreaterOrEqual(t, ticks, tm.Failover-tm.Heartbeat+tm.LeaseWait(), "failed over before the old lease could have run out")
	require.Less(t, ticks, tm.Failover+2*tm.Election+tm.LeaseWait()+2*tm.Retry)

	// The old primary restarts as a secondary: its promotion is history.
	c.start("a")
	c.tick(100)
	c.requireTakenOver("b", "a")
}

func TestIsolatedPrimaryIsFencedBeforeTakeover(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	require.Equal(t, []string{"a"}, c.servers())
	c.isolate("a", true)
	fencedAt, takenAt := -1, -1
	for i := range 300 {
		c.tick(1)
		if fencedAt < 0 && !c.members["a"].Serving() {
			fencedAt = i
		}
		if takenAt < 0 && c.members["b"].Serving() {
			takenAt = i
		}
	}
	require.GreaterOrEqual(t, fencedAt, 0)
	require.Greater(t, takenAt, fencedAt)
	require.LessOrEqual(t, fencedAt, DefaultTiming().Lease+1)

	// Healing: a learns the new epoch and is no longer primary.
	c.isolate("a", false)
	c.tick(50)
	c.requireTakenOver("b", "a")
}

func TestWitnessLossKeepsPrimary(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	c.crash("w")
	c.tick(200)
	require.Equal(t, []string{"a"}, c.servers())
	c.crash("b")
	c.tick(60)
	require.Empty(t, c.servers(), "a primary alone is a minority: fenced")
}

func TestOutdatedNodeIsNeverPromoted(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	a := c.members["a"]
	a.RequestOutdate("b")
	c.tick(5)
	require.True(t, c.members["w"].State().IsOutdated("b"))
	require.ErrorIs(t, c.members["b"].RequestPromote(false), ErrOutdated)
	c.crash("a")
	c.tick(400)
	require.Empty(t, c.servers(), "b is Outdated: no failover")

	require.NoError(t, c.members["b"].RequestPromote(true))
	c.tick(60)
	require.Equal(t, []string{"b"}, c.servers())
	st := c.members["w"].State()
	require.True(t, st.Forced)
	require.False(t, st.IsOutdated("b"))
}

func TestClearAfterResync(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	c.members["a"].RequestOutdate("b")
	c.tick(5)
	c.members["a"].RequestClear("b", 0)
	c.tick(5)
	require.False(t, c.members["b"].State().IsOutdated("b"))
	// Only the primary's word counts.
	c.members["b"].RequestOutdate("a")
	c.tick(30)
	require.Empty(t, c.members["w"].State().Outdated)
}

func TestThreeDataNodes(t *testing.T) {
	c := newCluster(t, true, MemberInfo{Name: "a", Data: true}, MemberInfo{Name: "b", Data: true}, MemberInfo{Name: "c", Data: true})
	c.tick(100)
	require.Equal(t, []string{"a"}, c.servers())
	c.crash("a")
	c.tick(200)
	require.Equal(t, []string{"b"}, c.servers(), "rank decides the candidate")
	c.crash("c")
	c.tick(60)
	require.Empty(t, c.servers())
}

func TestRestartReplaysState(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	c.members["a"].RequestOutdate("b")
	c.tick(10)
	for _, n := range []string{"a", "b", "w"} {
		c.crash(n)
	}
	for _, n := range []string{"a", "b", "w"} {
		c.start(n)
	}
	c.tick(300)
	st := c.members["w"].State()
	require.True(t, st.IsOutdated("b"))
	require.Equal(t, []string{"a"}, c.servers(), "the restarted primary re-promotes itself")
	require.Equal(t, uint64(2), st.Epoch)
}

func TestLogCompaction(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	for i := range 300 {
		if i%2 == 0 {
			c.members["a"].RequestOutdate("b")
		} else {
			c.members["a"].RequestClear("b", 0)
		}
		c.tick(1)
	}
	first, _ := c.disks["w"].FirstIndex()
	require.Greater(t, first, uint64(100), "log compacted")
	c.crash("w")
	c.start("w")
	c.tick(20)
	require.Equal(t, c.members["a"].State(), c.members["w"].State())
}

func TestStepRejectsStrangers(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	err := c.members["a"].Step(Message{Type: MsgLeaseAck, From: "zz", To: "a"})
	require.ErrorIs(t, err, ErrUnknownMember)
	err = c.members["a"].Step(Message{Type: MsgRaft, From: "b", To: "a", Raft: pb.Message{From: 3, To: 1}})
	require.ErrorIs(t, err, ErrUnknownMember)
	err = c.members["a"].Step(Message{Type: 99, From: "b", To: "a"})
	require.ErrorIs(t, err, ErrCorrupt)
}

func TestConfigErrors(t *testing.T) {
	for i, cfg := range []Config{
		{Self: "a", Members: dataAndWitness(), Timing: DefaultTiming()},
		{Self: "x", Members: dataAndWitness(), Storage: raft.NewMemoryStorage(), Timing: DefaultTiming()},
		{Self: "a", Members: []MemberInfo{{Name: "a"}, {Name: "a"}}, Storage: raft.NewMemoryStorage(), Timing: DefaultTiming()},
		{Self: "a", Members: dataAndWitness(), Storage: raft.NewMemoryStorage(), Timing: Timing{}},
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			_, err := NewMember(cfg)
			require.Error(t, err)
		})
	}
}

// A promotion pending when the node's disk becomes Inconsistent (a resync
// began) is withdrawn: an Inconsistent node must not take over.
func TestInconsistentNodeWithdrawsPromotion(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	b := c.members["b"]
	c.isolate("b", true) // b stops hearing the primary and wants to take over
	for i := 0; i < 200 && b.wantPromote == nil; i++ {
		c.tick(1)
	}
	require.NotNil(t, b.wantPromote)
	b.SetConsistent(false)
	require.Nil(t, b.wantPromote)
	c.tick(300)
	require.NotEqual(t, "b", b.State().Primary)
}

// The primary takes over raft leadership, so that its Outdates commit in
// one round trip even when the lost peer was the raft leader.
func TestPrimaryBecomesRaftLeader(t *testing.T) {
	c := newCluster(t, true, MemberInfo{Name: "a", Data: true}, MemberInfo{Name: "b", Data: true}, MemberInfo{Name: "c", Data: true})
	c.tick(300)
	require.Equal(t, []string{"a"}, c.servers())
	require.Equal(t, "a", c.members["b"].Status().RaftLeader)
	require.Equal(t, "a", c.members["a"].Status().RaftLeader)
}

// newRecordedCluster starts a, b and w with failover on: a serves on disk
// 100 (its Promote recorded it), and a's Clear recorded b's disk 200.
func newRecordedCluster(t *testing.T) *cluster {
	c := newCluster(t, true, dataAndWitness()...)
	c.members["a"].SetDisk(100)
	c.members["b"].SetDisk(200)
	c.tick(100)
	require.Equal(t, []string{"a"}, c.servers())
	_, ok := c.members["a"].RequestClear("b", 200)
	require.True(t, ok, "b's disk is not recorded yet: a Clear records it")
	c.tick(10)
	require.Equal(t, map[string]uint64{"a": 100, "b": 200}, c.members["w"].State().Disks)
	return c
}

// TestReplacedDiskIsNeverPromoted: the first case of issue 14 at the core.
// Both data nodes' disks are recorded; b restarts with a new, empty disk
// while a is down: b is not promoted (not by failover, not by a request
// without force), until a returns and records b's new disk with a Clear.
func TestReplacedDiskIsNeverPromoted(t *testing.T) {
	c := newRecordedCluster(t)

	c.crash("a")
	c.crash("b")
	c.start("b")
	c.members["b"].SetDisk(201) // a new, empty disk
	c.tick(500)
	require.Empty(t, c.servers(), "b's disk is not the recorded one: no failover")
	ok, why := c.members["b"].Promotable()
	require.False(t, ok)
	require.Contains(t, why, "not the recorded disk")
	require.ErrorIs(t, c.members["b"].RequestPromote(false), ErrNotPromotable)

	c.start("a")
	c.members["a"].SetDisk(100)
	c.tick(300)
	require.Equal(t, []string{"a"}, c.servers(), "a holds the data")
	_, ok = c.members["a"].RequestClear("b", 201) // after b's full sync
	require.True(t, ok)
	c.tick(10)
	require.Equal(t, uint64(201), c.members["w"].State().Disks["b"])
	ok, _ = c.members["b"].Promotable()
	require.True(t, ok, "b holds the data now")
}

// TestStalePromoteAfterDiskReplaced: a Promote proposed with the old disk
// commits after the node's disk was replaced: the node must not take the
// role (found by internal/sim, seed 396 of the first version).
func TestStalePromoteAfterDiskReplaced(t *testing.T) {
	c := newCluster(t, false, dataAndWitness()...)
	c.members["a"].SetDisk(100)
	c.members["b"].SetDisk(200)
	c.tick(60)
	require.NoError(t, c.members["a"].RequestPromote(false))
	c.tick(100)
	require.Equal(t, []string{"a"}, c.servers())
	_, ok := c.members["a"].RequestClear("b", 200)
	require.True(t, ok)
	c.tick(10)
	require.NoError(t, c.members["b"].RequestPromote(false)) // proposed with disk 200
	c.members["b"].SetDisk(201)                              // ...and the disk replaced before it commits
	epoch := c.members["w"].State().Epoch
	for range 200 {
		c.tick(1)
		require.False(t, c.members["b"].IsPrimary(), "b's disk is not the one the Promote named")
	}
	st := c.members["w"].State()
	require.Equal(t, epoch+1, st.Epoch, "the stale Promote applied")
	require.Empty(t, st.Primary, "b gave the role back")
}

// TestOneWayCutDoesNotDeposeALivePrimary: the primary's messages to the
// secondary are lost (one way); the witness still hears it. The secondary
// proposes itself, but the raft leader, which hears the primary, drops the
// failover proposal: the primary keeps serving. An operator's promotion
// still goes through.
func TestOneWayCutDoesNotDeposeALivePrimary(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	require.Equal(t, []string{"a"}, c.servers())
	epoch := c.members["w"].State().Epoch
	c.cut[[2]string{"a", "b"}] = true
	for range 300 {
		c.tick(1)
		require.Equal(t, []string{"a"}, c.servers(), "a live primary was deposed by a one-way cut")
	}
	require.Equal(t, epoch, c.members["w"].State().Epoch)

	c.cut[[2]string{"a", "b"}] = false
	c.tick(50)
	require.Equal(t, []string{"a"}, c.servers())
	require.NoError(t, c.members["b"].RequestPromote(false)) // grbd primary b
	c.tick(100)
	require.Equal(t, "b", c.members["w"].State().Primary, "an operator's promotion is not dropped")
}

// A primary asks the raft leader for leadership (maybeLead) and stops
// before the leader's go-ahead (MsgTimeoutNow) reaches it. The leader must
// give the transfer up: raft drops every proposal while one is in
// progress, and would give up only after its own election timeout, 1<<20
// ticks here, so the other data node's failover proposal never committed
// (clean-clone CI, node.TestFailoverKeepsAcknowledgedWrites).
func TestLeaderGivesUpTransferToLostPrimary(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	require.Equal(t, []string{"a"}, c.servers())
	a, w := c.members["a"], c.members["w"]
	require.Equal(t, "a", w.Status().RaftLeader)

	// Leadership moves to the witness; the primary asks for it back, and
	// the go-ahead to it is lost.
	a.rn.TransferLeader(w.id)
	c.process()
	require.Equal(t, "w", a.Status().RaftLeader)
	c.drop = func(msg Message) bool {
		return msg.Type == MsgRaft && msg.Raft.Type == pb.MsgTimeoutNow && msg.To == "a"
	}
	ticks := 0
	for ; ticks < 100 && w.rn.BasicStatus().LeadTransferee != a.id; ticks++ {
		c.tick(1)
	}
	require.Equal(t, a.id, w.rn.BasicStatus().LeadTransferee, "the primary never asked for leadership back")
	c.crash("a")
	c.drop = nil

	tm := DefaultTiming()
	ticks = 0
	for ; ticks < 1000 && len(c.servers()) == 0; ticks++ {
		c.tick(1)
	}
	require.Equal(t, []string{"b"}, c.servers(), "no failover after %d ticks", ticks)
	require.Less(t, ticks, tm.Election+tm.Failover+2*tm.Election+tm.LeaseWait()+2*tm.Retry)
}

// Leader stickiness counts only a leader's messages. A member that
// campaigns in vain (a learner that missed its own promotion: raft refuses
// its campaign) resets its election timer every election timeout; if that
// kept it "hearing" its old leader, it would ignore every candidate, and a
// cluster that needs its vote never elected anyone (the simulation's
// liveness check, seed 47365 of 40001-60000).
func TestStickinessIgnoresOwnCampaigns(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	w := c.members["w"]
	st := w.rn.BasicStatus()
	require.NotZero(t, st.Lead)
	vote := Message{Type: MsgRaft, From: "b", To: "w", Raft: pb.Message{Type: pb.MsgVote, From: c.members["b"].id, To: w.id,
		Term: st.Term + 1, LogTerm: st.Term, Index: w.rn.Status().Commit + 100}}

	// It just heard from the leader: the disrupting vote is ignored.
	require.NoError(t, w.Step(vote))
	require.Equal(t, st.Term, w.rn.BasicStatus().Term)

	// The leader went silent long ago; the member itself campaigned a
	// moment ago (its election timer was reset): the vote counts.
	w.sinceLeader, w.elapsed = 10*DefaultTiming().Election, 0
	require.NoError(t, w.Step(vote))
	require.Equal(t, st.Term+1, w.rn.BasicStatus().Term)
}

// TookRole names only a promotion this member proposed in this run, never
// one it applies from the log: not even one that names it and the epoch it
// proposes from itself. Here a's control-plane state is restored from a copy
// taken in epoch 1 (its data directory came back from a backup): it
// re-proposes its epoch-1 role, Promote{a, from 1}, while the log it catches
// up on holds the Promote{a, from 1} of its previous run. A node uses
// TookRole to tell a role it took from one its disk may be too old for.
func TestTookRoleOnlyForThisRunsPromote(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	require.Equal(t, []string{"a"}, c.servers())
	st := c.members["a"].Status()
	require.Equal(t, uint64(1), st.TookRole)
	require.False(t, st.Reestablished, "the first promotion follows no role of a")
	require.Zero(t, c.members["b"].Status().TookRole)
	backup := c.disks["a"]

	restartAll := func(seed uint64) {
		for _, n := range []string{"a", "b", "w"} {
			c.crash(n)
		}
		c.start("b")
		c.start("w")
		cfg := c.config("a", copyOf(t, c.disks["a"]))
		cfg.Seed = seed // a real driver draws a new seed each run
		m, err := NewMember(cfg)
		require.NoError(t, err)
		c.members["a"] = m
	}
	restartAll(1001)
	c.tick(300)
	st = c.members["a"].Status()
	require.Equal(t, uint64(2), st.Epoch, "the restarted primary re-promotes itself")
	require.Equal(t, uint64(2), st.TookRole)
	require.True(t, st.Reestablished, "a took back its own role of epoch 1")

	c.disks["a"] = backup
	restartAll(1002)
	sawOld := false
	for range 300 {
		c.tick(1)
		if st := c.members["a"].Status(); st.Primary == "a" && st.Epoch == 2 {
			sawOld = true
			require.Zero(t, st.TookRole, "the previous run's promotion counted as taken in this run")
		}
	}
	require.True(t, sawOld, "a never applied its previous run's promotion")
	// The control plane lets a serve it (the promotion committed after its
	// boot): only the node's disk can say the role is older than the data.
	st = c.members["a"].Status()
	require.Equal(t, []string{"a"}, c.servers())
	require.Equal(t, uint64(2), st.Epoch)
	require.Zero(t, st.TookRole)
}

// TestFailoverIsNotReestablished: a node that takes over from a lost
// primary did not lead the epoch before its own, so its peers' records of
// that epoch past its own are not its lost writes (wire.HelloReestablished).
func TestFailoverIsNotReestablished(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	require.Equal(t, []string{"a"}, c.servers())
	c.crash("a")
	c.tick(300)
	require.Equal(t, []string{"b"}, c.servers())
	st := c.members["b"].Status()
	require.Equal(t, st.Epoch, st.TookRole)
	require.False(t, st.Reestablished, "b took over a's role, not its own")
}

// TestReplayedAfterRestart: a restarted member reports Replayed only once
// it applied every entry its log had committed before the restart; until
// then its State is older than when it stopped (grbd primary waits for it).
func TestReplayedAfterRestart(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	require.Equal(t, []string{"a"}, c.servers())
	require.True(t, c.members["b"].Status().Replayed)
	c.crash("b")
	c.start("b")
	st := c.members["b"].Status()
	require.False(t, st.Replayed, "replayed before applying its log (epoch %d)", st.Epoch)
	require.Zero(t, st.Epoch, "the state before the replay is the snapshot's")
	c.tick(50)
	st = c.members["b"].Status()
	require.True(t, st.Replayed)
	require.Equal(t, uint64(1), st.Epoch)
}
