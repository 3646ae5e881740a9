package node

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/ec"
)

// Erasure-coded resources (docs/erasure.md). The first data node in config
// order keeps the full copy and is the only node that takes the primary
// role; data node h+1 is shard peer h and keeps a compact shard image: its
// store is an ordinary journaled store of ShardSize bytes, written under
// the primary's sequence numbers. The primary re-encodes, under its write
// lock, the shard range every client write changes (read-modify-write from
// its own full copy) and ships each shard peer its piece as an ordinary
// Write; acknowledgement and Outdate rules are the mirrors' (protocol C).

// ErrECUnsupported is returned for operations an erasure-coded resource
// does not support (yet): resize, secondary reads, a shard peer as primary.
var ErrECUnsupported = errors.New("node: not supported for an erasure-coded resource")

// ecNode is a node's erasure-coding state; nil for a mirrored resource.
type ecNode struct {
	cd *ec.Coder
	// shard is this node's shard, -1 on a full-copy node: the first node,
	// or a shard peer that took over (ec_failover.go).
	shard atomic.Int32
}

// shardNow is this node's shard, -1 on a full copy.
func (e *ecNode) shardNow() int { return int(e.shard.Load()) }

// newECNode builds the EC state of member name, or nil for a mirror.
func newECNode(cfg *config.Config, name string) (*ecNode, error) {
	e, ok := cfg.EC()
	if !ok {
		return nil, nil
	}
	cd, err := ec.NewCoder(ec.Geometry{K: e.K, M: e.M, Chunk: config.ECChunk, Size: int64(cfg.Device.Size)})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	en := &ecNode{cd: cd}
	en.shard.Store(int32(cfg.ShardOf(name)))
	return en, nil
}

// shardPeer reports whether this node keeps a shard, not a full copy.
func (n *Node) shardPeer() bool { return n.ec != nil && n.ec.shardNow() >= 0 }

// setConsistent tells the control plane whether this node may propose
// itself as primary. A shard peer may once it has followed a primary (its
// history is not empty: a new cluster elects the full-copy node) and no
// takeover failed here just now; taking over rebuilds the device first
// (ec_takeover.go).
func (n *Node) setConsistent(ok bool) {
	if n.diskFailure() != nil {
		ok = false // a Failed disk is never promoted (health.go)
	}
	if n.shardPeer() && (n.opts.NoShardFailover || n.ecNoPromote.Load() || len(n.history()) == 0) {
		ok = false
	}
	n.ctl.SetConsistent(ok)
}
