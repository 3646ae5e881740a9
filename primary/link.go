package primary

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
)

const (
	// queueLimit bounds the bytes a catch-up or resync may queue for a peer
	// before it waits for the sender; live writes never wait here.
	queueLimit = 8 << 20
	// defaultCongestionFill: a peer whose live queue grows past this
	// (protocol A with a slow peer) holds new writes, or is cut off and
	// caught up again (on-congestion), instead of the primary buffering
	// without bound.
	defaultCongestionFill = 64 << 20
	// resyncChunk is the size of one region copy.
	resyncChunk = 1 << 20
	// liveGap: catch-up rounds run without the write lock until fewer records
	// than this remain, then the rest is queued under it.
	liveGap = 512
	// HandshakeTimeout bounds the Hello exchange of a data stream (both
	// sides: node/secondary.go passes it on).
	HandshakeTimeout = 10 * time.Second
	// connectGrace: a peer without a session for this long is lost (and
	// Outdated) instead of holding writes back.
	connectGrace = 200 * time.Millisecond
	// defaultFlushTimeout: see Config.FlushTimeout (config's default).
	defaultFlushTimeout = 20 * time.Second
)

// link is the primary's side of one peer: it opens a data stream on the
// member link, handshakes, catches the peer up, then ships live writes from
// its queue and feeds the session's events and the peer's acks to the core,
// which keeps the peer's tracker (replicator.Peer). Fields marked (q) are
// guarded by qmu.
type link struct {
	p    *Side
	name string
	log  *slog.Logger
	// shard is the peer's erasure-code shard, -1 for a mirror: it gets its
	// shard's piece of every write (docs/erasure.md).
	shard int
	// layout: what the peer keeps of the device (set with shard).
	layout peerLayout

	live atomic.Bool // written under mu: writes are queued for this peer

	qmu    sync.Mutex
	qcond  *sync.Cond
	q      []queued
	qbytes int  // bytes queued or in the sender's hands, not yet in the stream
	closed bool // (q) the session ended: waiters give up
	wake   chan struct{}
	kick   chan struct{} // congestion: end the session

	conn atomic.Value // string
	disk atomic.Value // string
	// acked is the tracker's Acked, published for readers without coreMu
	// (status, the watchdog, retention).
	acked     atomic.Uint64
	known     atomic.Uint64 // retention floor: what the peer is known to hold
	catchup   atomic.Uint64 // bytes moved by catch-up and resync
	sentBytes atomic.Uint64 // bytes written to the peer's data streams (frames)
	lastAckNs atomic.Int64  // unix nanos of the last ack (or session start)
	// lastDurableNs: unix nanos of the last durable ack (a flush done).
	lastDurableNs atomic.Int64
	// sentSeq is the highest sequence queued for the peer. Records appended
	// for another peer's resync are never sent to this one, so what it owes
	// is measured against this, not against the journal's LastSeq.
	sentSeq atomic.Uint64

	resyncTotal, resyncDone atomic.Int64 // bytes of the current or last region resync
	resyncStart             atomic.Int64 // unix nanos
	resyncKept              atomic.Int64 // bytes of the target a resumed resync did not copy again
}

func newLink(p *Side, name string) *link {
	l := &link{p: p, name: name, log: p.log.With("peer", name), shard: -1,
		wake: make(chan struct{}, 1), kick: make(chan struct{}, 1)}
	l.layout = mirrorLayout{l}
	l.qcond = sync.NewCond(&l.qmu)
	l.conn.Store(ConnConnecting)
	l.disk.Store(DiskUnknown)
	return l
}

// kickSession ends the current session (congestion, peer timeout).
func (l *link) kickSession() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *link) lastAck() time.Time     { return time.Unix(0, l.lastAckNs.Load()) }
func (l *link) lastDurable() time.Time { return time.Unix(0, l.lastDurableNs.Load()) }

// run serves the peer until ctx ends: it opens a data stream on the member
// link, runs a session on it, and starts over with backoff. A peer that has
// no session within connectGrace is lost (peerLost): counted, it is
// Outdated so that writes need not wait for it.
func (l *link) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		if l.p.node.Disconnected(l.name) {
			// grbd disconnect: no data path to this peer until connect.
			l.conn.Store(ConnDisconnected)
			l.p.peerLost(l)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		l.conn.Store(ConnConnecting)
		octx, cancel := context.WithTimeout(ctx, connectGrace)
		s, err := l.p.tr.Open(octx, l.name, wire.StreamData)
		cancel()
		waited := false // Open waited for a session to the peer
		if err == nil {
			start := time.Now()
			err = l.session(ctx, s)
			if time.Since(start) > 5*time.Second {
				backoff = 50 * time.Millisecond
			}
		} else {
			l.p.peerLost(l)
			waited = errors.Is(err, context.DeadlineExceeded)
		}
		if ctx.Err() != nil {
			return
		}
		l.log.Debug("peer link down", "err", err)
		l.conn.Store(ConnDisconnected)
		if waited {
			// Open waited connectGrace for a session to the peer and returns
			// as soon as one comes up: that wait is the pause. A backoff on
			// top held a returning peer back up to a second.
			backoff = 50 * time.Millisecond
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// session runs one data stream: handshake, catch-up, live replication.
func (l *link) session(ctx context.Context, s net.Conn) error {
	defer s.Close()
	r, w := wire.NewReader(s), wire.NewWriter(countingWriter{s, &l.sentBytes})
	hello, extra, prog, err := l.handshake(s, r, w)
	if err != nil {
		if errors.Is(err, ErrSplitBrain) {
			l.disk.Store(DiskSplitBrain)
			l.p.node.SplitBrain(l.name, err.Error())
		}
		if errors.Is(err, ErrBehindPeer) && l.p.node.PeerAhead(l.name, err.Error()) {
			l.disk.Store(DiskSplitBrain)
		}
		l.p.peerLost(l)
		return err
	}
	select {
	case <-l.kick: // left over from the previous session
	default:
	}
	if l.p.node.Disconnected(l.name) {
		// grbd disconnect during the handshake: its kick may be the one
		// just drained (Side.Kick sets the flag before it kicks).
		l.p.peerLost(l)
		return errDisconnected
	}
	l.p.coreMu.Lock()
	l.p.resume.handshook(l.name)
	l.p.coreMu.Unlock()
	l.log.Info("peer connected", "peer_last_seq", hello.LastSeq, "inconsistent", hello.Flags&wire.HelloInconsistent != 0, "extra_extents", len(extra))
	// What the peer holds as of this session (it may have lost an unsynced
	// tail since the last one); set before its acks are read.
	disk, _ := hello.Disks()
	l.p.coreMu.Lock()
	_ = l.p.core.PeerConnected(l.name, hello.LastSeq, disk)
	l.p.coreMu.Unlock()
	l.acked.Store(hello.LastSeq)
	l.sentSeq.Store(hello.LastSeq)
	l.lastAckNs.Store(time.Now().UnixNano())
	l.conn.Store(ConnConnected)
	l.p.node.PeerState(l.name, ConnConnected, fmt.Sprintf("handshake done: peer at seq %d", hello.LastSeq))

	l.qmu.Lock()
	l.dropQueueLocked(false)
	l.qmu.Unlock()

	done := make(chan struct{})
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Go(func() { errc <- l.send(w, done) })
	wg.Go(func() { errc <- l.recv(r) })
	wg.Go(func() {
		if err := l.catchUp(hello, extra, prog); err != nil {
			errc <- err
		}
	})
	select {
	case err = <-errc:
	case <-l.kick:
		err = errKicked
	case <-ctx.Done():
		err = ctx.Err()
	}
	close(done)
	l.qmu.Lock()
	l.closed = true
	l.qcond.Broadcast()
	l.qmu.Unlock()
	s.Close()
	wg.Wait()
	l.down()
	l.p.node.PeerState(l.name, ConnDisconnected, fmt.Sprint("data stream ended: ", err))
	return err
}

// recv feeds the peer's acks to the core.
func (l *link) recv(r *wire.Reader) error {
	for {
		m, err := r.ReadMsg()
		if err != nil {
			return err
		}
		p := l.p
		switch m := m.(type) {
		case *wire.Ack:
			now := time.Now().UnixNano()
			l.lastAckNs.Store(now)
			if m.Level >= wire.AckDurable {
				l.lastDurableNs.Store(now)
			}
			p.coreMu.Lock()
			var caught bool
			caught, err = p.core.PeerAcked(l.name, m.Seq, replicator.Level(m.Level), l.clearHead())
			if m.Level >= wire.AckJournaled {
				l.publishAckedLocked()
				l.known.Store(l.acked.Load())
			}
			if caught {
				l.caughtUpLocked()
			}
			p.releaseLocked()
			p.coreMu.Unlock()
			if err != nil {
				return err
			}
		case *wire.FlushAck:
			if m.Err != 0 {
				return fmt.Errorf("%w: flush %d: errno %d", ErrPeerFailed, m.Seq, m.Err)
			}
			l.lastDurableNs.Store(time.Now().UnixNano())
			p.coreMu.Lock()
			err = p.core.Ack(l.name, m.Seq, replicator.Durable)
			p.releaseLocked()
			p.coreMu.Unlock()
			if err != nil {
				return err
			}
		case *wire.Nack:
			return fmt.Errorf("%w: seq %d code %d: %s", ErrPeerFailed, m.Seq, m.Code, m.Reason)
		default:
			return fmt.Errorf("%w: unexpected %v from peer", ErrPeerFailed, m.Type())
		}
	}
}

// clearHead is what the peer must hold before its Clear if it catches up
// now: every write appended so far (peerLayout.clearHead).
func (l *link) clearHead() uint64 { return l.layout.clearHead(l.p.store.LastSeq()) }

// publishAckedLocked copies the tracker's Acked to l.acked. Caller holds
// coreMu.
func (l *link) publishAckedLocked() {
	if pr, ok := l.p.core.Peer(l.name); ok {
		l.acked.Store(pr.Acked)
	}
}

// caughtUpLocked shows that the core counts the peer: it journaled
// everything up to the point where it went live. Caller holds coreMu.
func (l *link) caughtUpLocked() {
	pr, _ := l.p.core.Peer(l.name)
	l.disk.Store(DiskUpToDate)
	l.log.Info("peer up to date", "seq", pr.Target, "catchup_bytes", l.catchup.Load())
	l.p.node.Event(events.Event{Type: events.TypeDisk, Peer: l.name, State: DiskUpToDate, Cause: fmt.Sprintf("journaled every write up to seq %d", pr.Target)})
}

// down ends a session: the peer gets no more live writes, and the primary
// learns it is lost (it stays counted until its Outdate is applied).
func (l *link) down() {
	p := l.p
	p.mu.Lock()
	l.live.Store(false)
	p.mu.Unlock()
	switch l.disk.Load() {
	case DiskUpToDate, DiskInconsistent:
		l.disk.Store(DiskOutdated)
	}
	l.qmu.Lock()
	l.dropQueueLocked(true)
	l.qcond.Broadcast()
	l.qmu.Unlock()
	p.peerLost(l)
}

// catchUp brings the peer from its Hello position to live writes: journal
// records when the journal still holds them, region copies otherwise.
func (l *link) catchUp(h *wire.Hello, extra []extent.Extent, prog *wire.ResyncProgress) error {
	st := l.p.store
	from := h.LastSeq
	if from > st.LastSeq() {
		l.disk.Store(DiskUnknown)
		return fmt.Errorf("%w: peer at %d, primary at %d", ErrPeerAhead, from, st.LastSeq())
	}
	l.known.Store(from)
	if !l.layout.journalCatchUp() {
		// A shard peer's journal records are shard pieces, the primary's
		// are device writes: the stripes changed since its position (and
		// those it asks for) are re-encoded from the current full copy
		// (docs/erasure.md).
		l.disk.Store(DiskInconsistent)
		return l.resync(from, l.layout.toDevice(extra), nil)
	}
	if h.Flags&wire.HelloInconsistent != 0 {
		l.disk.Store(DiskInconsistent)
		// It cannot acknowledge live writes before its resync ends: have
		// it Outdated rather than hold writes back that long.
		l.p.peerLost(l)
		return l.resync(from, extra, prog)
	}
	l.disk.Store(DiskOutdated)
	sent := from
	var err error
	for round := 0; round < 8 && err == nil && st.LastSeq()-sent > liveGap; round++ {
		err = st.ReadRecords(sent+1, func(w journal.Write) error {
			if !l.enqueueRecord(w) {
				return errSessionEnded
			}
			sent = w.Seq
			l.catchup.Add(uint64(len(w.Data)))
			return nil
		})
	}
	if err == nil {
		err = l.goLive(&sent)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errSessionEnded):
		return nil
	case errors.Is(err, journal.ErrCompacted):
		l.log.Info("journal compacted past peer: region resync", "from", sent, "err", err)
		return l.resync(sent, nil, nil)
	}
	return err
}

var (
	errSessionEnded = errors.New("node: peer session ended")
	errKicked       = errors.New("node: peer session ended by the primary (congestion or peer timeout)")
	errDisconnected = errors.New("node: peer disconnected by the operator")
)

// goLive queues the last records under the write lock and switches the peer to
// live writes: no gap, no duplicate. The peer counts once it acked them.
func (l *link) goLive(sent *uint64) error {
	p := l.p
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.store.ReadRecords(*sent+1, func(w journal.Write) error {
		if !l.enqueueRecord(w) {
			return errSessionEnded
		}
		*sent = w.Seq
		l.catchup.Add(uint64(len(w.Data)))
		return nil
	})
	if err != nil {
		return err
	}
	// The peer may be larger than this primary (it journaled a grow that
	// nobody acknowledged, or was created from a larger device.size), and
	// the records it caught up on need not hold a resize: tell it the size
	// (it shrinks to it, secondary/applier.go), after the records.
	if err := l.announceSize(0); err != nil {
		return err
	}
	l.startLiveLocked(p.store.LastSeq())
	return nil
}

// startLiveLocked switches to live writes, tells the peer it holds every
// write up to target, and waits for its ack of target. Caller holds mu.
func (l *link) startLiveLocked(target uint64) {
	l.enqueue(&wire.ResyncDone{AsOf: target})
	l.live.Store(true)
	p := l.p
	p.coreMu.Lock()
	caught, _ := p.core.PeerLive(l.name, target, l.clearHead())
	if seq := p.core.FlushWaitingOn(l.name); seq > 0 {
		// A flush that started while this peer was counted but had no
		// live session was not sent to it (Flush sends to live peers), or
		// went with the queue of the session that ended: it waits for this
		// peer's Durable ack all the same.
		l.enqueue(&wire.Flush{Seq: seq})
	}
	l.publishAckedLocked()
	if caught {
		l.caughtUpLocked()
	}
	p.releaseLocked()
	p.coreMu.Unlock()
}

// status reports the link for /status.
func (l *link) status() PeerStatus {
	acked, sent := l.acked.Load(), l.sentSeq.Load()
	behind := uint64(0)
	if sent > acked {
		behind = sent - acked
	}
	ps := PeerStatus{
		Name: l.name, Connection: l.conn.Load().(string), Disk: l.disk.Load().(string),
		AckedSeq: acked, Behind: behind, CatchupBytes: l.catchup.Load(),
		ResyncTotal: l.resyncTotal.Load(), ResyncDone: l.resyncDone.Load(), ResyncKept: l.resyncKept.Load(), Disconnected: l.p.node.Disconnected(l.name),
		SentBytes: l.sentBytes.Load(),
	}
	if l.shard >= 0 {
		ps.Shard = new(int)
		*ps.Shard = l.shard
	}
	if ps.Disk == DiskInconsistent && ps.ResyncTotal > 0 {
		elapsed := time.Since(time.Unix(0, l.resyncStart.Load())).Seconds()
		ps.SyncPercent = 100 * float64(ps.ResyncDone) / float64(ps.ResyncTotal)
		if ps.ResyncDone > 0 && elapsed > 0 {
			ps.SyncETA = elapsed * float64(ps.ResyncTotal-ps.ResyncDone) / float64(ps.ResyncDone)
		}
	}
	return ps
}
