package mesh

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/stretchr/testify/require"
)

// A peer that does not take a kind directly (an older version) refuses the
// direct connection; the opener falls back to a stream on the session.
func TestDirectStreamFallsBackToSession(t *testing.T) {
	nodes := startMeshes(t, "c1", "a", "b")
	waitConnected(t, nodes["a"].m, "b")
	waitConnected(t, nodes["b"].m, "a")
	nodes["b"].m.mu.Lock() // every accept takes mu before its handshake reads the config
	nodes["b"].m.cfg.DirectKinds = nil
	nodes["b"].m.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := nodes["a"].m.Open(ctx, "b", wire.StreamData)
	require.NoError(t, err)
	defer s.Close()
	_, direct := s.(*directConn)
	require.False(t, direct, "b refused it: a stream on the session")
	got := <-nodes["b"].strs
	defer got.Close()
	requireCarries(t, s, got, &wire.Ping{ID: 3})
	require.Eventually(t, func() bool { // logged after the refused connection closed
		_, logs := nodes["b"].state()
		return strings.Contains(strings.Join(logs, "\n"), "not control or a direct stream")
	}, 5*time.Second, 10*time.Millisecond)
}

// A direct connection is authenticated as a session is: an impostor is
// refused before anything reaches the handler; a member that proves itself
// but has no session with the acceptor gets no stream either.
func TestDirectStreamNeedsCredentialsAndSession(t *testing.T) {
	secret := []byte("the right secret, 32 bytes long.")
	nodes := startSecureMeshes(t, "c1", func(string) Security { return Security{Secret: secret} }, "b", "-a")
	b := nodes["b"]
	dialDirect := func(sec Security) (net.Conn, error) {
		m, err := New(Config{Cluster: "c1", Self: "a", Peers: map[string]string{"b": b.ln.Addr().String()},
			HandshakeTimeout: time.Second, Security: sec, DirectKinds: []uint8{wire.StreamData}})
		require.NoError(t, err)
		t.Cleanup(m.Close) // never started: no session
		c, err := net.Dial("tcp", b.ln.Addr().String())
		require.NoError(t, err)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		conn, _, _, err := m.sessionHandshake(c, m.peers["b"], true, wire.StreamData)
		if err != nil {
			c.Close()
		}
		return conn, err
	}

	_, err := dialDirect(Security{Secret: []byte("a wrong secret, also 32 bytes...")})
	require.ErrorIs(t, err, ErrHandshake)
	requireRefused(t, b, "failed to prove the shared secret")

	conn, err := dialDirect(Security{Secret: secret})
	require.NoError(t, err, "the right secret passes the handshake")
	defer conn.Close()
	start := time.Now()
	_, err = conn.Read(make([]byte, 1))
	require.Error(t, err, "closed: b has no session with a")
	require.Less(t, time.Since(start), 4*time.Second)
	select {
	case s := <-b.strs:
		s.Close()
		t.Fatal("a direct stream without a session reached the handler")
	default:
	}
}

// On a long link a direct stream's dial and handshake take a few round
// trips, more than a caller may give Open to find a session (the primary
// gives 200 ms): once the session is up, Open still returns a direct stream.
func TestDirectStreamOnALongLink(t *testing.T) {
	a, b, px := proxiedPair(t, 10*time.Second, true)
	px.delay.Store(int64(40 * time.Millisecond)) // each way: 80 ms a round trip
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	s, err := a.m.Open(ctx, "b", wire.StreamData)
	require.NoError(t, err)
	defer s.Close()
	_, direct := s.(*directConn)
	require.True(t, direct, "a direct stream, not the fallback")
	require.Greater(t, time.Since(start), 80*time.Millisecond, "the proxy did not delay the handshake")
	got := <-b.strs
	defer got.Close()
	requireCarries(t, s, got, &wire.Ping{ID: 5})
}
