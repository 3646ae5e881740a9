package quorum

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// A follower that needs a snapshot loses it on the way (a member link
// flapped). Raft sends it nothing more until told the snapshot's outcome,
// so without retryLostSnapshots the follower never catches up and no longer
// counts towards a majority: losing one more member would then stop the
// control plane although a majority is up (the simulation's liveness check
// found it, a witness that had been down).
func TestLeaderResendsLostSnapshot(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	a, w := c.members["a"], c.members["w"]
	require.Equal(t, "a", w.Status().RaftLeader)

	// The witness is away while the log grows past a compaction.
	c.isolate("w", true)
	for i := range 300 {
		if i%2 == 0 {
			a.RequestOutdate("b")
		} else {
			a.RequestClear("b", 0)
		}
		c.tick(1)
	}
	first, _ := c.disks["a"].FirstIndex()
	require.Greater(t, first, w.applied+1, "the leader's log was not compacted past the witness")

	// It comes back; the first snapshot sent to it is lost.
	lost := 0
	c.drop = func(msg Message) bool {
		if msg.Type == MsgRaft && msg.Raft.Type == pb.MsgSnap && lost == 0 {
			lost++
			return true
		}
		return false
	}
	c.isolate("w", false)
	for i := 0; i < 200 && lost == 0; i++ {
		c.tick(1)
	}
	require.Equal(t, 1, lost, "no snapshot was sent to the witness")
	tm := DefaultTiming()
	c.tick((snapshotTimeout + 2) * tm.Election)
	require.Equal(t, a.State(), w.State(), "the witness never caught up after its snapshot was lost")
	a.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		if id == w.id {
			require.Equal(t, tracker.StateReplicate, pr.State)
		}
	})
}

// A follower's appends are lost on the way (its member link is down one
// way) while the leader commits with the other data node, far more of them
// than raft keeps in flight to one follower (MaxInflightMsgs, 64). Raft
// 3.6 recovers by itself once the link carries again: the follower's
// heartbeat response makes the leader send an append even to a paused
// follower, the follower rejects it for the gap, and the leader probes
// back. This is why the member links do not report unreachable peers to
// raft (ReportUnreachable): nothing stalls without it. (With the appends
// sent on heartbeat responses dropped as well, the follower never catches
// up: the test fails.)
func TestFollowerRecoversFromLostAppends(t *testing.T) {
	c := newCluster(t, true, dataAndWitness()...)
	c.tick(100)
	a, w := c.members["a"], c.members["w"]
	require.Equal(t, "a", w.Status().RaftLeader)

	dropping, lost := true, 0
	c.drop = func(msg Message) bool {
		if dropping && msg.Type == MsgRaft && msg.Raft.Type == pb.MsgApp && msg.To == "w" {
			lost++
			return true
		}
		return false
	}
	for i := range 100 { // below the compaction threshold: no snapshot
		if i%2 == 0 {
			a.RequestOutdate("b")
		} else {
			a.RequestClear("b", 0)
		}
		c.tick(1)
	}
	require.Greater(t, lost, 64, "fewer appends lost than raft keeps in flight")
	require.NotEqual(t, a.State(), w.State())

	dropping = false
	tm := DefaultTiming()
	for i := 0; i < 3*tm.Election && a.State().Gen["b"] != w.State().Gen["b"]; i++ {
		c.tick(1)
	}
	require.Equal(t, a.State(), w.State(), "the follower never caught up after its appends were lost")
}
