package primary

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/quorum"
	"github.com/grbd/grbd/replicator"
	"github.com/stretchr/testify/require"
)

// stallingPeer is a Transport to a peer that answers the handshake (an
// empty, consistent secondary) and then reads nothing until release is
// closed: a peer slower than the primary (protocol A) without end.
type stallingPeer struct {
	release chan struct{}
	stop    <-chan struct{}   // the test ended
	ended   atomic.Bool       // the peer's stream ended (the primary cut it off)
	got     chan wire.Message // when set, gets what the peer reads once released
}

func (s *stallingPeer) Open(context.Context, string, uint8) (net.Conn, error) {
	c, other := net.Pipe()
	go func() {
		defer other.Close()
		r, w := wire.NewReader(other), wire.NewWriter(other)
		if !readHandshake(r) || !answerHandshake(w) {
			return
		}
		select {
		case <-s.release:
		case <-s.stop:
			return
		}
		if s.got == nil {
			_, _ = io.Copy(io.Discard, other)
		}
		for s.got != nil {
			m, err := r.ReadMsg()
			if err != nil {
				break
			}
			select {
			case s.got <- wire.Clone(m): // the Reader reuses m
			case <-s.stop:
				return
			}
		}
		s.ended.Store(true)
	}()
	return c, nil
}

func (*stallingPeer) Drop(string, string) bool { return false }

// readHandshake reads what the primary's link opens a session with (Hello,
// History); false when the stream ended.
func readHandshake(r *wire.Reader) bool {
	for range 2 {
		if _, err := r.ReadMsg(); err != nil {
			return false
		}
	}
	return true
}

// answerHandshake answers it as q, an empty, consistent secondary of
// epoch 1; false when the stream ended.
func answerHandshake(w *wire.Writer) bool {
	return w.WriteMsg(&wire.Hello{Cluster: "t", From: "q", Role: wire.RoleSecondary, Epoch: 1}) == nil && w.Flush() == nil
}

// congestedSide is a protocol A primary whose peer q stalls after its
// handshake; a peer more than 256 KiB behind is congested.
func congestedSide(t *testing.T, disconnect bool) (*Side, *stallingPeer, *control) {
	t.Helper()
	store := memStore(t, 4<<20, 16<<20)
	tr, ctl := &stallingPeer{release: make(chan struct{}), stop: t.Context().Done()}, &control{}
	p := startSideWith(t, tr, store, 16<<20, ctl, 1, func(c *Config) {
		c.Protocol = replicator.ProtocolA
		c.CongestionFill = 256 << 10
		c.DisconnectOnCongestion = disconnect
		c.PeerTimeout = time.Minute // the peer acknowledges nothing: the watchdog must not cut it off first
	}, "q")
	require.Eventually(t, func() bool { return p.PeerStatuses()[0].Connection == ConnConnected && p.links[0].live.Load() },
		5*time.Second, time.Millisecond, "the peer never went live")
	return p, tr, ctl
}

// writeMany writes n 4 KiB blocks in a goroutine; the counter says how
// many completed, the channel gets the first error or nil at the end.
func writeMany(p *Side, n int) (*atomic.Int64, <-chan error) {
	var done atomic.Int64
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			if err := p.Write(journal.Write{Epoch: 1, Offset: int64(i%256) * 4096, Data: block(byte(i))}, false); err != nil {
				errc <- err
				return
			}
			done.Add(1)
		}
		errc <- nil
	}()
	return &done, errc
}

// on-congestion: block (the default). A protocol A peer that falls more
// than the congestion fill behind holds new writes, as DRBD's sender blocks
// the writer, instead of being cut off and resynced again and again under a
// sustained load; once it reads again, the writes go on in the same session.
func TestCongestedPeerHoldsWrites(t *testing.T) {
	p, tr, _ := congestedSide(t, false)
	const n = 1000 // 4 MiB: far past the fill and the pipe
	done, errc := writeMany(p, n)
	time.Sleep(300 * time.Millisecond)
	held := done.Load()
	require.Less(t, held, int64(n/2), "writes went on while the peer was 256 KiB behind")
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, held, done.Load(), "writes went on while the peer was congested")
	require.Equal(t, ConnConnected, p.PeerStatuses()[0].Connection, "the congested peer was cut off")

	close(tr.release)
	select {
	case err := <-errc:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("writes still held after the peer drained: %d of %d done", done.Load(), n)
	}
	require.False(t, tr.ended.Load(), "the peer's session ended")
	require.Equal(t, ConnConnected, p.PeerStatuses()[0].Connection)
}

// on-congestion: disconnect. The same peer is cut off (and Outdated) and
// the writes go on without it: the behaviour before block, kept as an
// option; it also shows the test above can fail.
func TestCongestedPeerDisconnected(t *testing.T) {
	p, _, ctl := congestedSide(t, true)
	const n = 1000
	done, errc := writeMany(p, n)
	require.Eventually(t, func() bool { return len(ctl.requested()) > 0 }, 10*time.Second, time.Millisecond,
		"the congested peer was never cut off")
	p.OnState(quorum.State{Epoch: 1, Primary: "p", Outdated: []string{"q"}, Gen: map[string]uint64{"q": 1}})
	select {
	case err := <-errc:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("writes held without the peer: %d of %d done", done.Load(), n)
	}
}
