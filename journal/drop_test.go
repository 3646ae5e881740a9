package journal

import (
	"bytes"
	"testing"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

// Logged writes above a position are dropped, those below applied, and
// Rewind (which checkpoints, waiting for every logged write) then forgets
// the dropped ones: reads, checksums and a reopen see only what was
// applied.
func TestDropThenRewind(t *testing.T) {
	fs := vfs.NewMem()
	j := mustOpen(t, testOptions(fs))
	_, err := j.Append(Write{Offset: 0, Data: bytes.Repeat([]byte{1}, 8192)})
	require.NoError(t, err)
	logged, err := j.Log([]Write{
		{Offset: 0, Data: bytes.Repeat([]byte{2}, 4096)},
		{Offset: 100, Data: bytes.Repeat([]byte{3}, 5000)}, // overlaps the first
		{Offset: 4096, ZeroLength: 4096},
	})
	require.NoError(t, err)
	require.NoError(t, j.Apply(logged[0]))
	j.Drop(logged[1])
	j.Drop(logged[2])
	_, err = j.Rewind(logged[0].Seq)
	require.NoError(t, err)
	require.Equal(t, logged[0].Seq, j.LastSeq())
	want := bytes.Repeat([]byte{1}, 8192)
	copy(want, bytes.Repeat([]byte{2}, 4096))
	got := make([]byte, 8192)
	require.NoError(t, j.ReadAt(got, 0), "checksums untouched by the dropped writes")
	require.Equal(t, want, got)
	require.NoError(t, j.Close())

	j2 := mustOpen(t, testOptions(fs))
	require.Equal(t, logged[0].Seq, j2.LastSeq())
	require.NoError(t, j2.ReadAt(got, 0))
	require.Equal(t, want, got, "after reopen: nothing dropped is replayed")
	require.NoError(t, j2.Close())
}
