package quorum

import (
	"slices"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/tracker"
)

// What the raft leader gives up on its own, on every tick. Raft leaves both
// to the application: it bounds a leadership transfer only by its election
// timeout, which is out of the way here (elections are driven by Tick), and
// it waits for a snapshot's outcome until told (ReportSnapshot). A message
// the member links drop would otherwise stall the control plane for good.

// abortStaleTransfer gives up a leadership transfer that has not completed
// within an election timeout. Raft gives up only after its own election
// timeout, which is 1<<20 ticks here (elections are driven by Tick), and
// drops every proposal meanwhile: a primary that asked for leadership
// (maybeLead) and stopped before it got it would otherwise block the
// failover proposal of the next primary for hours.
func (m *Member) abortStaleTransfer(to uint64) {
	switch {
	case to == raft.None:
		m.transferTo = raft.None
	case to != m.transferTo:
		m.transferTo, m.transferSince = to, m.now
	case m.now-m.transferSince >= int64(m.cfg.Timing.Election) && !plantedStaleTransfer:
		// A leader asked to hand over to itself aborts the transfer in
		// progress and stays leader.
		m.rn.TransferLeader(m.id)
		m.transferTo = raft.None
	}
}

// snapshotTimeout is how long, in election timeouts, the leader waits
// for a follower to answer a snapshot before it sends it again.
const snapshotTimeout = 2

// retryLostSnapshots reports a snapshot as failed when the follower has not
// answered it within snapshotTimeout election timeouts. Raft sends a
// follower nothing else while a snapshot to it is pending, and the member
// links drop messages to a peer that is down: without this, a member that
// missed its snapshot during a link flap would never get another append
// from this leader. It would not count towards a majority again, and the
// loss of one more member would stop the control plane although a
// majority is up (seen in the simulation: a witness that had been down).
// On failure raft probes the follower again and sends a new snapshot if it
// still needs one.
func (m *Member) retryLostSnapshots() {
	var pending []uint64
	m.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		if pr.State == tracker.StateSnapshot {
			pending = append(pending, id) // in ID order: the core stays deterministic
		}
	})
	for id := range m.snapSince {
		if !slices.Contains(pending, id) {
			delete(m.snapSince, id)
		}
	}
	for _, id := range pending {
		since, ok := m.snapSince[id]
		switch {
		case !ok:
			m.snapSince[id] = m.now
		case m.now-since >= int64(snapshotTimeout*m.cfg.Timing.Election):
			m.rn.ReportSnapshot(id, raft.SnapshotFailure)
			delete(m.snapSince, id)
		}
	}
}
