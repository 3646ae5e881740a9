// Package secondary is the peer side of replication: it accepts a
// primary's data stream, agrees with it on where the two journals part
// (catch-up, rewind and resync, split brain), journals and applies its
// writes in sequence order, acknowledges them, and persists the progress of
// a region resync so that an interrupted one resumes
// (docs/replication.md).
//
// The node that runs it is behind the Node interface: the control plane,
// the event log, the disk's health and erasure coding stay there.
package secondary

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
)

// Errors callers branch on.
var (
	// ErrSplitBrain is returned when the primary's data diverged in a way
	// that only the operator may resolve.
	ErrSplitBrain = errors.New("node: split brain")
	// ErrStaleEpoch is returned by Fence for an epoch older than one this
	// side already follows.
	ErrStaleEpoch = errors.New("secondary: stale epoch")
	// ErrAhead is returned when this node holds records the primary wrote
	// itself and lacks: the primary's disk lost them.
	ErrAhead = errors.New("secondary: holds records the primary wrote and lost")
)

// SplitBrainReason opens the Nack reason a secondary sends when it refuses
// to discard divergent data.
const SplitBrainReason = "split brain"

// AheadReason opens the Nack reason a secondary sends when it refuses to
// rewind records the primary wrote itself and lacks.
const AheadReason = "ahead of the primary"

// Config is what a Side is built from.
type Config struct {
	Cluster, Name string
	Protocol      replicator.Protocol
	// DiscardOnSplitBrain: the after-split-brain policy discards this
	// node's divergent data (discard-secondary).
	DiscardOnSplitBrain bool
	// ErasureCoded: the resource is erasure-coded (no resync resume).
	ErasureCoded     bool
	HandshakeTimeout time.Duration
	Store            *journal.Journal
	Meta             Meta
	Log              *slog.Logger // default: discard
	// ForgedOffer, tests only: when it returns a progress, the side offers
	// it without checking it, so that the primary's checks are tested
	// alone.
	ForgedOffer func() *replicator.ResyncProgress
}

// Meta persists the resync state (internal/sidecar).
type Meta interface {
	Resync() (*replicator.ResyncState, error)
	SaveResync(rs *replicator.ResyncState) error
}

// Node is what the side needs of the node that runs it.
type Node interface {
	// Disconnected: the operator disconnected peer (grbd disconnect).
	Disconnected(peer string) bool
	// DiskFailure is the error that failed the disk, nil while healthy;
	// CheckDisk fails the disk if err says the disk is sick and returns err.
	DiskFailure() error
	CheckDisk(op string, err error) error
	// SetConsistent tells the control plane whether this node may be
	// promoted.
	SetConsistent(ok bool)
	History() replicator.History
	SetHistory(h replicator.History) error
	// AppliedEpoch is the newest epoch the control plane applied. The side
	// learns it from SetEpoch too, but later (the node's reconcile runs on
	// its own goroutine): a member that just joined from a snapshot must
	// not take a deposed primary's stream in between.
	AppliedEpoch() uint64
	// PrimaryArrived: a primary's Hello passed the first checks.
	PrimaryArrived()
	// PrimaryConnected and PrimaryLost report the data path from peer.
	PrimaryConnected(peer, cause string)
	PrimaryLost(peer, cause string)
	// SplitBrain, Diverged, Inconsistent, Consistent, Grown and Shrunk
	// report what happened to the data (events).
	SplitBrain(peer, detail string)
	Diverged(peer, detail string)
	Inconsistent(cause string)
	Consistent(cause string)
	Grown(cause string)
	Shrunk(cause string)
	// FullCopyOfCode: this node keeps a full copy of an erasure-coded
	// resource (its Hello says so).
	FullCopyOfCode() bool
	// ShardApplier is the deferred apply of an erasure-code shard peer,
	// nil on any other node.
	ShardApplier() *ShardApply
}

// State is the side's view of its data and its primary.
type State struct {
	Primary      string // the last primary that connected ("": none)
	Connected    bool   // a primary's session runs
	CaughtUp     bool   // it got ResyncDone in this session
	Inconsistent bool   // a resync is unfinished
	SplitBrain   bool   // a primary's data diverged: the operator decides
	Journaled    uint64 // the last record journaled from the primary
}

// Side is the peer side: it accepts the primary's data stream, applies its
// writes in sequence order to the local journal and acknowledges them.
//
// One session at a time: a new stream closes the previous session and waits
// (sessMu) until its applier stopped, so the LastSeq in the new Hello is
// final. While the node is primary, streams are refused. Status fields are
// atomics.
type Side struct {
	cfg   Config
	node  Node
	store *journal.Journal
	log   *slog.Logger

	mu       sync.Mutex          // guards sessions, blocked, invalidating, closed, resync, discard
	sessions map[net.Conn]uint64 // stream -> epoch of its primary
	blocked  bool                // the node is primary: refuse streams
	// invalidating counts Invalidate calls under way: streams are refused.
	invalidating int
	closed       bool // Close began: no new handler is counted in (wg)
	resync       *replicator.ResyncState
	discard      bool       // grbd resolve: discard divergent data at the next connect
	sessMu       sync.Mutex // held by the running session
	wg           sync.WaitGroup

	epoch       atomic.Uint64 // newest epoch known
	caughtUp    atomic.Bool   // got ResyncDone in the current session
	connected   atomic.Bool
	splitBrain  atomic.Bool
	primaryName atomic.Value // string
	journaled   atomic.Uint64
}

// New is the side of node, with the resync state Meta holds (a disk that
// is Inconsistent stays so).
func New(cfg Config, node Node) (*Side, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Side{cfg: cfg, node: node, store: cfg.Store, log: cfg.Log, sessions: map[net.Conn]uint64{}}
	s.primaryName.Store("")
	// The resync state records that the disk is Inconsistent: written
	// and synced before the first region copy is applied or the journal
	// is rewound, removed after the primary's ResyncDone.
	rs, err := cfg.Meta.Resync()
	if err != nil {
		return nil, fmt.Errorf("secondary: %w", err)
	}
	if rs != nil {
		s.resync = rs
		s.log.Warn("disk is Inconsistent: interrupted resync", "sync_from", rs.From, "extents", len(rs.Extents), "all", rs.All)
	}
	return s, nil
}

// raiseEpoch makes epoch known unless a newer one is, and returns the newest.
// Sessions, SetEpoch and Fence raise it concurrently; a plain load and store
// could lower it again.
func (s *Side) raiseEpoch(epoch uint64) uint64 {
	for {
		known := s.epoch.Load()
		if epoch <= known {
			return known
		}
		if s.epoch.CompareAndSwap(known, epoch) {
			return epoch
		}
	}
}

// Epoch is the newest epoch this side knows.
func (s *Side) Epoch() uint64 { return s.epoch.Load() }

// State is the side's view for status.
func (s *Side) State() State {
	s.mu.Lock()
	inconsistent := s.resync != nil
	s.mu.Unlock()
	return State{Primary: s.primaryName.Load().(string), Connected: s.connected.Load(), CaughtUp: s.caughtUp.Load(),
		Inconsistent: inconsistent, SplitBrain: s.splitBrain.Load(), Journaled: s.journaled.Load()}
}

// Consistent reports whether the disk may be promoted.
func (s *Side) Consistent() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resync == nil && !s.splitBrain.Load()
}

// SetEpoch tells the secondary side the newest applied epoch and its
// primary: sessions of older epochs end, and streams are refused while
// this node is the primary.
func (s *Side) SetEpoch(epoch uint64, primary string) {
	s.raiseEpoch(epoch)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blocked = primary == s.cfg.Name
	for c, e := range s.sessions {
		// e is 0 while the session has not read its primary's Hello: it
		// checks that Hello against this epoch itself (session). Closing it
		// here ended a new primary's first stream whenever it arrived before
		// this node applied the promotion, and the primary then had this
		// node Outdated.
		if s.blocked || (e != 0 && e < epoch) {
			c.Close()
		}
	}
}

// StopSessions refuses new streams and ends the running session, waiting
// until its applier stopped.
func (s *Side) StopSessions() {
	s.mu.Lock()
	s.blocked = true
	for c := range s.sessions {
		c.Close()
	}
	s.mu.Unlock()
	s.sessMu.Lock() // the running session, if any, has finished
	s.sessMu.Unlock()
}

func (s *Side) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.StopSessions()
	s.wg.Wait()
}

// enter counts a stream's handler in, unless Close began: the mesh still
// accepts streams while the node closes, and counting one in after Close
// started waiting raced with the wait (and ran a session on a closing
// store).
func (s *Side) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// AllowDiscard makes the next connect discard divergent data (grbd resolve).
func (s *Side) AllowDiscard() {
	s.mu.Lock()
	s.discard = true
	s.mu.Unlock()
}

// DropFrom ends the session with peer ("*": any).
func (s *Side) DropFrom(peer string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeSessionsLocked(func(uint64) bool { return peer == "*" || s.primaryName.Load() == peer })
}

// closeSessionsLocked closes the streams for which end (given the epoch of
// their primary) is true; their sessions then finish on their own, which
// sessMu tells. Caller holds mu.
func (s *Side) closeSessionsLocked(end func(epoch uint64) bool) {
	for c, e := range s.sessions {
		if end(e) {
			c.Close()
		}
	}
}

// Invalidate makes the whole disk Inconsistent (grbd invalidate): a full
// resync from the next primary's session. The running session ends first,
// and no session runs while the state is saved: a session that began
// before would otherwise end it with the ResyncDone of its own catch-up
// (markConsistent), and the node was UpToDate again without a copy.
func (s *Side) Invalidate() error {
	s.mu.Lock()
	s.invalidating++
	s.closeSessionsLocked(func(uint64) bool { return true })
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.invalidating--
		s.mu.Unlock()
	}()
	s.sessMu.Lock() // the running session, if any, has finished
	defer s.sessMu.Unlock()
	return s.SaveResync(&replicator.ResyncState{From: 0, All: true})
}

// SaveResync persists rs (nil: the disk is consistent again).
func (s *Side) SaveResync(rs *replicator.ResyncState) error {
	if err := s.cfg.Meta.SaveResync(rs); err != nil {
		return fmt.Errorf("secondary: %w", err)
	}
	s.mu.Lock()
	s.resync = rs
	s.mu.Unlock()
	return nil
}

// Fence makes every primary of an epoch below epoch lose its session here
// and waits until the running session ended, so the journal position
// reported next is final for that primary.
func (s *Side) Fence(epoch uint64) error {
	if known := s.epoch.Load(); epoch < known {
		return fmt.Errorf("%w: %d < %d", ErrStaleEpoch, epoch, known)
	}
	s.raiseEpoch(epoch)
	s.mu.Lock()
	s.closeSessionsLocked(func(e uint64) bool { return e < epoch })
	s.mu.Unlock()
	s.sessMu.Lock() // an old primary's session, if any, has finished
	s.sessMu.Unlock()
	return nil
}
