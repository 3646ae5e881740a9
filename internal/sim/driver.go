package sim

import (
	"math"

	"github.com/grbd/grbd/quorum"
	"github.com/grbd/grbd/replicator"
)

// primaryDriver drives the real replication core and per-peer protocol
// (replicator.Primary with replicator/peer.go) with the events node's
// primary.go and link.go feed it, and makes the Outdate and Clear proposals
// it hands back on the member's control plane at once. Only the data path
// around it is a model: hellos, catch-up and live streams, peer timeouts.
type primaryDriver struct {
	m       *member
	epoch   uint64
	core    *replicator.Primary
	links   []*linkModel // config order
	pending map[replicator.ReqID]record
	nextID  replicator.ReqID
	state   quorum.State
	// proposals the core asked for, made at the next tick: the node makes
	// them on a goroutine of its own (primary.runProposals), so a peer can
	// be lost, or a state applied, between the request and its outcome.
	proposals []replicator.Request
}

type linkState uint8

const (
	linkDown linkState = iota
	linkHello
	linkLive
)

// linkModel is the data stream to one peer; the peer's replication state
// is its tracker in the core.
type linkModel struct {
	name  string
	state linkState
	since int64 // tick of the last state change or ack
}

// Timing of the model's data path, in ticks.
const (
	helloEvery  = 5
	peerTimeout = 30
)

func newPrimaryDriver(m *member, st quorum.State) *primaryDriver {
	p := &primaryDriver{m: m, epoch: st.Epoch, core: replicator.NewPrimary(m.w.cfg.Protocol), pending: map[replicator.ReqID]record{}, state: st}
	var names []string
	for _, mi := range m.w.infos {
		if !mi.Data || mi.Name == m.name {
			continue
		}
		p.links = append(p.links, &linkModel{name: mi.Name, since: m.w.now - helloEvery})
		names = append(names, mi.Name)
	}
	p.core.Begin(st, names)
	return p
}

func (p *primaryDriver) now() int64 { return p.m.w.now }

// peer is the core's tracker of l's peer.
func (p *primaryDriver) peer(l *linkModel) replicator.Peer {
	pr, _ := p.core.Peer(l.name)
	return pr
}

// submit appends a client write and ships it to live peers.
func (m *member) submit(block int, value uint64) {
	p := m.prim
	r := record{Epoch: p.epoch, Seq: m.last() + 1, Block: block, Value: value}
	m.journal = append(m.journal, r)
	p.nextID++
	p.pending[p.nextID] = r
	_ = p.core.Write(p.nextID, r.Seq)
	for _, l := range p.links {
		if l.state == linkLive {
			m.reply(l.name, &dataMsg{kind: dWrite, epoch: p.epoch, rec: r})
		}
	}
	p.release()
}

// release makes the proposals the core asks for and acknowledges what it
// released, if the lease still holds.
func (p *primaryDriver) release() {
	rd := p.core.Ready()
	p.proposals = append(p.proposals, rd.Requests...)
	for _, id := range rd.Released {
		r, ok := p.pending[id]
		if !ok {
			continue
		}
		delete(p.pending, id)
		if p.m.q.Serving() {
			p.m.w.acknowledge(p.m, r)
		} else {
			p.m.w.res.Unknown++
		}
	}
}

// propose makes the proposals asked for until now, in order.
func (p *primaryDriver) propose() {
	q := p.proposals
	p.proposals = nil
	for _, rq := range q {
		switch rq.Kind {
		case replicator.Outdate:
			p.m.q.RequestOutdate(rq.Peer)
		case replicator.Clear:
			g, ok := p.m.q.RequestClear(rq.Peer, rq.Disk)
			p.core.ClearDone(rq.Peer, g, ok)
		}
	}
	p.release()
}

func (p *primaryDriver) tick() {
	p.propose()
	for _, l := range p.links {
		switch l.state {
		case linkDown:
			if p.now()-l.since >= helloEvery {
				l.state, l.since = linkHello, p.now()
				p.m.reply(l.name, &dataMsg{kind: dHello, epoch: p.epoch, hist: p.m.hist, last: p.m.last(), disk: p.state.Disks[l.name]})
			}
		case linkHello:
			if p.now()-l.since > peerTimeout {
				p.down(l)
			}
		case linkLive:
			if p.peer(l).Acked < p.m.last() && p.now()-l.since > peerTimeout {
				p.down(l)
			}
		}
	}
}

func (p *primaryDriver) receive(from string, d *dataMsg) {
	var l *linkModel
	for _, x := range p.links {
		if x.name == from {
			l = x
		}
	}
	if l == nil {
		return
	}
	last := p.m.last()
	switch d.kind {
	case dHelloAck:
		if l.state != linkHello {
			return
		}
		// Catch-up: every record after the peer's position, then live.
		if d.last > last {
			p.down(l)
			return
		}
		for _, r := range p.m.journal[d.last:] {
			p.m.reply(l.name, &dataMsg{kind: dWrite, epoch: p.epoch, rec: r})
		}
		l.state, l.since = linkLive, p.now()
		_ = p.core.PeerConnected(l.name, d.last, d.disk)
		p.m.w.tracef("%s: link to %s live from seq %d, target %d, counted %v", p.m.name, l.name, d.last, last, p.peer(l).Counted)
		_, _ = p.core.PeerAcked(l.name, d.last, replicator.Journaled, last)
		_, _ = p.core.PeerLive(l.name, last, last)
	case dAck:
		if l.state != linkLive {
			return
		}
		l.since = p.now()
		_, _ = p.core.PeerAcked(l.name, d.seq, replicator.Journaled, last)
	case dNack:
		p.down(l)
	}
	p.release()
}

// down ends a peer's stream: a counted peer is Outdated before writes go on
// without it (unless the planted bug skips that).
func (p *primaryDriver) down(l *linkModel) {
	p.m.w.tracef("%s: link to %s down (counted %v, outdated %v)", p.m.name, l.name, p.peer(l).Counted, p.state.IsOutdated(l.name))
	l.state, l.since = linkDown, p.now()
	if p.m.w.cfg.SkipOutdate {
		// The planted bug: the primary acts as if the peer's Outdate had
		// committed.
		p.core.ApplyState(assumeOutdated{State: p.state, peer: l.name})
		_ = p.core.PeerLost(l.name)
		p.core.ApplyState(p.state)
	} else {
		_ = p.core.PeerLost(l.name)
	}
	p.release()
}

// onState applies the control plane's state.
func (p *primaryDriver) onState(st quorum.State) {
	p.state = st
	p.core.ApplyState(st)
	p.release()
}

// assumeOutdated is the state as the SkipOutdate bug sees it: peer is
// Outdated above any Clear, without an Outdate committed.
type assumeOutdated struct {
	quorum.State
	peer string
}

func (a assumeOutdated) IsOutdated(name string) bool {
	return name == a.peer || a.State.IsOutdated(name)
}

func (a assumeOutdated) GenOf(name string) uint64 {
	if name == a.peer {
		return math.MaxInt64
	}
	return a.State.GenOf(name)
}
