package journal

import (
	"bytes"
	"errors"
	"os"
	"path"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

// FuzzDecodeRecord: DecodeRecord never panics, classifies every failure by
// sentinel, and whatever it accepts re-encodes to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range sampleRecords() {
		b, err := EncodeRecord(nil, r)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := DecodeRecord(b)
		if err != nil {
			require.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrVersion), "unclassified: %v", err)
			return
		}
		require.GreaterOrEqual(t, n, RecordHeaderSize)
		require.LessOrEqual(t, n, len(b))
		require.Zero(t, n%8)
		enc, err := EncodeRecord(nil, r)
		require.NoError(t, err)
		require.Equal(t, b[:n], enc)
	})
}

// FuzzDecodeMeta: the same for the meta file.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(encodeMeta(nil, &meta{deviceSize: 10000, regionSize: 4096, checkpointSeq: 42, salt: 9, regions: []uint64{0, 42, 17}}))
	f.Add(encodeMeta(nil, &meta{deviceSize: 512, regionSize: 512, regions: []uint64{0}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			require.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrVersion), "unclassified: %v", err)
			return
		}
		require.Equal(t, b, encodeMeta(nil, m))
	})
}

// fuzzJournal builds the store FuzzReplay damages: a few writes on a MemFS,
// closed without a checkpoint, so that Open replays every record. It
// returns the FS and the path of its last segment.
func fuzzJournal(tb testing.TB) (*vfs.MemFS, string) {
	fs := vfs.NewMem()
	o := testOptions(fs)
	j, err := Open(o)
	require.NoError(tb, err)
	// A grow in the middle and a write past the old end after it, so that
	// damage also hits resize records and what depends on them.
	ws := fixedWrites(6)
	ws = append(ws[:3], append([]Write{{Resize: 2 * testDev}, {Offset: testDev + 512, Data: bytes.Repeat([]byte{9}, 1024)}}, ws[3:]...)...)
	for i, w := range ws {
		seq, err := j.Append(w)
		require.NoError(tb, err)
		if i%2 == 0 {
			require.NoError(tb, j.Sync(seq))
		}
	}
	j.closeNoCheckpoint()
	dir := path.Join(o.Dir, "journal")
	names, err := fs.ReadDir(dir)
	require.NoError(tb, err)
	require.NotEmpty(tb, names)
	return fs, path.Join(dir, names[len(names)-1])
}

// FuzzReplay damages the last journal segment — its bytes from at on
// replaced by data — and reopens the store: replay must never panic, must
// classify every refusal by sentinel, and a store it opens must hold its
// invariants and close cleanly.
func FuzzReplay(f *testing.F) {
	fs, seg := fuzzJournal(f)
	orig := readFile(f, fs, seg)
	f.Add([]byte{}, uint32(len(orig)))                              // intact
	f.Add([]byte{}, uint32(len(orig)-7))                            // torn last record
	f.Add([]byte{}, uint32(segHeaderSize))                          // only the header
	f.Add([]byte{}, uint32(10))                                     // torn header
	f.Add(orig[segHeaderSize:segHeaderSize+200], uint32(len(orig))) // records repeated
	f.Add(bytes.Repeat([]byte{0xff}, 64), uint32(segHeaderSize+32)) // garbage in a record
	f.Add(orig[len(orig)-100:], uint32(segHeaderSize))              // a tail where the first record was
	f.Add(make([]byte, 4096), uint32(len(orig)))                    // zeroes (preallocated space)
	f.Fuzz(func(t *testing.T, data []byte, at uint32) {
		if len(data) > 1<<16 {
			return
		}
		fs, seg := fuzzJournal(t)
		b := readFile(t, fs, seg)
		b = append(b[:min(int(at), len(b))], data...)
		f, err := fs.OpenFile(seg, os.O_RDWR|os.O_TRUNC, 0o644)
		require.NoError(t, err)
		_, err = f.WriteAt(b, 0)
		require.NoError(t, err)
		require.NoError(t, f.Sync())
		require.NoError(t, f.Close())

		type opened struct {
			j   *Journal
			err error
		}
		ch := make(chan opened, 1)
		go func() {
			j, err := Open(testOptions(fs))
			ch <- opened{j, err}
		}()
		var o opened
		select {
		case o = <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("Open hung on segment bytes from %d: %x", at, data)
		}
		j, err := o.j, o.err
		if err != nil {
			require.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrVersion) ||
				errors.Is(err, ErrSeqOrder) || errors.Is(err, ErrOutOfRange), "unclassified: %v", err)
			return
		}
		checkInvariants(t, j)
		require.NoError(t, j.Close())
	})
}
