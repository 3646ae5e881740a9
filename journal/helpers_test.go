package journal

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/planted"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

const (
	testDev    = 64 << 10
	testRegion = 4 << 10
)

func testOptions(fs vfs.FS) Options {
	// Data records only: the tests of extent records (extent_test.go) set
	// InPlaceMin themselves.
	return Options{Dir: "/db", FS: fs, DeviceSize: testDev, SegmentSize: 8 << 10, MaxSize: 64 << 10, RegionSize: testRegion, InPlaceMin: -1}
}

// mustOpen opens a journal and registers a cleanup that checks its
// invariants and closes it (if the test did not).
func mustOpen(t *testing.T, opts Options) *Journal {
	t.Helper()
	j, err := Open(opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		if j.closing.Load() {
			return
		}
		checkInvariants(t, j)
		require.NoError(t, j.Close())
	})
	return j
}

// checkInvariants holds for every open journal at rest.
func checkInvariants(t *testing.T, j *Journal) {
	t.Helper()
	st := j.Stats()
	require.LessOrEqual(t, st.DurableSeq, st.LastSeq, "durable <= last")
	require.LessOrEqual(t, st.CheckpointSeq, st.LastSeq, "checkpoint <= last")
	require.LessOrEqual(t, st.JournalBytes, j.maxSize, "journal within MaxSize")
	var prev uint64
	for {
		prev = 0
		err := j.ReadRecords(st.FirstRetainedSeq, func(w Write) error {
			require.Greater(t, w.Seq, prev, "records in seq order")
			prev = w.Seq
			return nil
		})
		if errors.Is(err, ErrExtentGone) {
			break // an extent record written over: nothing after it is served
		}
		if errors.Is(err, ErrCompacted) {
			// A background checkpoint freed segments since Stats: retry
			// from the new oldest record. Else a hole in the seqs (in-place
			// writes before a Seal), where reading stops by design.
			if now := j.Stats(); now.FirstRetainedSeq != st.FirstRetainedSeq {
				st = now
				continue
			}
			require.ErrorContains(t, err, "are not in the journal")
			break
		}
		require.NoError(t, err)
		break
	}
	require.LessOrEqual(t, prev, st.LastSeq)
}

// model is what the device must hold: the writes applied in seq order, and
// per region the seq of its last write.
type model struct {
	data    []byte
	regions []uint64
}

func newModel() *model { return newModelOf(testDev) }

// newModelOf is a model of a device of dev bytes.
func newModelOf(dev int64) *model {
	return &model{data: make([]byte, dev), regions: make([]uint64, dev/testRegion)}
}

func (m *model) apply(w Write) {
	n := int64(len(w.Data)) + w.ZeroLength
	if w.ZeroLength > 0 {
		clear(m.data[w.Offset : w.Offset+n])
	} else {
		copy(m.data[w.Offset:], w.Data)
	}
	for r := w.Offset / testRegion; r <= (w.Offset+n-1)/testRegion; r++ {
		m.regions[r] = w.Seq
	}
}

func (m *model) changedSince(seq uint64) []extent.Extent {
	var out []extent.Extent
	for r, s := range m.regions {
		if s <= seq {
			continue
		}
		off := uint64(r) * testRegion
		if k := len(out) - 1; k >= 0 && out[k].Offset+out[k].Length == off {
			out[k].Length += testRegion
		} else {
			out = append(out, extent.Extent{Offset: off, Length: testRegion})
		}
	}
	return out
}

// requireModel checks the device contents and the region table.
func requireModel(t *testing.T, j *Journal, m *model) {
	t.Helper()
	got := make([]byte, testDev)
	require.NoError(t, j.ReadAt(got, 0))
	if !bytes.Equal(m.data, got) {
		for i := range got {
			if got[i] != m.data[i] {
				t.Fatalf("device differs from model first at byte %d: got %#x want %#x", i, got[i], m.data[i])
			}
		}
	}
	for _, seq := range []uint64{0, 1, j.LastSeq() / 2, j.LastSeq()} {
		require.Equal(t, m.changedSince(seq), j.ChangedSince(seq), "ChangedSince(%d)", seq)
	}
}

// randWrite returns a sector-aligned write: data (mostly) or zeroes.
func randWrite(rng *rand.Rand) Write { return randWriteIn(rng, testDev) }

// randWriteIn is randWrite on a device of dev bytes.
func randWriteIn(rng *rand.Rand, dev int64) Write {
	sectors := 1 + rng.IntN(16)
	off := int64(rng.IntN(int(dev)/512-sectors+1)) * 512
	if rng.IntN(8) == 0 {
		return Write{Offset: off, ZeroLength: int64(sectors) * 512}
	}
	data := make([]byte, sectors*512)
	for i := range data {
		data[i] = byte(rng.Uint32() | 1) // never zero: a lost write is visible
	}
	return Write{Offset: off, Data: data, Epoch: 7}
}

// copyFS returns an exact copy of fs (it syncs every file and directory of
// fs first, so the crash clone loses nothing).
func copyFS(t *testing.T, fs *vfs.MemFS) *vfs.MemFS {
	t.Helper()
	var walk func(dir string)
	walk = func(dir string) {
		names, err := fs.ReadDir(dir)
		require.NoError(t, err)
		for _, n := range names {
			p := path.Join(dir, n)
			fi, err := fs.Stat(p)
			require.NoError(t, err)
			if fi.IsDir() {
				walk(p)
				continue
			}
			f, err := fs.OpenFile(p, os.O_RDONLY, 0)
			require.NoError(t, err)
			require.NoError(t, f.Sync())
			require.NoError(t, f.Close())
		}
		require.NoError(t, fs.SyncDir(dir))
	}
	walk("/")
	return fs.CrashClone(rand.New(rand.NewPCG(0, 0)))
}

func readFile(t testing.TB, fs vfs.FS, name string) []byte {
	t.Helper()
	f, err := fs.OpenFile(name, os.O_RDONLY, 0)
	require.NoError(t, err)
	defer f.Close()
	size, err := f.Size()
	require.NoError(t, err)
	b := make([]byte, size)
	if size > 0 {
		_, err = f.ReadAt(b, 0)
		require.NoError(t, err)
	}
	return b
}

func writeFile(t *testing.T, fs vfs.FS, name string, b []byte) {
	t.Helper()
	f, err := fs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	require.NoError(t, err)
	_, err = f.WriteAt(b, 0)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
}

// lastSegment returns the path of the newest segment file.
func lastSegment(t *testing.T, fs vfs.FS, dir string) string {
	t.Helper()
	names, err := fs.ReadDir(path.Join(dir, journalName))
	require.NoError(t, err)
	require.NotEmpty(t, names)
	return path.Join(dir, journalName, names[len(names)-1])
}

// appendTo appends w to j and applies it, with its seq, to the model m.
func appendTo(t *testing.T, j *Journal, m *model, w Write) Write {
	t.Helper()
	seq, err := j.Append(w)
	require.NoError(t, err)
	w.Seq = seq
	m.apply(w)
	return w
}

// recordSaltOf returns the salt the records of the segment file at name
// carry (its header says).
func recordSaltOf(t *testing.T, fs vfs.FS, name string) uint64 {
	t.Helper()
	hdr, err := decodeSegHeader(readFile(t, fs, name))
	require.NoError(t, err)
	return hdr.recordSalt()
}

// recordOffsets returns the offsets of the records of a segment image.
func recordOffsets(t *testing.T, seg []byte) []int64 {
	t.Helper()
	var offs []int64
	for off := int64(segHeaderSize); off < int64(len(seg)); {
		_, n, err := DecodeRecord(seg[off:])
		if err != nil && len(bytes.TrimRight(seg[off:], "\x00")) == 0 {
			break // the preallocated rest of a segment not trimmed
		}
		require.NoError(t, err)
		offs = append(offs, off)
		off += int64(n)
	}
	return offs
}

// collect returns the records ReadRecords yields from seq from.
func collect(t *testing.T, j *Journal, from uint64) []Write {
	t.Helper()
	var out []Write
	require.NoError(t, j.ReadRecords(from, func(w Write) error {
		w.Data = bytes.Clone(w.Data)
		out = append(out, w)
		return nil
	}))
	return out
}

// collectRuns is collect across holes in the seqs (explicit seqs): each
// hole ends a ReadRecords with ErrCompacted naming it, and the next run
// starts after it.
func collectRuns(t *testing.T, j *Journal, from uint64) []Write {
	t.Helper()
	var out []Write
	for {
		err := j.ReadRecords(from, func(w Write) error {
			w.Data = bytes.Clone(w.Data)
			out = append(out, w)
			from = w.Seq + 1
			return nil
		})
		if err == nil {
			return out
		}
		require.ErrorIs(t, err, ErrCompacted)
		var first, last uint64
		_, serr := fmt.Sscanf(err.Error()[strings.LastIndex(err.Error(), "records "):], "records %d to %d are not in the journal", &first, &last)
		require.NoError(t, serr, "not a hole: %v", err)
		require.Equal(t, from, first, "the hole starts where the last run ended")
		from = last + 1
	}
}

// faultFS is a MemFS whose op on files whose name ends in suffix fails with
// err while the returned switch is on: the error tests turn a fault on and
// off around the call they test.
func faultFS(op vfs.Op, suffix string, err error) (vfs.FS, *atomic.Bool) {
	on := new(atomic.Bool)
	return vfs.WithErrors(vfs.NewMem(), func(o vfs.Op, name string) error {
		if on.Load() && o == op && strings.HasSuffix(name, suffix) {
			return err
		}
		return nil
	}), on
}

// plantedRun runs the tests matching run in this package built with the
// planted bug tag, requires them to fail, and returns go test's output
// (the caller checks that they failed for the planted reason).
func plantedRun(t *testing.T, tag, run string) string {
	t.Helper()
	out, err := planted.GoTest(t, tag, run)
	require.Error(t, err, "%s passed with -tags %s:\n%s", run, tag, out)
	return out
}
