package node

import (
	"fmt"

	"github.com/grbd/grbd/primary"
	"github.com/grbd/grbd/quorum"
)

// Roles shown in status.
const (
	RolePrimary   = "Primary"
	RoleSecondary = "Secondary"
)

// reconcile brings the node's data path in line with the control plane:
// it starts a primary instance when this node was promoted, stops it when
// the node lost the role, tells the secondary side the newest epoch, and
// the primary which peers are Outdated. Called by the control plane on
// every change, and once at start.
func (n *Node) reconcile() {
	st := n.ctl.Status()
	n.roleMu.Lock()
	defer n.roleMu.Unlock()
	select {
	case <-n.ctx.Done():
		return
	default:
	}
	n.sec.SetEpoch(st.Epoch, st.Primary)
	n.clearStaleIfCaughtUp()
	switch {
	case st.Role == quorum.RolePrimary && (n.prim == nil || n.prim.Epoch() != st.Epoch):
		if n.prim != nil {
			n.stopPrimaryLocked(ErrDeposed)
		}
		n.startPrimaryLocked(st)
	case st.Role != quorum.RolePrimary && n.prim != nil:
		n.stopPrimaryLocked(ErrDeposed)
	}
	if n.prim != nil {
		n.prim.OnState(st.State)
		n.prim.OnServing(st.Serving)
	}
	ev := RoleEvent{Role: RoleSecondary, Epoch: st.Epoch, Serving: st.Serving, NBD: "nbd://" + n.nbdLn.Addr().String()}
	if n.prim != nil {
		ev.Role = RolePrimary
	}
	n.noteRoleLocked(n.lastRole, ev, st)
	if ev != n.lastRole {
		n.lastRole = ev
		if n.opts.OnRole != nil {
			n.opts.OnRole(ev)
		}
	}
}

// startPrimaryLocked makes this node the primary of st.Epoch: the
// secondary side lets go of the old primary's stream, the history records
// the new epoch before any write of it, and a link to every other data
// node starts. Caller holds roleMu.
func (n *Node) startPrimaryLocked(st quorum.Status) {
	if n.shardPeer() && n.opts.NoShardFailover {
		// Its store is one shard, not the device: serving it would return
		// garbage (docs/erasure.md, "Failover").
		n.log.Error("promoted, but this node keeps an erasure-code shard, not a full copy: refusing the primary role", "epoch", st.Epoch, "shard", n.ec.Shard())
		_ = n.ctl.RequestDemote()
		return
	}
	if err := n.diskFailure(); err != nil {
		n.log.Error("promoted, but this node's disk failed: refusing the primary role", "epoch", st.Epoch, "err", err)
		_ = n.ctl.RequestDemote()
		return
	}
	if !st.Forced && !n.sec.Consistent() {
		// A promotion proposed before a resync began may still commit: an
		// Inconsistent node must not serve. Give the role back; a
		// consistent node takes over.
		n.log.Error("promoted while Inconsistent: refusing the primary role", "epoch", st.Epoch)
		_ = n.ctl.RequestDemote()
		return
	}
	if why := n.staleForRole(st); why != "" {
		if n.staleEpoch.Swap(st.Epoch) != st.Epoch {
			n.log.Error("refusing the primary role: "+why, "epoch", st.Epoch)
			n.setStale(true, why)
		}
		_ = n.ctl.RequestDemote()
		return
	}
	if why := n.durableStale(st); why != "" {
		n.log.Error("refusing the primary role: "+why, "epoch", st.Epoch)
		n.setStale(false, why)
		_ = n.ctl.RequestDemote()
		return
	}
	if n.shardPeer() && !n.ec.TakeOver(n.ctx, st) {
		// Its store is one shard: it serves only once it rebuilt the
		// device from K shards (package ecpeer); it failed: give the role
		// back.
		_ = n.ctl.RequestDemote()
		return
	}
	n.sec.StopSessions()
	h := n.history().Enter(st.Epoch, n.store.LastSeq()+1, st.Forced)
	if err := n.setHistory(h); err != nil {
		// Without the history entry a later divergence check could be
		// wrong: refuse the role rather than serve without it.
		n.log.Error("cannot become primary", "epoch", st.Epoch, "err", err)
		_ = n.ctl.RequestDemote()
		return
	}
	p := n.newPrimary(st)
	p.Start()
	n.prim = p
	n.primA.Store(p)
	n.log.Info("became primary", "epoch", st.Epoch, "forced", st.Forced, "first_seq", n.store.LastSeq()+1)
}

// stopPrimaryLocked ends the primary instance: its links close and every
// request it still holds fails with err. Caller holds roleMu.
func (n *Node) stopPrimaryLocked(err error) {
	if n.prim == nil {
		return
	}
	// Requests stop reaching the instance before it fails what it holds.
	n.primA.Store(nil)
	n.prim.Stop(err)
	n.log.Info("primary role ended", "epoch", n.prim.Epoch())
	n.prim = nil
}

// currentPrimary is the primary instance, or nil. Lock-free: every NBD
// request asks.
func (n *Node) currentPrimary() *primary.Side { return n.primA.Load() }

// staleForRole says why this node must not serve as the primary of st's
// epoch, "" when it may. A node that resumes a role it did not take in this
// run (a restart) must find that epoch in its disk's history, which it
// records before the epoch's first write: a disk without it is older than
// the epoch, restored from a backup or a snapshot, and a peer may hold
// writes acknowledged in it, which serving this disk would rewind (issue
// 14's rule: a node that missed acknowledged writes never becomes primary;
// the control plane cannot see this one, which was never Outdated). A node
// that crashed between its promotion and that record wrote nothing in the
// epoch and gives the role back too: another node takes over, or, where no
// other is promotable, the operator forces it. A cluster with one data node
// has no better copy: it serves.
func (n *Node) staleForRole(st quorum.Status) string {
	last := n.history().Last().Epoch
	if st.TookRole == st.Epoch || last >= st.Epoch || len(n.cfg.Nodes) < 2 {
		return ""
	}
	return fmt.Sprintf("its disk has no record of epoch %d, in which it is the primary (the newest on disk is %d): "+
		"the disk is older than the epoch (restored from a backup or a snapshot?) and may lack writes acknowledged in it; "+
		"a node with the data takes over (force it only if this disk is the only copy)", st.Epoch, last)
}

// peerAhead handles a peer that refused to rewind records this node wrote
// as the primary and its disk lacks (secondary.ErrAhead): a power loss took
// the disk's unsynced tail, or a copy taken while it was the primary was
// restored. A counted peer holds those writes, and this role acknowledged
// nothing without it (a resumed role serves only once its peers showed
// their position, primary.Side.Verified): this node steps down as stale,
// and the peer takes over. An Outdated peer's writes are no longer the
// cluster's acknowledged data, and this primary may have acknowledged
// writes without it: both hold writes the other lacks, a split brain for
// the operator (grbd resolve).
func (n *Node) peerAhead(peer, detail string) (splitBrain bool) {
	st := n.ctl.Status()
	if st.IsOutdated(peer) {
		n.splitBrain(peer, detail)
		return true
	}
	why := fmt.Sprintf("%s holds records this node wrote as the primary and its disk lacks (a power loss took its unsynced tail, "+
		"or it was restored from a copy taken while it was the primary): a node with the data takes over (force it only if this disk is the only copy)", peer)
	if n.staleEpoch.Swap(st.Epoch) != st.Epoch {
		n.log.Error("stepping down: "+why, "epoch", st.Epoch, "detail", detail)
		n.setStale(true, why)
	}
	_ = n.ctl.RequestDemote()
	return false
}

// clearStaleIfCaughtUp lifts the stale mark of staleForRole once this node
// followed a primary of a later epoch and holds every record before that
// epoch's first: the writes its disk lacked. Checked at every reconcile
// and every second (watchDisk): a node that was never Outdated catches up
// with no control-plane change.
func (n *Node) clearStaleIfCaughtUp() {
	se := n.staleEpoch.Load()
	if se == 0 {
		return
	}
	for _, e := range n.history() {
		if e.Epoch > se {
			if n.store.LastSeq()+1 >= e.FirstSeq && n.sec.Consistent() && n.staleEpoch.CompareAndSwap(se, 0) {
				n.log.Info("the disk caught up past the epoch it had no record of: promotable again", "epoch", se, "seq", n.store.LastSeq())
				n.setStale(true, "")
			}
			return
		}
	}
}
