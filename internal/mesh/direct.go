package mesh

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// Direct streams. A stream of a kind in Config.DirectKinds (the data and
// resync streams) runs on a TCP connection of its own instead of a yamux
// stream: yamux v0.1.2 copies every frame body into its send buffer and
// every received byte out of its receive buffer, and hands each frame to
// its send loop and from its receive loop, which for a mirrored write costs
// 0.4 CPU seconds per GiB more than the connection alone (both sides). The
// opener dials the peer's address and runs the session handshake with the
// stream's kind in its StreamOpen (the same authentication as a session);
// the acceptor takes it only while a session with that peer is up, and the
// stream belongs to that session: whichever side's session ends (a silent
// link, Drop, Close) closes the stream's connection with it, so liveness
// stays the session's (liveness.go). A peer that refuses (an older
// version, or kinds not listed) gets a yamux stream instead.

// direct reports whether streams of kind run on connections of their own.
func (m *Mesh) direct(kind uint8) bool { return slices.Contains(m.cfg.DirectKinds, kind) }

// openDirect dials p for a direct stream of kind belonging to sess. It
// takes up to the handshake timeout whatever ctx's deadline (which bounds
// the wait for a session: a dial and handshake take a few round trips more
// than a yamux stream, which takes none), and ends early when sess ends or
// ctx is canceled.
func (m *Mesh) openDirect(ctx context.Context, p *peer, sess *yamux.Session, kind uint8) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.HandshakeTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.Canceled) {
			cancel()
		}
	})
	defer stop()
	go func() { // the dial ends with the session
		select {
		case <-sess.CloseChan():
			cancel()
		case <-dctx.Done():
		}
	}()
	c, err := m.dialer().DialContext(dctx, "tcp", p.addr)
	if err != nil {
		return nil, fmt.Errorf("mesh: dial %s for a direct stream: %w", p.name, err)
	}
	// Registered before the handshake, so that the session's end also
	// ends a handshake in progress; so does a cancel of ctx.
	unregister, err := m.registerDirect(p, sess, c)
	if err != nil {
		c.Close()
		return nil, err
	}
	abort := context.AfterFunc(dctx, func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(m.cfg.HandshakeTimeout))
	conn, _, _, err := m.sessionHandshake(c, p, true, kind)
	if !abort() || err != nil {
		unregister()
		c.Close()
		return nil, cmp.Or(err, errSessionGone)
	}
	_ = c.SetDeadline(time.Time{})
	return &directConn{readerConn: readerConn{Conn: conn}, unregister: unregister}, nil
}

// serveDirect serves an accepted direct stream of kind from p on conn (c is
// its TCP connection) once this side's session with p is up, for at most
// the handshake timeout.
func (m *Mesh) serveDirect(p *peer, c, conn net.Conn, kind uint8) error {
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.HandshakeTimeout)
	sess, err := m.awaitSession(ctx, p)
	cancel()
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w: direct stream of kind %d from %s: no session with it", ErrHandshake, kind, p.name)
	}
	var unregister func()
	if err == nil {
		unregister, err = m.registerDirect(p, sess, c)
	}
	if err != nil {
		c.Close()
		return err
	}
	if m.cfg.Handler == nil {
		unregister()
		c.Close()
		return nil
	}
	m.cfg.Handler(p.name, kind, &directConn{readerConn: readerConn{Conn: conn}, unregister: unregister})
	return nil
}

// errSessionGone: the session a direct stream was to belong to ended.
var errSessionGone = errors.New("mesh: session ended")

// registerDirect makes c a direct stream of sess, unless sess is no longer
// p's live session. The returned func unregisters it.
func (m *Mesh) registerDirect(p *peer, sess *yamux.Session, c net.Conn) (func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || p.sess != sess || sess.IsClosed() {
		return nil, errSessionGone
	}
	p.direct[c] = sess
	return func() {
		m.mu.Lock()
		delete(p.direct, c)
		m.mu.Unlock()
	}, nil
}

// closeDirect closes the direct streams of sess. Caller holds Mesh.mu.
func (p *peer) closeDirect(sess *yamux.Session) {
	for c, s := range p.direct {
		if s == sess {
			c.Close()
			delete(p.direct, c)
		}
	}
}

// directConn is a direct stream: closing it also unregisters it.
type directConn struct {
	readerConn
	once       sync.Once
	unregister func()
}

func (c *directConn) Close() error {
	c.once.Do(c.unregister)
	return c.readerConn.Close()
}
