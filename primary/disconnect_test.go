package primary

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/stretchr/testify/require"
)

// disconnectable is a node whose operator may disconnect peers.
type disconnectable struct {
	node
	off atomic.Bool
}

func (d *disconnectable) Disconnected(string) bool { return d.off.Load() }

// slowHandshakePeer is a Transport to a peer (an empty, consistent
// secondary) that holds its Hello back until release is closed, after it
// has said on entered that it read the primary's.
type slowHandshakePeer struct {
	entered, release chan struct{}
	stop             <-chan struct{} // the test ended
	streams          atomic.Int32
}

func (s *slowHandshakePeer) Open(context.Context, string, uint8) (net.Conn, error) {
	c, other := net.Pipe()
	n := s.streams.Add(1)
	go func() {
		defer other.Close()
		r, w := wire.NewReader(other), wire.NewWriter(other)
		if !readHandshake(r) {
			return
		}
		if n == 1 {
			close(s.entered)
			select {
			case <-s.release:
			case <-s.stop:
				return
			}
		}
		if !answerHandshake(w) {
			return
		}
		for { // a secondary that reads what it is sent
			if _, err := r.ReadMsg(); err != nil {
				return
			}
		}
	}()
	return c, nil
}

func (*slowHandshakePeer) Drop(string, string) bool { return false }

// grbd disconnect while the link is in its handshake: the session that the
// handshake completes must end at once instead of replicating to a peer
// the operator disconnected. Kick does not wait for a session that is not
// up; its kick sits in the link's channel, and the session drains such a
// kick as left over from an earlier session: what stops it is the
// Disconnected flag, checked after the drain.
func TestDisconnectDuringHandshake(t *testing.T) {
	store := memStore(t, 4<<20, 16<<20)
	n := &disconnectable{}
	tr := &slowHandshakePeer{entered: make(chan struct{}), release: make(chan struct{}), stop: t.Context().Done()}
	p := startSideFor(t, n, tr, store, 16<<20, &control{}, 1, nil, "q")
	select {
	case <-tr.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the link never started its handshake")
	}
	n.off.Store(true) // as SetDisconnected: the flag first, then the kick
	p.Kick("q")
	close(tr.release)
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		require.NotEqual(t, ConnConnected, p.PeerStatuses()[0].Connection, "a disconnected peer's session went up")
		time.Sleep(time.Millisecond)
	}
	require.Equal(t, ConnDisconnected, p.PeerStatuses()[0].Connection)
	require.EqualValues(t, 1, tr.streams.Load(), "the link opened another stream to a disconnected peer")
}
