package node

// Data identity (docs/quorum.md, "Data identity"): every store has a random
// ID drawn when it was created (journal.ID); the control plane records which
// disk holds each node's data, the Hello of a data stream carries the
// identities, and a node whose disk is not the recorded one takes a full
// sync before it counts or can be promoted.

import (
	"fmt"

	"github.com/grbd/grbd/quorum"
)

// Identity is a data node's data identity as status shows it.
type Identity struct {
	// Disk is the store's ID in short form; Recorded the disk the control
	// plane records for this node ("-": none yet).
	Disk     string `json:"disk"`
	Recorded string `json:"recorded"`
	// Epoch is the newest epoch of the node's history, LastSeq its journal
	// position: the generation the data belongs to.
	Epoch   uint64 `json:"epoch"`
	LastSeq uint64 `json:"last_seq"`
	// Promotable tells whether the node may become primary without force;
	// NotPromotable says why not.
	Promotable    bool   `json:"promotable"`
	NotPromotable string `json:"not_promotable,omitempty"`
}

// String is the short form: disk/epoch:seq.
func (id Identity) String() string { return fmt.Sprintf("%s/e%d:%d", id.Disk, id.Epoch, id.LastSeq) }

// identity reports this node's data identity against the applied state st.
func (n *Node) identity(st quorum.State) Identity {
	h := n.history()
	id := Identity{Disk: quorum.ShortDisk(n.store.ID()), Recorded: quorum.ShortDisk(st.Disks[n.me.Name]), LastSeq: n.store.LastSeq()}
	if len(h) > 0 {
		id.Epoch = h[len(h)-1].Epoch
	}
	id.Promotable, id.NotPromotable = n.ctl.Promotable()
	if err := n.diskFailure(); err != nil {
		id.Promotable, id.NotPromotable = false, "its disk failed: "+err.Error()
	}
	return id
}
