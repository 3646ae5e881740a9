package journal

import (
	"bytes"
	"syscall"
	"testing"

	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/racetest"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

const grownDev = 3 * testDev

// pastOldEnd is a write that only fits after the grow.
var pastOldEnd = Write{Offset: testDev + 4096, Data: bytes.Repeat([]byte{0xC3}, 8192), Epoch: 7}

// readAllDev reads the whole device.
func readAllDev(t *testing.T, j *Journal) []byte {
	t.Helper()
	b := make([]byte, j.Size())
	require.NoError(t, j.ReadAt(b, 0))
	return b
}

func TestResizeGrowThenWritePastOldEnd(t *testing.T) {
	fs := vfs.NewMem()
	j := mustOpen(t, testOptions(fs))
	first, err := j.Append(Write{Offset: 0, Data: bytes.Repeat([]byte{1}, 4096)})
	require.NoError(t, err)

	_, err = j.Append(pastOldEnd)
	require.ErrorIs(t, err, ErrOutOfRange, "past the end before the grow")
	rseq, err := j.Append(Write{Resize: grownDev, Epoch: 7})
	require.NoError(t, err)
	require.EqualValues(t, grownDev, j.Size())
	require.Zero(t, j.ChangedSince(first), "a grow writes no region")
	wseq, err := j.Append(pastOldEnd)
	require.NoError(t, err)
	require.Greater(t, wseq, rseq)

	want := make([]byte, grownDev)
	copy(want, bytes.Repeat([]byte{1}, 4096))
	copy(want[pastOldEnd.Offset:], pastOldEnd.Data)
	require.Equal(t, want, readAllDev(t, j))
	require.Equal(t, []extent.Extent{{Offset: uint64(pastOldEnd.Offset), Length: 8192}}, j.ChangedSince(rseq))
	recs := collect(t, j, rseq)
	require.Equal(t, int64(grownDev), recs[0].Resize, "ReadRecords yields the resize in order")

	// Reopen after a checkpoint (meta has the new size) and after a crash
	// (replay re-applies the resize): the same device either way. The
	// configured initial size is smaller than the store: accepted.
	require.NoError(t, j.Checkpoint())
	require.NoError(t, j.Close())
	m, err := (&Journal{fs: fs, dir: "/db"}).readMeta()
	require.NoError(t, err)
	require.EqualValues(t, grownDev, m.deviceSize)
	require.Len(t, m.regions, grownDev/testRegion)
	j = mustOpen(t, testOptions(fs))
	require.EqualValues(t, grownDev, j.Size())
	require.Equal(t, want, readAllDev(t, j))
	_, err = j.Append(Write{Offset: grownDev - 512, Data: make([]byte, 512)})
	require.NoError(t, err)
	require.Equal(t, []extent.Extent{{Offset: uint64(pastOldEnd.Offset), Length: 8192}, {Offset: grownDev - testRegion, Length: testRegion}}, j.ChangedSince(rseq))
	j.closeNoCheckpoint()
	j = mustOpen(t, testOptions(fs))
	require.EqualValues(t, grownDev, j.Size())

	o := testOptions(fs)
	o.DeviceSize = 4 * testDev
	_, err = Open(o)
	require.ErrorIs(t, err, ErrSizeMismatch, "a config larger than the store")
}

func TestResizeShrinkRefused(t *testing.T) {
	j := mustOpen(t, testOptions(vfs.NewMem()))
	seq, err := j.Append(Write{Offset: 0, Data: []byte("12345678")})
	require.NoError(t, err)
	_, err = j.Append(Write{Resize: testDev - 4096})
	require.ErrorIs(t, err, ErrShrink)
	require.Equal(t, seq, j.LastSeq(), "nothing journaled")
	require.EqualValues(t, testDev, j.Size())

	// The same size is a journaled no-op (a primary re-announcing its size).
	same, err := j.Append(Write{Resize: testDev})
	require.NoError(t, err)
	require.Equal(t, seq+1, same)
	require.EqualValues(t, testDev, j.Size())

	// A peer applying a primary's records: an explicit seq.
	_, err = j.Append(Write{Seq: same + 5, Resize: 2 * testDev})
	require.NoError(t, err)
	require.EqualValues(t, 2*testDev, j.Size())
	require.Equal(t, same+5, j.LastSeq())
}

// A crash at every byte of a resize record, and inside a write past the old
// end that follows it: the store reopens at the last whole record, at the size
// that record implies, with the data file cut to it (also when the grow of
// the data file reached the disk and the record did not).
func TestResizeReplayAtEveryByte(t *testing.T) {
	racetest.FullOnly(t)
	for _, fileGrown := range []bool{false, true} {
		t.Run(map[bool]string{false: "data file old size", true: "data file grown"}[fileGrown], func(t *testing.T) {
			o := testOptions(nil)
			o.SegmentSize, o.MaxSize = 64<<10, 1<<20
			writes := fixedWrites(4)
			base, m, done, _ := buildJournal(t, o, writes, len(writes))
			segPath := lastSegment(t, base, "/db")
			seg := readFile(t, base, segPath)
			salt := recordSaltOf(t, base, segPath)
			rseq := done[len(done)-1].Seq + 1
			resize, err := EncodeRecord(nil, Record{Write: Write{Seq: rseq, Epoch: 7, Resize: grownDev}, Salt: salt, Synced: int64(len(seg))})
			require.NoError(t, err)
			w := pastOldEnd
			w.Seq = rseq + 1
			tail, err := EncodeRecord(bytes.Clone(resize), Record{Write: w, Salt: salt, Synced: int64(len(seg))})
			require.NoError(t, err)
			data := readFile(t, base, "/db/data.img")
			if fileGrown {
				data = append(data, make([]byte, grownDev-testDev)...)
				copy(data[w.Offset:], w.Data) // the write reached the page cache too
			}

			// Every byte of the resize record; a few of the write.
			var cuts []int
			for cut := 0; cut <= len(resize); cut++ {
				cuts = append(cuts, cut)
			}
			cuts = append(cuts, len(resize)+1, len(resize)+RecordHeaderSize, len(tail)-1, len(tail))
			for _, cut := range cuts {
				fs := copyFS(t, base)
				writeFile(t, fs, segPath, append(bytes.Clone(seg), tail[:cut]...))
				writeFile(t, fs, "/db/data.img", data)
				o.FS = fs
				j, err := Open(o)
				require.NoError(t, err, "cut %d", cut)
				wantSeq, wantSize := rseq-1, int64(testDev)
				switch {
				case cut == len(tail):
					wantSeq, wantSize = rseq+1, grownDev
				case cut >= len(resize):
					wantSeq, wantSize = rseq, grownDev
				}
				require.Equal(t, wantSeq, j.LastSeq(), "cut %d", cut)
				require.Equal(t, wantSize, j.Size(), "cut %d", cut)
				got := readAllDev(t, j)
				require.Equal(t, m.data, got[:testDev], "cut %d", cut)
				if wantSize > testDev {
					wantTail := make([]byte, grownDev-testDev)
					if wantSeq == w.Seq || fileGrown {
						// An unsynced write may survive in the image (a
						// volatile cache); a replayed one must.
						copy(wantTail[w.Offset-testDev:], w.Data)
					}
					require.Equal(t, wantTail, got[testDev:], "cut %d", cut)
				}
				j.closeNoCheckpoint()
				require.EqualValues(t, wantSize, len(readFile(t, fs, "/db/data.img")), "data file follows the device, cut %d", cut)
				// Replaying again changes nothing.
				j, err = Open(o)
				require.NoError(t, err, "second open, cut %d", cut)
				require.Equal(t, wantSize, j.Size())
				require.Equal(t, got, readAllDev(t, j))
				j.closeNoCheckpoint()
			}
		})
	}
}

func TestCoarsen(t *testing.T) {
	require.Equal(t, []uint64{5, 3, 9}, coarsen([]uint64{5, 0, 1, 3, 9}))
	require.Equal(t, []uint64{}, coarsen(nil))
}

// A grow the file system refuses (a full disk) changes nothing: no record,
// the old size, the store still usable.
func TestResizeFailedGrowChangesNothing(t *testing.T) {
	fs, full := faultFS(vfs.OpTruncate, "/"+dataName, syscall.ENOSPC)
	j := mustOpen(t, testOptions(fs))
	seq, err := j.Append(Write{Offset: 0, Data: []byte("12345678")})
	require.NoError(t, err)
	full.Store(true)
	_, err = j.Append(Write{Resize: grownDev})
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.Equal(t, seq, j.LastSeq())
	require.EqualValues(t, testDev, j.Size())
	full.Store(false)
	_, err = j.Append(Write{Offset: 8, Data: []byte("abcdefgh")})
	require.NoError(t, err, "the store did not fail")
	_, err = j.Append(Write{Resize: grownDev})
	require.NoError(t, err)
	require.EqualValues(t, grownDev, j.Size())
}

func TestStoreExists(t *testing.T) {
	fs := vfs.NewMem()
	ok, err := StoreExists(fs, "/db")
	require.NoError(t, err)
	require.False(t, ok)
	mustOpen(t, testOptions(fs))
	ok, err = StoreExists(fs, "/db")
	require.NoError(t, err)
	require.True(t, ok)
}
