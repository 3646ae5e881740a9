package secondary

import (
	"bytes"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/internal/wire"
	"github.com/stretchr/testify/require"
)

// writeGate is a file system that, once armed, holds the next write to
// data.img until opened (and with failHeld then fails it), and counts the
// writes to data.img.
type writeGate struct {
	armed    atomic.Bool
	failHeld atomic.Bool
	writes   atomic.Int32
	held     chan struct{}
	release  chan struct{}
	once     sync.Once
}

func newWriteGate() *writeGate {
	return &writeGate{held: make(chan struct{}, 1), release: make(chan struct{})}
}

func (g *writeGate) fs() vfs.FS {
	return vfs.WithErrors(vfs.NewMem(), func(op vfs.Op, name string) error {
		if op != vfs.OpWrite || !strings.HasSuffix(name, "data.img") {
			return nil
		}
		g.writes.Add(1)
		if g.armed.CompareAndSwap(true, false) {
			g.held <- struct{}{}
			<-g.release
			if g.failHeld.Load() {
				return syscall.EIO
			}
		}
		return nil
	})
}

// open lets the held write (and every later one) through.
func (g *writeGate) open() { g.once.Do(func() { close(g.release) }) }

// requireUncounted checks for 200 ms that nothing from seq 3 on is acked
// or journaled: the copy of seq 3 is held on its way to the disk.
func requireUncounted(t *testing.T, s *Side, acks <-chan answer, why string) {
	t.Helper()
	select {
	case a := <-acks:
		t.Fatalf("ack of seq %d while the copy of seq 3 is not written", a.seq)
	case <-time.After(200 * time.Millisecond):
	}
	require.Less(t, s.journaled.Load(), uint64(3), why)
}

// A resync target writes its in-place copies behind the reader (copier).
// Nothing may count a copy before it is in the data file: not its own ack,
// and not the ack of a live write the reader takes meanwhile (acks are
// cumulative). And the live write, over the copy, must land after it. The
// test holds the copy's data-file write and checks all three; it fails if
// the reader journals the live write while the copy is on its way (no
// drain), or if a copy counts before its write returns.
func TestCopiesCountOnlyOnceWritten(t *testing.T) {
	const chunk = 256 << 10
	g := newWriteGate()
	s, _ := newSideOn(t, g.fs(), 4<<20, 2, false)
	t.Cleanup(g.open) // before the side's cleanup: a failed check leaves the write held
	r, w := resumeSession(t, s)
	acks := answers(r)

	g.armed.Store(true)
	require.NoError(t, w.WriteMsg(&wire.ResyncData{AsOf: 3, Offset: 0, Data: chunkData(0, chunk)}))
	require.NoError(t, w.Flush())
	<-g.held // the copy's write is in the data file's hands
	require.NoError(t, w.WriteMsg(&wire.Write{Seq: 4, Epoch: 1, Offset: 0, Data: block(9)}))
	require.NoError(t, w.Flush())
	requireUncounted(t, s, acks, "the copy counts before its write returned")

	g.open()
	for a := range acks {
		if a.seq == 4 {
			got := make([]byte, 2*4096)
			require.NoError(t, s.store.ReadAt(got, 0))
			require.True(t, bytes.Equal(block(9), got[:4096]), "the live write did not land after the copy under it")
			require.True(t, bytes.Equal(chunkData(0, chunk)[4096:2*4096], got[4096:]), "the copy is lost")
			return
		}
	}
	t.Fatal("the session ended before the live write's ack")
}

// Copies are written concurrently but count in order: a later copy whose
// write returned first counts only once every earlier one is written. The
// test holds the first copy's write while the second's completes; it fails
// if a copy counts as soon as its own write returns.
func TestCopiesCountInOrder(t *testing.T) {
	const chunk = 256 << 10
	g := newWriteGate()
	s, _ := newSideOn(t, g.fs(), 4<<20, 2, false)
	t.Cleanup(g.open)
	r, w := resumeSession(t, s)
	acks := answers(r)

	sendTwoCopiesFirstHeld(t, g, w, chunk)
	requireUncounted(t, s, acks, "a copy counted before an earlier one was written")

	g.open()
	for a := range acks {
		if a.seq == 4 {
			require.Equal(t, uint64(4), s.journaled.Load())
			got := make([]byte, 2*chunk)
			require.NoError(t, s.store.ReadAt(got, 0))
			require.True(t, bytes.Equal(append(chunkData(0, chunk), chunkData(1, chunk)...), got), "a copy is lost")
			return
		}
	}
	t.Fatal("the session ended before the second copy's ack")
}

// A copy the data file refuses is nacked, counts for nothing, and ends the
// session: the reader learns of it from the copier (failed) even though it
// handed the copy over and went on.
func TestFailedCopyEndsTheSession(t *testing.T) {
	const chunk = 256 << 10
	var fail atomic.Bool
	faulty := vfs.WithErrors(vfs.NewMem(), func(op vfs.Op, name string) error {
		if op == vfs.OpWrite && strings.HasSuffix(name, "data.img") && fail.Load() {
			return syscall.EIO
		}
		return nil
	})
	s, _ := newSideOn(t, faulty, 4<<20, 2, false)
	r, w := resumeSession(t, s)
	fail.Store(true)
	sent := make(chan error, 1)
	go func() {
		for k := range 4 {
			if err := w.WriteMsg(&wire.ResyncData{AsOf: uint64(3 + k), Offset: uint64(k * chunk), Data: chunkData(k, chunk)}); err != nil {
				sent <- err
				return
			}
			if err := w.Flush(); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	var nacked bool
	for {
		m, err := r.ReadMsg()
		if err != nil {
			break // the session ended
		}
		switch m := m.(type) {
		case *wire.Nack:
			require.Equal(t, uint64(3), m.Seq, "the first copy is the one refused")
			nacked = true
		case *wire.Ack:
			require.Less(t, m.Seq, uint64(3), "a refused copy counted")
		}
	}
	require.True(t, nacked, "the session ended without a Nack")
	require.Less(t, s.journaled.Load(), uint64(3))
	<-sent
}

// A copy the data file refuses is nacked at once, even while later copies
// are on their way: the primary, which ends the session on the Nack, may
// have nothing more to send, and the reader is then waiting for it. The
// test fails the first copy's write after the second copy's write went
// through and sends nothing more; it fails if the Nack waits for a message
// that never comes.
func TestFailedCopyIsNackedAtOnce(t *testing.T) {
	const chunk = 256 << 10
	g := newWriteGate()
	g.failHeld.Store(true)
	s, _ := newSideOn(t, g.fs(), 4<<20, 2, false)
	t.Cleanup(g.open)
	r, w := resumeSession(t, s)
	out := answers(r)

	sendTwoCopiesFirstHeld(t, g, w, chunk)
	g.open() // the first copy's write fails now
	select {
	case a := <-out:
		require.True(t, a.nack, "an answer other than the Nack: %+v", a)
		require.Equal(t, uint64(3), a.seq, "the first copy is the one refused")
		require.Less(t, s.journaled.Load(), uint64(3))
	case <-time.After(5 * time.Second):
		t.Fatal("no Nack within 5 s of the failed copy")
	}
}

// sendTwoCopiesFirstHeld sends two copies of chunk bytes, seq 3 and 4, the
// first held by g, and waits until the second one's write went through. The
// second copy goes out only once the first one's write is held: sent
// together, the second's write could reach the gate first.
func sendTwoCopiesFirstHeld(t *testing.T, g *writeGate, w *wire.Writer, chunk int) {
	t.Helper()
	g.armed.Store(true)
	before := g.writes.Load()
	for k := range 2 {
		require.NoError(t, w.WriteMsg(&wire.ResyncData{AsOf: uint64(3 + k), Offset: uint64(k * chunk), Data: chunkData(k, chunk)}))
		require.NoError(t, w.Flush())
		if k == 0 {
			<-g.held // the first copy's write is in the data file's hands
		}
	}
	require.Eventually(t, func() bool { return g.writes.Load() >= before+2 }, 5*time.Second, time.Millisecond,
		"the second copy's write never started while the first was held")
}
