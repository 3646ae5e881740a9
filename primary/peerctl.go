package primary

import (
	"context"
	"net"
	"sync"

	"github.com/grbd/grbd/replicator"
)

// PeerControl is what the primary asks of the control plane about its
// peers (internal/ctlplane.Driver; quorum.Member documents the rules).
type PeerControl interface {
	// RequestOutdate proposes that peer is Outdated above its generation.
	RequestOutdate(peer string)
	// RequestClear proposes that peer leaves Outdated with disk recorded;
	// it returns the generation the Clear names.
	RequestClear(peer string, disk uint64) (gen uint64, ok bool)
}

// Transport opens streams to a peer over its member link, and drops that
// link (internal/mesh.Mesh).
type Transport interface {
	Open(ctx context.Context, peer string, kind uint8) (net.Conn, error)
	Drop(peer, why string) bool
}

// proposals carries the core's Outdate and Clear requests from under coreMu
// to runProposals: the control plane may call back into the primary, so
// they are never made under its locks.
type proposals struct {
	mu   sync.Mutex
	q    []replicator.Request
	wake chan struct{}
}

func newProposals() proposals { return proposals{wake: make(chan struct{}, 1)} }

// add queues reqs without waiting.
func (r *proposals) add(reqs []replicator.Request) {
	if len(reqs) == 0 {
		return
	}
	r.mu.Lock()
	r.q = append(r.q, reqs...)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *proposals) take() []replicator.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.q
	r.q = nil
	return q
}

// runProposals makes the core's proposals, in the order it asked for them,
// until the instance stops; a Clear's outcome goes back to the core.
func (p *Side) runProposals() {
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.proposals.wake:
		}
		for _, rq := range p.proposals.take() {
			if p.ctx.Err() != nil {
				return
			}
			switch rq.Kind {
			case replicator.Outdate:
				p.log.Warn("peer lost: outdating it before writes go on without it", "peer", rq.Peer)
				p.ctl.RequestOutdate(rq.Peer)
			case replicator.Clear:
				g, ok := p.ctl.RequestClear(rq.Peer, rq.Disk)
				p.coreMu.Lock()
				p.core.ClearDone(rq.Peer, g, ok)
				p.releaseLocked() // it may have stopped counting a lost peer
				p.coreMu.Unlock()
			}
		}
	}
}
