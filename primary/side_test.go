package primary

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/quorum"
	"github.com/grbd/grbd/replicator"
	"github.com/stretchr/testify/require"
)

// unreachable is a Transport to peers that never answer.
type unreachable struct{}

func (unreachable) Open(ctx context.Context, _ string, _ uint8) (net.Conn, error) {
	<-ctx.Done()
	return nil, errors.New("unreachable")
}

func (unreachable) Drop(string, string) bool { return false }

// control records the Outdate requests the primary makes.
type control struct {
	mu       sync.Mutex
	outdated []string
}

func (c *control) RequestOutdate(peer string) {
	c.mu.Lock()
	c.outdated = append(c.outdated, peer)
	c.mu.Unlock()
}

func (c *control) RequestClear(string, uint64) (uint64, bool) { return 0, false }

func (c *control) requested() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.outdated...)
}

type node struct{}

func (node) Disconnected(string) bool         { return false }
func (node) History() replicator.History      { return nil }
func (node) PeerState(string, string, string) {}
func (node) SplitBrain(string, string)        {}
func (node) PeerAhead(string, string) bool    { return false }
func (node) Event(events.Event)               {}

// newSide is the primary of epoch 1 on an in-memory store, with peers.
func newSide(t *testing.T, ctl *control, peers ...string) (*Side, *journal.Journal) {
	t.Helper()
	return newSideOn(t, unreachable{}, ctl, peers...)
}

// newSideOn is newSide with the peers behind tr.
func newSideOn(t *testing.T, tr Transport, ctl *control, peers ...string) (*Side, *journal.Journal) {
	t.Helper()
	store := memStore(t, 1<<20, 4<<20)
	return startSideOn(t, tr, store, 4<<20, ctl, 1, peers...), store
}

// memStore is a journaled 1 MiB device in memory, closed at the test's end.
func memStore(t *testing.T, segmentSize, maxSize int64) *journal.Journal {
	t.Helper()
	fs := vfs.NewMem()
	require.NoError(t, fs.MkdirAll("/d", 0o700))
	store, err := journal.Open(journal.Options{Dir: "/d", FS: fs, DeviceSize: 1 << 20, SegmentSize: segmentSize, MaxSize: maxSize})
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })
	return store
}

// startSide starts the primary of epoch on store (whose journal holds at
// most maxSize bytes), with peers; the test's end stops it.
func startSide(t *testing.T, store *journal.Journal, maxSize int64, ctl *control, epoch uint64, peers ...string) *Side {
	t.Helper()
	return startSideOn(t, unreachable{}, store, maxSize, ctl, epoch, peers...)
}

// startSideOn is startSide with the peers behind tr.
func startSideOn(t *testing.T, tr Transport, store *journal.Journal, maxSize int64, ctl *control, epoch uint64, peers ...string) *Side {
	t.Helper()
	return startSideWith(t, tr, store, maxSize, ctl, epoch, nil, peers...)
}

// startSideWith is startSideOn with the configuration changed by mod.
func startSideWith(t *testing.T, tr Transport, store *journal.Journal, maxSize int64, ctl *control, epoch uint64, mod func(*Config), peers ...string) *Side {
	t.Helper()
	return startSideFor(t, node{}, tr, store, maxSize, ctl, epoch, mod, peers...)
}

// startSideFor is startSideWith on the node n.
func startSideFor(t *testing.T, n Node, tr Transport, store *journal.Journal, maxSize int64, ctl *control, epoch uint64, mod func(*Config), peers ...string) *Side {
	t.Helper()
	var corrupt, repaired, unrepaired atomic.Uint64
	cfg := Config{Cluster: "t", Name: "p", Protocol: replicator.ProtocolC, PeerTimeout: 2 * time.Second,
		JournalMaxSize: maxSize, Store: store, Transport: tr, Control: ctl,
		Repairs: RepairCounters{Corrupt: &corrupt, Repaired: &repaired, Unrepaired: &unrepaired}}
	if mod != nil {
		mod(&cfg)
	}
	p := New(t.Context(), cfg, n, quorum.State{Epoch: epoch, Primary: "p"})
	for _, name := range peers {
		p.AddPeer(name, -1)
	}
	p.Start()
	t.Cleanup(func() { p.Stop(ErrFenced) })
	return p
}

func block(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }

// Alone, a write completes once journaled here; a flush makes it durable.
func TestWriteAlone(t *testing.T) {
	p, store := newSide(t, &control{})
	require.NoError(t, p.Write(journal.Write{Epoch: 1, Offset: 4096, Data: block(7)}, false))
	require.NoError(t, p.Flush(0))
	require.Equal(t, uint64(1), store.DurableSeq())
	got := make([]byte, 4096)
	require.NoError(t, p.ReadChecked(got, 4096))
	require.Equal(t, block(7), got)
}

// A counted peer that never connects holds the write until the control
// plane Outdated it: the primary asks for that, and the write completes
// only once the applied state says so (protocol C never acknowledges a
// write a counted peer may lack).
func TestWriteWaitsUntilAnUnreachablePeerIsOutdated(t *testing.T) {
	ctl := &control{}
	p, _ := newSide(t, ctl, "q")
	done := make(chan error, 1)
	go func() { done <- p.Write(journal.Write{Epoch: 1, Offset: 0, Data: block(1)}, false) }()
	require.Eventually(t, func() bool { return len(ctl.requested()) > 0 }, 5*time.Second, time.Millisecond,
		"the primary asks to Outdate the peer it lost")
	require.Equal(t, "q", ctl.requested()[0])
	select {
	case err := <-done:
		t.Fatalf("the write completed (%v) before the peer was Outdated", err)
	case <-time.After(100 * time.Millisecond):
	}
	p.OnState(quorum.State{Epoch: 1, Primary: "p", Outdated: []string{"q"}, Gen: map[string]uint64{"q": 1}})
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the write did not complete once the peer was Outdated")
	}
}

// returning is a Transport to a peer that is away until back is closed:
// each Open waits for it as the mesh's does, until its deadline.
type returning struct {
	back   chan struct{}
	failed chan struct{} // one value per Open that gave up
	opened chan time.Time
	ends   chan net.Conn // the peer's ends of the opened streams
}

func (r *returning) Open(ctx context.Context, _ string, _ uint8) (net.Conn, error) {
	select {
	case <-r.back:
		c, other := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, other) }()
		r.opened <- time.Now()
		r.ends <- other
		return c, nil
	case <-ctx.Done():
		r.failed <- struct{}{}
		return nil, ctx.Err()
	}
}

func (*returning) Drop(string, string) bool { return false }

// A peer that comes back after a long absence gets its data stream at once:
// Open already waits for the peer's session, and a backoff between the
// waits held a returning peer back up to a second.
func TestReturningPeerIsOpenedAtOnce(t *testing.T) {
	tr := &returning{back: make(chan struct{}), failed: make(chan struct{}, 16), opened: make(chan time.Time, 16), ends: make(chan net.Conn, 16)}
	newSideOn(t, tr, &control{}, "q")
	for range 4 { // the backoff has grown to 400 ms by now
		select {
		case <-tr.failed:
		case <-time.After(5 * time.Second):
			t.Fatal("the primary stopped opening streams to the absent peer")
		}
	}
	back := time.Now()
	close(tr.back)
	select {
	case at := <-tr.opened:
		(<-tr.ends).Close() // the handshake ends now, not at its timeout
		require.Less(t, at.Sub(back), 250*time.Millisecond, "the returning peer waited for a backoff (400 ms by now)")
	case <-time.After(5 * time.Second):
		t.Fatal("no stream to the returning peer")
	}
}
