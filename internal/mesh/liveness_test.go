package mesh

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/stretchr/testify/require"
)

// silentProxy forwards TCP connections to target and, once told, swallows
// the bytes of one or both directions without closing anything: a cut
// cable or a firewall that drops packets, as the ends see it.
type silentProxy struct {
	ln     net.Listener
	target string
	// drop[0]: bytes from the dialer to target; drop[1]: back.
	drop [2]atomic.Bool
	// delay holds each chunk back this long (nanoseconds): a long link.
	delay atomic.Int64
	wg    sync.WaitGroup
}

func newSilentProxy(t *testing.T, target string) *silentProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &silentProxy{ln: ln, target: target}
	var mu sync.Mutex
	var conns []net.Conn
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			p.wg.Go(func() { p.pipe(u, c, &p.drop[0]) })
			p.wg.Go(func() { p.pipe(c, u, &p.drop[1]) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *silentProxy) pipe(dst, src net.Conn, drop *atomic.Bool) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		time.Sleep(time.Duration(p.delay.Load()))
		if n > 0 && !drop.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				_ = dst.(*net.TCPConn).CloseWrite()
			}
			return
		}
	}
}

func (p *silentProxy) addr() string { return p.ln.Addr().String() }

// proxiedPair runs meshes a and b (a dials b through a silentProxy) with
// the given peer timeout and waits until both see the session.
// With direct, data streams run on connections of their own (through the
// proxy too, when a opens them).
func proxiedPair(t *testing.T, peerTimeout time.Duration, direct bool) (a, b *node, px *silentProxy) {
	lnB, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	px = newSilentProxy(t, lnB.Addr().String())
	lnA, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	mk := func(self, other, addr string, ln net.Listener) *node {
		nd := &node{ln: ln, strs: make(chan net.Conn, 8)}
		cfg := Config{Cluster: "c", Self: self, Peers: map[string]string{other: addr},
			PeerTimeout: peerTimeout, HandshakeTimeout: time.Second, Logger: testLogger(t, nd),
			Handler: func(peer string, kind uint8, s net.Conn) { nd.strs <- s }}
		if direct {
			cfg.DirectKinds = []uint8{wire.StreamData}
		}
		m, err := New(cfg)
		require.NoError(t, err)
		nd.m = m
		m.Serve(ln)
		t.Cleanup(m.Close)
		return nd
	}
	a = mk("a", "b", px.addr(), lnA)
	b = mk("b", "a", lnA.Addr().String(), lnB)
	a.m.Start()
	waitConnected(t, a.m, "b")
	waitConnected(t, b.m, "a")
	return a, b, px
}

// openStream opens a data stream from a to b and returns a's end and b's.
func openStream(t *testing.T, a, b *node) (s, bs net.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := a.m.Open(ctx, "b", wire.StreamData)
	require.NoError(t, err)
	_, direct := s.(*directConn)
	require.Equal(t, len(a.m.cfg.DirectKinds) > 0, direct, "a direct stream where asked for")
	return s, <-b.strs
}

// streamVariants runs f for a stream on the session and a direct stream.
func streamVariants(t *testing.T, f func(t *testing.T, direct bool)) {
	for _, direct := range []bool{false, true} {
		t.Run(map[bool]string{false: "session-stream", true: "direct-stream"}[direct], func(t *testing.T) { f(t, direct) })
	}
}

// A session whose link goes silent (both ways or one way, no FIN, no RST)
// ends on both sides within the peer timeout, and a reader blocked on one
// of its streams returns: yamux's defaults kept it for 10 s and more.
func TestSilentLinkEndsWithinPeerTimeout(t *testing.T) {
	const peerTimeout = 600 * time.Millisecond
	for _, tc := range []struct {
		name string
		drop []int
	}{
		{"both-ways", []int{0, 1}},
		{"a-to-b", []int{0}},
		{"b-to-a", []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			streamVariants(t, func(t *testing.T, direct bool) {
				a, b, px := proxiedPair(t, peerTimeout, direct)
				s, bs := openStream(t, a, b)
				defer s.Close()
				defer bs.Close()
				readEnded := make(chan time.Time, 2)
				for _, c := range []net.Conn{s, bs} {
					go func() {
						_, _ = io.Copy(io.Discard, c)
						readEnded <- time.Now()
					}()
				}
				start := time.Now()
				for _, d := range tc.drop {
					px.drop[d].Store(true)
				}
				// Traffic in flight when the link went silent.
				w := wire.NewWriter(s)
				_ = w.WriteMsg(&wire.Ping{ID: 1})
				_ = w.Flush()
				for range 2 {
					select {
					case end := <-readEnded:
						require.LessOrEqual(t, end.Sub(start), peerTimeout+300*time.Millisecond, "a reader on the silent link ended late")
					case <-time.After(5 * time.Second):
						t.Fatal("a reader on the silent link never returned")
					}
				}
				require.Eventually(t, func() bool { return !a.m.Connected("b") && !b.m.Connected("a") },
					peerTimeout, 10*time.Millisecond, "both ends drop the session")
				t.Logf("%s: both readers ended after %v", tc.name, time.Since(start).Round(time.Millisecond))
			})
		})
	}
}

// Drop ends a session at once, even when its link is silent, and the
// dialer links again once the link is back.
func TestDropEndsSilentSessionAtOnce(t *testing.T) {
	streamVariants(t, testDropEndsSilentSessionAtOnce)
}

func testDropEndsSilentSessionAtOnce(t *testing.T, direct bool) {
	a, b, px := proxiedPair(t, 10*time.Second, direct)
	s, _ := openStream(t, a, b)
	px.drop[0].Store(true)
	px.drop[1].Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 1))
		done <- err
	}()
	start := time.Now()
	require.True(t, a.m.Drop("b", "test"))
	select {
	case err := <-done:
		require.Error(t, err)
	case <-time.After(time.Second):
		t.Fatal("a reader of the dropped session is still blocked")
	}
	require.Less(t, time.Since(start), 500*time.Millisecond)
	require.False(t, a.m.Connected("b"))
	require.False(t, a.m.Drop("b", "again"), "no session left to drop")
	px.drop[0].Store(false)
	px.drop[1].Store(false)
	waitConnected(t, a.m, "b")
}

// Closing a stream returns its own blocked reader at once; yamux's Close
// alone is a half-close that waits for the peer's FIN.
func TestStreamCloseUnblocksReader(t *testing.T) { streamVariants(t, testStreamCloseUnblocksReader) }

func testStreamCloseUnblocksReader(t *testing.T, direct bool) {
	a, b, px := proxiedPair(t, 10*time.Second, direct)
	s, _ := openStream(t, a, b) // the peer never answers nor closes
	px.drop[1].Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 1))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	s.Close()
	select {
	case err := <-done:
		require.Error(t, err)
	case <-time.After(time.Second):
		t.Fatal("Close left the stream's reader blocked")
	}
}
