// Package mesh keeps the links between cluster members: one TCP connection
// per pair of members, multiplexed with yamux, carrying long-lived streams
// (control, data, resync, admin). The member whose name sorts first dials;
// the other accepts. Before yamux starts, the session handshake on the raw
// connection names both members and, when Config.Security says so,
// authenticates them (mutual TLS with the cluster CA, a shared-secret
// challenge-response, or both): nothing a peer sends reaches yamux, the
// control plane or the data path before it proved who it is. The first
// stream of a session is the control stream: control-plane messages (raft,
// leases) travel on it in both directions through bounded per-peer queues.
// Other streams are opened on demand with Open and delivered to the other
// side's Handler; kinds in Config.DirectKinds run on TCP connections of
// their own that belong to the session (direct.go). docs/wire.md ("Member
// links") is the protocol.
//
// Limits: at most Config.MaxHandshakes connections are in their handshake
// at once (more are closed at accept), each for at most HandshakeTimeout,
// reading frames of at most 1 KiB.
//
// Concurrency: a Mesh is safe for concurrent use. Callbacks (OnControl,
// OnPeer) run on the mesh's goroutines and must not block for long; Handler
// runs in a goroutine of its own per stream.
package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/hashicorp/yamux"
)

// Errors callers branch on.
var (
	// ErrClosed is returned by Open after Close.
	ErrClosed = errors.New("mesh: closed")
	// ErrUnknownPeer is returned for a peer not in the config.
	ErrUnknownPeer = errors.New("mesh: unknown peer")
	// ErrHandshake marks a refused or failed session or stream handshake.
	ErrHandshake = errors.New("mesh: handshake refused")
)

// Config configures a Mesh.
type Config struct {
	Cluster string
	Self    string
	// Peers maps every other member to the address this member dials for
	// it (only the peers whose names sort after Self are dialed).
	Peers map[string]string
	// BindHost, when set, is the local IP dialing sockets bind to, so that
	// a member's traffic leaves from its own address.
	BindHost string
	// StreamWindow is yamux's per-stream receive window (bandwidth x RTT).
	// Default 4 MiB: with 16 MiB a protocol-A secondary's receive buffer
	// churn stalled its control plane for 270-450 ms under 1 MiB writes,
	// and the primary of a cluster without witness lost its lease
	// (docs/replication.md, "Links").
	StreamWindow uint32
	// HandshakeTimeout bounds a session or stream handshake.
	HandshakeTimeout time.Duration
	// PeerTimeout bounds how long a silent session lives: a peer that
	// answers no keepalive, or takes no bytes, for this long is dropped
	// with its TCP connection (see liveness.go). Default 2 s.
	PeerTimeout time.Duration
	// KeepAlive is the yamux keepalive interval; default PeerTimeout/4.
	KeepAlive time.Duration
	// ControlQueue bounds the control messages queued per peer; more are
	// dropped (raft and leases tolerate loss).
	ControlQueue int
	// MaxHandshakes bounds the accepted connections in their session
	// handshake at once; more are closed at once.
	MaxHandshakes int
	// Security authenticates the links; the zero value does not.
	Security Security
	Logger   *slog.Logger

	// OnControl receives every control message from a peer. The message is
	// the receiver's to keep.
	OnControl func(peer string, m *wire.Control)
	// OnPeer is told when a session with peer comes up or goes down.
	OnPeer func(peer string, up bool)
	// Handler serves a stream the peer opened (kinds other than control).
	// It owns the stream and must close it.
	Handler func(peer string, kind uint8, s net.Conn)

	// DirectKinds are the stream kinds opened on a TCP connection of their
	// own instead of a yamux stream (direct.go), and accepted as such.
	DirectKinds []uint8
}

// DefaultStreamWindow is StreamWindow when none is set (config's
// replication.stream-window default matches it; member's tests check).
const DefaultStreamWindow = 4 << 20

func (c *Config) defaults() {
	if c.StreamWindow == 0 {
		c.StreamWindow = DefaultStreamWindow
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 5 * time.Second
	}
	if c.PeerTimeout == 0 {
		c.PeerTimeout = 2 * time.Second
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = keepAliveFor(c.PeerTimeout)
	}
	if c.ControlQueue == 0 {
		c.ControlQueue = 1024
	}
	if c.MaxHandshakes == 0 {
		c.MaxHandshakes = 64
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Mesh is one member's set of links. See the package documentation.
type Mesh struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	peers  map[string]*peer
	closed bool
	lns    []net.Listener

	serverTLS  *tls.Config           // nil without TLS
	handshakes chan struct{}         // one token per accepted connection in its handshake
	pending    map[net.Conn]struct{} // connections in their handshake; Close closes them; guarded by mu
	refusals   refusalLog

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// peer is the state of the link to one other member.
type peer struct {
	name string
	addr string
	sess *yamux.Session // nil while down; guarded by Mesh.mu
	conn net.Conn       // sess's TCP connection; guarded by Mesh.mu
	up   chan struct{}  // closed when sess becomes non-nil; replaced when it drops
	ctl  chan *wire.Control
	// direct maps the TCP connection of each direct stream with this peer
	// to the session it belongs to, which closes it when it ends; guarded
	// by Mesh.mu.
	direct map[net.Conn]*yamux.Session

	lastDialErr string // dialLoop only: the last failure logged at warn level
}

// maxBackoff caps the redial interval: a member that comes back is linked
// again within this, before its failover timers can mistake a slow redial
// for a dead primary.
const maxBackoff = 200 * time.Millisecond

// New returns a Mesh; call Serve for each listener and Start to dial.
func New(cfg Config) (*Mesh, error) {
	cfg.defaults()
	if cfg.Self == "" {
		return nil, fmt.Errorf("mesh: Self is required")
	}
	if (cfg.Security.Cert == nil) != (cfg.Security.Roots == nil) {
		return nil, fmt.Errorf("mesh: Security needs both Roots and Cert for TLS")
	}
	m := &Mesh{cfg: cfg, log: cfg.Logger.With("mesh", cfg.Self), peers: map[string]*peer{},
		handshakes: make(chan struct{}, cfg.MaxHandshakes), pending: map[net.Conn]struct{}{}}
	if cfg.Security.tls() {
		m.serverTLS = m.newServerTLS()
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	for name, addr := range cfg.Peers {
		if name == cfg.Self {
			return nil, fmt.Errorf("mesh: %s lists itself as a peer", name)
		}
		m.peers[name] = &peer{name: name, addr: addr, up: make(chan struct{}), ctl: make(chan *wire.Control, cfg.ControlQueue),
			direct: map[net.Conn]*yamux.Session{}}
	}
	return m, nil
}

// Start dials every peer whose name sorts after Self, retrying with backoff
// until Close.
func (m *Mesh) Start() {
	names := make([]string, 0, len(m.peers))
	for n := range m.peers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if n > m.cfg.Self {
			p := m.peers[n]
			m.wg.Go(func() { m.dialLoop(p) })
		}
	}
}

// Serve accepts sessions on ln until Close.
func (m *Mesh) Serve(ln net.Listener) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		ln.Close()
		return
	}
	m.lns = append(m.lns, ln)
	m.mu.Unlock()
	m.wg.Go(func() {
		var backoff time.Duration
		for {
			c, err := ln.Accept()
			if err != nil {
				if m.ctx.Err() == nil && isTemporary(err) {
					// Out of descriptors or buffers: keep serving once
					// they are back instead of dropping the listener.
					backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
					m.log.Warn("peer accept", "err", err, "retry_in", backoff)
					select {
					case <-time.After(backoff):
						continue
					case <-m.ctx.Done():
					}
				}
				return
			}
			backoff = 0
			select {
			case m.handshakes <- struct{}{}:
			default:
				m.refusals.log(m.log, c.RemoteAddr().String(), "", fmt.Errorf("%w: %d handshakes in progress", ErrHandshake, cap(m.handshakes)))
				c.Close()
				continue
			}
			m.wg.Go(func() { m.accept(c) })
		}
	})
}

func isTemporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM)
}

// Close ends every session and waits for the mesh's goroutines.
func (m *Mesh) Close() {
	m.mu.Lock()
	m.closed = true
	for _, ln := range m.lns {
		ln.Close()
	}
	for c := range m.pending {
		c.Close() // a handshake would otherwise hold Close for its timeout
	}
	for _, p := range m.peers {
		if p.sess != nil {
			p.conn.Close()
			p.sess.Close()
		}
	}
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
}

// Connected reports whether a session with peer is up.
func (m *Mesh) Connected(peer string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.peers[peer]
	return p != nil && p.sess != nil
}

// Send queues a control message for peer; it is dropped when the queue is
// full or the session is down.
func (m *Mesh) Send(peer string, c *wire.Control) {
	p := m.peers[peer]
	if p == nil || !m.Connected(peer) {
		return
	}
	select {
	case p.ctl <- c:
	default:
	}
}

// Open opens a stream of kind to peer, waiting for the session until ctx
// ends. A direct stream's dial and handshake may outlast ctx's deadline by
// up to the handshake timeout (openDirect); a cancel of ctx ends them.
func (m *Mesh) Open(ctx context.Context, peer string, kind uint8) (net.Conn, error) {
	p := m.peers[peer]
	if p == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownPeer, peer)
	}
	sess, err := m.awaitSession(ctx, p)
	if err != nil {
		return nil, err
	}
	if m.direct(kind) {
		s, err := m.openDirect(ctx, p, sess, kind)
		if err == nil {
			return s, nil
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, ctx.Err()
		}
		// An older peer, or one that does not take this kind
		// directly: the session's stream serves as before.
		m.log.Debug("direct stream refused; opening a session stream", "peer", peer, "kind", kind, "err", err)
	}
	s, err := sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("mesh: open stream to %s: %w", peer, err)
	}
	if err := m.announceStream(s, kind, peer); err != nil {
		s.Close()
		return nil, fmt.Errorf("mesh: open stream to %s: %w", peer, err)
	}
	return &readerConn{Conn: s}, nil
}

// awaitSession returns p's session, waiting for one until ctx ends
// (ctx.Err()) or the mesh closes (ErrClosed).
func (m *Mesh) awaitSession(ctx context.Context, p *peer) (*yamux.Session, error) {
	for {
		m.mu.Lock()
		sess, up, closed := p.sess, p.up, m.closed
		m.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case sess != nil:
			return sess, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-m.ctx.Done():
			return nil, ErrClosed
		}
	}
}

func (m *Mesh) yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.MaxStreamWindowSize = m.cfg.StreamWindow
	c.EnableKeepAlive = true
	c.KeepAliveInterval = m.cfg.KeepAlive
	// Both a keepalive's wait for its answer and a frame's wait for the
	// send loop: a session stays silent at most KeepAlive plus this
	// before yamux ends it (yamux's default, 10 s, outlived every
	// configured timeout: issue 15).
	c.ConnectionWriteTimeout = writeTimeoutFor(m.cfg.PeerTimeout, m.cfg.KeepAlive)
	c.StreamOpenTimeout = m.cfg.HandshakeTimeout
	c.LogOutput = nil
	c.Logger = slog.NewLogLogger(m.log.Handler(), slog.LevelDebug)
	return c
}

// dialer dials peers from this member's own address.
func (m *Mesh) dialer() *net.Dialer {
	d := &net.Dialer{Timeout: m.cfg.HandshakeTimeout, KeepAlive: 5 * time.Second}
	if m.cfg.BindHost != "" {
		if ip := net.ParseIP(m.cfg.BindHost); ip != nil && !ip.IsUnspecified() {
			d.LocalAddr = &net.TCPAddr{IP: ip}
		}
	}
	return d
}

func (m *Mesh) dialLoop(p *peer) {
	backoff := 50 * time.Millisecond
	d := m.dialer()
	for m.ctx.Err() == nil {
		c, err := d.DialContext(m.ctx, "tcp", p.addr)
		if err == nil {
			start := time.Now()
			err = m.runSession(p, c, true, nil)
			if time.Since(start) > 5*time.Second {
				backoff = 50 * time.Millisecond
			}
		}
		if m.ctx.Err() != nil {
			return
		}
		m.logDialErr(p, err)
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// logDialErr logs a failed dial or session: a refusal at warn level when it
// differs from the last one logged for p (redials come every 200 ms), the
// rest at debug level.
func (m *Mesh) logDialErr(p *peer, err error) {
	if err != nil && isRefusal(err) && err.Error() != p.lastDialErr {
		p.lastDialErr = err.Error()
		m.log.Warn("peer link refused", "peer", p.name, "address", p.addr, "err", err)
		return
	}
	m.log.Debug("peer link down", "peer", p.name, "err", err)
}

func (m *Mesh) accept(c net.Conn) {
	// runSession calls release once, when the handshake is over.
	release := func() { <-m.handshakes }
	err := m.runSession(nil, c, false, release)
	if err != nil && m.ctx.Err() == nil {
		var he *handshakeErr
		if errors.As(err, &he) {
			m.refusals.log(m.log, c.RemoteAddr().String(), he.peer, err)
		} else {
			m.log.Warn("lost peer session", "remote", c.RemoteAddr().String(), "err", err)
		}
	}
}

// StreamReader returns the wire.Reader a stream delivered by Handler was
// read through: frames after the StreamOpen may already be buffered in it.
// Use it instead of wrapping the stream in a new Reader.
func StreamReader(s net.Conn) *wire.Reader {
	if rc, ok := s.(*readerConn); ok && rc.r != nil {
		return rc.r
	}
	return wire.NewReader(s)
}
