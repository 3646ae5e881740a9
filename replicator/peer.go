package replicator

import "fmt"

// This file is the per-peer replication protocol of the primary, in the
// style of etcd-io/raft's tracker.Progress: which peers the core waits for,
// when a lost peer must be Outdated before writes go on without it, and
// when a peer that caught up may be Cleared (docs/quorum.md, "Outdating"
// and "Data identity"). The driver (primary/primary.go, internal/sim) feeds
// the transitions below and executes the Outdate and Clear requests that
// Ready hands back; node and the simulation run this same code.

// ControlState is what the peer rules read of the control plane's applied
// state; quorum.State satisfies it.
type ControlState interface {
	// IsOutdated reports whether the node may lack acknowledged writes.
	IsOutdated(name string) bool
	// GenOf is the node's Outdate/Clear generation.
	GenOf(name string) uint64
	// NeedsClear reports whether a caught-up peer with disk still needs a
	// Clear: it is Outdated, or disk is not recorded as its disk.
	NeedsClear(peer string, disk uint64) bool
}

// RequestKind is what a Request asks of the control plane.
type RequestKind uint8

// Request kinds.
const (
	// Outdate: propose that the peer is Outdated, above its current
	// generation. The peer stays counted until that is applied.
	Outdate RequestKind = iota + 1
	// Clear: propose that the peer leaves Outdated and that Disk is
	// recorded as its disk; report the outcome with ClearDone.
	Clear
)

func (k RequestKind) String() string {
	switch k {
	case Outdate:
		return "Outdate"
	case Clear:
		return "Clear"
	}
	return fmt.Sprintf("RequestKind(%d)", uint8(k))
}

// Request is a proposal the driver must make to the control plane, outside
// any lock the control plane may call back into.
type Request struct {
	Kind RequestKind
	Peer string
	Disk uint64 // Clear: the disk the peer reported in its Hello
}

// Ready is what the driver must act on after feeding events.
type Ready struct {
	// Released are the client requests that may complete now.
	Released []ReqID
	// Requests are the control-plane proposals to make, in order.
	Requests []Request
}

// Peer is the primary's view of one peer (a tracker, as raft's Progress).
type Peer struct {
	Name string
	// Counted: the core waits for this peer before it releases a write. A
	// peer stops being counted only once an Outdate of it above its last
	// Clear is applied, and is counted again once it caught up.
	Counted bool
	// CaughtUp: in the current session it journaled every write up to
	// Target, where it went live.
	CaughtUp bool
	// Awaiting: live, and caught up once it journaled Target.
	Awaiting bool
	Target   uint64
	// Acked is the highest sequence it journaled, as of this session (its
	// Hello position, then its acks).
	Acked uint64
	// Disk is the disk identity it reported in this session's Hello.
	Disk uint64
	// ClearAt: its Clear waits until it acked this, every write appended
	// before it was counted (some may have completed without it).
	ClearAt uint64
	// ClearGen is the generation its last Clear named (-1: none): an
	// Outdate at or below it may still be overtaken by that Clear.
	ClearGen int64
	// Clearing: a Clear was requested and ClearDone has not come back.
	Clearing bool
}

// Begin starts the peer trackers of one primary epoch with the applied
// state st: every peer that is not Outdated may hold every write so far
// and is counted (it must get every write from now on before one
// completes).
func (p *Primary) Begin(st ControlState, peers []string) {
	p.state = st
	for _, name := range peers {
		p.AddPeer(name)
		if _, ok := p.trackers[name]; ok {
			continue
		}
		pr := &Peer{Name: name, ClearGen: -1}
		p.trackers[name] = pr
		p.order = append(p.order, pr)
		if !st.IsOutdated(name) {
			p.count(pr, true)
		}
	}
}

// Peer returns a copy of the named peer's tracker.
func (p *Primary) Peer(name string) (Peer, bool) {
	pr, ok := p.trackers[name]
	if !ok {
		return Peer{}, false
	}
	return *pr, true
}

func (p *Primary) tracker(name string) (*Peer, error) {
	pr, ok := p.trackers[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownPeer, name)
	}
	return pr, nil
}

func (p *Primary) count(pr *Peer, on bool) {
	pr.Counted = on
	_ = p.SetUpToDate(pr.Name, on, 0)
}

// PeerConnected records a session that passed its handshake: the peer holds
// every write up to acked (its Hello position, possibly below what it acked
// in an earlier session: an unsynced tail may be lost) on disk.
func (p *Primary) PeerConnected(name string, acked, disk uint64) error {
	pr, err := p.tracker(name)
	if err != nil {
		return err
	}
	pr.Acked, pr.Disk = acked, disk
	return nil
}

// PeerLive records that every write up to target is queued for the peer and
// live writes follow: it is caught up once it journaled target, at once if
// it holds it already. head is as for PeerAcked. It reports whether the
// peer caught up now.
func (p *Primary) PeerLive(name string, target, head uint64) (bool, error) {
	pr, err := p.tracker(name)
	if err != nil {
		return false, err
	}
	pr.Target, pr.Awaiting = target, true
	if target == 0 || pr.Acked >= target || plantedEarlyCount {
		pr.Acked = max(pr.Acked, target)
		return p.checkCaughtUp(pr, head), nil
	}
	return false, nil
}

// PeerAcked records the peer's cumulative acknowledgement of seq at level
// l. At Journaled or better it may catch the peer up and make it due for a
// Clear; head is then the highest sequence the peer must hold before its
// Clear if it catches up now (the last appended, or for an erasure-code
// shard peer the last queued for it). It reports whether the peer caught up
// now.
func (p *Primary) PeerAcked(name string, seq uint64, l Level, head uint64) (bool, error) {
	pr, err := p.tracker(name)
	if err != nil {
		return false, err
	}
	if err := p.Ack(name, seq, l); err != nil {
		return false, err
	}
	if l < Journaled {
		return false, nil
	}
	pr.Acked = max(pr.Acked, seq)
	caught := p.checkCaughtUp(pr, head)
	p.maybeClear(pr)
	return caught, nil
}

// checkCaughtUp counts a live peer once it journaled its target. Writes
// appended before it was counted may have completed without it, so its
// Clear waits until it acknowledged those too (ClearAt = head).
func (p *Primary) checkCaughtUp(pr *Peer, head uint64) bool {
	if !pr.Awaiting || pr.Acked < pr.Target {
		return false
	}
	pr.Awaiting, pr.CaughtUp = false, true
	if !pr.Counted {
		p.count(pr, true)
	}
	pr.ClearAt = head
	p.maybeClear(pr)
	return true
}

// PeerLost records that the peer's session ended, it could not be reached,
// or it cannot acknowledge live writes for a while (a resync): a counted
// peer keeps holding writes back until an Outdate above its last Clear is
// applied, and an Outdate is requested.
func (p *Primary) PeerLost(name string) error {
	pr, err := p.tracker(name)
	if err != nil {
		return err
	}
	pr.Awaiting, pr.CaughtUp = false, false
	if !pr.Counted {
		return nil
	}
	if p.mayUncount(pr) {
		p.count(pr, false)
		return nil
	}
	p.requests = append(p.requests, Request{Kind: Outdate, Peer: name})
	return nil
}

// ApplyState takes the control plane's newly applied state: a peer whose
// Outdate was applied stops being counted unless it caught up since, and a
// caught-up peer that still needs a Clear gets one. It returns the peers it
// stopped counting.
func (p *Primary) ApplyState(st ControlState) []string {
	p.state = st
	var gone []string
	for _, pr := range p.order {
		if pr.Counted && !pr.CaughtUp && p.mayUncount(pr) {
			p.count(pr, false)
			gone = append(gone, pr.Name)
		}
		p.maybeClear(pr)
	}
	return gone
}

// ClearDone reports the outcome of a Clear request: when ok, the Clear
// names generation gen, and the peer stays counted until an Outdate above
// gen is applied.
func (p *Primary) ClearDone(name string, gen uint64, ok bool) {
	pr, found := p.trackers[name]
	if !found {
		return
	}
	if ok {
		pr.ClearGen = int64(gen)
	}
	pr.Clearing = false
	// Lost while the Clear was in flight, and the state already says
	// Outdated above it: nothing else would uncount it.
	if pr.Counted && !pr.CaughtUp && p.mayUncount(pr) {
		p.count(pr, false)
	}
}

// mayUncount: the applied state says the peer is Outdated at a generation
// no Clear of this primary can still overtake. A Clear requested and not
// yet proposed (Clearing) names the generation current when it is
// proposed, which may be the applied one: until ClearDone says which, the
// peer stays counted, and a lost peer is Outdated above it first. (Without
// this a peer lost in that moment was uncounted at once, its Clear then
// applied, and it was no longer Outdated though writes completed without
// it: e2e TestWipedWitnessDoesNotPromoteOutdatedNode, "n1 never Outdated".)
func (p *Primary) mayUncount(pr *Peer) bool {
	return !pr.Clearing && p.state != nil && p.state.IsOutdated(pr.Name) && int64(p.state.GenOf(pr.Name)) > pr.ClearGen
}

// maybeClear requests the Clear of a caught-up peer that holds every write
// appended before it was counted and is Outdated or whose disk is not yet
// recorded as holding the data; one Clear at a time.
func (p *Primary) maybeClear(pr *Peer) {
	if !pr.CaughtUp || pr.Acked < pr.ClearAt || pr.Clearing || p.state == nil || !p.state.NeedsClear(pr.Name, pr.Disk) {
		return
	}
	pr.Clearing = true
	p.requests = append(p.requests, Request{Kind: Clear, Peer: pr.Name, Disk: pr.Disk})
}
