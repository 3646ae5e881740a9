package primary

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/journal"
	"github.com/stretchr/testify/require"
)

// A primary back from a power loss writes the regions its store holds in
// doubt again through the write path (so that every peer gets its bytes
// there), then forgets them as suspects.
func TestPrimaryRewritesPowerLossSuspects(t *testing.T) {
	mem := vfs.NewMem()
	require.NoError(t, mem.MkdirAll("/d", 0o700))
	// One segment holds every record: a checkpoint frees none of them
	// before the test reads them back.
	opts := journal.Options{Dir: "/d", FS: mem, DeviceSize: 8 << 20, SegmentSize: 32 << 20, MaxSize: 64 << 20, BootID: "boot 1"}
	before, err := journal.Open(opts)
	require.NoError(t, err)
	_, err = before.Append(journal.Write{Epoch: 1, Offset: 5 << 20, Data: block(9)})
	require.NoError(t, err)
	crashed := mem.CrashClone(rand.New(rand.NewPCG(2, 2)))
	require.NoError(t, before.Close())
	opts.FS, opts.BootID = crashed, "boot 2"
	store, err := journal.Open(opts)
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })
	suspects := []extent.Extent{{Offset: 4 << 20, Length: 4 << 20}}
	require.Equal(t, suspects, store.Suspects())
	want := make([]byte, 4<<20)
	require.NoError(t, store.ReadAt(want, 4<<20))
	last := store.LastSeq()

	startSide(t, store, opts.MaxSize, &control{}, 2)

	require.Eventually(t, func() bool { return len(store.Suspects()) == 0 }, 10*time.Second, 10*time.Millisecond,
		"the suspects are rewritten and forgotten")
	var rewritten []extent.Extent
	require.NoError(t, store.ReadRecords(last+1, func(w journal.Write) error {
		require.Equal(t, uint64(2), w.Epoch, "in this primary's epoch")
		rewritten = append(rewritten, extent.Extent{Offset: uint64(w.Offset), Length: uint64(len(w.Data))})
		return nil
	}))
	require.Empty(t, extent.Subtract(suspects, rewritten), "every suspect byte is journaled again, so peers get it")
	got := make([]byte, 4<<20)
	require.NoError(t, store.ReadAt(got, 4<<20))
	require.Equal(t, want, got, "with the bytes the primary held")
}
