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

// A resync target writes its in-place copies behind the reader (copier).
// Nothing may count a copy before it is in the data file: not its own ack,
// and not the ack of a live write the reader takes meanwhile (acks are
// cumulative). And the live write, over the copy, must land after it. The
// test holds the copy's data-file write and checks all three; it fails if
// the reader journals the live write while the copy is on its way (no
// drain), or if a copy counts before its write returns.
func TestCopiesCountOnlyOnceWritten(t *testing.T) {
	const chunk = 256 << 10
	var hold atomic.Bool
	held, release := make(chan struct{}, 1), make(chan struct{})
	gated := vfs.WithErrors(vfs.NewMem(), func(op vfs.Op, name string) error {
		if op == vfs.OpWrite && strings.HasSuffix(name, "data.img") && hold.CompareAndSwap(true, false) {
			held <- struct{}{}
			<-release
		}
		return nil
	})
	s, _ := newSideOn(t, gated, 4<<20, 2, false)
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open) // before the side's cleanup: a failed check leaves the write held
	r, w := resumeSession(t, s)
	acks := answers(r)

	hold.Store(true)
	require.NoError(t, w.WriteMsg(&wire.ResyncData{AsOf: 3, Offset: 0, Data: chunkData(0, chunk)}))
	require.NoError(t, w.Flush())
	<-held // the copy's write is in the data file's hands
	require.NoError(t, w.WriteMsg(&wire.Write{Seq: 4, Epoch: 1, Offset: 0, Data: block(9)}))
	require.NoError(t, w.Flush())
	select {
	case a := <-acks:
		t.Fatalf("ack of seq %d while the copy (seq 3) is not written", a.seq)
	case <-time.After(200 * time.Millisecond):
	}
	require.Less(t, s.journaled.Load(), uint64(3), "the copy counts before its write returned")

	open()
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
