package node

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/mesh"
	"github.com/grbd/grbd/internal/peerwire"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
)

// splitBrainReason opens the Nack reason a secondary sends when it refuses
// to discard divergent data.
const splitBrainReason = "split brain"

// secondary is the peer side: it accepts the primary's data stream, applies
// its writes in sequence order to the local journal and acknowledges them.
//
// One session at a time: a new stream closes the previous session and waits
// (sessMu) until its applier stopped, so the LastSeq in the new Hello is
// final. While the node is primary, streams are refused. Status fields are
// atomics.
type secondary struct {
	n     *Node
	store *journal.Journal
	log   *slog.Logger

	mu       sync.Mutex          // guards sessions, blocked, resync, discardOnce
	sessions map[net.Conn]uint64 // stream -> epoch of its primary
	blocked  bool                // the node is primary: refuse streams
	resync   *replicator.ResyncState
	discard  bool       // grbd resolve: discard divergent data at the next connect
	sessMu   sync.Mutex // held by the running session
	wg       sync.WaitGroup

	epoch       atomic.Uint64 // newest epoch known
	caughtUp    atomic.Bool   // got ResyncDone in the current session
	connected   atomic.Bool
	splitBrain  atomic.Bool
	primaryName atomic.Value // string
	journaled   atomic.Uint64
}

func newSecondary(n *Node) (*secondary, error) {
	s := &secondary{n: n, store: n.store, log: n.log, sessions: map[net.Conn]uint64{}}
	s.primaryName.Store("")
	// The resync state records that the disk is Inconsistent: written
	// and synced before the first region copy is applied or the journal
	// is rewound, removed after the primary's ResyncDone.
	rs, err := n.meta.Resync()
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if rs != nil {
		s.resync = rs
		n.log.Warn("disk is Inconsistent: interrupted resync", "sync_from", rs.From, "extents", len(rs.Extents), "all", rs.All)
	}
	return s, nil
}

// consistent reports whether the disk may be promoted.
func (s *secondary) consistent() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resync == nil && !s.splitBrain.Load()
}

// setEpoch tells the secondary side the newest applied epoch and its
// primary: sessions of older epochs end, and streams are refused while
// this node is the primary.
func (s *secondary) setEpoch(epoch uint64, primary string) {
	if epoch > s.epoch.Load() {
		s.epoch.Store(epoch)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blocked = primary == s.n.me.Name
	for c, e := range s.sessions {
		if e < epoch || s.blocked {
			c.Close()
		}
	}
}

// stopSessions refuses new streams and ends the running session, waiting
// until its applier stopped.
func (s *secondary) stopSessions() {
	s.mu.Lock()
	s.blocked = true
	for c := range s.sessions {
		c.Close()
	}
	s.mu.Unlock()
	s.sessMu.Lock() // the running session, if any, has finished
	s.sessMu.Unlock()
}

func (s *secondary) close() {
	s.stopSessions()
	s.wg.Wait()
}

// allowDiscard makes the next connect discard divergent data (grbd resolve).
func (s *secondary) allowDiscard() {
	s.mu.Lock()
	s.discard = true
	s.mu.Unlock()
}

// dropFrom ends the session with peer ("*": any).
func (s *secondary) dropFrom(peer string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.sessions {
		if peer == "*" || s.primaryName.Load() == peer {
			c.Close()
		}
	}
}

// handle serves one data stream from peer.
func (s *secondary) handle(peer string, c net.Conn) {
	s.wg.Add(1)
	defer s.wg.Done()
	defer c.Close()
	if s.n.isDisconnected(peer) {
		s.refuse(c, "disconnected by the operator")
		return
	}
	if err := s.n.diskFailure(); err != nil {
		s.refuse(c, "disk failed: "+err.Error())
		return
	}
	s.mu.Lock()
	if s.blocked {
		s.mu.Unlock()
		s.refuse(c, "this node is primary")
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
	s.n.setConsistent(s.consistent())
	if err != nil {
		s.log.Warn("primary link down", "primary", peer, "err", err)
		s.n.peerState(peer, ConnDisconnected, "data stream ended: "+err.Error())
	}
}

func (s *secondary) refuse(c net.Conn, why string) {
	w := wire.NewWriter(c)
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_ = w.WriteMsg(&wire.Nack{Code: wire.NackState, Reason: why})
	_ = w.Flush()
}

// session serves one primary connection on its data stream.
func (s *secondary) session(peer string, c net.Conn) error {
	r, w := mesh.StreamReader(c), wire.NewWriter(c)
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	h, hist, err := readPrimaryHello(r)
	if err != nil {
		return err
	}
	switch {
	case h.Cluster != s.n.cfg.Cluster || h.From != peer || h.Role != wire.RolePrimary:
		s.refuse(c, "bad hello")
		return fmt.Errorf("%w: hello from %q (%q, role %d) on %q's stream", ErrHandshake, h.From, h.Cluster, h.Role, peer)
	case h.Epoch < s.epoch.Load():
		s.refuse(c, fmt.Sprintf("stale epoch %d < %d", h.Epoch, s.epoch.Load()))
		return fmt.Errorf("%w: primary %q has stale epoch %d < %d", ErrHandshake, h.From, h.Epoch, s.epoch.Load())
	}
	s.epoch.Store(max(s.epoch.Load(), h.Epoch))
	s.n.ecSettled.Store(0) // a settled position serves reads until a primary connects
	s.mu.Lock()
	if _, ok := s.sessions[c]; ok {
		s.sessions[c] = h.Epoch
	}
	s.mu.Unlock()

	me, extents, offered, err := s.agree(c, h, hist)
	if err != nil {
		return err
	}
	if s.n.ec != nil && !s.n.shardPeer() {
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
	s.n.peerState(h.From, ConnConnected, fmt.Sprintf("primary of epoch %d connected", h.Epoch))

	_, source := h.Disks()
	a := &applier{s: s, w: w, epoch: h.Epoch, source: source, offered: offered}
	a.flushOut() // announce what this node holds at once
	err = a.run(r)
	c.Close()
	a.syncs.Wait()
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
		return nil, nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	h, ok := m.(*wire.Hello)
	if !ok {
		return nil, nil, fmt.Errorf("%w: first message is %v", ErrHandshake, m.Type())
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
func (s *secondary) agree(c net.Conn, h *wire.Hello, pri replicator.History) (*wire.Hello, *wire.Extents, *offer, error) {
	me := &wire.Hello{Cluster: s.n.cfg.Cluster, From: s.n.me.Name, Role: wire.RoleSecondary, Epoch: h.Epoch}
	me.PutDisks(s.store.ID(), 0)
	if err := s.replacedDisk(h); err != nil {
		return nil, nil, nil, err
	}
	s.mu.Lock()
	rs := s.resync
	discard := s.discard
	s.mu.Unlock()
	mine := s.n.history()
	last := s.store.LastSeq()
	if rs != nil {
		last = min(last, rs.From)
	}
	d := replicator.Diverge(pri, h.LastSeq, mine, last)
	if d.Diverged && d.SplitBrain && !discard && s.n.cfg.Replication.AfterSplitBrain != config.SplitBrainDiscardSecondary {
		s.splitBrain.Store(true)
		s.n.splitBrain(h.From, fmt.Sprintf("diverged after seq %d", d.Common))
		s.refuse(c, fmt.Sprintf("%s: %s diverged from %s after seq %d; resolve with grbd resolve", splitBrainReason, s.n.me.Name, h.From, d.Common))
		return nil, nil, nil, fmt.Errorf("%w: diverged from %s after seq %d", ErrSplitBrain, h.From, d.Common)
	}
	if rs != nil && rs.Progress != nil && !d.Diverged && d.Common == rs.From {
		me, ex, o, err := s.offerProgress(h, pri, mine, rs)
		if err != nil || o != nil {
			return me, ex, o, err
		}
	}
	from := d.Common
	sa := s.n.shardApplier()
	if rs == nil && !d.Diverged {
		if sa != nil {
			// Writes a primary of this history logged: this one has them.
			if err := sa.applyAll(); err != nil {
				return nil, nil, nil, err
			}
		}
		if err := s.n.setHistory(mine.Adopt(pri, from)); err != nil {
			return nil, nil, nil, err
		}
		me.LastSeq, me.DurableSeq = s.store.LastSeq(), s.store.DurableSeq()
		return me, nil, nil, nil
	}
	if d.Diverged {
		s.log.Warn("journal diverged from the primary's: rewinding and resyncing", "primary", h.From, "common_seq", d.Common, "last_seq", last, "split_brain", d.SplitBrain)
		s.n.events.Add(Event{Type: events.TypeDiverged, Peer: h.From, Cause: "records no one acknowledged (a deposed primary's)",
			Detail: fmt.Sprintf("rewound to seq %d", d.Common)})
	}
	next, err := s.becomeInconsistent(from, rs, pri, mine, sa)
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

// becomeInconsistent makes this node Inconsistent from seq from: it
// persists what must be resynced (rs's regions, if any, and every region
// changed after from) before the journal forgets it, rewinds the journal to
// from and adopts the primary's history there. sa is the shard applier of
// an erasure-code shard peer (nil otherwise).
func (s *secondary) becomeInconsistent(from uint64, rs *replicator.ResyncState, pri, mine replicator.History, sa *shardApply) (replicator.ResyncState, error) {
	next := replicator.ResyncState{From: from}
	if rs != nil {
		next.All, next.Extents = rs.All, append(next.Extents, rs.Extents...)
	}
	next.Extents = extent.Merge(append(next.Extents, s.store.ChangedSince(from)...))
	if len(next.Extents) > wire.MaxExtents/2 {
		next.All, next.Extents = true, nil
	}
	if err := s.saveResync(&next); err != nil {
		return next, err
	}
	if sa != nil {
		// Records above from are forgotten (the resync state persisted
		// above covers their regions): no rewind may wait for them.
		if err := sa.settle(from, true); err != nil {
			return next, err
		}
	}
	if _, err := s.store.Rewind(from); err != nil {
		return next, fmt.Errorf("node: rewind to %d: %w", from, err)
	}
	if err := s.n.setHistory(mine.Adopt(pri, from)); err != nil {
		return next, err
	}
	s.mu.Lock()
	s.splitBrain.Store(false)
	s.discard = false
	s.mu.Unlock()
	return next, nil
}

// saveResync persists rs (nil: the disk is consistent again).
func (s *secondary) saveResync(rs *replicator.ResyncState) error {
	if err := s.n.meta.SaveResync(rs); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	s.mu.Lock()
	s.resync = rs
	s.mu.Unlock()
	return nil
}

// markInconsistent persists "Inconsistent since LastSeq" before the first
// region copy is applied; an existing state keeps its older position.
func (s *secondary) markInconsistent() error {
	s.mu.Lock()
	rs := s.resync
	s.mu.Unlock()
	if rs != nil {
		return nil
	}
	from := s.store.LastSeq()
	if err := s.saveResync(&replicator.ResyncState{From: from}); err != nil {
		return err
	}
	s.n.setConsistent(false)
	s.log.Info("region resync started: disk Inconsistent", "sync_from", from)
	s.n.events.Add(Event{Type: events.TypeDisk, State: DiskInconsistent, Cause: fmt.Sprintf("region resync from the primary began (from seq %d)", from)})
	return nil
}

// markConsistent makes every applied record durable, then drops the
// resync state.
func (s *secondary) markConsistent() error {
	s.mu.Lock()
	rs := s.resync
	s.mu.Unlock()
	if rs == nil {
		return nil
	}
	if err := s.store.Sync(s.store.LastSeq()); err != nil {
		return err
	}
	if err := s.saveResync(nil); err != nil {
		return err
	}
	s.n.setConsistent(s.consistent())
	s.log.Info("region resync done: disk consistent", "seq", s.store.LastSeq())
	s.n.events.Add(Event{Type: events.TypeDisk, State: DiskConsistent, Cause: fmt.Sprintf("region resync finished at seq %d", s.store.LastSeq())})
	return nil
}

// disk is the secondary's own view of its data; outdated is the control
// plane's word on it.
func (s *secondary) disk(outdated bool) string {
	s.mu.Lock()
	inconsistent := s.resync != nil
	s.mu.Unlock()
	switch {
	case s.n.diskFailure() != nil:
		return DiskFailed
	case s.splitBrain.Load():
		return DiskSplitBrain
	case inconsistent:
		return DiskInconsistent
	case outdated:
		return DiskOutdated
	case s.connected.Load() && s.caughtUp.Load():
		return DiskUpToDate
	}
	return DiskConsistent
}

func (s *secondary) peerStatuses() []PeerStatus {
	name := s.primaryName.Load().(string)
	if name == "" {
		return []PeerStatus{}
	}
	conn := ConnDisconnected
	if s.connected.Load() {
		conn = ConnConnected
	}
	return []PeerStatus{{Name: name, Connection: conn, Disk: DiskUnknown, AckedSeq: s.journaled.Load()}}
}
