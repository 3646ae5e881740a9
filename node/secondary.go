package node

// The node's wiring of the secondary side (package secondary): what the side
// reports goes to the event log, the control plane and status here.

import (
	"fmt"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/primary"
	"github.com/grbd/grbd/replicator"
	"github.com/grbd/grbd/secondary"
)

func (n *Node) newSecondary() (*secondary.Side, error) {
	cfg := secondary.Config{
		Cluster:             n.cfg.Cluster,
		Name:                n.me.Name,
		Protocol:            n.proto,
		DiscardOnSplitBrain: n.cfg.Replication.AfterSplitBrain == config.SplitBrainDiscardSecondary,
		ErasureCoded:        n.ec != nil,
		HandshakeTimeout:    primary.HandshakeTimeout,
		Store:               n.store,
		Meta:                n.meta,
		Log:                 n.log,
	}
	if f := n.opts.faults; f != nil {
		cfg.ForgedOffer = f.forgeOffer.Load
	}
	s, err := secondary.New(cfg, secondaryHost{n})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	return s, nil
}

// secondaryHost is the node as the secondary side sees it.
type secondaryHost struct{ n *Node }

func (h secondaryHost) Disconnected(peer string) bool            { return h.n.isDisconnected(peer) }
func (h secondaryHost) AppliedEpoch() uint64                     { return h.n.ctl.Status().Epoch }
func (h secondaryHost) DiskFailure() error                       { return h.n.diskFailure() }
func (h secondaryHost) CheckDisk(op string, err error) error     { return h.n.checkDisk(op, err) }
func (h secondaryHost) SetConsistent(ok bool)                    { h.n.setConsistent(ok) }
func (h secondaryHost) History() replicator.History              { return h.n.history() }
func (h secondaryHost) SetHistory(hist replicator.History) error { return h.n.setHistory(hist) }
func (h secondaryHost) SplitBrain(peer, detail string)           { h.n.splitBrain(peer, detail) }
func (h secondaryHost) Grown(cause string)                       { h.n.grown(cause) }
func (h secondaryHost) Shrunk(cause string)                      { h.n.shrunk(cause) }
func (h secondaryHost) FullCopyOfCode() bool                     { return h.n.ec != nil && !h.n.shardPeer() }

// PrimaryArrived: a settled position serves reads until a primary connects.
func (h secondaryHost) PrimaryArrived() {
	if h.n.ec != nil {
		h.n.ec.PrimaryArrived()
	}
}

func (h secondaryHost) PrimaryConnected(peer, cause string) {
	h.n.peerState(peer, ConnConnected, cause)
}
func (h secondaryHost) PrimaryLost(peer, cause string) { h.n.peerState(peer, ConnDisconnected, cause) }

func (h secondaryHost) Diverged(peer, detail string) {
	h.n.events.Add(Event{Type: events.TypeDiverged, Peer: peer, Cause: "records no one acknowledged (a deposed primary's)", Detail: detail})
}

func (h secondaryHost) Inconsistent(cause string) {
	h.n.events.Add(Event{Type: events.TypeDisk, State: DiskInconsistent, Cause: cause})
}

func (h secondaryHost) Consistent(cause string) {
	h.n.events.Add(Event{Type: events.TypeDisk, State: DiskConsistent, Cause: cause})
}

// ShardApplier is nil unless this node is a shard peer.
func (h secondaryHost) ShardApplier() *secondary.ShardApply { return h.n.shardApplier() }

// secondaryDisk is a secondary's disk state; outdated is the control
// plane's word on it.
func (n *Node) secondaryDisk(outdated bool) string {
	st := n.sec.State()
	switch {
	case n.diskFailure() != nil:
		return DiskFailed
	case st.SplitBrain:
		return DiskSplitBrain
	case st.Inconsistent:
		return DiskInconsistent
	case outdated:
		return DiskOutdated
	case st.Connected && st.CaughtUp:
		return DiskUpToDate
	}
	return DiskConsistent
}

// secondaryPeers is a secondary's peer list for status: its primary once
// one connected.
func (n *Node) secondaryPeers() []PeerStatus {
	st := n.sec.State()
	if st.Primary == "" {
		return []PeerStatus{}
	}
	conn := ConnDisconnected
	if st.Connected {
		conn = ConnConnected
	}
	return []PeerStatus{{Name: st.Primary, Connection: conn, Disk: DiskUnknown, AckedSeq: st.Journaled}}
}
