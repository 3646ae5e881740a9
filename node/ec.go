package node

import (
	"context"
	"errors"
	"net"

	"github.com/grbd/grbd/ecpeer"
	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/secondary"
)

// Erasure-coded resources (docs/erasure.md): the shard-peer role, its
// failover answers and its takeover live in package ecpeer; the node wires
// an ecpeer.Peer (n.ec, nil for a mirror) to its store, secondary side and
// mesh (ecHost), and asks it for the layout in status, size and roles.

// ErrECUnsupported is returned for operations an erasure-coded resource
// does not support (yet): resize, secondary reads, a shard peer as primary.
var ErrECUnsupported = errors.New("node: not supported for an erasure-coded resource")

// shardPeer reports whether this node keeps a shard, not a full copy.
func (n *Node) shardPeer() bool { return n.ec != nil && n.ec.Shard() >= 0 }

// shardApplier is the deferred-apply state while this node is a shard
// peer, nil otherwise.
func (n *Node) shardApplier() *secondary.ShardApply {
	if !n.shardPeer() {
		return nil
	}
	return n.sa
}

// setConsistent tells the control plane whether this node may propose
// itself as primary. A shard peer may once it has followed a primary (its
// history is not empty: a new cluster elects the full-copy node) and no
// takeover failed here just now; taking over rebuilds the device first
// (ecpeer.Peer.TakeOver).
func (n *Node) setConsistent(ok bool) {
	if n.diskFailure() != nil {
		ok = false // a Failed disk is never promoted (health.go)
	}
	if n.shardPeer() && (n.opts.NoShardFailover || n.ec.BackingOff() || len(n.history()) == 0) {
		ok = false
	}
	n.ctl.SetConsistent(ok)
}

// serveShard answers a shard failover request on an admin stream; false
// if m is not one. A mirror refuses them all.
func (n *Node) serveShard(w *wire.Writer, m wire.Message) (bool, error) {
	if n.ec == nil {
		return ecpeer.Refuse(w, m, n.log)
	}
	return n.ec.Serve(w, m)
}

// ecHost is the node as its ecpeer.Peer sees it.
type ecHost struct{ n *Node }

func (h ecHost) Store() ecpeer.Store         { return h.n.store }
func (h ecHost) Secondary() ecpeer.Secondary { return h.n.sec }
func (h ecHost) Meta() ecpeer.Meta           { return h.n.meta }
func (h ecHost) Primary() bool               { return h.n.currentPrimary() != nil }
func (h ecHost) Event(e events.Event)        { h.n.events.Add(e) }
func (h ecHost) PromotableChanged()          { h.n.setConsistent(h.n.sec.Consistent()) }

// Applier is nil, not a nil *secondary.ShardApply, on a full copy.
func (h ecHost) Applier() ecpeer.Applier {
	if h.n.sa == nil {
		return nil
	}
	return h.n.sa
}

func (h ecHost) OpenAdmin(ctx context.Context, peer string) (net.Conn, error) {
	return h.n.mesh.Open(ctx, peer, wire.StreamAdmin)
}
