package secondary

import (
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/mesh"
	"github.com/grbd/grbd/internal/peerwire"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/quorum"
	"github.com/grbd/grbd/replicator"
)

// Handle serves one data stream from peer.
func (s *Side) Handle(peer string, c net.Conn) {
	if !s.enter() {
		c.Close() // the node is closing: the primary dials again later
		return
	}
	defer s.wg.Done()
	defer c.Close()
	if s.node.Disconnected(peer) {
		s.refuse(c, "disconnected by the operator")
		return
	}
	if err := s.node.DiskFailure(); err != nil {
		s.refuse(c, "disk failed: "+err.Error())
		return
	}
	s.mu.Lock()
	if s.blocked {
		s.mu.Unlock()
		s.refuse(c, "this node is primary")
		return
	}
	if s.invalidating > 0 {
		s.mu.Unlock()
		s.refuse(c, "this node is being invalidated (grbd invalidate): dial again")
		return
	}
	// A new primary stream replaces the old one.
	for other := range s.sessions {
		other.Close()
	}
	s.sessions[c] = 0
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, c)
		s.mu.Unlock()
	}()
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	err := s.session(peer, c)
	s.connected.Store(false)
	s.caughtUp.Store(false)
	s.node.SetConsistent(s.Consistent())
	if err != nil {
		s.log.Warn("primary link down", "primary", peer, "err", err)
		s.node.PrimaryLost(peer, "data stream ended: "+err.Error())
	}
}

func (s *Side) refuse(c net.Conn, why string) {
	w := wire.NewWriter(c)
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_ = w.WriteMsg(wire.NewNack(0, wire.NackState, why))
	_ = w.Flush()
}

// session serves one primary connection on its data stream.
func (s *Side) session(peer string, c net.Conn) error {
	r, w := mesh.StreamReader(c), wire.NewWriter(c)
	_ = c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	h, hist, err := readPrimaryHello(r)
	if err != nil {
		return err
	}
	if h.Cluster != s.cfg.Cluster || h.From != peer || h.Role != wire.RolePrimary {
		s.refuse(c, "bad hello")
		return fmt.Errorf("%w: hello from %q (%q, role %d) on %q's stream", peerwire.ErrHandshake, h.From, h.Cluster, h.Role, peer)
	}
	// Registered and checked under mu: SetEpoch closes, under mu, every
	// registered session of an older epoch, and skips those whose Hello was
	// not read yet; so a SetEpoch before this point is seen here, and one
	// after it closes this session.
	s.raiseEpoch(s.node.AppliedEpoch())
	s.mu.Lock()
	known := s.raiseEpoch(h.Epoch)
	if _, ok := s.sessions[c]; ok && h.Epoch >= known {
		s.sessions[c] = h.Epoch
	}
	s.mu.Unlock()
	if h.Epoch < known {
		s.refuse(c, fmt.Sprintf("stale epoch %d < %d", h.Epoch, known))
		return fmt.Errorf("%w: primary %q has stale epoch %d < %d", peerwire.ErrHandshake, h.From, h.Epoch, known)
	}
	s.node.PrimaryArrived()

	me, extents, offered, err := s.agree(c, h, hist)
	if err != nil {
		return err
	}
	if s.node.FullCopyOfCode() {
		me.Flags |= wire.HelloFullCopy
	}
	if err := w.WriteMsg(me); err != nil {
		return err
	}
	if extents != nil {
		if err := w.WriteMsg(extents); err != nil {
			return err
		}
	}
	if offered != nil {
		if err := w.WriteMsg(offered.wire()); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	_ = c.SetDeadline(time.Time{})
	s.primaryName.Store(h.From)
	s.connected.Store(true)
	s.journaled.Store(s.store.LastSeq())
	s.log.Info("primary connected", "primary", h.From, "epoch", h.Epoch, "last_seq", me.LastSeq, "inconsistent", me.Flags != 0)
	s.node.PrimaryConnected(h.From, fmt.Sprintf("primary of epoch %d connected", h.Epoch))

	_, source := h.Disks()
	a := &applier{s: s, w: w, epoch: h.Epoch, source: source, offered: offered}
	// A resync an earlier session began holds the acks from the start.
	a.holdJournal.Store(a.holdsJournal())
	a.flushOut() // announce what this node holds at once
	err = a.run(r)
	c.Close()
	a.syncs.Wait()
	if serr := a.waitSaved(); serr != nil {
		s.log.Warn("cannot persist the resync progress", "err", serr)
	}
	if a.copiedN > 0 {
		// A stop (or a lost primary) keeps what this session copied.
		if perr := a.saveProgress(); perr != nil {
			s.log.Warn("cannot persist the resync progress", "err", perr)
		}
	}
	return err
}

func readPrimaryHello(r *wire.Reader) (*wire.Hello, replicator.History, error) {
	m, err := r.ReadMsg()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", peerwire.ErrHandshake, err)
	}
	h, ok := m.(*wire.Hello)
	if !ok {
		return nil, nil, fmt.Errorf("%w: first message is %v", peerwire.ErrHandshake, m.Type())
	}
	hc := *h
	wh, err := peerwire.ReadAs[*wire.History](r, "History")
	if err != nil {
		return nil, nil, err
	}
	return &hc, peerwire.HistoryFromWire(wh), nil
}

// agree compares this node's journal with the primary's history
// (docs/quorum.md, "Data generations"): a node that is behind is caught up;
// one that diverged rewinds to the common point and asks for its own
// changes to be resynced too; a split brain is refused unless the policy or
// the operator allows discarding. It returns the Hello to answer and, for an
// Inconsistent node, the Extents to send after it and the progress of its
// interrupted resync it reports (nil: none, see offer).
func (s *Side) agree(c net.Conn, h *wire.Hello, pri replicator.History) (*wire.Hello, *wire.Extents, *offer, error) {
	me := &wire.Hello{Cluster: s.cfg.Cluster, From: s.cfg.Name, Role: wire.RoleSecondary, Epoch: h.Epoch}
	me.PutDisks(s.store.ID(), 0)
	if err := s.replacedDisk(h); err != nil {
		return nil, nil, nil, err
	}
	s.mu.Lock()
	rs := s.resync
	discard := s.discard
	s.mu.Unlock()
	mine := s.node.History()
	last := s.store.LastSeq()
	if rs != nil {
		last = min(last, rs.From)
	}
	d := replicator.Diverge(pri, h.LastSeq, mine, last)
	if d.Diverged && d.SplitBrain && !discard && !s.cfg.DiscardOnSplitBrain {
		s.splitBrain.Store(true)
		s.node.SplitBrain(h.From, fmt.Sprintf("diverged after seq %d", d.Common))
		s.refuse(c, fmt.Sprintf("%s: %s diverged from %s after seq %d; resolve with grbd resolve", SplitBrainReason, s.cfg.Name, h.From, d.Common))
		return nil, nil, nil, fmt.Errorf("%w: diverged from %s after seq %d", ErrSplitBrain, h.From, d.Common)
	}
	if err := s.refuseRewindOfPrimarysWrites(c, h, pri, mine, d, rs, discard); err != nil {
		return nil, nil, nil, err
	}
	// A power loss left extents that may differ from the primary's: they
	// are resynced like a divergence, and the node is Inconsistent until.
	suspects := s.store.Suspects()
	if rs != nil && rs.Progress != nil && !d.Diverged && d.Common == rs.From && len(suspects) == 0 {
		me, ex, o, err := s.offerProgress(h, pri, mine, rs)
		if err != nil || o != nil {
			return me, ex, o, err
		}
	}
	from := d.Common
	sa := s.node.ShardApplier()
	if rs == nil && !d.Diverged && len(suspects) == 0 {
		if sa != nil {
			// Writes a primary of this history logged: this one has them.
			if err := sa.ApplyAll(); err != nil {
				return nil, nil, nil, err
			}
		}
		if err := s.node.SetHistory(mine.Adopt(pri, from)); err != nil {
			return nil, nil, nil, err
		}
		me.LastSeq, me.DurableSeq = s.store.LastSeq(), s.store.DurableSeq()
		return me, nil, nil, nil
	}
	if d.Diverged {
		s.log.Warn("journal diverged from the primary's: rewinding and resyncing", "primary", h.From, "common_seq", d.Common, "last_seq", last, "split_brain", d.SplitBrain)
		s.node.Diverged(h.From, fmt.Sprintf("rewound to seq %d", d.Common))
	}
	if len(suspects) > 0 {
		s.log.Warn("an unclean stop (a power loss, or a crash that cut a large write) left regions that may differ from the primary's: resyncing them",
			"primary", h.From, "bytes", extent.Bytes(suspects))
		s.node.Inconsistent(fmt.Sprintf("an unclean stop left %d bytes in doubt: resyncing them from %s", extent.Bytes(suspects), h.From))
	}
	next, err := s.becomeInconsistent(from, rs, pri, mine, sa, suspects)
	if err != nil {
		return nil, nil, nil, err
	}
	me.LastSeq, me.DurableSeq, me.Flags = from, from, wire.HelloInconsistent
	ex := &wire.Extents{Extents: next.Extents}
	if next.All {
		ex.Flags = wire.ExtentsAll
	}
	return me, ex, nil, nil
}

// refuseRewindOfPrimarysWrites refuses the session when this node holds
// records the primary wrote itself and lacks (primaryWrote): its disk lost
// them (a power loss took its unsynced tail, or a copy taken while it was
// the primary was restored), and they include writes it acknowledged.
// Rewinding them, as a deposed primary's records are, would lose those
// writes; the primary steps down instead, and this node, which holds them,
// takes over (docs/quorum.md, "A copy taken while the node was the
// primary"). grbd resolve --discard on this node rewinds them all the same.
// An erasure-code shard or an Inconsistent node is not a copy to take over
// from, and keeps the rewind.
func (s *Side) refuseRewindOfPrimarysWrites(c net.Conn, h *wire.Hello, pri, mine replicator.History, d replicator.Divergence, rs *replicator.ResyncState, discard bool) error {
	if !d.Diverged || discard || rs != nil || s.node.ShardApplier() != nil {
		return nil
	}
	lost := mine.EpochOf(d.Common + 1)
	if !primaryWrote(h, pri, d.Common, lost) {
		return nil
	}
	last := s.store.LastSeq()
	s.log.Error("the primary lacks records it wrote itself, which this node holds: refusing to rewind them",
		"primary", h.From, "epoch", lost, "from_seq", d.Common+1, "last_seq", last)
	s.refuse(c, fmt.Sprintf("%s: %s holds records %d-%d of epoch %d, which %s wrote and lacks (a power loss, or its disk restored from a copy?); "+
		"it must step down, or discard them with grbd resolve --discard %s", AheadReason, s.cfg.Name, d.Common+1, last, lost, h.From, s.cfg.Name))
	return fmt.Errorf("%w: %s lacks records %d-%d of epoch %d", ErrAhead, h.From, d.Common+1, last, lost)
}

// primaryWrote reports whether the primary of Hello h (history pri) wrote
// the records of epoch lost after common that this node holds and it
// lacks: they are of its current epoch, past its last record, or of the
// epoch before its current one, past its entry into the current one, when
// it led that epoch too (wire.HelloReestablished).
func primaryWrote(h *wire.Hello, pri replicator.History, common, lost uint64) bool {
	if lost == h.Epoch {
		return common == h.LastSeq
	}
	n := len(pri)
	return h.Flags&wire.HelloReestablished != 0 && n >= 2 && pri[n-1].Epoch == h.Epoch &&
		common+1 == pri[n-1].FirstSeq && lost == pri[n-2].Epoch
}

// becomeInconsistent makes this node Inconsistent from seq from: it
// persists what must be resynced (rs's regions, if any, and every region
// changed after from) before the journal forgets it, rewinds the journal to
// from and adopts the primary's history there. sa is the shard applier of
// an erasure-code shard peer (nil otherwise).
func (s *Side) becomeInconsistent(from uint64, rs *replicator.ResyncState, pri, mine replicator.History, sa *ShardApply, suspects []extent.Extent) (replicator.ResyncState, error) {
	next := replicator.ResyncState{From: from}
	if rs != nil {
		next.All, next.Extents = rs.All, append(next.Extents, rs.Extents...)
	}
	next.Extents = extent.Merge(slices.Concat(next.Extents, s.store.ChangedSince(from), suspects))
	if len(next.Extents) > wire.MaxExtents/2 {
		next.All, next.Extents = true, nil
	}
	if err := s.SaveResync(&next); err != nil {
		return next, err
	}
	// The resync state now covers the suspects.
	if err := s.store.ClearSuspects(); err != nil {
		return next, err
	}
	if sa != nil {
		// Records above from are forgotten (the resync state persisted
		// above covers their regions): no rewind may wait for them.
		if err := sa.Settle(from, true); err != nil {
			return next, err
		}
	}
	if _, err := s.store.Rewind(from); err != nil {
		return next, fmt.Errorf("secondary: rewind to %d: %w", from, err)
	}
	if err := s.node.SetHistory(mine.Adopt(pri, from)); err != nil {
		return next, err
	}
	s.mu.Lock()
	s.splitBrain.Store(false)
	s.discard = false
	s.mu.Unlock()
	return next, nil
}

// markInconsistent persists "Inconsistent since LastSeq" before the first
// region copy is applied; an existing state keeps its older position.
func (s *Side) markInconsistent() error {
	s.mu.Lock()
	rs := s.resync
	s.mu.Unlock()
	if rs != nil {
		return nil
	}
	from := s.store.LastSeq()
	if err := s.SaveResync(&replicator.ResyncState{From: from}); err != nil {
		return err
	}
	s.node.SetConsistent(false)
	s.log.Info("region resync started: disk Inconsistent", "sync_from", from)
	s.node.Inconsistent(fmt.Sprintf("region resync from the primary began (from seq %d)", from))
	return nil
}

// markConsistent makes every applied write durable, then drops the
// resync state. A full copy seals its journal: its copies were written in
// place (docs/journal.md, "Writes in place"), so records from before them
// must not serve a peer's catch-up once this node can be primary.
func (s *Side) markConsistent() error {
	s.mu.Lock()
	rs := s.resync
	s.mu.Unlock()
	if rs == nil {
		return nil
	}
	if s.cfg.ErasureCoded {
		if err := s.store.Sync(s.store.LastSeq()); err != nil {
			return err
		}
	} else if err := s.store.Seal(); err != nil {
		return err
	}
	if err := s.SaveResync(nil); err != nil {
		return err
	}
	s.node.SetConsistent(s.Consistent())
	s.log.Info("region resync done: disk consistent", "seq", s.store.LastSeq())
	s.node.Consistent(fmt.Sprintf("region resync finished at seq %d", s.store.LastSeq()))
	return nil
}

// replacedDisk reports whether the primary's Hello says this node's disk is
// not the one that holds its data, and if so persists a full resync (the
// node is Inconsistent until it finished) before anything else happens.
func (s *Side) replacedDisk(h *wire.Hello) error {
	recorded, _ := h.Disks()
	mine := s.store.ID()
	if recorded == 0 || recorded == mine {
		return nil
	}
	s.mu.Lock()
	rs := s.resync
	s.mu.Unlock()
	if rs != nil && rs.All && rs.From == 0 {
		return nil // a full sync is under way already
	}
	if err := s.SaveResync(&replicator.ResyncState{From: 0, All: true}); err != nil {
		return err
	}
	s.node.SetConsistent(false)
	why := fmt.Sprintf("disk %s is not the recorded disk %s (replaced or wiped): full sync from %s", quorum.ShortDisk(mine), quorum.ShortDisk(recorded), h.From)
	s.log.Warn("disk is not the one that holds this node's data: full sync", "disk", quorum.ShortDisk(mine), "recorded", quorum.ShortDisk(recorded), "primary", h.From)
	s.node.Inconsistent(why)
	return nil
}
