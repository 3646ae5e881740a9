package mesh

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/stretchr/testify/require"
)

type node struct {
	m    *Mesh
	ln   net.Listener
	mu   sync.Mutex
	ctl  []string // "from:epoch"
	ups  []string // peers reported up by OnPeer
	logs []string // warn-level log lines
	strs chan net.Conn
}

func (n *node) controls() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.ctl...)
}

// startMeshes runs one Mesh per name on loopback, all in cluster c.
func startMeshes(t *testing.T, cluster string, names ...string) map[string]*node {
	t.Helper()
	return startSecureMeshes(t, cluster, func(string) Security { return Security{} }, names...)
}

// startSecureMeshes is startMeshes with each member's credentials. A name
// written "-x" is a member x that is configured but not started (its
// address refuses connections).
func startSecureMeshes(t *testing.T, cluster string, sec func(name string) Security, names ...string) map[string]*node {
	t.Helper()
	nodes := map[string]*node{}
	addrs := map[string]string{}
	var started []string
	for _, n := range names {
		if absent, ok := strings.CutPrefix(n, "-"); ok {
			addrs[absent] = "127.0.0.1:1"
			continue
		}
		started = append(started, n)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		nodes[n] = &node{ln: ln, strs: make(chan net.Conn, 8)}
		addrs[n] = ln.Addr().String()
	}
	for _, name := range started {
		peers := map[string]string{}
		for o, a := range addrs {
			if o != name {
				peers[o] = a
			}
		}
		nd := nodes[name]
		m, err := New(Config{
			Cluster: cluster, Self: name, Peers: peers, BindHost: "127.0.0.1",
			HandshakeTimeout: 2 * time.Second, Security: sec(name), Logger: testLogger(t, nd),
			OnControl: func(peer string, c *wire.Control) {
				nd.mu.Lock()
				nd.ctl = append(nd.ctl, peer+":"+string(c.Data))
				nd.mu.Unlock()
			},
			OnPeer: func(peer string, up bool) {
				if up {
					nd.mu.Lock()
					nd.ups = append(nd.ups, peer)
					nd.mu.Unlock()
				}
			},
			Handler:     func(peer string, kind uint8, s net.Conn) { nd.strs <- s },
			DirectKinds: []uint8{wire.StreamData},
		})
		require.NoError(t, err)
		nd.m = m
		m.Serve(nd.ln)
		m.Start()
		t.Cleanup(m.Close)
	}
	return nodes
}

func waitConnected(t *testing.T, m *Mesh, peers ...string) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, p := range peers {
			if !m.Connected(p) {
				return false
			}
		}
		return true
	}, 5*time.Second, 5*time.Millisecond)
}

func TestControlMessagesBothWays(t *testing.T) {
	nodes := startMeshes(t, "c1", "a", "b", "w")
	waitConnected(t, nodes["a"].m, "b", "w")
	waitConnected(t, nodes["w"].m, "a", "b")
	// Send drops a message while a session is down or being replaced (a
	// loaded clean-clone run lost one right after the connect): send again
	// until it arrives, as raft does.
	send := func(from, to, data string) {
		t.Helper()
		require.Eventually(t, func() bool {
			if slices.Contains(nodes[to].controls(), from+":"+data) {
				return true
			}
			nodes[from].m.Send(to, &wire.Control{Kind: wire.ControlRaft, Data: []byte(data)})
			return false
		}, 10*time.Second, 50*time.Millisecond, "%s -> %s", from, to)
	}
	send("a", "w", "x1")
	send("w", "a", "y1")
	send("b", "a", "z1")
	require.Equal(t, []string{"a:x1"}, slices.Compact(nodes["w"].controls()))
	got := nodes["a"].controls()
	slices.Sort(got)
	require.Equal(t, []string{"b:z1", "w:y1"}, slices.Compact(got))
}

// Streams open from either side, both ways: data streams on connections of
// their own (DirectKinds), admin streams on the session.
func TestOpenStreamEitherDirection(t *testing.T) {
	nodes := startMeshes(t, "c1", "a", "b")
	waitConnected(t, nodes["a"].m, "b")
	waitConnected(t, nodes["b"].m, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, kind := range []uint8{wire.StreamData, wire.StreamAdmin} {
		for _, dir := range [][2]string{{"a", "b"}, {"b", "a"}} {
			s, err := nodes[dir[0]].m.Open(ctx, dir[1], kind)
			require.NoError(t, err)
			got := <-nodes[dir[1]].strs
			_, direct := s.(*directConn)
			_, directThere := got.(*directConn)
			require.Equal(t, kind == wire.StreamData, direct, "kind %d from %s", kind, dir[0])
			require.Equal(t, direct, directThere)
			requireCarries(t, s, got, &wire.Ping{ID: 7})
			requireCarries(t, got, s, &wire.Pong{ID: 7})
			s.Close()
			got.Close()
		}
	}
	for self, other := range map[string]string{"a": "b", "b": "a"} {
		m := nodes[self].m
		m.mu.Lock()
		require.Empty(t, m.peers[other].direct, "closed direct streams are unregistered")
		m.mu.Unlock()
	}
	_, err := nodes["a"].m.Open(ctx, "nobody", wire.StreamData)
	require.ErrorIs(t, err, ErrUnknownPeer)
}

// requireCarries sends msg on stream end from and reads it at end to.
func requireCarries(t *testing.T, from, to net.Conn, msg wire.Message) {
	t.Helper()
	w := wire.NewWriter(from)
	require.NoError(t, w.WriteMsg(msg))
	require.NoError(t, w.Flush())
	got, err := StreamReader(to).ReadMsg()
	require.NoError(t, err)
	require.Equal(t, msg, got)
}

func TestWrongClusterIsRefused(t *testing.T) {
	a := startMeshes(t, "c1", "a", "b")
	// A stranger in another cluster dials b pretending to be "a".
	stranger, err := New(Config{Cluster: "other", Self: "a", Peers: map[string]string{"b": a["b"].ln.Addr().String()}, HandshakeTimeout: time.Second})
	require.NoError(t, err)
	stranger.Start()
	defer stranger.Close()
	time.Sleep(300 * time.Millisecond)
	require.False(t, stranger.Connected("b"))
}

func TestReconnectsAfterSessionLoss(t *testing.T) {
	nodes := startMeshes(t, "c1", "a", "b")
	waitConnected(t, nodes["a"].m, "b")
	nodes["a"].m.mu.Lock()
	nodes["a"].m.peers["b"].sess.Close()
	nodes["a"].m.mu.Unlock()
	require.Eventually(t, func() bool { return !nodes["b"].m.Connected("a") }, 5*time.Second, 5*time.Millisecond)
	waitConnected(t, nodes["a"].m, "b")
	waitConnected(t, nodes["b"].m, "a")
	nodes["b"].m.Send("a", &wire.Control{Kind: wire.ControlRaft, Data: []byte("after")})
	require.Eventually(t, func() bool { return len(nodes["a"].controls()) == 1 }, 5*time.Second, 5*time.Millisecond)
}

func TestOpenWaitsForSession(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	m, err := New(Config{Cluster: "c", Self: "a", Peers: map[string]string{"b": addr}})
	require.NoError(t, err)
	m.Start()
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = m.Open(ctx, "b", wire.StreamData)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	m.Close()
	_, err = m.Open(context.Background(), "b", wire.StreamData)
	require.ErrorIs(t, err, ErrClosed)
}

// recordConn records the writes that reach it.
type recordConn struct {
	net.Conn
	writes [][]byte
}

func (r *recordConn) Write(p []byte) (int, error) {
	r.writes = append(r.writes, append([]byte(nil), p...))
	return len(p), nil
}

func TestCoalesceJoinsDataHeaderAndBody(t *testing.T) {
	rec := &recordConn{}
	c := newCoalesceConn(rec)
	dataHdr := []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3}
	n, err := c.Write(dataHdr)
	require.NoError(t, err)
	require.Equal(t, 12, n)
	require.Empty(t, rec.writes, "a data header waits for its body")
	n, err = c.Write([]byte("abc"))
	require.NoError(t, err)
	require.Equal(t, 3, n)
	// On a *net.TCPConn net.Buffers is one writev; here it arrives in order.
	require.Equal(t, append(dataHdr, "abc"...), bytes.Join(rec.writes, nil))

	// A window update (type 1) or an empty data frame is not held.
	rec.writes = nil
	winHdr := []byte{0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0}
	_, _ = c.Write(winHdr)
	emptyData := []byte{0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0}
	_, _ = c.Write(emptyData)
	require.Equal(t, [][]byte{winHdr, emptyData}, rec.writes)

	// Without writev a large payload is written after its header, not
	// copied behind it.
	rec.writes = nil
	bigHdr := []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0x10, 0, 0}
	big := bytes.Repeat([]byte{7}, 1<<20)
	_, _ = c.Write(bigHdr)
	n, err = c.Write(big)
	require.NoError(t, err)
	require.Equal(t, len(big), n)
	require.Len(t, rec.writes, 2)
	require.Equal(t, bigHdr, rec.writes[0])
	require.True(t, bytes.Equal(big, rec.writes[1]))
}

// yamux runs on the handshake's bufConn: the TCP connection under it is
// still found, for writev (a copy of every payload without it).
func TestCoalesceFindsTCPUnderHandshakeConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer s.Close()
		b, _ := io.ReadAll(s)
		got <- b
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	c := newCoalesceConn(&bufConn{Conn: raw, r: bufio.NewReader(raw)})
	require.NotNil(t, c.tcp)
	hdr := []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3}
	_, _ = c.Write(hdr)
	n, err := c.Write([]byte("abc"))
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.NoError(t, raw.Close())
	require.Equal(t, append(hdr, "abc"...), <-got)
}

// A second session with a peer that still has one registered replaces it
// (chaos seed 1000: a long SIGSTOP made the dialer redial before the
// acceptor noticed the old session was dead; the acceptor panicked).
func TestNewerSessionReplacesRegisteredOne(t *testing.T) {
	nodes := startMeshes(t, "c1", "a", "b")
	waitConnected(t, nodes["a"].m, "b")
	waitConnected(t, nodes["b"].m, "a")
	// Dial b again as "a", while b's session with a is still registered.
	extra, err := New(Config{Cluster: "c1", Self: "a", Peers: map[string]string{"b": nodes["b"].ln.Addr().String()}, HandshakeTimeout: time.Second})
	require.NoError(t, err)
	extra.Start()
	defer extra.Close()
	waitConnected(t, extra, "b")
	waitConnected(t, nodes["b"].m, "a")
	nodes["b"].m.Send("a", &wire.Control{Kind: wire.ControlRaft, Data: []byte("to the newest")})
}
