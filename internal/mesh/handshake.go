package mesh

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/grbd/grbd/internal/pki"
	"github.com/grbd/grbd/internal/wire"
)

// The session handshake runs on the raw connection (inside TLS when
// configured), before yamux starts, so that nothing of an unauthenticated
// peer reaches the multiplexer, the control plane or the data path
// (docs/wire.md, "Session handshake"):
//
//	dialer                                   acceptor
//	[TLS handshake, both certificates verified]
//	StreamOpen{Control, cluster, D, A}  →
//	AuthChallenge{nonce D}              →    (shared secret only)
//	                                    ←    AuthChallenge{nonce A}
//	AuthProof{MAC(dialer)}              →
//	                                    ←    AuthProof{MAC(acceptor)}
//	                                    ←    StreamOpen{Control, cluster, A, D}
//	[yamux session]
//
// The acceptor answers only after the dialer proved itself, so an
// unauthenticated peer learns nothing but a closed connection; its final
// StreamOpen means "accepted". A direct stream's connection (direct.go)
// runs the same handshake with the stream's kind in place of Control, and
// carries that stream instead of yamux.

// Security holds a member's credentials for its links. The zero value is
// an unauthenticated mesh.
type Security struct {
	// Roots and Cert enable mutual TLS: every link runs inside TLS 1.3, and
	// each side requires the other's certificate to chain to Roots and to
	// name the member it claims to be (pki.MemberOf). Both or neither.
	Roots *x509.CertPool
	Cert  *tls.Certificate
	// Secret enables the shared-secret challenge-response (HMAC-SHA256
	// over both nonces, the cluster and both names). With TLS as well,
	// the MAC also covers the TLS session's exported keying material, so
	// a proof cannot be relayed into another TLS session.
	Secret []byte
}

// Enabled reports whether links are authenticated at all.
func (s Security) Enabled() bool { return s.Cert != nil || len(s.Secret) > 0 }

func (s Security) tls() bool { return s.Cert != nil }

// Limits of the handshake.
const (
	// maxHandshakeBody bounds each handshake frame: the largest is a
	// StreamOpen with three maximal strings (772 bytes). Longer frames
	// from a peer that has not authenticated yet are refused from their
	// header.
	maxHandshakeBody = 1024
	// handshakeBuf sizes the handshake's read and write buffers; the read
	// buffer stays under the yamux session (frames of the peer may already
	// be in it).
	handshakeBuf = 4096
	// macLabel starts the MAC input; the version in it changes with the
	// input layout.
	macLabel = "grbd-auth-v1"
	// exporterLabel names the TLS exported keying material the MAC covers.
	exporterLabel = "EXPORTER-grbd-auth-v1"
)

// MAC roles: which side of the handshake a proof comes from, so that the
// acceptor's proof can never pass as the dialer's.
const (
	roleDialer   byte = 1
	roleAcceptor byte = 2
)

// bufConn reads through the buffered reader that read the handshake.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// handshakeErr is a refused handshake; peer is the name the other side
// claimed, when it got that far.
type handshakeErr struct {
	peer string
	err  error
}

func (e *handshakeErr) Error() string { return e.err.Error() }
func (e *handshakeErr) Unwrap() error { return e.err }

func refused(peer string, format string, args ...any) error {
	return &handshakeErr{peer: peer, err: fmt.Errorf("%w: "+format, append([]any{ErrHandshake}, args...)...)}
}

// sessionHandshake authenticates c (a fresh connection, under the handshake
// deadline) and returns the connection to run yamux on and the peer. p is
// the dialed peer; nil when accepting (the handshake names it). kind is
// what the connection carries: StreamControl for a session, or the kind
// of a direct stream (direct.go); the dialer names it, the acceptor
// returns what the dialer named.
func (m *Mesh) sessionHandshake(c net.Conn, p *peer, dialer bool, kind uint8) (net.Conn, *peer, uint8, error) {
	sec := m.cfg.Security
	var tc *tls.Conn
	if sec.tls() {
		if dialer {
			tc = tls.Client(c, m.clientTLS(p.name))
		} else {
			tc = tls.Server(c, m.serverTLS)
		}
		if err := tc.Handshake(); err != nil {
			name := ""
			if p != nil {
				name = p.name
			}
			return nil, nil, 0, refused(name, "tls: %w", err)
		}
		c = tc
	}
	br := bufio.NewReaderSize(c, handshakeBuf)
	r := wire.NewReader(br)
	r.SetLimit(maxHandshakeBody)
	w := wire.NewWriter(bufio.NewWriterSize(c, handshakeBuf))
	h := &handshake{m: m, r: r, w: w, tc: tc}
	var err error
	if dialer {
		err = h.dial(p, kind)
	} else {
		p, err = h.accept(br)
		kind = h.kind
	}
	if err != nil {
		return nil, nil, 0, err
	}
	r.SetLimit(0)
	return &bufConn{Conn: c, r: br}, p, kind, nil
}

// handshake is one session handshake in progress.
type handshake struct {
	m  *Mesh
	r  *wire.Reader
	w  *wire.Writer
	tc *tls.Conn // nil without TLS

	kind uint8 // accepting: the kind the dialer's StreamOpen named
}

func (h *handshake) send(msgs ...wire.Message) error {
	for _, msg := range msgs {
		if err := h.w.WriteMsg(msg); err != nil {
			return err
		}
	}
	return h.w.Flush()
}

func (h *handshake) read() (wire.Message, error) { return h.r.ReadMsg() }

func (h *handshake) dial(p *peer, kind uint8) error {
	cfg := &h.m.cfg
	hello := &wire.StreamOpen{Kind: kind, Cluster: cfg.Cluster, From: cfg.Self, To: p.name}
	if len(cfg.Security.Secret) == 0 {
		if err := h.send(hello); err != nil {
			return refused(p.name, "%w", err)
		}
	} else {
		var mine wire.AuthChallenge
		if err := h.challenge(&mine); err != nil {
			return err
		}
		if err := h.send(hello, &mine); err != nil {
			return refused(p.name, "%w", err)
		}
		msg, err := h.read()
		if err != nil {
			return refused(p.name, "no challenge from the peer (it refused this member, or its security settings differ): %w", err)
		}
		theirs, ok := msg.(*wire.AuthChallenge)
		if !ok {
			return refused(p.name, "peer answered %v, not a challenge: it has no shared secret configured", msg.Type())
		}
		nd, na := mine.Nonce, theirs.Nonce
		if err := h.send(&wire.AuthProof{MAC: h.mac(roleDialer, cfg.Self, p.name, nd, na)}); err != nil {
			return refused(p.name, "%w", err)
		}
		msg, err = h.read()
		if err != nil {
			return refused(p.name, "peer refused this member's proof (wrong shared secret?): %w", err)
		}
		proof, ok := msg.(*wire.AuthProof)
		if !ok {
			return refused(p.name, "peer answered %v, not a proof", msg.Type())
		}
		want := h.mac(roleAcceptor, cfg.Self, p.name, nd, na)
		if !hmac.Equal(proof.MAC[:], want[:]) {
			return refused(p.name, "peer failed to prove the shared secret")
		}
	}
	msg, err := h.read()
	if err != nil {
		return refused(p.name, "peer refused the session: %w", err)
	}
	so, ok := msg.(*wire.StreamOpen)
	switch {
	case !ok:
		return refused(p.name, "peer answered %v, not StreamOpen (its security settings differ?)", msg.Type())
	case so.Kind != kind || so.Cluster != cfg.Cluster || so.From != p.name || so.To != cfg.Self:
		return refused(p.name, "peer answered %+v", *so)
	}
	return nil
}

func (h *handshake) accept(br *bufio.Reader) (*peer, error) {
	m := h.m
	cfg := &m.cfg
	msg, err := h.read()
	if err != nil {
		return nil, refused("", "%w", err)
	}
	so, ok := msg.(*wire.StreamOpen)
	if !ok {
		return nil, refused("", "first message is %v", msg.Type())
	}
	from := so.From
	h.kind = so.Kind
	switch {
	case so.Kind != wire.StreamControl && !m.direct(so.Kind):
		return nil, refused(from, "first stream is of kind %d, not control or a direct stream", so.Kind)
	case so.Cluster != cfg.Cluster:
		return nil, refused(from, "peer %q is in cluster %q, not %q", from, so.Cluster, cfg.Cluster)
	case so.To != cfg.Self:
		return nil, refused(from, "peer %q wants %q, this is %q", from, so.To, cfg.Self)
	case m.peers[from] == nil:
		return nil, refused(from, "%w: %q", ErrUnknownPeer, from)
	case from > cfg.Self && so.Kind == wire.StreamControl:
		// Sessions only: a direct stream is dialed by whoever opens it.
		return nil, refused(from, "peer %q must be dialed by %q, not dial it", from, cfg.Self)
	}
	if h.tc != nil {
		if err := pki.MemberOf(h.tc.ConnectionState().PeerCertificates, cfg.Security.Roots, cfg.Cluster, from); err != nil {
			return nil, refused(from, "peer claims to be %q: %w", from, err)
		}
	}
	if len(cfg.Security.Secret) > 0 {
		msg, err := h.read()
		if err != nil {
			return nil, refused(from, "no challenge from %q (it has no shared secret configured?): %w", from, err)
		}
		theirs, ok := msg.(*wire.AuthChallenge)
		if !ok {
			return nil, refused(from, "%q sent %v, not a challenge", from, msg.Type())
		}
		var mine wire.AuthChallenge
		if err := h.challenge(&mine); err != nil {
			return nil, err
		}
		if err := h.send(&mine); err != nil {
			return nil, refused(from, "%w", err)
		}
		msg, err = h.read()
		if err != nil {
			return nil, refused(from, "no proof from %q: %w", from, err)
		}
		proof, ok := msg.(*wire.AuthProof)
		if !ok {
			return nil, refused(from, "%q sent %v, not a proof", from, msg.Type())
		}
		nd, na := theirs.Nonce, mine.Nonce
		want := h.mac(roleDialer, from, cfg.Self, nd, na)
		if !hmac.Equal(proof.MAC[:], want[:]) {
			return nil, refused(from, "%q failed to prove the shared secret (wrong secret?)", from)
		}
		if err := h.w.WriteMsg(&wire.AuthProof{MAC: h.mac(roleAcceptor, from, cfg.Self, nd, na)}); err != nil {
			return nil, refused(from, "%w", err)
		}
	} else if br.Buffered() > 0 {
		// The dialer sent more than its StreamOpen in one go: a challenge
		// this member cannot answer.
		return nil, refused(from, "%q sent credentials but this member has no shared secret configured", from)
	}
	if err := h.send(&wire.StreamOpen{Kind: so.Kind, Cluster: cfg.Cluster, From: cfg.Self, To: from}); err != nil {
		return nil, refused(from, "%w", err)
	}
	return m.peers[from], nil
}

// challenge fills a fresh challenge.
func (h *handshake) challenge(c *wire.AuthChallenge) error {
	c.Method = wire.AuthHMACSHA256
	if _, err := rand.Read(c.Nonce[:]); err != nil {
		return fmt.Errorf("mesh: nonce: %w", err)
	}
	return nil
}

// mac is a side's proof (docs/wire.md, "Session handshake"):
//
//	HMAC-SHA256(secret, "grbd-auth-v1" | role u8 | cluster str | dialer str |
//	            acceptor str | nonce D [32] | nonce A [32] | binding str)
//
// where str is a u16 little-endian length and the bytes, and binding is 32
// bytes of TLS exported keying material (label EXPORTER-grbd-auth-v1, no
// context) with TLS, empty without.
func (h *handshake) mac(role byte, dialer, acceptor string, nd, na [wire.NonceSize]byte) [wire.MACSize]byte {
	var binding []byte
	if h.tc != nil {
		cs := h.tc.ConnectionState()
		b, err := cs.ExportKeyingMaterial(exporterLabel, nil, 32)
		if err == nil {
			binding = b
		}
	}
	return authMAC(h.m.cfg.Security.Secret, role, h.m.cfg.Cluster, dialer, acceptor, nd, na, binding)
}

// authMAC computes the MAC input documented at mac.
func authMAC(secret []byte, role byte, cluster, dialer, acceptor string, nd, na [wire.NonceSize]byte, binding []byte) [wire.MACSize]byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(macLabel))
	mac.Write([]byte{role})
	for _, s := range [...][]byte{[]byte(cluster), []byte(dialer), []byte(acceptor)} {
		writeStr(mac, s)
	}
	mac.Write(nd[:])
	mac.Write(na[:])
	writeStr(mac, binding)
	var out [wire.MACSize]byte
	mac.Sum(out[:0])
	return out
}

func writeStr(w interface{ Write([]byte) (int, error) }, b []byte) {
	var n [2]byte
	binary.LittleEndian.PutUint16(n[:], uint16(len(b)))
	_, _ = w.Write(n[:])
	_, _ = w.Write(b)
}

// clientTLS is the TLS configuration for dialing peer: it accepts only a
// certificate that names peer (verified here rather than by hostname, since
// members are named, not addressed).
func (m *Mesh) clientTLS(peer string) *tls.Config {
	sec := m.cfg.Security
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{*sec.Cert},
		ServerName:         peer,
		InsecureSkipVerify: true, // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			return pki.MemberOf(cs.PeerCertificates, sec.Roots, m.cfg.Cluster, peer)
		},
	}
}

// newServerTLS is the acceptor's TLS configuration: a client certificate
// chaining to the cluster CA is required; which member it names is checked
// once the peer said who it is.
func (m *Mesh) newServerTLS() *tls.Config {
	sec := m.cfg.Security
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{*sec.Cert},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := pki.Chains(cs.PeerCertificates, sec.Roots, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// isRefusal reports whether err is a refused handshake (as opposed to a
// session that ran and ended).
func isRefusal(err error) bool {
	var he *handshakeErr
	return errors.As(err, &he)
}

// refusalLog logs refused connections at warn level, at most refusalBurst
// per second; the rest are counted and reported with the next line logged,
// so a flood of strangers cannot flood the log.
type refusalLog struct {
	mu         sync.Mutex
	second     time.Time
	n          int
	suppressed int
}

const refusalBurst = 10

func (l *refusalLog) log(log *slog.Logger, remote, claimed string, err error) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.second) >= time.Second {
		l.second, l.n = now, 0
	}
	l.n++
	if l.n > refusalBurst {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	log.Warn("refused peer connection", "remote", remote, "claimed", claimed, "err", err, "suppressed_since_last", suppressed)
}
