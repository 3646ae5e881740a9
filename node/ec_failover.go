package node

import (
	"errors"
	"fmt"
	"slices"

	"github.com/grbd/grbd/internal/sidecar"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/replicator"
)

// Failover to a shard peer (docs/erasure.md, "Failover"): the shard peer
// the control plane elects asks every reachable shard peer for its journal
// position (ShardState), settles the usable ones at D, the lowest journal
// position among them (ShardSettle), rebuilds the device from K of them
// into its own store (ShardRead, ec_takeover.go) and serves as a full copy.
// This file holds the decision (a pure function) and the shard peers' side.

// Errors callers branch on.
var (
	// ErrShardUnusable: a shard peer cannot take part in a rebuild at the
	// asked position (its image is past it, or it is not a settled shard).
	ErrShardUnusable = errors.New("node: shard peer unusable for the rebuild")
	// ErrTooFewShards: fewer than K shard peers are usable: the device
	// cannot be rebuilt, the node does not serve.
	ErrTooFewShards = errors.New("node: too few usable shard peers to rebuild the device")
)

// Markers in a shard peer's data dir (sidecar): after a crash during a
// Settle (dropping journaled writes) the image may lack records the
// journal replays as applied, and during a takeover's rebuild the store is
// neither the shard nor the device; either way the node restarts
// Inconsistent (full resync), after a takeover as a full copy.
const (
	settleFile   = sidecar.Settle
	takeoverFile = sidecar.Takeover
	fullCopyFile = sidecar.FullCopy
)

// shardSurvivor is one shard peer as the taking-over node sees it.
type shardSurvivor struct {
	Name       string
	Shard      int
	Reached    bool // it answered ShardState
	Outdated   bool // Outdated in the control plane
	Consistent bool // no unfinished resync, no split brain
	Last       uint64
	Applied    uint64
}

// takeoverPlan is where and from whom the device is rebuilt.
type takeoverPlan struct {
	D      uint64
	Usable []shardSurvivor // Applied <= D, in shard order
}

// planTakeover decides the rebuild position and the usable survivors.
// Every acknowledged write is journaled on every peer that is not Outdated
// (protocol C, Outdate before writes go on without a peer), so every one is
// at most D, the lowest journal position among the reached, consistent,
// not Outdated survivors. A survivor whose image holds a write above D
// (Applied > D) cannot be brought back to D and is not used. At least k
// must remain.
func planTakeover(k int, all []shardSurvivor) (takeoverPlan, error) {
	var cands []shardSurvivor
	for _, s := range all {
		if s.Reached && !s.Outdated && s.Consistent {
			cands = append(cands, s)
		}
	}
	if len(cands) < k {
		return takeoverPlan{}, fmt.Errorf("%w: %d reachable consistent shard peers that are not Outdated, need %d", ErrTooFewShards, len(cands), k)
	}
	d := cands[0].Last
	for _, s := range cands {
		d = min(d, s.Last)
	}
	plan := takeoverPlan{D: d}
	for _, s := range cands {
		if s.Applied <= d {
			plan.Usable = append(plan.Usable, s)
		}
	}
	slices.SortFunc(plan.Usable, func(a, b shardSurvivor) int { return a.Shard - b.Shard })
	if len(plan.Usable) < k {
		return takeoverPlan{}, fmt.Errorf("%w: %d shard peers at applied position <= %d, need %d", ErrTooFewShards, len(plan.Usable), d, k)
	}
	return plan, nil
}

// shardStateReply is this shard peer's ShardStateReply.
func (n *Node) shardStateReply(id uint64) *wire.ShardStateReply {
	r := &wire.ShardStateReply{ID: id, LastSeq: n.store.LastSeq(), Epoch: n.sec.Epoch()}
	if sa := n.shardApplier(); sa != nil {
		r.Applied = min(sa.Applied(), r.LastSeq)
	}
	if n.sec.Consistent() {
		r.Flags = wire.ShardStateConsistent
	}
	return r
}

// serveShard answers a failover request on an admin stream; false if m is
// not one.
func (n *Node) serveShard(w *wire.Writer, m wire.Message) (bool, error) {
	nack := func(id uint64, code uint32, err error) error {
		n.log.Warn("refusing shard failover request", "type", m.Type(), "err", err)
		return w.WriteMsg(&wire.Nack{Seq: id, Code: code, Reason: truncate(err.Error(), wire.MaxString)})
	}
	notShard := fmt.Errorf("%w: this node keeps no shard", ErrShardUnusable)
	// refusal is why a ShardState or ShardSettle of epoch is refused, with
	// its nack code: no shard here, a primary here, or a stale epoch.
	refusal := func(epoch uint64) (uint32, error) {
		if n.shardApplier() == nil || n.currentPrimary() != nil {
			return wire.NackState, notShard
		}
		return wire.NackStaleEpoch, n.fenceOlder(epoch)
	}
	switch m := m.(type) {
	case *wire.ShardState:
		if code, err := refusal(m.Epoch); err != nil {
			return true, nack(m.ID, code, err)
		}
		return true, w.WriteMsg(n.shardStateReply(m.ID))
	case *wire.ShardSettle:
		if code, err := refusal(m.Epoch); err != nil {
			return true, nack(m.ID, code, err)
		}
		if err := n.ecSettle(m.Seq); err != nil {
			return true, nack(m.ID, wire.NackState, err)
		}
		return true, w.WriteMsg(n.shardStateReply(m.ID))
	case *wire.ShardRead:
		if n.shardApplier() == nil || n.currentPrimary() != nil {
			return true, nack(m.ID, wire.NackState, notShard)
		}
		if n.ecSettled.Load() != m.Seq+1 || n.store.LastSeq() != m.Seq || m.Epoch < n.sec.Epoch() {
			return true, nack(m.ID, wire.NackState, fmt.Errorf("%w: not settled at %d (last %d)", ErrShardUnusable, m.Seq, n.store.LastSeq()))
		}
		size := uint64(n.store.Size())
		if m.Offset > size || uint64(m.Length) > size-m.Offset {
			return true, nack(m.ID, wire.NackOutOfRange, fmt.Errorf("node: [%d,+%d) beyond %d", m.Offset, m.Length, size))
		}
		data := make([]byte, m.Length)
		if err := n.store.ReadAt(data, int64(m.Offset)); err != nil {
			return true, nack(m.ID, wire.NackIO, err)
		}
		return true, w.WriteMsg(&wire.ShardData{ID: m.ID, Offset: m.Offset, Seq: m.Seq, Data: data})
	}
	return false, nil
}

// ecSettle brings this shard peer's image and journal to position d:
// writes up to d applied, those above dropped and forgotten. It refuses
// when the image holds a write above d or the journal does not reach d.
// A settled position serves ShardRead until a primary connects.
func (n *Node) ecSettle(d uint64) error {
	sa := n.shardApplier()
	if sa == nil {
		return fmt.Errorf("%w: this node keeps no shard", ErrShardUnusable)
	}
	last := n.store.LastSeq()
	if last < d || sa.Applied() > d {
		return fmt.Errorf("%w: journal at %d, applied %d, asked to settle at %d", ErrShardUnusable, last, sa.Applied(), d)
	}
	if last > d {
		if err := n.meta.Mark(settleFile, fmt.Sprintln(d)); err != nil {
			return fmt.Errorf("node: settle: %w", err)
		}
	}
	if err := sa.Settle(d, false); err != nil {
		return fmt.Errorf("%w: %w", ErrShardUnusable, err)
	}
	if last > d {
		if _, err := n.store.Rewind(d); err != nil {
			return fmt.Errorf("node: settle: rewind to %d: %w", d, err)
		}
		if err := n.meta.Unmark(settleFile); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	n.ecSettled.Store(d + 1)
	n.log.Info("shard peer settled for a takeover", "seq", d, "dropped_from", last)
	return nil
}

// ecOpenLayout runs before the store opens: a node that took over keeps a
// full copy, not its configured shard.
func (n *Node) ecOpenLayout() {
	if n.ec != nil && n.ec.shardNow() >= 0 && (n.meta.Marked(fullCopyFile) || n.meta.Marked(takeoverFile)) {
		n.ec.shard.Store(-1)
	}
}

// ecRecover runs after the store and the secondary side opened: an
// interrupted settle or rebuild leaves the disk Inconsistent, to be
// resynced in full from a primary.
func (n *Node) ecRecover() error {
	if n.ec == nil {
		return nil
	}
	for _, f := range []sidecar.Marker{settleFile, takeoverFile} {
		if !n.meta.Marked(f) {
			continue
		}
		n.log.Warn("an erasure-code settle or takeover was interrupted: the disk is Inconsistent until a full resync", "file", f)
		if f == takeoverFile {
			n.ec.shard.Store(-1)
			if err := n.meta.Mark(fullCopyFile, ""); err != nil {
				return err
			}
			if size := n.ec.cd.G.Size; n.store.Size() < size {
				if _, err := n.store.Append(journalResize(size)); err != nil {
					return fmt.Errorf("node: grow the interrupted rebuild's store: %w", err)
				}
			}
		}
		if err := n.sec.SaveResync(&replicator.ResyncState{From: 0, All: true}); err != nil {
			return err
		}
		if err := n.meta.Unmark(f); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	return nil
}
