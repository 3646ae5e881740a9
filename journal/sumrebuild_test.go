package journal

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

// countingFS counts the bytes read from data.img; its files tell where
// data lies as the files they wrap do.
type countingFS struct {
	vfs.FS
	dataRead *atomic.Int64
}

type countingFile struct {
	vfs.File
	read *atomic.Int64
}

func (c countingFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	f, err := c.FS.OpenFile(name, flag, perm)
	if err != nil || filepath.Base(name) != dataName {
		return f, err
	}
	return countingFile{f, c.dataRead}, nil
}

func (c countingFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.File.ReadAt(p, off)
	c.read.Add(int64(n))
	return n, err
}

func (c countingFile) NextData(off int64) (int64, int64, error) {
	if df, ok := c.File.(vfs.DataFinder); ok {
		return df.NextData(off)
	}
	return 0, 0, vfs.ErrNotSupported
}

// After a crash the checksum table's pages in doubt are rebuilt from the
// data file's data ranges only, and still cover every block that holds
// data, including a write that reached data.img without its record.
func TestChecksumRebuildReadsOnlyData(t *testing.T) {
	var read atomic.Int64
	dir := t.TempDir()
	o := Options{Dir: dir, FS: countingFS{vfs.Default, &read}, DeviceSize: 256 << 20, InPlaceMin: -1}
	j := mustOpen(t, o)
	writes := []Write{
		{Offset: 0, Data: fill(3*SumBlockSize, 1)},
		{Offset: 100 << 20, Data: fill(5000, 2)}, // ends inside a block
		{Offset: 200<<20 + 512, Data: fill(100, 3)},
		{Offset: o.DeviceSize - SumBlockSize, Data: fill(SumBlockSize, 4)},
	}
	for _, w := range writes {
		_, err := j.Append(w)
		require.NoError(t, err)
	}
	require.NoError(t, j.Checkpoint())
	j.closeNoCheckpoint()
	// The lost write: in the data file (far from the others), not in the
	// journal. A rebuild that skipped it would call its block corrupt. Its
	// extent is in the activity log, as every write's is before it reaches
	// the data file: here by the look-ahead of the write at 100 MiB.
	lost := Write{Offset: 150 << 20, Data: fill(SumBlockSize, 9)}
	f, err := os.OpenFile(filepath.Join(dir, dataName), os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(lost.Data, lost.Offset)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	read.Store(0)
	j = mustOpen(t, o)
	require.False(t, j.openedClean)
	// The file system's data blocks near the five writes, not the holes
	// (where it can tell them apart).
	if reportsHoles(t, t.TempDir()) { // the same file system
		require.Less(t, read.Load(), int64(4<<20), "the rebuild read the holes")
	} else {
		t.Logf("the file system under %s reports no holes: the rebuild read %d bytes", dir, read.Load())
	}
	for _, w := range append(writes, lost, Write{Offset: 50 << 20, Data: fill(SumBlockSize, 0)}) {
		first := w.Offset / SumBlockSize * SumBlockSize
		end := (w.Offset + int64(len(w.Data)) + SumBlockSize - 1) / SumBlockSize * SumBlockSize
		got := make([]byte, end-first)
		require.NoError(t, j.ReadAt(got, first), "blocks of the write at %d", w.Offset)
		require.Equal(t, w.Data, got[w.Offset-first:][:len(w.Data)])
	}
	require.Zero(t, j.Stats().ChecksumErrors)
}

// fakeData is a file whose data ranges are given.
type fakeData struct {
	vfs.File
	ranges  [][2]int64
	err     error // returned instead of the ranges
	syncErr error
}

func (f fakeData) Sync() error { return f.syncErr }

func (f fakeData) NextData(off int64) (int64, int64, error) {
	if f.err != nil {
		return 0, 0, f.err
	}
	for _, r := range f.ranges {
		if r[1] > off {
			return max(r[0], off), r[1], nil
		}
	}
	return 0, 0, io.EOF
}

func TestDataRanges(t *testing.T) {
	const b = SumBlockSize
	errDisk := errors.New("disk on fire")
	for _, tc := range []struct {
		name   string
		file   vfs.File
		size   int64
		want   [][2]int64
		errIs  error
		errMsg string
	}{
		{name: "no finder: everything", file: nil, size: 10 * b, want: [][2]int64{{0, 10 * b}}},
		{name: "not supported: everything", file: fakeData{err: vfs.ErrNotSupported}, size: 10 * b, want: [][2]int64{{0, 10 * b}}},
		{name: "no data", file: fakeData{}, size: 10 * b},
		{name: "widened to blocks", file: fakeData{ranges: [][2]int64{{b + 5, 2*b + 1}}}, size: 10 * b, want: [][2]int64{{b, 3 * b}}},
		{name: "two ranges in one block do not overlap", file: fakeData{ranges: [][2]int64{{0, 10}, {100, 200}, {b + 1, b + 2}}}, size: 10 * b, want: [][2]int64{{0, b}, {b, 2 * b}}},
		{name: "cut at the device size", file: fakeData{ranges: [][2]int64{{8 * b, 20 * b}, {30 * b, 40 * b}}}, size: 10 * b, want: [][2]int64{{8 * b, 10 * b}}},
		{name: "partial last block", file: fakeData{ranges: [][2]int64{{9 * b, 9*b + 10}}}, size: 9*b + 100, want: [][2]int64{{9 * b, 9*b + 100}}},
		{name: "error", file: fakeData{err: errDisk}, size: 10 * b, errIs: errDisk},
		{name: "sync fails", file: fakeData{ranges: [][2]int64{{0, b}}, syncErr: errDisk}, size: 10 * b, errIs: errDisk},
		{name: "empty range", file: fakeData{ranges: [][2]int64{{5, 5}}}, size: 10 * b, errMsg: "reports data range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [][2]int64
			err := dataRanges(tc.file, 0, tc.size, func(s, e int64) error {
				got = append(got, [2]int64{s, e})
				return nil
			})
			switch {
			case tc.errIs != nil:
				require.ErrorIs(t, err, tc.errIs)
			case tc.errMsg != "":
				require.ErrorContains(t, err, tc.errMsg)
			default:
				require.NoError(t, err)
				require.Equal(t, tc.want, got)
			}
		})
	}
}

// reportsHoles says whether the file system under dir reports a sparse
// file's hole as one.
func reportsHoles(t *testing.T, dir string) bool {
	f, err := vfs.Default.OpenFile(filepath.Join(dir, "probe"), os.O_RDWR|os.O_CREATE, 0o600)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Truncate(16<<20))
	_, _, err = f.(vfs.DataFinder).NextData(0)
	return errors.Is(err, io.EOF)
}
