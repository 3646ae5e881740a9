package primary

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/quorum"
	"github.com/stretchr/testify/require"
)

// hungDiskPeer is a Transport to a peer whose disk hangs in its syncs: it
// journals and acknowledges every write (they reach its page cache) but
// answers a flush only after flushDelay, or never when flushDelay is 0.
type hungDiskPeer struct {
	flushDelay time.Duration
}

func (h *hungDiskPeer) Open(context.Context, string, uint8) (net.Conn, error) {
	c, other := net.Pipe()
	go h.serve(other)
	return c, nil
}

func (*hungDiskPeer) Drop(string, string) bool { return false }

func (h *hungDiskPeer) serve(c net.Conn) {
	defer c.Close()
	r, w := wire.NewReader(c), wire.NewWriter(c)
	if !readHandshake(r) || !answerHandshake(w) {
		return
	}
	var wmu sync.Mutex // acks and delayed FlushAcks share the writer
	send := func(m wire.Message) {
		wmu.Lock()
		defer wmu.Unlock()
		if w.WriteMsg(m) == nil {
			_ = w.Flush()
		}
	}
	for {
		m, err := r.ReadMsg()
		if err != nil {
			return
		}
		switch m := m.(type) {
		case *wire.ResyncDone:
			send(&wire.Ack{Seq: m.AsOf, Level: wire.AckJournaled})
		case *wire.Write:
			send(&wire.Ack{Seq: m.Seq, Level: wire.AckJournaled})
		case *wire.Flush:
			if h.flushDelay > 0 {
				done := &wire.FlushAck{ID: m.ID, Seq: m.Seq}
				time.AfterFunc(h.flushDelay, func() { send(done) })
			}
		}
	}
}

// flushTimeoutSide is a protocol C primary whose peer q has a disk that
// answers flushes after flushDelay (never when 0); flush timeout 1 s.
func flushTimeoutSide(t *testing.T, flushDelay time.Duration) (*Side, *control) {
	t.Helper()
	store := memStore(t, 1<<20, 4<<20)
	ctl := &control{}
	tr := &hungDiskPeer{flushDelay: flushDelay}
	p := startSideWith(t, tr, store, 4<<20, ctl, 1, func(c *Config) {
		c.PeerTimeout = 200 * time.Millisecond
		c.FlushTimeout = time.Second
	}, "q")
	require.Eventually(t, func() bool { return p.PeerStatuses()[0].Disk == DiskUpToDate },
		5*time.Second, time.Millisecond, "the peer never caught up")
	return p, ctl
}

// A counted peer that acknowledges every write but completes no flush (its
// disk hangs in fsync) is dropped once the flush timeout passed, and Outdated:
// the flush then completes without it. Without the bound, it waited forever
// (the watchdog only saw peers that acknowledge nothing).
func TestPeerThatNeverFlushesIsDropped(t *testing.T) {
	p, ctl := flushTimeoutSide(t, 0)
	require.NoError(t, p.Write(journal.Write{Epoch: 1, Data: block(1)}, false), "writes are acknowledged")
	start := time.Now()
	flushed := make(chan error, 1)
	go func() { flushed <- p.Flush(0) }()
	require.Eventually(t, func() bool { return len(ctl.requested()) > 0 }, 10*time.Second, 10*time.Millisecond,
		"a peer that completes no flush was never dropped")
	waited := time.Since(start)
	require.GreaterOrEqual(t, waited, time.Second, "dropped before the flush timeout")
	require.Less(t, waited, 3*time.Second, "dropped long after the flush timeout")
	require.Equal(t, []string{"q"}, ctl.requested()[:1])
	select {
	case err := <-flushed:
		t.Fatalf("the flush completed (%v) before the peer was Outdated", err)
	default:
	}
	p.OnState(quorum.State{Epoch: 1, Primary: "p", Outdated: []string{"q"}, Gen: map[string]uint64{"q": 1}})
	select {
	case err := <-flushed:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the flush still waits after the peer was Outdated")
	}
}

// A peer whose flushes are slow but complete is not dropped, even when
// flushes wait for it back to back for longer than the flush timeout: the
// bound is on a flush that makes no progress, not on the load.
func TestSlowFlushingPeerIsKept(t *testing.T) {
	p, ctl := flushTimeoutSide(t, 400*time.Millisecond)
	deadline := time.Now().Add(2500 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		require.NoError(t, p.Write(journal.Write{Epoch: 1, Offset: int64(i%64) * 4096, Data: block(byte(i))}, false))
		require.NoError(t, p.Flush(0))
	}
	require.Empty(t, ctl.requested(), "a peer whose flushes complete was dropped")
	require.Equal(t, DiskUpToDate, p.PeerStatuses()[0].Disk)
}
