package journal

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

// A batch logged at once and applied in any order, from many goroutines,
// leaves the device as the writes applied in sequence order would, also
// across segment rotations, and replays to the same after a reopen.
func TestLogBatchAppliedOutOfOrder(t *testing.T) {
	fs := vfs.NewMem()
	j := mustOpen(t, testOptions(fs))
	m := newModel()
	rng := rand.New(rand.NewPCG(7, 7))
	syncs0 := j.Stats().Syncs
	for round := range 40 {
		ws := make([]Write, 1+rng.IntN(6))
		for i := range ws {
			n := 512 * (1 + rng.IntN(4))
			off := int64(rng.IntN(4)) * 512 // few offsets: many overlaps
			ws[i] = Write{Offset: off, Data: bytes.Repeat([]byte{byte(round*8 + i + 1)}, n)}
		}
		logged, err := j.Log(ws)
		require.NoError(t, err)
		require.Len(t, logged, len(ws))
		for i, l := range logged {
			require.Equal(t, j.LastSeq()-uint64(len(ws)-1-i), l.Seq, "consecutive seqs")
			m.apply(l.Write)
		}
		var wg sync.WaitGroup
		for _, i := range rng.Perm(len(logged)) {
			wg.Go(func() { require.NoError(t, j.Apply(logged[i])) })
		}
		wg.Wait()
		got := make([]byte, testDev)
		require.NoError(t, j.ReadAt(got, 0))
		require.Equal(t, m.data, got, "round %d", round)
	}
	require.Greater(t, j.Stats().Syncs, syncs0+3, "the batches crossed segments (each rotation syncs)")
	require.NoError(t, j.Close())

	j2 := mustOpen(t, testOptions(fs))
	got := make([]byte, testDev)
	require.NoError(t, j2.ReadAt(got, 0))
	require.Equal(t, m.data, got, "after reopen")
}

// A read of a range with a logged, unapplied write waits for its data; a
// read elsewhere does not.
func TestReadWaitsForLoggedWrite(t *testing.T) {
	j := mustOpen(t, testOptions(vfs.NewMem()))
	logged, err := j.Log([]Write{{Offset: 4096, Data: bytes.Repeat([]byte{9}, 512)}})
	require.NoError(t, err)

	other := make([]byte, 512)
	require.NoError(t, j.ReadAt(other, 0), "a disjoint read does not wait")

	done := make(chan []byte)
	go func() {
		b := make([]byte, 1024)
		require.NoError(t, j.ReadAt(b, 3840))
		done <- b
	}()
	select {
	case <-done:
		t.Fatal("a read overlapping a logged write returned before its data landed")
	case <-time.After(100 * time.Millisecond):
	}
	require.NoError(t, j.Apply(logged[0]))
	b := <-done
	require.Equal(t, bytes.Repeat([]byte{9}, 512), b[256:768])
}

// Log refuses a batch with seqs out of order, or too large for the
// journal, before it writes anything.
func TestLogRejects(t *testing.T) {
	j := mustOpen(t, testOptions(vfs.NewMem()))
	_, err := j.Append(Write{Seq: 5, Offset: 0, Data: make([]byte, 512)})
	require.NoError(t, err)
	_, err = j.Log([]Write{{Seq: 7, Data: make([]byte, 512)}, {Seq: 6, Data: make([]byte, 512)}})
	require.ErrorIs(t, err, ErrSeqOrder)
	_, err = j.Log([]Write{{Offset: testDev, Data: make([]byte, 512)}})
	require.ErrorIs(t, err, ErrOutOfRange)
	big := make([]Write, 20)
	for i := range big {
		big[i] = Write{Data: make([]byte, 4096)}
	}
	_, err = j.Log(big)
	require.ErrorIs(t, err, ErrTooLarge)
	require.Equal(t, uint64(5), j.LastSeq(), "nothing was logged")
}

// A goroutine that applies what it logged may log again while the journal
// is full: the checkpoint it waits for only needs writes that are applied
// or in flight elsewhere.
func TestLogWhileFullNoDeadlock(t *testing.T) {
	j := mustOpen(t, testOptions(vfs.NewMem()))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				logged, err := j.Log([]Write{
					{Offset: int64(g) * 8192, Data: bytes.Repeat([]byte{byte(i)}, 4096)},
					{Offset: int64(g)*8192 + 4096, Data: bytes.Repeat([]byte{byte(i)}, 2048)},
				})
				if !assertNoError(t, err) {
					return
				}
				for _, l := range logged {
					if !assertNoError(t, j.Apply(l)) {
						return
					}
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("logging into a full journal hangs")
	}
	require.Greater(t, j.Stats().Checkpoints, uint64(0))
	// Close here: a background checkpoint may still run, which the
	// cleanup's invariant check would race with.
	require.NoError(t, j.Close())
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}
