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
