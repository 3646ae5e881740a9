package mesh

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/pki"
	"github.com/grbd/grbd/internal/wire"
	"github.com/stretchr/testify/require"
)

// testLogger collects nd's warn-level log lines.
func testLogger(t *testing.T, nd *node) *slog.Logger {
	return slog.New(&lineHandler{nd: nd})
}

type lineHandler struct {
	nd    *node
	attrs []slog.Attr
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.nd.mu.Lock()
	h.nd.logs = append(h.nd.logs, b.String())
	h.nd.mu.Unlock()
	return nil
}
func (h *lineHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return &lineHandler{nd: h.nd, attrs: append(append([]slog.Attr(nil), h.attrs...), a...)}
}
func (h *lineHandler) WithGroup(string) slog.Handler { return h }

func (n *node) state() (ups, logs []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.ups...), append([]string(nil), n.logs...)
}

// requireRefused waits until nd logged a refusal mentioning want, and checks
// that nothing reached it: no peer came up, no control message arrived.
func requireRefused(t *testing.T, nd *node, want string) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, logs := nd.state()
		for _, l := range logs {
			if strings.Contains(l, "refused peer connection") && strings.Contains(l, "remote=127.0.0.1:") && strings.Contains(l, want) {
				return true
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond, "no refusal mentioning %q logged", want)
	ups, logs := nd.state()
	require.Empty(t, ups, "a session came up: %v", logs)
	require.Empty(t, nd.controls(), "control messages were delivered")
}

// cluster is a CA and member certificates for tests.
type testPKI struct {
	ca    *pki.Authority
	roots *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	ca, err := pki.NewAuthority("c1", time.Now(), time.Hour)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return &testPKI{ca: ca, roots: roots}
}

func (p *testPKI) cert(t *testing.T, req pki.Request) *tls.Certificate {
	c, k, err := p.ca.Issue(req, time.Now())
	require.NoError(t, err)
	pair, err := tls.X509KeyPair(c, k)
	require.NoError(t, err)
	return &pair
}

func (p *testPKI) member(t *testing.T, name string) Security {
	return Security{Roots: p.roots, Cert: p.cert(t, pki.MemberRequest("c1", name, time.Hour))}
}

func TestAuthenticatedLinks(t *testing.T) {
	p := newTestPKI(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	modes := map[string]func(string) Security{
		"secret": func(string) Security { return Security{Secret: secret} },
		"tls":    func(n string) Security { return p.member(t, n) },
		"tls+secret": func(n string) Security {
			s := p.member(t, n)
			s.Secret = secret
			return s
		},
	}
	for name, sec := range modes {
		t.Run(name, func(t *testing.T) {
			nodes := startSecureMeshes(t, "c1", sec, "a", "b", "w")
			waitConnected(t, nodes["a"].m, "b", "w")
			waitConnected(t, nodes["w"].m, "a", "b")
			nodes["a"].m.Send("w", &wire.Control{Kind: wire.ControlRaft, Data: []byte("x1")})
			nodes["w"].m.Send("b", &wire.Control{Kind: wire.ControlRaft, Data: []byte("y1")})
			require.Eventually(t, func() bool { return len(nodes["w"].controls()) == 1 && len(nodes["b"].controls()) == 1 }, 5*time.Second, 5*time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := nodes["b"].m.Open(ctx, "a", wire.StreamData)
			require.NoError(t, err)
			w := wire.NewWriter(s)
			require.NoError(t, w.WriteMsg(&wire.Ping{ID: 9}))
			require.NoError(t, w.Flush())
			got := <-nodes["a"].strs
			msg, err := StreamReader(got).ReadMsg()
			require.NoError(t, err)
			require.Equal(t, &wire.Ping{ID: 9}, msg)
			s.Close()
			got.Close()
		})
	}
}

// impostor runs a mesh with its own credentials that claims to be self and
// dials target at addr.
func impostor(t *testing.T, self, target, addr string, sec Security) *Mesh {
	m, err := New(Config{Cluster: "c1", Self: self, Peers: map[string]string{target: addr}, HandshakeTimeout: time.Second, Security: sec})
	require.NoError(t, err)
	m.Start()
	t.Cleanup(m.Close)
	return m
}

// TestImpostorsAreRefused: a peer without the cluster's credentials, or with
// another member's, is refused by the acceptor before anything reaches its
// control plane, and the refusal is logged with its address.
func TestImpostorsAreRefused(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t)
	secret := []byte("the right secret, 32 bytes long.")
	cases := []struct {
		name  string
		sec   func(string) Security // the cluster's members
		fake  Security              // the impostor's, claiming to be "a"
		logIs string
	}{
		{"wrong secret", func(string) Security { return Security{Secret: secret} },
			Security{Secret: []byte("a wrong secret, also 32 bytes...")}, "failed to prove the shared secret"},
		{"no secret", func(string) Security { return Security{Secret: secret} },
			Security{}, "no challenge"},
		{"certificate of another CA", func(n string) Security { return p.member(t, n) },
			other.member(t, "a"), "certificate"},
		{"certificate of another member", func(n string) Security { return p.member(t, n) },
			p.member(t, "c"), `peer claims to be "a"`},
		{"NBD server certificate", func(n string) Security { return p.member(t, n) },
			Security{Roots: p.roots, Cert: p.cert(t, pki.Request{CommonName: "a", DNSNames: []string{"a"}, Usage: pki.UsageServer, Validity: time.Hour})}, "certificate"},
		{"no certificate", func(n string) Security { return p.member(t, n) },
			Security{}, "tls"},
		{"certificate but wrong secret", func(n string) Security {
			s := p.member(t, n)
			s.Secret = secret
			return s
		}, func() Security {
			s := p.member(t, "a")
			s.Secret = []byte("wrong")
			return s
		}(), "failed to prove the shared secret"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nodes := startSecureMeshes(t, "c1", c.sec, "b", "-a")
			imp := impostor(t, "a", "b", nodes["b"].ln.Addr().String(), c.fake)
			requireRefused(t, nodes["b"], c.logIs)
			require.False(t, imp.Connected("b"))
		})
	}
}

// TestDialerRefusesImpostor: a member dialing a peer's address finds an
// impostor there (the peer is down; a stranger took its port): the impostor's
// certificate or proof does not convince the dialer, which never brings the
// session up.
func TestDialerRefusesImpostor(t *testing.T) {
	p := newTestPKI(t)
	secret := []byte("the right secret, 32 bytes long.")
	cases := []struct {
		name       string
		real, fake Security
	}{
		{"certificate of another member", p.member(t, "a"), p.member(t, "x")},
		{"wrong secret", Security{Secret: secret}, Security{Secret: []byte("wrong")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			// The impostor claims to be "w" and accepts on w's address.
			fake, err := New(Config{Cluster: "c1", Self: "w", Peers: map[string]string{"a": "127.0.0.1:1"}, HandshakeTimeout: time.Second, Security: c.fake})
			require.NoError(t, err)
			var mu sync.Mutex
			var got []string
			fake.cfg.OnControl = func(peer string, m *wire.Control) {
				mu.Lock()
				got = append(got, peer)
				mu.Unlock()
			}
			fake.Serve(ln)
			t.Cleanup(fake.Close)
			real, err := New(Config{Cluster: "c1", Self: "a", Peers: map[string]string{"w": ln.Addr().String()}, HandshakeTimeout: time.Second, Security: c.real})
			require.NoError(t, err)
			real.Start()
			t.Cleanup(real.Close)
			time.Sleep(500 * time.Millisecond)
			real.Send("w", &wire.Control{Kind: wire.ControlLeaseRequest, Epoch: 1})
			require.False(t, real.Connected("w"))
			require.False(t, fake.Connected("a"))
			mu.Lock()
			require.Empty(t, got)
			mu.Unlock()
		})
	}
}

// TestMixedSecurityIsRefused: a member with a secret and one without never
// link, whichever dials.
func TestMixedSecurityIsRefused(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	for _, withSecret := range []string{"a", "b"} {
		t.Run("secret on "+withSecret, func(t *testing.T) {
			nodes := startSecureMeshes(t, "c1", func(n string) Security {
				if n == withSecret {
					return Security{Secret: secret}
				}
				return Security{}
			}, "a", "b")
			requireRefused(t, nodes["b"], "")
			require.False(t, nodes["a"].m.Connected("b"))
		})
	}
}

// TestHandshakeLimits: connections that send nothing, a partial frame or an
// oversized one are closed within the handshake timeout (the oversized one at
// once); beyond MaxHandshakes connections are closed at accept; a real
// member links once the strangers are gone.
func TestHandshakeLimits(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b, err := New(Config{Cluster: "c1", Self: "b", Peers: map[string]string{"a": "127.0.0.1:1"},
		HandshakeTimeout: 500 * time.Millisecond, MaxHandshakes: 4, Security: Security{Secret: []byte("s")}})
	require.NoError(t, err)
	b.Serve(ln)
	t.Cleanup(b.Close)
	addr := ln.Addr().String()

	// closedWithin reports how long the server took to close c.
	closedWithin := func(c net.Conn) time.Duration {
		start := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.Copy(io.Discard, c)
		require.NoError(t, err, "server did not close the connection")
		return time.Since(start)
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	hello := wire.AppendFrame(nil, &wire.StreamOpen{Kind: wire.StreamControl, Cluster: "c1", From: "a", To: "b"})

	silent, partial, afterHello := dial(), dial(), dial()
	_, err = partial.Write(hello[:10])
	require.NoError(t, err)
	_, err = afterHello.Write(hello)
	require.NoError(t, err)
	oversized := dial()
	big := wire.AppendFrame(nil, &wire.Control{Kind: wire.ControlRaft, Data: make([]byte, 2000)})
	_, err = oversized.Write(big)
	require.NoError(t, err)
	require.Less(t, closedWithin(oversized), 400*time.Millisecond, "an oversized handshake frame waited for the timeout")

	// Three handshakes are in progress: one more fits, the next is closed
	// at once.
	fourth := dial()
	time.Sleep(50 * time.Millisecond)
	fifth := dial()
	require.Less(t, closedWithin(fifth), 300*time.Millisecond, "a connection beyond MaxHandshakes was kept")

	for _, c := range []net.Conn{silent, partial, afterHello, fourth} {
		require.Less(t, closedWithin(c), 2*time.Second, "a stalled handshake outlived its timeout")
	}
	a := impostor(t, "a", "b", addr, Security{Secret: []byte("s")})
	waitConnected(t, a, "b")
}

// TestStrangerBytesNeverReachYamux: a stranger that speaks yamux right away
// (no handshake) is refused on its first frame.
func TestStrangerBytesNeverReachYamux(t *testing.T) {
	nodes := startSecureMeshes(t, "c1", func(string) Security { return Security{Secret: []byte("s")} }, "b", "-a")
	c, err := net.Dial("tcp", nodes["b"].ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	syn := []byte{0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0} // a yamux SYN
	_, err = c.Write(append(syn, syn...))
	require.NoError(t, err)
	_, err = bufio.NewReader(c).ReadByte()
	require.ErrorIs(t, err, io.EOF)
	requireRefused(t, nodes["b"], "magic")
}
