package node

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
)

// Deferred apply on shard peers (docs/erasure.md, "Failover"). A shard
// peer journals every piece and acknowledges it as journaled, but writes it
// to its shard image only once the primary's Commit says every counted peer
// journaled it. So after a crash of the primary the survivors' images are
// at committed positions, and a survivor's image can be brought to any
// position D between its applied position A and its journal's end L by
// applying its records up to D and dropping the rest (settle).
//
// The applied set is always a prefix of the log: A is the last applied
// seq, every logged write above it is pending. A survivor with A <= D is
// usable for a rebuild at D.
//
// Writes are applied by a goroutine of their own, not by the session's
// reader that calls journal.Log: Log may wait for journal space, for a
// checkpoint that waits for every logged write to be applied. When a Log
// has been waiting longer than forceAfter, the pending writes are applied
// even though uncommitted (the node may then be unusable for a rebuild
// until commits pass A again; never wrong: A says so).

// forceAfter: a reader blocked this long in journal.Log gets the pending
// writes applied.
const forceAfter = 50 * time.Millisecond

// shardApply is a shard peer's deferred-apply state.
type shardApply struct {
	n     *Node
	store *journal.Journal

	applyMu sync.Mutex // held while applying or dropping: log order

	mu      sync.Mutex
	pending []journal.Logged // logged, not applied, in log order
	commit  uint64
	applied atomic.Uint64 // A

	logging atomic.Int64 // unix nanos when the reader's Log began, 0: none
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

func newShardApply(n *Node) *shardApply {
	a := &shardApply{n: n, store: n.store, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	// Open's replay applied everything in the journal.
	a.applied.Store(n.store.LastSeq())
	go a.run()
	return a
}

func (a *shardApply) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Add queues logged writes (in log order, after every earlier one).
func (a *shardApply) Add(ls []journal.Logged) {
	a.mu.Lock()
	a.pending = append(a.pending, ls...)
	a.mu.Unlock()
	a.poke()
}

// SetCommit learns the primary's committed position (a test's fault hook
// may make this node ignore it).
func (a *shardApply) SetCommit(seq uint64) {
	if a.n.opts.faults.ignoresCommit(a.n.me.Name) {
		return
	}
	a.mu.Lock()
	a.commit = max(a.commit, seq)
	a.mu.Unlock()
	a.poke()
}

// BeginLog and EndLog bracket the reader's journal.Log.
func (a *shardApply) BeginLog() { a.logging.Store(time.Now().UnixNano()) }
func (a *shardApply) EndLog()   { a.logging.Store(0) }

func (a *shardApply) run() {
	defer close(a.done)
	t := time.NewTicker(forceAfter / 2)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-a.wake:
		case <-t.C:
		}
		a.mu.Lock()
		limit := a.commit
		a.mu.Unlock()
		if since := a.logging.Load(); since != 0 && time.Since(time.Unix(0, since)) > forceAfter {
			limit = math.MaxUint64
		}
		if a.n.opts.faults.appliesEagerly(a.n.me.Name) {
			limit = math.MaxUint64
		}
		if err := a.applyUpTo(limit); err != nil {
			a.n.log.Error("shard peer: apply", "err", err)
		}
	}
}

// applyUpTo applies the pending writes up to limit, in log order.
func (a *shardApply) applyUpTo(limit uint64) error {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	return a.applyLocked(limit)
}

func (a *shardApply) applyLocked(limit uint64) error {
	a.mu.Lock()
	k := 0
	for k < len(a.pending) && a.pending[k].Seq <= limit {
		k++
	}
	batch := a.pending[:k:k]
	a.pending = a.pending[k:]
	a.mu.Unlock()
	for _, l := range batch {
		if err := a.store.Apply(l); err != nil {
			return fmt.Errorf("node: apply seq %d: %w", l.Seq, err)
		}
		a.applied.Store(l.Seq)
	}
	return nil
}

// ApplyAll applies every pending write (they are part of the history the
// node goes on with, or the node is closing: replay would apply them).
func (a *shardApply) ApplyAll() error { return a.applyUpTo(math.MaxUint64) }

// Appended notes a write journaled and applied at once (Append): the
// pending list was empty (applyAll first).
func (a *shardApply) Appended(seq uint64) { a.applied.Store(max(a.applied.Load(), seq)) }

// Settle applies the pending writes up to d and drops the others. The
// caller persisted that the data file may lack the dropped ones and
// rewinds the journal to d next.
// With force it does so also when writes above d were applied already (a
// rewind before a region resync, which rewrites what they touched).
func (a *shardApply) Settle(d uint64, force bool) error {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	if A := a.applied.Load(); A > d && !force {
		return fmt.Errorf("%w: applied %d past %d", ErrShardUnusable, A, d)
	}
	if err := a.applyLocked(d); err != nil {
		return err
	}
	a.mu.Lock()
	drop := a.pending
	a.pending = nil
	a.mu.Unlock()
	for _, l := range drop {
		a.store.Drop(l)
	}
	// Every logged write up to d is applied now (none above it, unless
	// forced: the caller resyncs those regions).
	a.applied.Store(min(d, a.store.LastSeq()))
	return nil
}

// close stops the goroutine and applies what is pending.
func (a *shardApply) close() error {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	<-a.done
	return a.ApplyAll()
}

// ecCommitLocked tells the shard peers how far the core committed, when
// that advanced. Caller holds coreMu.
func (p *primary) ecCommitLocked() {
	if p.n.ec == nil {
		return
	}
	c := p.core.Committed()
	if c <= p.commitSent {
		return
	}
	p.commitSent = c
	for _, l := range p.links {
		if l.shard >= 0 && l.live.Load() {
			l.enqueue(&wire.Commit{Seq: c})
		}
	}
}

// shardApplier is the deferred-apply state while this node is a shard
// peer, nil otherwise.
func (n *Node) shardApplier() *shardApply {
	if !n.shardPeer() {
		return nil
	}
	return n.sa
}

// faultHooks inject faults into the erasure-coded write path and the
// secondary's resync offer of the nodes a test starts with them (Options.faults; nil injects none). A hook may be
// set and cleared while the nodes run.
type faultHooks struct {
	// dropPiece: the primary skips a shard peer's piece of seq (the write
	// then waits for that peer: a crash with writes in flight).
	dropPiece atomic.Pointer[func(peer string, seq uint64) bool]
	// ignoreCommit: a shard peer ignores Commit messages (its image stays
	// at an older position).
	ignoreCommit atomic.Pointer[func(node string) bool]
	// applyEagerly: a shard peer applies without waiting for Commit (its
	// image gets ahead of the committed position).
	applyEagerly atomic.Pointer[func(node string) bool]
	// forgeOffer: a secondary offers this resync progress without checking
	// it, so that the primary's checks are tested alone.
	forgeOffer atomic.Pointer[replicator.ResyncProgress]
}

func (f *faultHooks) dropsPiece(peer string, seq uint64) bool {
	if f == nil {
		return false
	}
	h := f.dropPiece.Load()
	return h != nil && (*h)(peer, seq)
}

func (f *faultHooks) ignoresCommit(node string) bool {
	return f != nil && f.holds(&f.ignoreCommit, node)
}

func (f *faultHooks) appliesEagerly(node string) bool {
	return f != nil && f.holds(&f.applyEagerly, node)
}

func (f *faultHooks) holds(hook *atomic.Pointer[func(node string) bool], node string) bool {
	h := hook.Load()
	return h != nil && (*h)(node)
}
