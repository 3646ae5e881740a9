package node

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
	"github.com/hashicorp/yamux"
	"github.com/stretchr/testify/require"
)

const testDevSize = 4 << 20

func openStore(t *testing.T, maxSize int64) *journal.Journal {
	t.Helper()
	j, err := journal.Open(journal.Options{Dir: t.TempDir(), DeviceSize: testDevSize, SegmentSize: 64 << 10, MaxSize: maxSize})
	require.NoError(t, err)
	t.Cleanup(func() { j.Close() })
	return j
}

// pair is a primary with one link to a real secondary over net.Pipe.
type pair struct {
	t      *testing.T
	prim   *primary
	link   *link
	sec    *secondary
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newPair(t *testing.T, proto replicator.Protocol, primMax int64) *pair {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	p := &pair{t: t}
	p.prim = newPrimary(openStore(t, primMax), proto, 1, log)
	p.link = newLink(p.prim, "beta", "pipe", "test", "alpha", log)
	p.prim.addLink(p.link)
	secStore := openStore(t, 1<<30)
	var err error
	p.sec, err = newSecondary(secStore, "test", "beta", t.TempDir(), log)
	require.NoError(t, err)
	// Checked at cleanup: whatever happened, the two images are equal once
	// the peer is UpToDate (tests that disconnect on purpose reconnect first).
	return p
}

// connect starts one session over an in-memory pipe.
func (p *pair) connect() {
	a, b := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Go(func() { p.sec.handle(b) })
	p.wg.Go(func() { _ = p.link.session(ctx, a) })
	p.t.Cleanup(p.disconnect)
}

func (p *pair) disconnect() {
	if p.cancel != nil {
		p.cancel()
		p.sec.close()
		p.wg.Wait()
		p.cancel = nil
		p.sec.closing = false
	}
}

func (p *pair) waitUpToDate() {
	p.t.Helper()
	require.Eventually(p.t, func() bool {
		st := p.link.status(p.prim.store.LastSeq())
		return st.Disk == DiskUpToDate && st.Behind == 0
	}, 10*time.Second, time.Millisecond, "peer never UpToDate")
}

func (p *pair) requireSameImage() {
	p.t.Helper()
	a, b := make([]byte, testDevSize), make([]byte, testDevSize)
	require.NoError(p.t, p.prim.store.ReadAt(a, 0))
	require.NoError(p.t, p.sec.store.ReadAt(b, 0))
	require.True(p.t, bytes.Equal(a, b), "primary and secondary images differ")
}

func block(i int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8), 0xa5, 0x5a}, 1024) }

func (p *pair) write(i int) {
	p.t.Helper()
	off := int64(i%(testDevSize/4096)) * 4096
	require.NoError(p.t, p.prim.write(journal.Write{Epoch: 1, Offset: off, Data: block(i)}, false))
}

func TestReplicateProtocols(t *testing.T) {
	for _, tc := range []struct {
		proto replicator.Protocol
		// placed: what a completed write guarantees on the peer.
		placed bool
	}{{replicator.ProtocolA, false}, {replicator.ProtocolB, false}, {replicator.ProtocolC, true}} {
		t.Run(fmt.Sprintf("protocol=%c", tc.proto), func(t *testing.T) {
			p := newPair(t, tc.proto, 1<<30)
			p.connect()
			p.waitUpToDate()
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := g; i < 800; i += 8 {
						p.write(i)
						if tc.placed {
							// Protocol C: acknowledged implies journaled on the peer.
							got := make([]byte, 4096)
							require.NoError(t, p.sec.store.ReadAt(got, int64(i)*4096))
							require.Equal(t, block(i), got, "write %d acked before the peer had it", i)
						}
					}
				})
			}
			wg.Wait()
			require.NoError(t, p.prim.flush(0))
			require.GreaterOrEqual(t, p.sec.store.DurableSeq(), p.prim.store.LastSeq(), "flush did not sync the peer")
			p.waitUpToDate()
			p.requireSameImage()
		})
	}
}

func TestCatchUpFromJournal(t *testing.T) {
	p := newPair(t, replicator.ProtocolC, 1<<30)
	p.connect()
	p.waitUpToDate()
	p.write(0)
	p.disconnect()
	require.Eventually(t, func() bool { return p.link.status(0).Disk == DiskOutdated }, 5*time.Second, time.Millisecond)
	for i := 1; i < 300; i++ {
		p.write(i) // the peer is away: writes do not wait for it
	}
	p.connect()
	p.waitUpToDate()
	st := p.link.status(p.prim.store.LastSeq())
	require.Equal(t, uint64(299*4096), st.CatchupBytes, "catch-up moves exactly the missed writes")
	p.write(300)
	p.requireSameImage()
}

func TestRegionResyncAfterCompaction(t *testing.T) {
	p := newPair(t, replicator.ProtocolC, 256<<10)
	p.connect()
	p.waitUpToDate()
	p.write(0)
	p.disconnect()
	for i := 1; i < 400; i++ {
		p.write(i % 40) // 40 distinct blocks, 400 writes: more than the journal keeps
	}
	require.NoError(t, p.prim.store.Checkpoint())
	require.Greater(t, p.prim.store.Stats().FirstRetainedSeq, uint64(2), "journal not compacted: test proves nothing")
	p.connect()
	p.waitUpToDate()
	// The peer drops its marker after ResyncDone, which follows its last ack.
	require.Eventually(t, func() bool { return p.sec.disk() == DiskUpToDate }, 5*time.Second, time.Millisecond,
		"peer still %s after the resync", p.sec.disk())
	require.Equal(t, uint64(40*4096), p.link.status(0).CatchupBytes, "resync copies changed regions only")
	p.requireSameImage()
}

// fakePeer accepts one session, answers Hello and then only reads: it never
// acknowledges anything.
func fakePeer(t *testing.T, c net.Conn, epoch uint64) {
	sess, err := yamux.Server(c, yamuxConfig(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	st, err := sess.AcceptStream()
	if err != nil {
		return
	}
	r, w := wire.NewReader(st), wire.NewWriter(st)
	if _, err := r.ReadMsg(); err != nil {
		return
	}
	_ = w.WriteMsg(&wire.Hello{Cluster: "test", From: "beta", Epoch: epoch})
	_ = w.Flush()
	_ = w.WriteMsg(&wire.Ack{Seq: 0, Level: wire.AckJournaled})
	_ = w.Flush()
	for {
		if _, err := r.ReadMsg(); err != nil {
			sess.Close()
			return
		}
	}
}

func TestWritesWaitForPeerUntilItLeaves(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	prim := newPrimary(openStore(t, 1<<30), replicator.ProtocolC, 1, log)
	l := newLink(prim, "beta", "pipe", "test", "alpha", log)
	prim.addLink(l)
	a, b := net.Pipe()
	go fakePeer(t, b, 1)
	ctx, cancel := context.WithCancel(context.Background())
	sessDone := make(chan error, 1)
	go func() { sessDone <- l.session(ctx, a) }()
	require.Eventually(t, func() bool { return l.status(0).Disk == DiskUpToDate }, 5*time.Second, time.Millisecond)

	done := make(chan error, 1)
	go func() { done <- prim.write(journal.Write{Epoch: 1, Data: block(1)}, false) }()
	select {
	case err := <-done:
		t.Fatalf("protocol C write completed without the peer's ack: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	cancel() // the link breaks: the peer stops counting
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("write still waits for a peer that left")
	}
	<-sessDone
	require.Equal(t, DiskOutdated, l.status(0).Disk)
}

func TestStaleEpochRefused(t *testing.T) {
	p := newPair(t, replicator.ProtocolC, 1<<30)
	p.sec.epoch.Store(5) // the peer has seen a newer primary
	a, b := net.Pipe()
	go p.sec.handle(b)
	err := p.link.session(context.Background(), a)
	require.ErrorIs(t, err, ErrHandshake)
	require.NotEqual(t, DiskUpToDate, p.link.status(0).Disk)
}

func TestSecondaryDeviceReadOnly(t *testing.T) {
	d := &device{store: openStore(t, 1<<30)}
	require.True(t, d.ReadOnly())
	require.ErrorIs(t, d.WriteAt(make([]byte, 4096), 0, false), ErrReadOnly)
	require.ErrorIs(t, d.WriteZeroes(0, 4096, false), ErrReadOnly)
	require.False(t, (&device{prim: &primary{}}).ReadOnly())
}

// TestSecondaryNacksStaleEpoch drives a secondary with a hand-written primary:
// a write whose epoch is below the session's is refused, not applied.
func TestSecondaryNacksStaleEpoch(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	sec, err := newSecondary(openStore(t, 1<<30), "test", "beta", t.TempDir(), log)
	require.NoError(t, err)
	a, b := net.Pipe()
	go sec.handle(b)
	t.Cleanup(sec.close)
	sess, err := yamux.Client(a, yamuxConfig(log))
	require.NoError(t, err)
	defer sess.Close()
	st, err := sess.OpenStream()
	require.NoError(t, err)
	for range 2 {
		_, err := sess.OpenStream()
		require.NoError(t, err)
	}
	r, w := wire.NewReader(st), wire.NewWriter(st)
	require.NoError(t, w.WriteMsg(&wire.Hello{Cluster: "test", From: "alpha", Role: wire.RolePrimary, Epoch: 5}))
	require.NoError(t, w.Flush())
	m, err := r.ReadMsg()
	require.NoError(t, err)
	require.IsType(t, &wire.Hello{}, m)

	require.NoError(t, w.WriteMsg(&wire.Write{Seq: 1, Epoch: 5, Data: block(1)}))
	require.NoError(t, w.WriteMsg(&wire.Write{Seq: 2, Epoch: 4, Offset: 4096, Data: block(2)}))
	require.NoError(t, w.Flush())
	var nack *wire.Nack
	for nack == nil {
		m, err := r.ReadMsg()
		require.NoError(t, err)
		if n, ok := m.(*wire.Nack); ok {
			nack = n
		}
	}
	require.Equal(t, wire.NackStaleEpoch, nack.Code)
	require.Equal(t, uint64(2), nack.Seq)
	require.Eventually(t, func() bool { return sec.store.LastSeq() == 1 }, 5*time.Second, time.Millisecond)
	got := make([]byte, 4096)
	require.NoError(t, sec.store.ReadAt(got, 4096))
	require.Equal(t, make([]byte, 4096), got, "stale write applied")
}

// TestCongestedPeerCutOff: under protocol A a peer that stops reading is cut
// off once its queue passes congestLimit, instead of the primary buffering
// every write.
func TestCongestedPeerCutOff(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	prim := newPrimary(openStore(t, 1<<30), replicator.ProtocolA, 1, log)
	l := newLink(prim, "beta", "pipe", "test", "alpha", log)
	prim.addLink(l)
	a, b := net.Pipe()
	stalled := make(chan struct{})
	go func() {
		sess, err := yamux.Server(b, yamuxConfig(log))
		if err != nil {
			return
		}
		defer sess.Close()
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		r, w := wire.NewReader(st), wire.NewWriter(st)
		if _, err := r.ReadMsg(); err != nil {
			return
		}
		_ = w.WriteMsg(&wire.Hello{Cluster: "test", From: "beta", Epoch: 1})
		_ = w.Flush()
		<-stalled // never read again
	}()
	defer close(stalled)
	sessDone := make(chan error, 1)
	go func() { sessDone <- l.session(context.Background(), a) }()
	require.Eventually(t, func() bool {
		prim.mu.Lock()
		defer prim.mu.Unlock()
		return l.live
	}, 5*time.Second, time.Millisecond)
	data := make([]byte, 1<<20)
	for i := 0; i < congestLimit>>20+24; i++ { // 16 MiB stream window + 64 MiB queue, and more
		require.NoError(t, prim.write(journal.Write{Epoch: 1, Offset: int64(i%4) << 20, Data: data}, false))
	}
	select {
	case err := <-sessDone:
		require.ErrorIs(t, err, errCongested)
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled peer was never cut off")
	}
	require.NotEqual(t, DiskUpToDate, l.status(0).Disk)
}

// TestReconnectIdle: a peer that already holds everything (e.g. both nodes
// restarted cleanly) becomes UpToDate on reconnect without any new write.
func TestReconnectIdle(t *testing.T) {
	p := newPair(t, replicator.ProtocolC, 1<<30)
	p.connect()
	p.waitUpToDate()
	for i := range 10 {
		p.write(i)
	}
	p.disconnect()
	require.NoError(t, p.prim.store.Checkpoint())
	p.link.acked.Store(0) // as after a restart of the primary: it knows nothing of the peer
	p.connect()
	p.waitUpToDate()
	require.Zero(t, p.link.status(0).CatchupBytes)
	p.requireSameImage()
}
