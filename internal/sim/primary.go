package sim

import (
	"github.com/grbd/grbd/quorum"
	"github.com/grbd/grbd/replicator"
)

// primaryModel is the model of node/primary.go and link.go: the real
// acknowledgement core, counted peers that stop being counted only once
// their Outdate is applied, catch-up and live streams per peer.
type primaryModel struct {
	m       *member
	epoch   uint64
	core    *replicator.Primary
	links   []*linkModel // config order
	pending map[replicator.ReqID]record
	nextID  replicator.ReqID
	state   quorum.State
}

type linkState uint8

const (
	linkDown linkState = iota
	linkHello
	linkLive
)

type linkModel struct {
	name      string
	state     linkState
	since     int64 // tick of the last state change or ack
	target    uint64
	counted   bool
	caughtUp  bool
	clearGen  int64  // generation of the last Clear proposed; -1 none
	clearAt   uint64 // the peer may be Cleared once it acked this: every write appended before it was counted
	acked     uint64
	everAcked bool
	disk      uint64 // the peer's disk identity, from its hello answer
}

// Timing of the model's data path, in ticks.
const (
	helloEvery  = 5
	peerTimeout = 30
)

func newPrimaryModel(m *member, st quorum.State) *primaryModel {
	p := &primaryModel{m: m, epoch: st.Epoch, core: replicator.NewPrimary(m.w.cfg.Protocol), pending: map[replicator.ReqID]record{}, state: st}
	for _, mi := range m.w.infos {
		if !mi.Data || mi.Name == m.name {
			continue
		}
		l := &linkModel{name: mi.Name, since: m.w.now - helloEvery, clearGen: -1}
		p.core.AddPeer(l.name)
		if !st.IsOutdated(l.name) {
			l.counted = true
			_ = p.core.SetUpToDate(l.name, true, 0)
		}
		p.links = append(p.links, l)
	}
	return p
}

func (p *primaryModel) now() int64 { return p.m.w.now }

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

// release acknowledges what the core released, if the lease still holds.
func (p *primaryModel) release() {
	for _, id := range p.core.Ready().Released {
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

func (p *primaryModel) tick() {
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
			if l.acked < p.m.last() && p.now()-l.since > peerTimeout {
				p.down(l)
			}
		}
	}
}

func (p *primaryModel) receive(from string, d *dataMsg) {
	var l *linkModel
	for _, x := range p.links {
		if x.name == from {
			l = x
		}
	}
	if l == nil {
		return
	}
	switch d.kind {
	case dHelloAck:
		if l.state != linkHello {
			return
		}
		// Catch-up: every record after the peer's position, then live.
		if d.last > p.m.last() {
			p.down(l)
			return
		}
		for _, r := range p.m.journal[d.last:] {
			p.m.reply(l.name, &dataMsg{kind: dWrite, epoch: p.epoch, rec: r})
		}
		l.state, l.since, l.target, l.acked, l.disk = linkLive, p.now(), p.m.last(), d.last, d.disk
		p.m.w.tracef("%s: link to %s live from seq %d, target %d, counted %v", p.m.name, l.name, d.last, l.target, l.counted)
		_ = p.core.Ack(l.name, d.last, replicator.Journaled)
		p.checkCaughtUp(l)
	case dAck:
		if l.state != linkLive {
			return
		}
		l.acked, l.since = max(l.acked, d.seq), p.now()
		_ = p.core.Ack(l.name, d.seq, replicator.Journaled)
		p.checkCaughtUp(l)
	case dNack:
		p.down(l)
	}
	p.release()
}

func (p *primaryModel) checkCaughtUp(l *linkModel) {
	if !l.caughtUp && l.acked >= l.target {
		l.caughtUp = true
		if !l.counted {
			l.counted = true
			_ = p.core.SetUpToDate(l.name, true, 0)
		}
		// Writes appended before it was counted may have been
		// acknowledged without it: it must hold them before its Clear.
		l.clearAt = p.m.last()
	}
	p.requestClear(l)
}

func (p *primaryModel) requestClear(l *linkModel) {
	if !l.caughtUp || l.acked < l.clearAt || !p.state.NeedsClear(l.name, l.disk) {
		return
	}
	if g, ok := p.m.q.RequestClear(l.name, l.disk); ok {
		l.clearGen = int64(g)
	}
}

// mayUncount: the applied state says Outdated at a generation no Clear of
// this primary can still overtake.
func (p *primaryModel) mayUncount(l *linkModel) bool {
	return p.state.IsOutdated(l.name) && int64(p.state.GenOf(l.name)) > l.clearGen
}

// down ends a peer's stream; a counted peer is Outdated before writes go on
// without it (unless the planted bug skips that).
func (p *primaryModel) down(l *linkModel) {
	p.m.w.tracef("%s: link to %s down (counted %v, outdated %v)", p.m.name, l.name, l.counted, p.state.IsOutdated(l.name))
	l.state, l.since, l.caughtUp = linkDown, p.now(), false
	if !l.counted {
		return
	}
	if p.mayUncount(l) || p.m.w.cfg.SkipOutdate {
		l.counted = false
		_ = p.core.SetUpToDate(l.name, false, 0)
		p.release()
		return
	}
	p.m.q.RequestOutdate(l.name)
}

// onState applies the control plane's Outdated set.
func (p *primaryModel) onState(st quorum.State) {
	p.state = st
	for _, l := range p.links {
		if l.counted && !l.caughtUp && p.mayUncount(l) {
			l.counted = false
			_ = p.core.SetUpToDate(l.name, false, 0)
		}
		p.requestClear(l)
	}
	p.release()
}
