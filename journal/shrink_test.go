package journal

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

// A device cut to somewhat more than half.
const (
	shrinkFrom = 1 << 20
	shrinkTo   = 512<<10 + 64<<10
)

// shrinkWrites land below the new end (also in its last block) and past it.
var shrinkWrites = []Write{
	{Offset: 0, Data: bytes.Repeat([]byte{1}, 4096)},
	{Offset: shrinkTo - 8192, Data: bytes.Repeat([]byte{2}, 8192)},
	{Offset: shrinkTo, Data: bytes.Repeat([]byte{3}, 4096)},
	{Offset: 768 << 10, Data: bytes.Repeat([]byte{4}, 12288)},
}

// shrinkStore is a store of shrinkFrom bytes on fs holding shrinkWrites,
// and the device's bytes.
func shrinkStore(t *testing.T, fs vfs.FS) (*Journal, []byte) {
	t.Helper()
	o := testOptions(fs)
	o.DeviceSize = shrinkFrom
	j, err := Open(o)
	require.NoError(t, err)
	want := make([]byte, shrinkFrom)
	for _, w := range shrinkWrites {
		_, err := j.Append(w)
		require.NoError(t, err)
		copy(want[w.Offset:], w.Data)
	}
	require.NoError(t, j.Sync(j.LastSeq()), "acknowledged: they must survive a power loss")
	return j, want
}

// reopen opens the store on fs as a node restarting does (device.size is
// the size it was created with).
func reopen(t *testing.T, fs vfs.FS) *Journal {
	t.Helper()
	o := testOptions(fs)
	o.DeviceSize = shrinkTo
	j, err := Open(o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = j.Close() })
	return j
}

// sameBytes fails at the first offset where j's device differs from want.
func sameBytes(t *testing.T, want []byte, j *Journal, what string) {
	t.Helper()
	got := readAllDev(t, j)
	require.Len(t, got, len(want), what)
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: byte %d is %#x, want %#x", what, i, got[i], want[i])
		}
	}
}

// growsBackToZeros grows j to shrinkFrom and checks that the bytes past
// the cut read as zeros, with no checksum error: the dropped blocks'
// checksums are gone with them, in memory and in data.sum.
func growsBackToZeros(t *testing.T, j *Journal, want []byte) {
	t.Helper()
	_, err := j.Append(Write{Resize: shrinkFrom})
	require.NoError(t, err)
	grown := make([]byte, shrinkFrom)
	copy(grown, want[:shrinkTo])
	sameBytes(t, grown, j, "grown back")
}

func TestShrinkTo(t *testing.T) {
	fs := vfs.NewMem()
	j, want := shrinkStore(t, fs)
	require.ErrorIs(t, j.ShrinkTo(shrinkFrom), ErrInvalidOptions, "not smaller")
	require.ErrorIs(t, j.ShrinkTo(shrinkTo+512), ErrInvalidOptions, "not block aligned")
	last := j.LastSeq()

	require.NoError(t, j.ShrinkTo(shrinkTo))
	require.EqualValues(t, shrinkTo, j.Size())
	require.Equal(t, last, j.LastSeq(), "the position is kept")
	sameBytes(t, want[:shrinkTo], j, "shrunk")
	require.ErrorIs(t, j.ReadAt(make([]byte, 4096), 768<<10), ErrOutOfRange)
	_, err := j.Append(Write{Offset: shrinkTo, Data: make([]byte, 4096)})
	require.ErrorIs(t, err, ErrOutOfRange)
	for _, e := range j.ChangedSince(0) {
		require.LessOrEqual(t, e.End(), uint64(shrinkTo), "a changed region past the end")
	}
	seq, err := j.Append(Write{Offset: 4096, Data: bytes.Repeat([]byte{5}, 4096)})
	require.NoError(t, err)
	require.Equal(t, last+1, seq)
	copy(want[4096:], bytes.Repeat([]byte{5}, 4096))
	require.NoError(t, j.Close())

	j = reopen(t, fs)
	require.EqualValues(t, shrinkTo, j.Size())
	sameBytes(t, want[:shrinkTo], j, "reopened")
	growsBackToZeros(t, j, want)
	require.NoError(t, j.Close())
	j = reopen(t, fs)
	growsBackWant := make([]byte, shrinkFrom)
	copy(growsBackWant, want[:shrinkTo])
	sameBytes(t, growsBackWant, j, "after a clean reopen of the grown store")
}

// Grown back while open, the dropped blocks read as zeros: the checksum
// table forgot them (a reopen builds a new table, so only this shows it).
func TestShrinkThenGrowWhileOpen(t *testing.T) {
	j, want := shrinkStore(t, vfs.NewMem())
	defer j.Close()
	require.NoError(t, j.ShrinkTo(shrinkTo))
	growsBackToZeros(t, j, want)
}

// A power loss at every file-system step of a shrink: the store reopens
// at the old size with every byte, or at the new size with every byte
// below it; either way its checksums hold, also once it grows back.
func TestShrinkToPowerLossAtEveryStep(t *testing.T) {
	mem := vfs.NewMem()
	rng := rand.New(rand.NewPCG(1, 7))
	var mu sync.Mutex // the store's background checkpoints use the disk too
	var armed bool
	var crashes []*vfs.MemFS // the disk a power loss before each step leaves
	fs := vfs.WithErrors(mem, func(vfs.Op, string) error {
		mu.Lock()
		defer mu.Unlock()
		if armed {
			crashes = append(crashes, mem.CrashClone(rng))
		}
		return nil
	})
	arm := func(on bool) {
		mu.Lock()
		armed = on
		mu.Unlock()
	}
	j, want := shrinkStore(t, fs)
	arm(true)
	require.NoError(t, j.ShrinkTo(shrinkTo))
	arm(false)
	j.closeNoCheckpoint()
	require.Greater(t, len(crashes), 10, "a shrink takes more steps than that")

	shrunk := 0
	for step, crashed := range crashes {
		j = reopen(t, crashed)
		switch size := j.Size(); size {
		case shrinkFrom:
			sameBytes(t, want, j, fmt.Sprintf("step %d: old size", step))
		case shrinkTo:
			sameBytes(t, want[:shrinkTo], j, fmt.Sprintf("step %d: new size", step))
			growsBackToZeros(t, j, want)
			// And after a stop before the grown pages were saved: data.sum
			// must not hand back the dropped blocks' checksums.
			j.closeNoCheckpoint()
			j = reopen(t, crashed)
			grown := make([]byte, shrinkFrom)
			copy(grown, want[:shrinkTo])
			sameBytes(t, grown, j, fmt.Sprintf("step %d: grown back, reopened", step))
			shrunk++
		default:
			t.Fatalf("step %d: size %d after the crash", step, size)
		}
		require.NoError(t, j.Close())
	}
	require.NotZero(t, shrunk, "no crash left the new size")
	require.Less(t, shrunk, len(crashes), "no crash left the old size")
	t.Logf("%d crashes, %d left the new size", len(crashes), shrunk)
}
