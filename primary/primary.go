package primary

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/internal/peerwire"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/quorum"
	"github.com/grbd/grbd/replicator"
	"github.com/grbd/grbd/secondary"
)

// Errors callers branch on.
var (
	// ErrPeerAhead is returned when a peer's journal is past the primary's
	// in a way the divergence rules cannot resolve.
	ErrPeerAhead = errors.New("node: peer ahead of primary")
	// ErrHandshake is returned when a peer's Hello is missing or refused.
	ErrHandshake = peerwire.ErrHandshake
	// ErrPeerFailed is returned when a peer nacks a write or a flush.
	ErrPeerFailed = errors.New("node: peer failed a request")
	// ErrSplitBrain is returned when a peer's data diverged in a way that
	// only the operator may resolve.
	ErrSplitBrain = secondary.ErrSplitBrain
	// ErrBehindPeer is returned when a peer holds records this primary
	// wrote and its disk lacks (secondary.ErrAhead).
	ErrBehindPeer = secondary.ErrAhead
)

// Side is the write path of the primary of one epoch: every device
// write is journaled locally, shipped to every live peer in sequence order,
// and completes when the replication core (replicator.Primary) releases it.
//
// Counted peers: the core waits for every data node that is not Outdated in
// the control plane's state (docs/quorum.md, "Outdating"), connected or
// not. The rules (when a peer stops or starts being counted, when it is
// Outdated or Cleared) are the core's per-peer protocol, replicator/peer.go:
// this file and link.go feed it the links' events and make the Outdate and
// Clear proposals it hands back (peerctl.go).
//
// Locking, in this order: mu (write order: held across journal.Append and
// the enqueue to every peer, so peers see writes in sequence order without
// gap or duplicate), coreMu (the core and the waiters), then a link's qmu,
// then rmu; proposals.mu under coreMu. The core is only touched under
// coreMu.
type Side struct {
	cfg    Config
	node   Node
	store  *journal.Journal
	coding writeCoding // what a write becomes before it is journaled and shipped
	epoch  uint64
	log    *slog.Logger
	ctx    context.Context
	stopf  context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	ws []journal.Write // logBatch's scratch, under mu
	// clientSeq is the last record every peer gets (a client write or a
	// resize; not a resync record, which only its target gets), under mu.
	clientSeq uint64
	// flushed: every record up to here of clientSeq's kind is durable here
	// and on every counted peer (a FLUSH covered it): the watermark the
	// node records as quorum.State.Durable.
	flushed atomic.Uint64

	qmu     sync.Mutex  // guards the write queue (writebatch.go)
	queue   []*writeReq // client writes waiting for a leader
	leading bool        // a leader is logging a batch
	batch   []*writeReq // leadBatch's scratch, used by the leader only

	coreMu   sync.Mutex
	core     *replicator.Primary
	nextID   replicator.ReqID
	waiters  map[replicator.ReqID]*waiter
	err      error        // set by stop: every waiter fails with it
	state    quorum.State // last applied (the core keeps it too)
	fencedAt time.Time    // when the lease was lost (zero while serving)
	// commitSent is the last Commit sent to the shard peers (ec.go).
	commitSent uint64

	// rmu guards inflight: writes appended locally but not yet released,
	// which reads of overlapping ranges wait for (a read never returns data
	// a failover could take back).
	rmu      sync.Mutex
	inflight map[uint64]inflightWrite

	links []*link // fixed after start
	// fullCopies: some peer keeps a full copy (a mirror, not a shard), so
	// the block CRCs of a large write are worth computing for its frame.
	// Fixed after start.
	fullCopies bool

	tr        Transport
	ctl       PeerControl
	proposals proposals // the core's Outdate and Clear requests, to make

	repairMu sync.Mutex // one block repair at a time (repair.go)

	verifying atomic.Pointer[verifyState] // the running verify (verify.go)

	resume resumeCheck // a resumed role's wait for its peers (resumecheck.go)
}

type inflightWrite struct {
	off, end int64
	done     chan struct{}
}

// waiter is a request held by the core; done closes when it is released
// (err nil) or failed (err set).
type waiter struct {
	done chan struct{}
	err  error
}

// New is the primary of the epoch st names, for node; ctx bounds its
// goroutines. Add its peers, then Start it.
func New(ctx context.Context, cfg Config, node Node, st quorum.State) *Side {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.CongestionFill <= 0 {
		cfg.CongestionFill = defaultCongestionFill
	}
	if cfg.FlushTimeout <= 0 {
		cfg.FlushTimeout = defaultFlushTimeout
	}
	p := &Side{
		cfg: cfg, node: node, store: cfg.Store, epoch: st.Epoch, log: cfg.Log.With("epoch", st.Epoch), state: st,
		core:     replicator.NewPrimary(cfg.Protocol),
		waiters:  map[replicator.ReqID]*waiter{},
		inflight: map[uint64]inflightWrite{},
		tr:       cfg.Transport, ctl: cfg.Control, proposals: newProposals(),
	}
	p.coding = mirrorCoding{}
	if cfg.Coder != nil {
		p.coding = ecCoding{cfg.Coder}
	}
	p.ctx, p.stopf = context.WithCancel(ctx)
	return p
}

// AddPeer registers the data node name, which keeps erasure-code shard
// shard (-1: a full copy); call before Start.
func (p *Side) AddPeer(name string, shard int) {
	l := newLink(p, name)
	if shard >= 0 {
		l.shard, l.layout = shard, shardLayout{l: l, shard: shard}
	} else {
		p.fullCopies = true
	}
	p.links = append(p.links, l)
}

// Epoch is the epoch this primary serves.
func (p *Side) Epoch() uint64 { return p.epoch }

// Kick ends the data session with peer ("*": every peer) and waits, at
// most kickWait, until it ended: a write issued after Kick returns is not
// acknowledged by that session. The link reconnects as after any lost
// session, unless the node reports the peer Disconnected (set before Kick).
func (p *Side) Kick(peer string) {
	var kicked []*link
	for _, l := range p.links {
		if peer == "*" || l.name == peer {
			l.kickSession()
			kicked = append(kicked, l)
		}
	}
	deadline := time.Now().Add(kickWait)
	for _, l := range kicked {
		for l.conn.Load() == ConnConnected && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
}

// kickWait bounds Kick's wait for the sessions it ended.
const kickWait = 5 * time.Second

// Start counts every peer that is not Outdated (it may hold every write so
// far, and must get every write from now on before one completes) and
// starts the links.
func (p *Side) Start() {
	names := make([]string, len(p.links))
	for i, l := range p.links {
		names[i] = l.name
	}
	p.coreMu.Lock()
	p.core.Begin(p.state, names)
	p.resume.begin(p.cfg.Resumed && p.cfg.Coder == nil, p.state, names, p.cfg.PeerTimeout)
	p.coreMu.Unlock()
	p.wg.Go(p.runProposals)
	for _, l := range p.links {
		p.wg.Go(func() { l.run(p.ctx) })
	}
	p.wg.Go(p.retainLoop)
	p.wg.Go(p.watchdog)
	if sus := p.store.Suspects(); len(sus) > 0 {
		p.wg.Go(func() { p.healSuspects(sus) })
	}
}

// Stop ends the instance: links close, waiting requests fail with err.
func (p *Side) Stop(err error) {
	p.coreMu.Lock()
	p.err = err
	p.failWaitersLocked(err)
	p.coreMu.Unlock()
	p.stopf()
	p.wg.Wait()
}

func (p *Side) failWaitersLocked(err error) {
	for id, w := range p.waiters {
		w.err = err
		close(w.done)
		delete(p.waiters, id)
	}
}

// OnServing learns whether the lease is held. Without it, requests the core
// holds fail with ErrFenced: at once with on-no-quorum: io-error, after
// suspend-timeout with suspend-io unless the lease comes back first.
func (p *Side) OnServing(serving bool) {
	p.coreMu.Lock()
	defer p.coreMu.Unlock()
	if serving {
		p.fencedAt = time.Time{}
		return
	}
	if !p.fencedAt.IsZero() {
		return
	}
	p.fencedAt = time.Now()
	if !p.cfg.SuspendOnNoQuorum {
		p.failWaitersLocked(ErrFenced)
		return
	}
	at := p.fencedAt
	time.AfterFunc(p.cfg.SuspendTimeout, func() {
		p.coreMu.Lock()
		defer p.coreMu.Unlock()
		if p.fencedAt.Equal(at) {
			p.failWaitersLocked(ErrFenced)
		}
	})
}

// failed is the error a released request returns: nil unless stopped.
func (p *Side) failed() error {
	p.coreMu.Lock()
	defer p.coreMu.Unlock()
	return p.err
}

// rewriteOwn writes the primary's current bytes of [off, off+len(buf))
// again, read and logged under the write lock so that no client write can
// come between (verify --resync).
func (p *Side) rewriteOwn(buf []byte, off int64) error {
	p.mu.Lock()
	for {
		err := p.store.ReadAt(buf, off)
		if err == nil {
			break
		}
		p.mu.Unlock()
		var ce *journal.ChecksumError
		if !errors.As(err, &ce) {
			return err
		}
		if err := p.repair(ce.Blocks); err != nil {
			return err
		}
		p.mu.Lock()
	}
	r := &writeReq{w: journal.Write{Epoch: p.epoch, Offset: off, Data: buf}}
	p.logBatch([]*writeReq{r})
	p.mu.Unlock()
	return p.complete(r)
}

// ReadBarrier waits until every write overlapping [off, off+n) that was
// appended before the call has completed.
func (p *Side) ReadBarrier(off, n int64) error {
	var wait []chan struct{}
	p.rmu.Lock()
	for _, w := range p.inflight {
		if w.off < off+n && off < w.end {
			wait = append(wait, w.done)
		}
	}
	p.rmu.Unlock()
	for _, ch := range wait {
		<-ch
	}
	return p.failed()
}

// Flush makes every write up to seq (0: everything so far) durable locally and
// on every counted peer.
func (p *Side) Flush(seq uint64) error {
	p.mu.Lock()
	if seq == 0 {
		seq = p.store.LastSeq()
	}
	covered := min(p.clientSeq, seq)
	var id replicator.ReqID
	wt := p.submit(func(rid replicator.ReqID) error {
		id = rid
		p.core.Flush(rid, seq)
		// Every live counted peer (extra FlushAcks are harmless Durable
		// acks). A peer the core waits for without a live session is sent
		// the flush when its session goes live (startLiveLocked).
		for _, l := range p.links {
			if pr, _ := p.core.Peer(l.name); pr.Counted && l.live.Load() {
				l.enqueue(&wire.Flush{ID: uint64(rid), Seq: seq})
			}
		}
		return nil
	})
	p.mu.Unlock()
	if err := p.store.Sync(seq); err != nil {
		p.coreMu.Lock()
		delete(p.waiters, id)
		p.coreMu.Unlock()
		return err
	}
	p.coreMu.Lock()
	p.core.LocalSynced(seq)
	p.releaseLocked()
	p.coreMu.Unlock()
	<-wt.done
	if wt.err == nil {
		p.raiseFlushed(covered)
	}
	return wt.err
}

// raiseFlushed moves the durable watermark up to seq (flushes complete in
// any order).
func (p *Side) raiseFlushed(seq uint64) {
	for {
		old := p.flushed.Load()
		if seq <= old || p.flushed.CompareAndSwap(old, seq) {
			return
		}
	}
}

// Flushed is the durable watermark: every write and resize up to it is
// durable on this node and on every counted peer (docs/quorum.md, "Writes
// recorded as flushed").
func (p *Side) Flushed() uint64 { return p.flushed.Load() }

// submit registers a waiter and feeds the core through fn, under coreMu.
// Caller holds mu. The waiter is done when the core releases it (or stop or
// fencing fails it).
func (p *Side) submit(fn func(replicator.ReqID) error) *waiter {
	p.coreMu.Lock()
	defer p.coreMu.Unlock()
	p.nextID++
	id := p.nextID
	wt := &waiter{done: make(chan struct{})}
	if p.err != nil {
		wt.err = p.err
		close(wt.done)
		return wt
	}
	p.waiters[id] = wt
	if err := fn(id); err != nil {
		// Only ErrSeqOrder, impossible under mu: a broken invariant.
		panic(fmt.Sprintf("node: replication core: %v", err))
	}
	p.releaseLocked()
	return wt
}

// releaseLocked completes what the core released and passes on the
// proposals it asks for. Caller holds coreMu.
func (p *Side) releaseLocked() {
	rd := p.core.Ready()
	for _, id := range rd.Released {
		if wt, ok := p.waiters[id]; ok {
			close(wt.done)
			delete(p.waiters, id)
		}
	}
	p.ecCommitLocked()
	p.proposals.add(rd.Requests)
}

// OnState applies the control plane's state: a peer whose Outdate was
// applied stops being counted unless it caught up since; a caught-up peer
// that needs a Clear gets one (replicator.Primary.ApplyState).
func (p *Side) OnState(st quorum.State) {
	p.coreMu.Lock()
	defer p.coreMu.Unlock()
	p.state = st
	p.resume.outdated(st)
	for _, name := range p.core.ApplyState(st) {
		p.log.Info("peer Outdated: no longer waited for", "peer", name)
	}
	p.releaseLocked()
}

// recordedDisk is the disk the applied state records for peer (0: none).
func (p *Side) recordedDisk(peer string) uint64 {
	p.coreMu.Lock()
	defer p.coreMu.Unlock()
	return p.state.Disks[peer]
}

// peerLost is called when a link's session ends, the peer cannot be
// reached, or it cannot acknowledge live writes for a while (a resync): a
// counted peer keeps holding writes back until an Outdate above its last
// Clear is applied, and its Outdate is proposed (replicator.Primary.PeerLost).
func (p *Side) peerLost(l *link) {
	p.coreMu.Lock()
	if p.resume.holdOutdate(l.name, time.Now()) {
		p.coreMu.Unlock()
		return // the link retries, and calls again
	}
	_ = p.core.PeerLost(l.name)
	p.releaseLocked()
	p.coreMu.Unlock()
}

// retainLoop pins the journal records peers still need.
func (p *Side) retainLoop() {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		floor := p.store.LastSeq()
		for _, l := range p.links {
			floor = min(floor, l.known.Load())
		}
		p.store.Retain(floor)
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchdog disconnects a counted peer that stalls the writes waiting for
// it: one that acknowledged nothing for replication.peer-timeout while it
// owes a write (a paused or wedged peer, a silent link), or one that
// completed no flush for replication.flush-timeout while a flush waits for
// it (its disk hangs: writes still reach its page cache and are
// acknowledged, syncs never return). Its member session is dropped, which
// ends every stream to it at once; it is then Outdated and writes go on.
//
// Each wait is measured from the later of the peer's last answer and the
// first tick that saw it owe one: after an idle spell its last ack is old,
// and a write or flush in flight for a moment must not look like a dead
// peer.
func (p *Side) watchdog() {
	t := time.NewTicker(max(p.cfg.PeerTimeout/10, 10*time.Millisecond))
	defer t.Stop()
	owing := make(map[*link]time.Time)    // first tick that saw the peer owe a write
	flushing := make(map[*link]time.Time) // first tick that saw a flush wait for it
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for _, l := range p.links {
			sent := l.sentSeq.Load()
			owesWrite := l.live.Load() && l.acked.Load() < sent
			if overdue(owing, l, owesWrite, l.lastAck(), now, p.cfg.PeerTimeout) {
				l.log.Warn("peer acknowledged nothing within the peer timeout: disconnecting it", "timeout", p.cfg.PeerTimeout, "acked", l.acked.Load(), "sent", sent)
				p.dropPeer(l, "acknowledged nothing within the peer timeout")
				continue
			}
			p.coreMu.Lock()
			flush := p.core.FlushWaitingOn(l.name)
			p.coreMu.Unlock()
			if overdue(flushing, l, flush > 0, l.lastDurable(), now, p.cfg.FlushTimeout) {
				l.log.Warn("peer completed no flush within the flush timeout (its disk may hang): disconnecting it", "timeout", p.cfg.FlushTimeout, "flush_seq", flush)
				p.dropPeer(l, "completed no flush within the flush timeout")
			}
		}
	}
}

// overdue tracks one wait of l in since (the first tick that saw it):
// true, and forgotten, once it lasted longer than timeout from the later of
// that tick and last, the peer's last answer of that kind.
func overdue(since map[*link]time.Time, l *link, waiting bool, last, now time.Time, timeout time.Duration) bool {
	if !waiting {
		delete(since, l)
		return false
	}
	from, ok := since[l]
	if !ok {
		from = now
		since[l] = now
	}
	if last.After(from) {
		from = last
	}
	if now.Sub(from) <= timeout {
		return false
	}
	delete(since, l)
	return true
}

// dropPeer ends l's session and its whole member session.
func (p *Side) dropPeer(l *link, why string) {
	l.kickSession()
	p.tr.Drop(l.name, why)
}

// PeerStatuses reports every link.
func (p *Side) PeerStatuses() []PeerStatus {
	out := make([]PeerStatus, 0, len(p.links))
	for _, l := range p.links {
		out = append(out, l.status())
	}
	return out
}
