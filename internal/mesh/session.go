package mesh

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/hashicorp/yamux"
)

// One member link's session: handshake, yamux, the control stream, and the
// streams the peer opens.

// runSession authenticates c, starts yamux and the control stream, and
// serves the session until it ends. p is the dialed peer (nil when
// accepting: the handshake names it). handshakeOver, if not nil, is called
// once the handshake is over, whatever its outcome.
func (m *Mesh) runSession(p *peer, c net.Conn, dialer bool, handshakeOver func()) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		c.Close()
		if handshakeOver != nil {
			handshakeOver()
		}
		return ErrClosed
	}
	m.pending[c] = struct{}{}
	m.mu.Unlock()
	over := handshakeOver
	handshakeOver = func() {
		m.mu.Lock()
		delete(m.pending, c)
		m.mu.Unlock()
		if over != nil {
			over()
		}
	}
	p, sess, ctl, kind, err := m.establish(p, c, dialer, handshakeOver)
	if err != nil {
		return err
	}
	if sess == nil {
		return m.serveDirect(p, c, ctl, kind)
	}
	defer sess.Close()
	return m.serveSession(p, c, sess, ctl)
}

// establish runs the session handshake on c, starts yamux on it and opens
// or accepts the control stream; handshakeOver is called once that is over.
// On error c is closed. An accepted direct stream (direct.go) comes back
// without a session: the authenticated connection and its kind.
func (m *Mesh) establish(p *peer, c net.Conn, dialer bool, handshakeOver func()) (*peer, *yamux.Session, net.Conn, uint8, error) {
	_ = c.SetDeadline(time.Now().Add(m.cfg.HandshakeTimeout))
	conn, p, kind, err := m.sessionHandshake(c, p, dialer, wire.StreamControl)
	if err != nil {
		handshakeOver()
		c.Close()
		return nil, nil, nil, 0, err
	}
	if kind != wire.StreamControl {
		handshakeOver()
		_ = c.SetDeadline(time.Time{})
		return p, nil, conn, kind, nil
	}
	var sess *yamux.Session
	yc := newCoalesceConn(conn)
	if dialer {
		sess, err = yamux.Client(yc, m.yamuxConfig())
	} else {
		sess, err = yamux.Server(yc, m.yamuxConfig())
	}
	if err != nil {
		handshakeOver()
		c.Close()
		return nil, nil, nil, 0, err
	}
	ctl, err := m.controlStream(sess, p, dialer)
	handshakeOver()
	if err != nil {
		sess.Close()
		return nil, nil, nil, 0, err
	}
	_ = c.SetDeadline(time.Time{})
	if dialer {
		p.lastDialErr = ""
	}
	return p, sess, ctl, kind, nil
}

// serveSession makes sess the peer's session (replacing an older one) and
// serves its control stream and the peer's streams until it ends.
func (m *Mesh) serveSession(p *peer, c net.Conn, sess *yamux.Session, ctl net.Conn) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	if p.sess != nil {
		p.conn.Close() // a newer session replaces the old one; up is closed already
		p.sess.Close()
	} else {
		close(p.up)
	}
	p.sess, p.conn = sess, c
	m.mu.Unlock()
	m.log.Info("peer link up", "peer", p.name, "remote", c.RemoteAddr().String())
	if m.cfg.OnPeer != nil {
		m.cfg.OnPeer(p.name, true)
	}

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { m.writeControl(p, ctl, done) })
	wg.Go(func() { m.readControl(p, ctl); sess.Close() })
	wg.Go(func() { m.acceptStreams(p, sess) })
	<-sess.CloseChan()
	m.mu.Lock()
	p.closeDirect(sess) // the session's direct streams end with it
	m.mu.Unlock()
	close(done)
	ctl.Close()
	wg.Wait()

	m.mu.Lock()
	if p.sess == sess {
		p.sess, p.conn = nil, nil
		p.up = make(chan struct{})
	}
	m.mu.Unlock()
	if m.cfg.OnPeer != nil {
		m.cfg.OnPeer(p.name, false)
	}
	m.log.Info("peer link down", "peer", p.name)
	return nil
}

// controlStream opens (dialer) or accepts (acceptor) the session's first
// stream, the control stream: it starts with StreamOpen{Control} from the
// dialer, naming the same members as the session handshake.
func (m *Mesh) controlStream(sess *yamux.Session, p *peer, dialer bool) (net.Conn, error) {
	if dialer {
		s, err := sess.OpenStream()
		if err != nil {
			return nil, fmt.Errorf("%w: control stream: %w", ErrHandshake, err)
		}
		if err := m.announceStream(s, wire.StreamControl, p.name); err != nil {
			s.Close()
			return nil, fmt.Errorf("%w: control stream: %w", ErrHandshake, err)
		}
		return &readerConn{Conn: s, r: wire.NewReader(s)}, nil
	}
	s, err := acceptTimeout(sess, m.cfg.HandshakeTimeout)
	if err != nil {
		return nil, fmt.Errorf("%w: control stream: %w", ErrHandshake, err)
	}
	_ = s.SetReadDeadline(time.Now().Add(m.cfg.HandshakeTimeout))
	r := wire.NewReader(s)
	msg, err := r.ReadMsg()
	_ = s.SetReadDeadline(time.Time{})
	if err == nil {
		so, ok := msg.(*wire.StreamOpen)
		if !ok || so.Kind != wire.StreamControl || so.From != p.name || so.To != m.cfg.Self || so.Cluster != m.cfg.Cluster {
			err = fmt.Errorf("first stream does not open the control stream: %v", msg.Type())
		}
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("%w: control stream: %w", ErrHandshake, err)
	}
	return &readerConn{Conn: s, r: r}, nil
}

// readerConn is every stream the mesh hands out. It keeps the
// wire.Reader that read the handshake, whose buffer may already hold later
// frames (nil for a stream this side opened), and its Close ends the
// stream for this side at once (see Close).
type readerConn struct {
	net.Conn
	r *wire.Reader
}

// Close ends the stream and unblocks its reader and writers at once. A
// yamux Close is only a half-close: a Read blocked on the stream would
// wait for the peer's FIN, which a silent peer never sends (issue 15). The
// deadline makes every Read and Write in progress or to come fail now; the
// FIN still goes out, in order after what was written.
func (c *readerConn) Close() error {
	_ = c.Conn.SetDeadline(time.Now())
	return c.Conn.Close()
}

func acceptTimeout(sess *yamux.Session, d time.Duration) (net.Conn, error) {
	type result struct {
		s   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := sess.AcceptStream()
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-time.After(d):
		sess.Close()
		return nil, errors.New("timeout")
	}
}

func (m *Mesh) writeControl(p *peer, ctl net.Conn, done <-chan struct{}) {
	w := wire.NewWriter(ctl)
	for {
		select {
		case <-done:
			return
		case c := <-p.ctl:
			if err := w.WriteMsg(c); err != nil {
				return
			}
			for more := true; more; {
				select {
				case c := <-p.ctl:
					if err := w.WriteMsg(c); err != nil {
						return
					}
				default:
					more = false
				}
			}
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

func (m *Mesh) readControl(p *peer, ctl net.Conn) {
	r := ctl.(*readerConn).r
	for {
		msg, err := r.ReadMsg()
		if err != nil {
			return
		}
		c, ok := msg.(*wire.Control)
		if !ok {
			m.log.Warn("unexpected message on control stream", "peer", p.name, "type", msg.Type())
			return
		}
		if m.cfg.OnControl != nil {
			m.cfg.OnControl(p.name, wire.Clone(c).(*wire.Control))
		}
	}
}

func (m *Mesh) acceptStreams(p *peer, sess *yamux.Session) {
	for {
		s, err := sess.AcceptStream()
		if err != nil {
			return
		}
		m.wg.Go(func() {
			_ = s.SetReadDeadline(time.Now().Add(m.cfg.HandshakeTimeout))
			r := wire.NewReader(s)
			msg, err := r.ReadMsg()
			_ = s.SetReadDeadline(time.Time{})
			so, ok := msg.(*wire.StreamOpen)
			if err != nil || !ok || so.From != p.name || so.To != m.cfg.Self || so.Kind == wire.StreamControl || m.cfg.Handler == nil {
				s.Close()
				return
			}
			m.cfg.Handler(p.name, so.Kind, &readerConn{Conn: s, r: r})
		})
	}
}

// announceStream sends the StreamOpen that names a new stream's kind to
// peer, within the handshake timeout.
func (m *Mesh) announceStream(s net.Conn, kind uint8, peer string) error {
	_ = s.SetWriteDeadline(time.Now().Add(m.cfg.HandshakeTimeout))
	defer s.SetWriteDeadline(time.Time{})
	w := wire.NewWriter(s)
	if err := w.WriteMsg(&wire.StreamOpen{Kind: kind, Cluster: m.cfg.Cluster, From: m.cfg.Self, To: peer}); err != nil {
		return err
	}
	return w.Flush()
}
