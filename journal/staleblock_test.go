package journal

import (
	"hash/crc32"
	"os"
	"path"
	"testing"

	"github.com/grbd/grbd/internal/blockid"
	"github.com/grbd/grbd/internal/crc32c"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

// overwrite writes b into data.img at off, behind the store's back (on the
// same file: the store's open handle sees it).
func overwrite(t *testing.T, fs vfs.FS, off int64, b []byte) {
	t.Helper()
	f, err := fs.OpenFile(path.Join("/db", dataName), os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// TestChecksumsSeeAStaleSelfSummedBlock: a write the disk lost (data.img
// still holds the block's older bytes, or another block's) is caught by the
// next read, also where the old and the new bytes both end in the CRC-32C
// of the bytes before them and so share one CRC-32C: the table holds block
// IDs (docs/journal.md, "Block checksums"). Each way a write reaches the
// table is checked (a data record, an extent record, an in-place resync
// write), live and after a clean reopen (the table from data.sum). With
// CRC-32Cs in the table every case reads the stale block as good.
func TestChecksumsSeeAStaleSelfSummedBlock(t *testing.T) {
	const at = 8 * SumBlockSize
	for _, tc := range []struct {
		name  string
		size  int
		write func(j *Journal, w Write) error
	}{
		{"data record", SumBlockSize, func(j *Journal, w Write) error { _, err := j.Append(w); return err }},
		{"extent record", 4 * SumBlockSize, func(j *Journal, w Write) error { _, err := j.Append(w); return err }},
		{"in place", 4 * SumBlockSize, func(j *Journal, w Write) error { return j.WriteInPlace(w) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			opts := testOptions(fs)
			opts.InPlaceMin = 4 * SumBlockSize
			j := mustOpen(t, opts)
			older := selfSummed(fill(tc.size, 1))
			newer := selfSummed(fill(tc.size, 2))
			last := int64(tc.size - SumBlockSize) // of the write's blocks, the one the disk loses
			require.Equal(t, crc32.Checksum(older[last:], crc32c.Table), crc32.Checksum(newer[last:], crc32c.Table),
				"the premise: one CRC-32C for both")
			require.NoError(t, tc.write(j, Write{Seq: 1, Offset: at, Data: older}))
			require.NoError(t, tc.write(j, Write{Seq: 2, Offset: at, Data: newer}))
			if tc.name == "extent record" {
				require.EqualValues(t, 2, j.Stats().ExtentRecords)
			}
			for b := int64(0); b < int64(tc.size); b += SumBlockSize {
				require.Equal(t, blockid.Of(newer[b:b+SumBlockSize]), j.sums.get((at+b)/SumBlockSize), "block %d's entry", b/SumBlockSize)
			}

			stale := func(j *Journal) {
				t.Helper()
				p := make([]byte, tc.size)
				var ce *ChecksumError
				require.ErrorAs(t, j.ReadAt(p, at), &ce)
				require.Equal(t, []int64{at + last}, ce.Blocks)
			}
			overwrite(t, fs, at+last, older[last:])
			stale(j)
			overwrite(t, fs, at+last, newer[last:])
			require.NoError(t, j.Close())

			j = mustOpen(t, opts)
			require.Empty(t, j.replayed)
			overwrite(t, fs, at+last, older[last:])
			stale(j)
			overwrite(t, fs, at+last, newer[last:]) // for the cleanup's invariant checks
		})
	}
}

// TestChecksumFileOfCRCs: a data.sum of an earlier build (version 1,
// CRC-32Cs) is not taken as the table (every block would read as corrupt)
// but still says that the store was closed cleanly, so the activity log
// does not hand out suspects as after a crash.
func TestChecksumFileOfCRCs(t *testing.T) {
	fs := vfs.NewMem()
	j := mustOpen(t, testOptions(fs))
	data := fill(2*SumBlockSize, 5)
	_, err := j.Append(Write{Offset: 0, Data: data})
	require.NoError(t, err)
	require.NoError(t, j.Close())

	name := path.Join("/db", sumName)
	tab := newSumTable(testDev / SumBlockSize) // what an earlier build wrote
	for i := int64(0); i < testDev/SumBlockSize; i++ {
		tab.set(i, crc32.Checksum(zeros[:SumBlockSize], crc32c.Table))
	}
	tab.set(0, crc32.Checksum(data[:SumBlockSize], crc32c.Table))
	tab.set(1, crc32.Checksum(data[SumBlockSize:], crc32c.Table))
	b := encodeSums(tab, testDev/SumBlockSize, j.salt)
	b[4] = sumVersionCRC
	le.PutUint32(b[32:], crc32.Checksum(b[:32], crc32c.Table))
	writeFile(t, fs, name, b)

	j = mustOpen(t, testOptions(fs))
	require.True(t, j.openedClean)
	p := make([]byte, len(data))
	require.NoError(t, j.ReadAt(p, 0), "the table was rebuilt, not taken from the file")
	require.Equal(t, data, p)
	require.Equal(t, blockid.Of(data[:SumBlockSize]), j.sums.get(0))

	// Another store's file says nothing of this one.
	require.NoError(t, j.Close())
	le.PutUint64(b[20:], 12345)
	le.PutUint32(b[32:], crc32.Checksum(b[:32], crc32c.Table))
	writeFile(t, fs, name, b)
	j = mustOpen(t, testOptions(fs))
	require.False(t, j.openedClean)
}
