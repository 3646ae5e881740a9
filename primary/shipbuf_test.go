package primary

import (
	"bytes"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/quorum"
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
	m, buf := shippedWrite(journal.Write{Seq: 1, Data: client}, 1, false)
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
	m, buf = shippedWrite(journal.Write{Seq: 2, Data: client}, 1, false)
	b.enqueueLive(m, buf)
	require.EqualValues(t, 1, buf.refs.Load())
	buf.release()
}
