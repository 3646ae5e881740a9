package node

// The node's wiring of the primary side (package primary): what the side
// reports goes to the event log and status here, and the names of its
// status API are the node's.

import (
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/primary"
	"github.com/grbd/grbd/quorum"
	"github.com/grbd/grbd/replicator"
)

// Connection and disk states shown in status (primary.ConnConnected, ...).
const (
	ConnDisconnected = primary.ConnDisconnected
	ConnConnecting   = primary.ConnConnecting
	ConnConnected    = primary.ConnConnected

	DiskUpToDate     = primary.DiskUpToDate
	DiskConsistent   = primary.DiskConsistent
	DiskInconsistent = primary.DiskInconsistent
	DiskOutdated     = primary.DiskOutdated
	DiskUnknown      = primary.DiskUnknown
	DiskSplitBrain   = primary.DiskSplitBrain
)

// Types of the admin API that the primary side fills in.
type (
	VerifyResult   = primary.VerifyResult
	VerifyProgress = primary.VerifyProgress
)

// Errors of the primary side callers branch on.
var (
	ErrPeerAhead    = primary.ErrPeerAhead
	ErrHandshake    = primary.ErrHandshake
	ErrPeerFailed   = primary.ErrPeerFailed
	ErrSplitBrain   = primary.ErrSplitBrain
	ErrUnrepairable = primary.ErrUnrepairable
)

// newPrimary is the primary side of epoch st.Epoch, with a link to every
// other data node.
func (n *Node) newPrimary(st quorum.Status) *primary.Side {
	cfg := primary.Config{
		Cluster:                n.cfg.Cluster,
		Name:                   n.me.Name,
		Protocol:               n.proto,
		SuspendOnNoQuorum:      n.cfg.Quorum.OnNoQuorum == config.OnNoQuorumSuspend,
		SuspendTimeout:         n.cfg.Quorum.SuspendTimeout.D(),
		Resumed:                st.TookRole != st.Epoch || st.Reestablished,
		Reestablished:          st.Reestablished,
		PeerTimeout:            n.cfg.Replication.PeerTimeout.D(),
		FlushTimeout:           n.cfg.Replication.FlushTimeout.D(),
		DisconnectOnCongestion: n.cfg.Replication.OnCongestion == config.CongestionDisconnect,
		CongestionFill:         int64(n.cfg.Replication.CongestionFill),
		ResyncRate:             int64(n.cfg.Replication.ResyncRate),
		JournalMaxSize:         int64(n.cfg.Journal.MaxSize),
		Store:                  n.store,
		Log:                    n.log,
		Transport:              n.mesh,
		Control:                peerControl{n},
		Repairs:                primary.RepairCounters{Corrupt: &n.corruptBlocks, Repaired: &n.repairedBlocks, Unrepaired: &n.unrepairedBlocks},
	}
	if n.ec != nil {
		cfg.Coder = n.ec.Coder()
	}
	if f := n.opts.faults; f != nil {
		cfg.DropsPiece = f.dropsPiece
	}
	p := primary.New(n.ctx, cfg, primaryHost{n}, st.State)
	for _, m := range n.cfg.Nodes {
		if m.Name != n.me.Name {
			p.AddPeer(m.Name, n.cfg.ShardOf(m.Name))
		}
	}
	return p
}

// peerControl makes the primary's Outdate and Clear proposals. A node that
// is stopping proposes no Outdate: a peer whose stream ended because it is
// stopping too (a whole cluster stopped at once) would stay Outdated with
// every write, and no write of this node is acknowledged any more (its
// primary fails what it holds).
type peerControl struct{ n *Node }

func (c peerControl) RequestOutdate(peer string) {
	if c.n.ctx.Err() != nil {
		c.n.log.Info("stopping: not outdating a lost peer", "peer", peer)
		return
	}
	c.n.ctl.RequestOutdate(peer)
}

func (c peerControl) RequestClear(peer string, disk uint64) (uint64, bool) {
	return c.n.ctl.RequestClear(peer, disk)
}

// primaryHost is the node as the primary side sees it.
type primaryHost struct{ n *Node }

func (h primaryHost) Disconnected(peer string) bool       { return h.n.isDisconnected(peer) }
func (h primaryHost) History() replicator.History         { return h.n.history() }
func (h primaryHost) PeerState(peer, state, cause string) { h.n.peerState(peer, state, cause) }
func (h primaryHost) SplitBrain(peer, detail string)      { h.n.splitBrain(peer, detail) }
func (h primaryHost) PeerAhead(peer, detail string) bool  { return h.n.peerAhead(peer, detail) }
func (h primaryHost) Event(e events.Event)                { h.n.events.Add(e) }
