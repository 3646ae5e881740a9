package primary

import (
	"bytes"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/bufpool"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/quorum"
	"github.com/grbd/grbd/replicator"
	"github.com/stretchr/testify/require"
)

// A write shipped to two peers lives in one pooled copy, independent of
// the client's buffer, until the last link is done with it: one sends it,
// the other drops its queue (its session ended).
func TestShippedWriteBufferLifetime(t *testing.T) {
	p := New(t.Context(), Config{}, node{}, quorum.State{Epoch: 1, Primary: "p"})
	p.AddPeer("a", -1)
	p.AddPeer("b", -1)
	a, b := p.links[0], p.links[1]

	client := bytes.Repeat([]byte{7}, 1<<20)
	m, buf := shippedWrite(journal.Write{Seq: 1, Data: client}, nil, 1, false, nil)
	a.enqueueLive(m, buf)
	b.enqueueLive(m, buf)
	buf.release() // the maker's reference
	clear(client) // blockdev reuses the client's buffer once the write completes
	require.EqualValues(t, 2, buf.refs.Load(), "one reference per queue")

	var out bytes.Buffer
	done, errc := make(chan struct{}), make(chan error, 1)
	go func() { errc <- a.send(wire.NewWriter(&out), done) }()
	require.Eventually(t, func() bool { return buf.refs.Load() == 1 }, 5*time.Second, time.Millisecond,
		"a released it once written")
	close(done)
	require.NoError(t, <-errc)
	got, err := wire.NewReader(&out).ReadMsg()
	require.NoError(t, err)
	require.Equal(t, bytes.Repeat([]byte{7}, 1<<20), got.(*wire.Write).Data, "the peer got the bytes of the write")

	b.qmu.Lock()
	b.dropQueueLocked(true)
	b.qmu.Unlock()
	require.EqualValues(t, 0, buf.refs.Load(), "back in the pool")
	require.Panics(t, buf.release, "a release too many is a bug, not a silent reuse")

	// A closed queue takes no reference: nothing would release it.
	m, buf = shippedWrite(journal.Write{Seq: 2, Data: client}, nil, 1, false, nil)
	b.enqueueLive(m, buf)
	require.EqualValues(t, 1, buf.refs.Load())
	buf.release()
}

// A handed-over client buffer (WriteOwned) is shipped as it is, no copy,
// and goes back to the pool only once the client and every link are done.
func TestOwnedBufferIsShippedWithoutACopy(t *testing.T) {
	p := New(t.Context(), Config{}, node{}, quorum.State{Epoch: 1, Primary: "p"})
	p.AddPeer("a", -1)
	a := p.links[0]
	client := newSharedBufOf(bufpool.Get(1 << 20))
	m, buf := shippedWrite(journal.Write{Seq: 1, Data: *client.buf}, nil, 1, false, client)
	require.Same(t, client, buf)
	require.Same(t, &(*client.buf)[0], &m.(*wire.Write).Data[0], "the message holds the client's bytes")
	a.enqueueLive(m, buf)
	buf.release()    // the maker's reference
	client.release() // the write completed
	require.EqualValues(t, 1, client.refs.Load(), "the queue still holds it")
	a.qmu.Lock()
	a.dropQueueLocked(true)
	a.qmu.Unlock()
	require.EqualValues(t, 0, client.refs.Load(), "back in the pool")
}

// Writes whose buffers the client handed over complete (protocol A) before
// a stalled peer has read any of them; the peer, once it reads, still gets
// every write's own bytes: no buffer went back to the pool, and was reused
// by the next write (or poisoned, under the race detector), while a link
// still had to send it.
func TestOwnedBuffersOutliveTheirWrites(t *testing.T) {
	store := memStore(t, 4<<20, 16<<20)
	tr := &stallingPeer{release: make(chan struct{}), stop: t.Context().Done(), got: make(chan wire.Message, 64)}
	p := startSideWith(t, tr, store, 16<<20, &control{}, 1, func(c *Config) {
		c.Protocol = replicator.ProtocolA
		c.PeerTimeout = time.Minute // the peer acknowledges nothing
	}, "q")
	require.Eventually(t, func() bool { return p.PeerStatuses()[0].Connection == ConnConnected && p.links[0].live.Load() },
		5*time.Second, time.Millisecond, "the peer never went live")

	sizes := []int{4096, 64 << 10, 4096, 128 << 10, 4096, 8192}
	for i, n := range sizes {
		buf := bufpool.Get(n)
		for j := range *buf {
			(*buf)[j] = byte(i + 1)
		}
		require.NoError(t, p.WriteOwned(journal.Write{Epoch: 1, Offset: int64(i) * (128 << 10), Data: *buf}, buf, false))
	}
	close(tr.release)
	for i, n := range sizes {
		var w *wire.Write
		for w == nil { // skip anything that is not a write
			select {
			case m := <-tr.got:
				w, _ = m.(*wire.Write)
			case <-time.After(5 * time.Second):
				t.Fatalf("the peer got %d of %d writes", i, len(sizes))
			}
		}
		require.Equal(t, int64(i)*(128<<10), int64(w.Offset))
		require.Equal(t, bytes.Repeat([]byte{byte(i + 1)}, n), w.Data, "write %d reached the peer with other bytes", i)
	}
}
