package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
	"github.com/hashicorp/yamux"
)

// Connection and disk states shown in status.
const (
	ConnDisconnected = "Disconnected"
	ConnConnecting   = "Connecting"
	ConnConnected    = "Connected"

	DiskUpToDate     = "UpToDate"
	DiskInconsistent = "Inconsistent"
	DiskOutdated     = "Outdated"
	DiskUnknown      = "Unknown"
)

// helloFlagInconsistent in Hello.Flags: the sender is in the middle of a
// bitmap resync from LastSeq (it persisted that before the resync began) and
// must not be caught up from its journal position.
const helloFlagInconsistent uint32 = 1

const (
	// queueLimit bounds the bytes a catch-up or resync may queue for a peer
	// before it waits for the sender; live writes never wait here.
	queueLimit = 8 << 20
	// congestLimit: a peer whose live queue grows past this (protocol A with
	// a slow peer) is cut off and caught up again from the journal, instead of
	// the primary buffering without bound.
	congestLimit = 64 << 20
	// resyncChunk is the size of one region copy.
	resyncChunk = 1 << 20
	// liveGap: catch-up rounds run without the write lock until fewer records
	// than this remain, then the rest is queued under it.
	liveGap = 512
	// handshakeTimeout bounds the Hello exchange.
	handshakeTimeout = 10 * time.Second
)

// yamuxConfig is the session configuration of both ends.
func yamuxConfig(log *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.MaxStreamWindowSize = 16 << 20 // bandwidth x RTT, see docs/replication.md
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 2 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.LogOutput = nil
	c.Logger = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	return c
}

// link is the primary's side of one peer: it dials, handshakes, catches the
// peer up, then ships live writes from its queue and feeds the peer's acks to
// the core. Fields marked (mu) are guarded by primary.mu, (core) by
// primary.coreMu, (q) by qmu.
type link struct {
	p          *primary
	name, addr string
	cluster    string
	from       string
	log        *slog.Logger

	live     bool   // (mu) writes are queued for this peer
	upToDate bool   // (core) counted by the core
	awaiting bool   // (core) becomes UpToDate once it journaled target
	target   uint64 // (core)

	qmu    sync.Mutex
	qcond  *sync.Cond
	q      []wire.Message
	qbytes int  // bytes queued or in the sender's hands, not yet in the stream
	closed bool // (q) the session ended: waiters give up
	wake   chan struct{}
	kick   chan struct{} // congestion: end the session

	conn    atomic.Value // string
	disk    atomic.Value // string
	acked   atomic.Uint64
	known   atomic.Uint64 // retention floor: what the peer is known to hold
	catchup atomic.Uint64 // bytes moved by catch-up and resync
}

func newLink(p *primary, name, addr, cluster, from string, log *slog.Logger) *link {
	l := &link{p: p, name: name, addr: addr, cluster: cluster, from: from, log: log.With("peer", name),
		wake: make(chan struct{}, 1), kick: make(chan struct{}, 1)}
	l.qcond = sync.NewCond(&l.qmu)
	l.conn.Store(ConnConnecting)
	l.disk.Store(DiskUnknown)
	return l
}

// enqueue adds m to the send queue without waiting.
func (l *link) enqueue(m wire.Message) {
	l.qmu.Lock()
	if !l.closed {
		l.q = append(l.q, m)
		l.qbytes += msgBytes(m)
	}
	l.qmu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// enqueueLive queues a live write. A congested peer stops being live and its
// session is ended; it comes back through catch-up. Caller holds mu.
func (l *link) enqueueLive(m wire.Message) {
	l.qmu.Lock()
	congested := l.qbytes > congestLimit
	l.qmu.Unlock()
	if !congested {
		l.enqueue(m)
		return
	}
	l.live = false
	l.log.Warn("peer congested: disconnecting it, it will catch up", "queued_bytes", congestLimit)
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// enqueueWait adds m once the queue has room; false when the session ended.
func (l *link) enqueueWait(m wire.Message) bool {
	if !l.waitRoom() {
		return false
	}
	l.enqueue(m)
	return true
}

// waitRoom waits until the queue is below queueLimit; false when the session
// ended.
func (l *link) waitRoom() bool {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	for l.qbytes > queueLimit && !l.closed {
		l.qcond.Wait()
	}
	return !l.closed
}

func msgBytes(m wire.Message) int {
	switch m := m.(type) {
	case *wire.Write:
		return 64 + len(m.Data)
	case *wire.ResyncData:
		return 64 + len(m.Data)
	}
	return 64
}

// run dials and serves the peer until ctx ends, retrying with backoff.
func (l *link) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	var d net.Dialer
	for ctx.Err() == nil {
		l.conn.Store(ConnConnecting)
		c, err := d.DialContext(ctx, "tcp", l.addr)
		if err == nil {
			start := time.Now()
			err = l.session(ctx, c)
			if time.Since(start) > 5*time.Second {
				backoff = 50 * time.Millisecond
			}
			if ctx.Err() == nil {
				l.log.Warn("peer link down", "err", err)
			}
		}
		l.conn.Store(ConnDisconnected)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// session runs one connection: handshake, catch-up, live replication.
func (l *link) session(ctx context.Context, c net.Conn) error {
	sess, err := yamux.Client(c, yamuxConfig(l.log))
	if err != nil {
		c.Close()
		return err
	}
	defer sess.Close()
	data, err := sess.OpenStream()
	if err != nil {
		return err
	}
	// resync and control are opened as the design lays out; in this version
	// region copies travel in order on the data stream (docs/replication.md)
	// and liveness is yamux keepalive, so both stay idle.
	for range 2 {
		if _, err := sess.OpenStream(); err != nil {
			return err
		}
	}
	r, w := wire.NewReader(data), wire.NewWriter(data)
	hello, err := l.handshake(data, r, w)
	if err != nil {
		return err
	}
	l.log.Info("peer connected", "peer_last_seq", hello.LastSeq, "inconsistent", hello.Flags&helloFlagInconsistent != 0)
	// What the peer holds as of this session (it may have lost an unsynced
	// tail since the last one); set before its acks are read.
	l.acked.Store(hello.LastSeq)
	l.conn.Store(ConnConnected)

	l.qmu.Lock()
	l.q, l.qbytes, l.closed = nil, 0, false
	l.qmu.Unlock()
	select {
	case <-l.kick: // left over from the previous session
	default:
	}

	done := make(chan struct{})
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Go(func() { errc <- l.send(w, done) })
	wg.Go(func() { errc <- l.recv(r) })
	wg.Go(func() {
		if err := l.catchUp(hello); err != nil {
			errc <- err
		}
	})
	select {
	case err = <-errc:
	case <-l.kick:
		err = errCongested
	case <-ctx.Done():
		err = ctx.Err()
	}
	close(done)
	l.qmu.Lock()
	l.closed = true
	l.qcond.Broadcast()
	l.qmu.Unlock()
	sess.Close()
	wg.Wait()
	l.down()
	return err
}

func (l *link) handshake(s *yamux.Stream, r *wire.Reader, w *wire.Writer) (*wire.Hello, error) {
	_ = s.SetDeadline(time.Now().Add(handshakeTimeout))
	defer s.SetDeadline(time.Time{})
	me := &wire.Hello{Cluster: l.cluster, From: l.from, Role: wire.RolePrimary, Epoch: l.p.epoch,
		LastSeq: l.p.store.LastSeq(), DurableSeq: l.p.store.DurableSeq()}
	if err := w.WriteMsg(me); err != nil {
		return nil, err
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	m, err := r.ReadMsg()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	h, ok := m.(*wire.Hello)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: first message is %v", ErrHandshake, m.Type())
	case h.Cluster != l.cluster:
		return nil, fmt.Errorf("%w: peer is in cluster %q, not %q", ErrHandshake, h.Cluster, l.cluster)
	case h.From != l.name:
		return nil, fmt.Errorf("%w: peer says it is %q", ErrHandshake, h.From)
	}
	hc := *h
	return &hc, nil
}

// send writes queued messages, flushing the socket only when the queue is
// empty so bursts share one write.
func (l *link) send(w *wire.Writer, done <-chan struct{}) error {
	for {
		select {
		case <-done:
			return nil
		case <-l.wake:
		}
		for {
			l.qmu.Lock()
			batch := l.q
			l.q = nil
			l.qmu.Unlock()
			if len(batch) == 0 {
				break
			}
			// qbytes counts until a message is handed to the stream: the
			// batch held here is part of what the peer is behind by.
			sent := 0
			for _, m := range batch {
				if err := w.WriteMsg(m); err != nil {
					return err
				}
				sent += msgBytes(m)
			}
			l.qmu.Lock()
			l.qbytes -= sent
			l.qcond.Broadcast()
			l.qmu.Unlock()
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
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
			p.coreMu.Lock()
			err = p.core.Ack(l.name, m.Seq, replicator.Level(m.Level))
			if m.Level >= wire.AckJournaled {
				l.acked.Store(max(l.acked.Load(), m.Seq))
				l.known.Store(l.acked.Load())
				l.checkUpToDateLocked()
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

// checkUpToDateLocked counts the peer once it journaled everything up to the
// point where it went live. Caller holds coreMu.
func (l *link) checkUpToDateLocked() {
	if !l.awaiting || l.acked.Load() < l.target {
		return
	}
	l.awaiting, l.upToDate = false, true
	_ = l.p.core.SetUpToDate(l.name, true, 0) // acks already fed: claim nothing more
	l.disk.Store(DiskUpToDate)
	l.log.Info("peer up to date", "seq", l.target, "catchup_bytes", l.catchup.Load())
}

// down stops counting the peer so writes stop waiting for it.
//
// Issue 4 hook: before SetUpToDate(false) the primary must commit "peer is
// Outdated" through the control plane, so a later failover can never pick
// this peer; until then writes keep waiting (or fail when quorum is lost).
func (l *link) down() {
	p := l.p
	p.mu.Lock()
	l.live = false
	p.coreMu.Lock()
	l.upToDate, l.awaiting = false, false
	_ = p.core.SetUpToDate(l.name, false, 0)
	p.releaseLocked()
	p.coreMu.Unlock()
	p.mu.Unlock()
	if l.disk.Load() == DiskUpToDate {
		l.disk.Store(DiskOutdated)
	}
	l.qmu.Lock()
	l.q, l.qbytes, l.closed = nil, 0, true
	l.qcond.Broadcast()
	l.qmu.Unlock()
}

// catchUp brings the peer from its Hello position to live writes: journal
// records when the journal still holds them, region copies otherwise.
func (l *link) catchUp(h *wire.Hello) error {
	st := l.p.store
	from := h.LastSeq
	if from > st.LastSeq() {
		l.disk.Store(DiskUnknown)
		return fmt.Errorf("%w: peer at %d, primary at %d", ErrPeerAhead, from, st.LastSeq())
	}
	l.known.Store(from)
	if h.Flags&helloFlagInconsistent != 0 {
		l.disk.Store(DiskInconsistent)
		return l.resync(from)
	}
	l.disk.Store(DiskOutdated)
	sent := from
	var err error
	for round := 0; round < 8 && err == nil && st.LastSeq()-sent > liveGap; round++ {
		err = st.ReadRecords(sent+1, func(w journal.Write) error {
			if !l.enqueueWait(wireWrite(w, l.p.epoch, false)) {
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
		return l.resync(sent)
	}
	return err
}

var (
	errSessionEnded = errors.New("node: peer session ended")
	errCongested    = errors.New("node: peer congested")
)

// goLive queues the last records under the write lock and switches the peer to
// live writes: no gap, no duplicate. The peer counts once it acked them.
func (l *link) goLive(sent *uint64) error {
	p := l.p
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.store.ReadRecords(*sent+1, func(w journal.Write) error {
		if !l.enqueueWait(wireWrite(w, p.epoch, false)) {
			return errSessionEnded
		}
		*sent = w.Seq
		l.catchup.Add(uint64(len(w.Data)))
		return nil
	})
	if err != nil {
		return err
	}
	l.startLiveLocked(p.store.LastSeq())
	return nil
}

// startLiveLocked switches to live writes, tells the peer it holds every
// write up to target, and waits for its ack of target. Caller holds mu.
func (l *link) startLiveLocked(target uint64) {
	l.enqueue(&wire.ResyncDone{AsOf: target})
	l.live = true
	p := l.p
	p.coreMu.Lock()
	l.target, l.awaiting = target, true
	if target == 0 || l.acked.Load() >= target {
		l.acked.Store(max(l.acked.Load(), target))
		l.checkUpToDateLocked()
	}
	p.coreMu.Unlock()
}

// resync copies every region changed after from, each read under the write
// lock and journaled as a fresh record so that it is ordered with live
// writes on the data stream (docs/replication.md, "Region resync").
func (l *link) resync(from uint64) error {
	p := l.p
	l.disk.Store(DiskInconsistent)
	p.mu.Lock()
	extents := p.store.ChangedSince(from)
	l.log.Info("region resync", "from", from, "extents", len(extents))
	first := true
	for _, e := range extents {
		for off := e.Offset; off < e.Offset+e.Length; off += resyncChunk {
			if !first {
				p.mu.Lock()
			}
			n := min(resyncChunk, e.Offset+e.Length-off)
			buf := make([]byte, n)
			err := p.store.ReadAt(buf, off)
			var seq uint64
			if err == nil {
				// Rewriting the primary's own bytes changes nothing there and
				// gives the copy a sequence number ordered with live writes.
				seq, err = p.store.Append(journal.Write{Epoch: p.epoch, Offset: off, Data: buf})
			}
			if err != nil {
				p.mu.Unlock()
				return fmt.Errorf("node: resync read %d: %w", off, err)
			}
			l.enqueue(&wire.ResyncData{AsOf: seq, Offset: uint64(off), Data: buf})
			l.catchup.Add(uint64(n))
			// The peer persisted "Inconsistent since from" when it took the
			// first chunk: live writes may now follow it.
			l.live = true
			first = false
			p.mu.Unlock()
			if !l.waitRoom() {
				return nil
			}
		}
	}
	if !first {
		p.mu.Lock()
	}
	l.startLiveLocked(p.store.LastSeq())
	p.mu.Unlock()
	return nil
}

// status reports the link for /status.
func (l *link) status(last uint64) PeerStatus {
	acked := l.acked.Load()
	behind := uint64(0)
	if last > acked {
		behind = last - acked
	}
	return PeerStatus{
		Name: l.name, Connection: l.conn.Load().(string), Disk: l.disk.Load().(string),
		AckedSeq: acked, Behind: behind, CatchupBytes: l.catchup.Load(),
	}
}
