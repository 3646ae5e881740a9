// Package replicator decides when the primary may acknowledge a client write,
// given what its peers have acknowledged (DRBD protocols A, B and C), and
// tracks which peers count for that decision.
//
// The core (Primary) is a deterministic state machine in the style of
// etcd-io/raft: it is fed events (a write appended locally, a peer ack, a peer
// connecting, going live or lost, the control plane's applied state, a flush)
// and hands back, through Ready, the client requests that may now complete
// and the Outdate and Clear proposals the per-peer rules (peer.go) ask the
// control plane for. It has no goroutines, clocks or sockets and is not safe
// for concurrent use: its driver serialises calls.
package replicator

import (
	"errors"
	"fmt"
	"slices"
)

// Errors callers branch on.
var (
	// ErrUnknownPeer is returned for events about a peer never added.
	ErrUnknownPeer = errors.New("replicator: unknown peer")
	// ErrSeqOrder is returned when writes are not fed in increasing sequence.
	ErrSeqOrder = errors.New("replicator: write sequence not increasing")
)

// Protocol is the replication protocol, as in DRBD.
type Protocol uint8

// Protocols.
const (
	ProtocolA Protocol = 'A' // complete after the local journal
	ProtocolB Protocol = 'B' // ... and every UpToDate peer received it
	ProtocolC Protocol = 'C' // ... and every UpToDate peer journaled it
)

// ParseProtocol maps "A", "B", "C" to a Protocol.
func ParseProtocol(s string) (Protocol, error) {
	switch s {
	case "A", "B", "C":
		return Protocol(s[0]), nil
	}
	return 0, fmt.Errorf("replicator: protocol %q: want A, B or C", s)
}

// Level is how far a peer has taken a write. Acks are cumulative: a peer
// acking (S, L) has every write up to S at level L or better.
type Level uint8

// Levels, in increasing order.
const (
	Received  Level = 1 // in the peer's memory
	Journaled Level = 2 // appended to the peer's journal and applied
	Durable   Level = 3 // synced on the peer
)

// required is the ack level a protocol waits for (0: none).
func (p Protocol) required() Level {
	switch p {
	case ProtocolB:
		return Received
	case ProtocolC:
		return Journaled
	}
	return 0
}

// ReqID names a client request in the driver.
type ReqID uint64

type peer struct {
	upToDate bool      // counts for acknowledgement
	acked    [4]uint64 // highest seq acked per level
}

type pendingFlush struct {
	id      ReqID
	seq     uint64
	waiting map[string]bool // UpToDate peers that still owe a durable ack
	local   bool            // the local journal has synced to seq
}

// Primary is the acknowledgement state machine of the primary.
type Primary struct {
	proto   Protocol
	peers   map[string]*peer
	lastSeq uint64
	writes  []write // waiting for peers, increasing seq
	flushes []*pendingFlush
	ready   []ReqID

	// The per-peer protocol (peer.go).
	state    ControlState // last applied; nil before Begin
	trackers map[string]*Peer
	order    []*Peer // Begin order: requests come out in a stable order
	requests []Request
}

type write struct {
	id  ReqID
	seq uint64
}

// NewPrimary returns a state machine with no peers.
func NewPrimary(p Protocol) *Primary {
	return &Primary{proto: p, peers: map[string]*peer{}, trackers: map[string]*Peer{}}
}

// AddPeer registers a peer; it counts for acknowledgement once SetUpToDate.
// A driver that runs the per-peer protocol uses Begin and the Peer*
// transitions instead, which call AddPeer and SetUpToDate.
func (p *Primary) AddPeer(name string) {
	if _, ok := p.peers[name]; !ok {
		p.peers[name] = &peer{}
	}
}

// SetUpToDate says whether a peer counts: true when it is connected and has
// every write (resync finished); false when it disconnects or falls behind.
// A peer that stops counting no longer holds back writes or flushes.
func (p *Primary) SetUpToDate(name string, ok bool, ackedSeq uint64) error {
	pr, found := p.peers[name]
	if !found {
		return fmt.Errorf("%w: %s", ErrUnknownPeer, name)
	}
	pr.upToDate = ok
	if ok {
		// A peer joining has, by definition of UpToDate, every write so far.
		for l := range pr.acked {
			pr.acked[l] = max(pr.acked[l], ackedSeq)
		}
	} else {
		for _, f := range p.flushes {
			delete(f.waiting, name)
		}
	}
	p.advance()
	return nil
}

// Write records that the client write id was appended locally as seq and now
// waits for the peers the protocol requires.
func (p *Primary) Write(id ReqID, seq uint64) error {
	if seq <= p.lastSeq {
		return fmt.Errorf("%w: %d after %d", ErrSeqOrder, seq, p.lastSeq)
	}
	p.lastSeq = seq
	p.writes = append(p.writes, write{id, seq})
	p.advance()
	return nil
}

// Ack records a peer's cumulative acknowledgement.
func (p *Primary) Ack(name string, seq uint64, l Level) error {
	pr, ok := p.peers[name]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownPeer, name)
	}
	for lv := Received; lv <= l && int(lv) < len(pr.acked); lv++ {
		pr.acked[lv] = max(pr.acked[lv], seq)
	}
	if l >= Durable {
		for _, f := range p.flushes {
			if seq >= f.seq {
				delete(f.waiting, name)
			}
		}
	}
	p.advance()
	return nil
}

// Flush starts a flush covering every write up to seq; it completes after
// LocalSynced(seq) and a Durable ack from each peer UpToDate now.
func (p *Primary) Flush(id ReqID, seq uint64) {
	f := &pendingFlush{id: id, seq: seq, waiting: map[string]bool{}}
	for name, pr := range p.peers {
		if pr.upToDate && pr.acked[Durable] < seq {
			f.waiting[name] = true
		}
	}
	p.flushes = append(p.flushes, f)
	p.advance()
}

// FlushWaitingOn is the highest sequence of the flushes that wait for a
// Durable ack from peer name, 0 if none does. A flush waits for every peer
// UpToDate when it starts, also one whose session just ended and that is
// not Outdated yet; a driver that sends the flush only to live peers must
// send it to that peer again when it is live, or the flush waits forever.
func (p *Primary) FlushWaitingOn(name string) uint64 {
	var seq uint64
	for _, f := range p.flushes {
		if f.waiting[name] {
			seq = max(seq, f.seq)
		}
	}
	return seq
}

// LocalSynced records that the local journal is durable up to seq.
func (p *Primary) LocalSynced(seq uint64) {
	for _, f := range p.flushes {
		if seq >= f.seq {
			f.local = true
		}
	}
	p.advance()
}

// Committed is the highest sequence every counted peer has at the level the
// protocol requires (the local append is implied).
func (p *Primary) Committed() uint64 {
	c := p.lastSeq
	need := p.proto.required()
	if need == 0 {
		return c
	}
	for _, pr := range p.peers {
		if pr.upToDate {
			c = min(c, pr.acked[need])
		}
	}
	return c
}

// Ready returns and clears the client requests that may complete now and
// the control-plane proposals due.
func (p *Primary) Ready() Ready {
	r := Ready{Released: p.ready, Requests: p.requests}
	p.ready, p.requests = nil, nil
	return r
}

// Pending is the number of writes and flushes still waiting.
func (p *Primary) Pending() int { return len(p.writes) + len(p.flushes) }

func (p *Primary) advance() {
	c := p.Committed()
	n := 0
	for n < len(p.writes) && p.writes[n].seq <= c {
		p.ready = append(p.ready, p.writes[n].id)
		n++
	}
	p.writes = p.writes[n:]
	p.flushes = slices.DeleteFunc(p.flushes, func(f *pendingFlush) bool {
		if f.local && len(f.waiting) == 0 {
			p.ready = append(p.ready, f.id)
			return true
		}
		return false
	})
}
