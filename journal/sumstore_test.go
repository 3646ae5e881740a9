package journal

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

// pageBytes is the device bytes one data.sum page covers.
const pageBytes = sumPageBlocks * SumBlockSize

// A block that rots while a crashed node is down is still caught by its ID
// after the restart: the restart re-reads only the pages of the extents
// the activity log held, and takes the others from data.sum. (Before
// data.sum was kept up to date, a restart after a crash rebuilt the whole
// table from the data file and blessed the rotten block.)
func TestChecksumsOutliveACrash(t *testing.T) {
	for _, tc := range []struct {
		name string
		boot string // of the restart
	}{{"process crash", "boot 1"}, {"power loss", "boot 2"}} {
		t.Run(tc.name, func(t *testing.T) {
			var read atomic.Int64
			fs := countingFS{vfs.NewMem(), &read}
			o := testOptions(fs)
			o.DeviceSize, o.BootID = 4*pageBytes, "boot 1"
			j := mustOpen(t, o)
			cold := fill(SumBlockSize, 3)
			_, err := j.Append(Write{Offset: 0, Data: cold})
			require.NoError(t, err)
			require.NoError(t, j.Close())

			j = mustOpen(t, o)
			hot := Write{Offset: 3*pageBytes + SumBlockSize, Data: fill(SumBlockSize, 4)}
			seq, err := j.Append(hot)
			require.NoError(t, err)
			require.NoError(t, j.Sync(seq))
			j.closeNoCheckpoint()
			flipBit(t, fs, 100) // the cold block rots while the node is down

			read.Store(0)
			o.BootID = tc.boot
			j = mustOpen(t, o)
			require.False(t, j.openedClean)
			require.LessOrEqual(t, read.Load(), int64(2*pageBytes), "the restart re-read more than the pages of the hot extents (4 MiB at 11 MiB and the one after it)")
			p := make([]byte, SumBlockSize)
			var cerr *ChecksumError
			require.ErrorAs(t, j.ReadAt(p, 0), &cerr, "the rotten block was blessed by the restart")
			require.Equal(t, []int64{0}, cerr.Blocks)
			require.NoError(t, j.ReadAt(p, hot.Offset))
			require.Equal(t, hot.Data, p)
			// The test's own damage, repaired for the cleanup's checks.
			_, err = j.Append(Write{Offset: 0, Data: cold})
			require.NoError(t, err)
		})
	}
}

// An in-place write (no record: replay cannot re-apply it) keeps its
// extent in the activity log until a checkpoint saved its block IDs to
// data.sum, even when the journal's durable position passed it and the
// log evicts: otherwise a restart after a crash would take the page from
// data.sum, older than the block, and fail a good block.
func TestInPlaceWritePinsItsExtent(t *testing.T) {
	fs := vfs.NewMem()
	o := testOptions(fs)
	o.DeviceSize = 4 * pageBytes
	o.activityExtentSize, o.ActivityExtents, o.activityLookahead = 64<<10, 1, 1
	j := mustOpen(t, o)
	in := Write{Seq: j.LastSeq() + 1, Offset: 0, Data: fill(SumBlockSize, 5)}
	require.NoError(t, j.WriteInPlace(in))
	logged := func() {
		for i := int64(1); i <= 3; i++ { // other extents, each pushing the last out
			seq, err := j.Append(Write{Offset: 2*pageBytes + i*(64<<10), Data: fill(SumBlockSize, byte(i))})
			require.NoError(t, err)
			require.NoError(t, j.Sync(seq))
		}
	}
	logged()
	require.Greater(t, j.DurableSeq(), in.Seq)
	j.act.mu.Lock()
	pinned := j.act.hot[0] != nil
	j.act.mu.Unlock()
	require.True(t, pinned, "the in-place write's extent left the activity log before its IDs were saved")

	// A restart after a crash re-reads its page.
	j.closeNoCheckpoint()
	j = mustOpen(t, o)
	p := make([]byte, SumBlockSize)
	require.NoError(t, j.ReadAt(p, 0))
	require.Equal(t, in.Data, p)

	// A checkpoint saves it, and the pin goes.
	in.Seq = j.LastSeq() + 1
	require.NoError(t, j.WriteInPlace(in))
	require.NoError(t, j.Checkpoint())
	logged()
	j.act.mu.Lock()
	pinned = j.act.hot[0] != nil
	j.act.mu.Unlock()
	require.False(t, pinned, "a saved extent stays pinned")
}

// FuzzDecodeSumPage: decodeSumHeader and decodeSumPage never panic,
// classify every failure, and what they accept re-encodes to the same
// bytes (the committed seeds: a page, a header, a torn page).
func FuzzDecodeSumPage(f *testing.F) {
	tab := newSumTable(2 * sumPageBlocks)
	tab.set(sumPageBlocks+3, 0xdeadbeef)
	page := encodeSumPage(nil, tab, 1, 2*sumPageBlocks-5, 77)
	f.Add(page)
	f.Add(encodeSumHeader(nil, 77, true))
	f.Add(page[:sumPageSize/2])
	classified := func(t *testing.T, err error) {
		require.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrVersion), "unclassified: %v", err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if salt, clean, err := decodeSumHeader(b); err != nil {
			classified(t, err)
		} else {
			require.Equal(t, b[:32], encodeSumHeader(nil, salt, clean)[:32])
		}
		p, salt, ids, err := decodeSumPage(b)
		if err != nil {
			classified(t, err)
			return
		}
		again := appendSumPage(nil, p, salt, func(k int64) uint32 { return le.Uint32(ids[4*k:]) })
		require.Equal(t, b[:sumPageSize], again)
	})
}
