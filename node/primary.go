package node

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
)

// Errors callers branch on.
var (
	// ErrReadOnly is returned by a secondary's device for any write; the NBD
	// server refuses writes to a read-only export before they reach it.
	ErrReadOnly = errors.New("node: secondary is read-only")
	// ErrPeerAhead is returned when a peer's journal is past the primary's:
	// the histories diverged and only a full sync (not yet built) can help.
	ErrPeerAhead = errors.New("node: peer ahead of primary")
	// ErrHandshake is returned when a peer's Hello is missing or refused.
	ErrHandshake = errors.New("node: handshake refused")
	// ErrPeerFailed is returned when a peer nacks a write or a flush.
	ErrPeerFailed = errors.New("node: peer failed a request")
)

// primary is the write path of the primary: every device write is journaled
// locally, shipped to every live peer in sequence order, and completes when the
// replication core (replicator.Primary) releases it.
//
// Locking, in this order: mu (write order: held across journal.Append and the
// enqueue to every peer, so peers see writes in sequence order without gap or
// duplicate), coreMu (the core, the waiters and each link's upToDate), then a
// link's qmu. The core is only touched under coreMu.
type primary struct {
	store *journal.Journal
	epoch uint64
	log   *slog.Logger

	mu sync.Mutex

	coreMu  sync.Mutex
	core    *replicator.Primary
	nextID  replicator.ReqID
	waiters map[replicator.ReqID]chan struct{}

	links []*link // fixed after newPrimary
}

func newPrimary(store *journal.Journal, proto replicator.Protocol, epoch uint64, log *slog.Logger) *primary {
	return &primary{
		store: store, epoch: epoch, log: log,
		core:    replicator.NewPrimary(proto),
		waiters: map[replicator.ReqID]chan struct{}{},
	}
}

// addLink registers a peer; call before any write.
func (p *primary) addLink(l *link) {
	p.links = append(p.links, l)
	p.coreMu.Lock()
	p.core.AddPeer(l.name)
	p.coreMu.Unlock()
}

// write journals w, ships it to every live peer and waits until the protocol
// lets it complete; with fua it then waits for a flush covering it.
func (p *primary) write(w journal.Write, fua bool) error {
	p.mu.Lock()
	seq, err := p.store.Append(w)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	w.Seq = seq
	var msg wire.Message
	for _, l := range p.links {
		if !l.live {
			continue
		}
		if msg == nil {
			msg = wireWrite(w, p.epoch, fua)
		}
		l.enqueueLive(msg)
	}
	ch := p.submit(func(id replicator.ReqID) error { return p.core.Write(id, seq) })
	p.mu.Unlock()
	if !plantedEarlyAck { // the fault suite's planted bug: see plantedbug_on.go
		<-ch
	}
	if fua {
		return p.flush(seq)
	}
	return nil
}

// wireWrite converts a journal record to its wire message, copying the data:
// the caller's buffer is not retained. The message is shared, read-only, by
// every peer queue.
func wireWrite(w journal.Write, epoch uint64, fua bool) wire.Message {
	if w.ZeroLength > 0 {
		return &wire.Zero{Seq: w.Seq, Epoch: epoch, Offset: uint64(w.Offset), Length: uint64(w.ZeroLength), FUA: fua}
	}
	return &wire.Write{Seq: w.Seq, Epoch: epoch, Offset: uint64(w.Offset), FUA: fua, Data: append([]byte(nil), w.Data...)}
}

// flush makes every write up to seq (0: everything so far) durable locally and
// on every UpToDate peer.
func (p *primary) flush(seq uint64) error {
	p.mu.Lock()
	if seq == 0 {
		seq = p.store.LastSeq()
	}
	var id replicator.ReqID
	ch := p.submit(func(rid replicator.ReqID) error {
		id = rid
		p.core.Flush(rid, seq)
		// A superset of the peers the core waits for: extra FlushAcks are
		// harmless Durable acks.
		for _, l := range p.links {
			if l.upToDate {
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
	<-ch
	return nil
}

// submit registers a waiter and feeds the core through fn, under coreMu.
// Caller holds mu. The returned channel closes when the core releases it.
func (p *primary) submit(fn func(replicator.ReqID) error) chan struct{} {
	p.coreMu.Lock()
	defer p.coreMu.Unlock()
	p.nextID++
	id := p.nextID
	ch := make(chan struct{})
	p.waiters[id] = ch
	if err := fn(id); err != nil {
		// Only ErrSeqOrder, impossible under mu: a broken invariant.
		panic(fmt.Sprintf("node: replication core: %v", err))
	}
	p.releaseLocked()
	return ch
}

// releaseLocked completes what the core released. Caller holds coreMu.
func (p *primary) releaseLocked() {
	for _, id := range p.core.Ready() {
		if ch, ok := p.waiters[id]; ok {
			close(ch)
			delete(p.waiters, id)
		}
	}
}

// retainLoop pins the journal records peers still need, until stop closes.
func (p *primary) retainLoop(stop <-chan struct{}) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		floor := p.store.LastSeq()
		for _, l := range p.links {
			floor = min(floor, l.known.Load())
		}
		p.store.Retain(floor)
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// peerStatuses reports every link.
func (p *primary) peerStatuses() []PeerStatus {
	last := p.store.LastSeq()
	out := make([]PeerStatus, 0, len(p.links))
	for _, l := range p.links {
		out = append(out, l.status(last))
	}
	return out
}
