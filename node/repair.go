package node

import (
	"fmt"

	"github.com/grbd/grbd/internal/wire"
)

// serveBlock answers a peer's BlockRequest: with the bytes when this node's
// disk is consistent and they pass their checksums, else with a Nack.
func (n *Node) serveBlock(w *wire.Writer, req *wire.BlockRequest) error {
	nack := func(code uint32, why string) error {
		return w.WriteMsg(wire.NewNack(req.ID, code, why))
	}
	switch {
	case n.currentPrimary() != nil:
		return nack(wire.NackState, "the asked node is primary")
	case n.shardPeer():
		return nack(wire.NackState, "the asked node is an erasure-code shard peer: it holds no copy of the device")
	case !n.sec.Consistent():
		return nack(wire.NackState, "the asked node's disk is Inconsistent")
	case req.Offset > uint64(n.store.Size()) || uint64(req.Length) > uint64(n.store.Size())-req.Offset:
		return nack(wire.NackOutOfRange, fmt.Sprintf("[%d,+%d) beyond %d", req.Offset, req.Length, n.store.Size()))
	}
	// Every write up to seq is logged, so ReadAt waits for it: the bytes
	// are at least as new as seq.
	seq := n.store.LastSeq()
	data := make([]byte, req.Length)
	if err := n.store.ReadAt(data, int64(req.Offset)); err != nil {
		return nack(wire.NackIO, err.Error())
	}
	return w.WriteMsg(&wire.BlockData{ID: req.ID, Offset: req.Offset, Seq: seq, Data: data})
}
