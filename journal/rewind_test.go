package journal

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

func TestRewind(t *testing.T) {
	fs := vfs.NewMem()
	j := mustOpen(t, testOptions(fs))
	rng := rand.New(rand.NewPCG(3, 4))
	for range 40 {
		_, err := j.Append(randWrite(rng))
		require.NoError(t, err)
	}
	divergedAt := j.LastSeq()
	for range 30 {
		_, err := j.Append(randWrite(rng))
		require.NoError(t, err)
	}
	changed := j.ChangedSince(divergedAt)
	require.NotEmpty(t, changed)
	ext, err := j.Rewind(divergedAt + 1000)
	require.NoError(t, err)
	require.Nil(t, ext, "rewinding forward is a no-op")

	ext, err = j.Rewind(divergedAt)
	require.NoError(t, err)
	require.Equal(t, changed, ext, "the discarded writes' regions")
	require.Equal(t, divergedAt, j.LastSeq())
	require.Equal(t, divergedAt, j.DurableSeq())
	require.Empty(t, j.ChangedSince(divergedAt))
	checkInvariants(t, j)

	// The primary's history continues from the common point.
	w := Write{Seq: divergedAt + 1, Offset: 0, Data: bytes.Repeat([]byte{0xab}, 512)}
	_, err = j.Append(w)
	require.NoError(t, err)
	require.NoError(t, j.Sync(j.LastSeq()))
	var seen []uint64
	require.NoError(t, j.ReadRecords(divergedAt+1, func(w Write) error { seen = append(seen, w.Seq); return nil }))
	require.Equal(t, []uint64{divergedAt + 1}, seen)

	// A crash now keeps the rewound position and the new record.
	crashed := fs.CrashClone(rand.New(rand.NewPCG(1, 1)))
	j2 := mustOpen(t, testOptions(crashed))
	require.Equal(t, divergedAt+1, j2.LastSeq())
	got := make([]byte, 512)
	require.NoError(t, j2.ReadAt(got, 0))
	require.Equal(t, w.Data, got)
}

// A crash inside Rewind leaves the old position or the new one.
func TestRewindCrash(t *testing.T) {
	for i := range 50 {
		fs := vfs.NewMem()
		j, err := Open(testOptions(fs))
		require.NoError(t, err)
		rng := rand.New(rand.NewPCG(uint64(i), 9))
		for range 20 {
			_, err := j.Append(randWrite(rng))
			require.NoError(t, err)
		}
		last := j.LastSeq()
		var crashed *vfs.MemFS
		j.hooks.beforeWrite = nil
		if i%2 == 0 {
			_, err := j.Rewind(10)
			require.NoError(t, err)
			crashed = fs.CrashClone(rng)
		} else {
			// Crash before the meta names the new position: simulate by
			// cloning after only the checkpoint.
			require.NoError(t, j.Checkpoint())
			crashed = fs.CrashClone(rng)
		}
		j.closeNoCheckpoint()
		j2, err := Open(testOptions(crashed))
		require.NoError(t, err)
		if i%2 == 0 {
			require.Equal(t, uint64(10), j2.LastSeq())
		} else {
			require.Equal(t, last, j2.LastSeq())
		}
		require.NoError(t, j2.Close())
	}
}
