package secondary

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/journal"
)

// ErrAppliedPast: a shard peer's image holds a write above the position it
// is asked to settle at.
var ErrAppliedPast = errors.New("secondary: shard image applied past the settle position")

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

// ShardApplyConfig is what a ShardApply is built from.
type ShardApplyConfig struct {
	Store *journal.Journal
	Log   *slog.Logger // default: discard
	// IgnoresCommit and AppliesEagerly, tests only (nil: never): the
	// node ignores the primary's Commit, or applies writes at once.
	IgnoresCommit, AppliesEagerly func() bool
}

// ShardApply is a shard peer's deferred-apply state.
type ShardApply struct {
	cfg   ShardApplyConfig
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

// NewShardApply starts the deferred apply of a shard peer's store.
func NewShardApply(cfg ShardApplyConfig) *ShardApply {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	a := &ShardApply{cfg: cfg, store: cfg.Store, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	// Open's replay applied everything in the journal.
	a.applied.Store(cfg.Store.LastSeq())
	go a.run()
	return a
}

func (a *ShardApply) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Add queues logged writes (in log order, after every earlier one).
func (a *ShardApply) Add(ls []journal.Logged) {
	a.mu.Lock()
	a.pending = append(a.pending, ls...)
	a.mu.Unlock()
	a.poke()
}

// SetCommit learns the primary's committed position (a test's fault hook
// may make this node ignore it).
func (a *ShardApply) SetCommit(seq uint64) {
	if a.cfg.IgnoresCommit != nil && a.cfg.IgnoresCommit() {
		return
	}
	a.mu.Lock()
	a.commit = max(a.commit, seq)
	a.mu.Unlock()
	a.poke()
}

// BeginLog and EndLog bracket the reader's journal.Log.
func (a *ShardApply) BeginLog() { a.logging.Store(time.Now().UnixNano()) }
func (a *ShardApply) EndLog()   { a.logging.Store(0) }

func (a *ShardApply) run() {
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
		if a.cfg.AppliesEagerly != nil && a.cfg.AppliesEagerly() {
			limit = math.MaxUint64
		}
		if err := a.applyUpTo(limit); err != nil {
			a.cfg.Log.Error("shard peer: apply", "err", err)
		}
	}
}

// applyUpTo applies the pending writes up to limit, in log order.
func (a *ShardApply) applyUpTo(limit uint64) error {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	return a.applyLocked(limit)
}

func (a *ShardApply) applyLocked(limit uint64) error {
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
			return fmt.Errorf("secondary: apply seq %d: %w", l.Seq, err)
		}
		a.applied.Store(l.Seq)
	}
	return nil
}

// ApplyAll applies every pending write (they are part of the history the
// node goes on with, or the node is closing: replay would apply them).
func (a *ShardApply) ApplyAll() error { return a.applyUpTo(math.MaxUint64) }

// Applied is the last applied seq (A).
func (a *ShardApply) Applied() uint64 { return a.applied.Load() }

// Appended notes a write journaled and applied at once (Append): the
// pending list was empty (ApplyAll first).
func (a *ShardApply) Appended(seq uint64) { a.applied.Store(max(a.applied.Load(), seq)) }

// Settle applies the pending writes up to d and drops the others. The
// caller persisted that the data file may lack the dropped ones and
// rewinds the journal to d next.
// With force it does so also when writes above d were applied already (a
// rewind before a region resync, which rewrites what they touched).
func (a *ShardApply) Settle(d uint64, force bool) error {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	if A := a.applied.Load(); A > d && !force {
		return fmt.Errorf("%w: applied %d past %d", ErrAppliedPast, A, d)
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

// Close stops the goroutine and applies what is pending.
func (a *ShardApply) Close() error {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	<-a.done
	return a.ApplyAll()
}
