package journal

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestOpenOptions(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(o *Options)
		want   error
	}{
		{"no dir", func(o *Options) { o.Dir = "" }, ErrInvalidOptions},
		{"no device size on create", func(o *Options) { o.DeviceSize = 0 }, ErrInvalidOptions},
		{"segment too small", func(o *Options) { o.SegmentSize = 1024 }, ErrInvalidOptions},
		{"max below two segments", func(o *Options) { o.MaxSize = o.SegmentSize }, ErrInvalidOptions},
		{"region not a power of two", func(o *Options) { o.RegionSize = 5000 }, ErrInvalidOptions},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions(vfs.NewMem())
			tc.mutate(&o)
			_, err := Open(o)
			require.ErrorIs(t, err, tc.want)
		})
	}

	t.Run("reopen checks the device size", func(t *testing.T) {
		fs := vfs.NewMem()
		j := mustOpen(t, testOptions(fs))
		require.NoError(t, j.Close())
		o := testOptions(fs)
		o.DeviceSize = 2 * testDev
		_, err := Open(o)
		require.ErrorIs(t, err, ErrSizeMismatch)
		o.DeviceSize = 0 // means: whatever the store has
		j = mustOpen(t, o)
		require.EqualValues(t, testDev, j.Size())
		require.EqualValues(t, testRegion, j.RegionSize())
	})

	t.Run("corrupt meta", func(t *testing.T) {
		fs := vfs.NewMem()
		require.NoError(t, mustOpen(t, testOptions(fs)).Close())
		b := readFile(t, fs, "/db/meta")
		b[20] ^= 1
		writeFile(t, fs, "/db/meta", b)
		_, err := Open(testOptions(fs))
		require.ErrorIs(t, err, ErrCorrupt)
	})
}

func TestAppendAndRead(t *testing.T) {
	data := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }
	cases := []struct {
		name   string
		writes []Write
	}{
		{"single write", []Write{{Offset: 512, Data: data(1024, 1)}}},
		{"unaligned bytes", []Write{{Offset: 3, Data: []byte("hello")}, {Offset: testDev - 2, Data: []byte("zz")}}},
		{"overwrite in seq order", []Write{{Offset: 0, Data: data(8192, 1)}, {Offset: 4000, Data: data(100, 2)}, {Offset: 0, Data: data(10, 3)}}},
		{"zero unaligned", []Write{{Offset: 0, Data: data(testDev, 9)}, {Offset: 100, ZeroLength: 300}}},
		{"zero with punched middle", []Write{{Offset: 0, Data: data(testDev, 9)}, {Offset: 1000, ZeroLength: 20000}}},
		{"zero whole device", []Write{{Offset: 0, Data: data(testDev, 9)}, {Offset: 0, ZeroLength: testDev}}},
		{"explicit seqs with gaps", []Write{{Seq: 5, Offset: 0, Data: data(10, 1)}, {Seq: 9, Offset: 5, Data: data(10, 2)}, {Offset: 1, Data: data(1, 3)}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, fsName := range []string{"mem", "os"} {
				t.Run(fsName, func(t *testing.T) {
					o := testOptions(vfs.NewMem())
					o.MaxSize = 1 << 20
					if fsName == "os" {
						o.FS, o.Dir = vfs.Default, t.TempDir()
					}
					j := mustOpen(t, o)
					m := newModel()
					for i, w := range tc.writes {
						seq, err := j.Append(w)
						require.NoError(t, err)
						if w.Seq != 0 {
							require.Equal(t, w.Seq, seq)
						} else if i > 0 {
							require.Equal(t, tc.writes[i-1].Seq+1, seq)
						}
						tc.writes[i].Seq = seq
						w.Seq = seq
						m.apply(w)
						require.Equal(t, seq, j.LastSeq())
					}
					requireModel(t, j, m)
					got := collectRuns(t, j, tc.writes[0].Seq)
					require.Len(t, got, len(tc.writes))
					for i, w := range got {
						want := tc.writes[i]
						require.Equal(t, want.Seq, w.Seq)
						require.Equal(t, want.Offset, w.Offset)
						require.Equal(t, want.ZeroLength, w.ZeroLength)
						require.Equal(t, len(want.Data), len(w.Data))
						require.True(t, bytes.Equal(want.Data, w.Data))
					}
					// Close checkpoints; the reopened store replays nothing
					// and still matches.
					require.NoError(t, j.Close())
					j = mustOpen(t, o)
					require.Equal(t, tc.writes[len(tc.writes)-1].Seq, j.LastSeq())
					require.Equal(t, j.LastSeq(), j.Stats().CheckpointSeq)
					requireModel(t, j, m)
					for i := range tc.writes {
						tc.writes[i].Seq = 0
					}
				})
			}
		})
	}
}

func TestAppendRejects(t *testing.T) {
	j := mustOpen(t, testOptions(vfs.NewMem()))
	_, err := j.Append(Write{Seq: 10, Data: []byte("x")})
	require.NoError(t, err)
	cases := []struct {
		name string
		w    Write
		want error
	}{
		{"seq not above last", Write{Seq: 10, Data: []byte("x")}, ErrSeqOrder},
		{"seq below last", Write{Seq: 3, Data: []byte("x")}, ErrSeqOrder},
		{"beyond device", Write{Offset: testDev - 1, Data: []byte("xy")}, ErrOutOfRange},
		{"zero beyond device", Write{Offset: 512, ZeroLength: testDev}, ErrOutOfRange},
		{"negative offset", Write{Offset: -1, Data: []byte("x")}, ErrOutOfRange},
		{"empty", Write{}, ErrInvalidWrite},
		{"data and zero", Write{Data: []byte("x"), ZeroLength: 5}, ErrInvalidWrite},
		{"record above MaxSize", Write{Data: make([]byte, testDev)}, ErrTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := j.Append(tc.w)
			require.ErrorIs(t, err, tc.want)
			require.EqualValues(t, 10, j.LastSeq(), "nothing appended")
		})
	}
	t.Run("read out of range", func(t *testing.T) {
		require.ErrorIs(t, j.ReadAt(make([]byte, 2), testDev-1), ErrOutOfRange)
		require.ErrorIs(t, j.ReadAt(make([]byte, 1), -1), ErrOutOfRange)
	})
	t.Run("after close", func(t *testing.T) {
		require.NoError(t, j.Close())
		_, err := j.Append(Write{Data: []byte("x")})
		require.ErrorIs(t, err, ErrClosed)
		require.ErrorIs(t, j.ReadAt(make([]byte, 1), 0), ErrClosed)
		require.ErrorIs(t, j.Checkpoint(), ErrClosed)
		require.ErrorIs(t, j.Close(), ErrClosed)
		require.NoError(t, j.Sync(10), "already durable")
	})
}

// Concurrent overlapping appends: the data file must end up as if the
// records were applied one by one in seq order.
func TestConcurrentOverlappingAppends(t *testing.T) {
	o := testOptions(vfs.NewMem())
	o.MaxSize = 8 << 20 // keep every record for the comparison
	j := mustOpen(t, o)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 100 {
				w := Write{Offset: int64(rng.IntN(4)) * 512, Data: bytes.Repeat([]byte{byte(g + 1)}, 512*(1+rng.IntN(4)))}
				_, err := j.Append(w)
				require.NoError(t, err)
			}
		}()
	}
	wg.Wait()
	require.EqualValues(t, 800, j.LastSeq())
	require.EqualValues(t, 1, j.Stats().FirstRetainedSeq)
	m := newModel()
	require.NoError(t, j.ReadRecords(1, func(w Write) error { m.apply(w); return nil }))
	requireModel(t, j, m)
}

// syncCounter wraps a MemFS so that journal fdatasyncs are slow and their
// overlap is measured.
type syncCounter struct {
	inflight, maxInflight atomic.Int32
	delay                 time.Duration
}

func (c *syncCounter) fs(mem *vfs.MemFS) vfs.FS {
	return vfs.WithErrors(mem, func(op vfs.Op, name string) error {
		if op == vfs.OpSync && strings.HasSuffix(name, ".seg") {
			n := c.inflight.Add(1)
			for {
				m := c.maxInflight.Load()
				if n <= m || c.maxInflight.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(c.delay)
			c.inflight.Add(-1)
		}
		return nil
	})
}

func TestGroupCommit(t *testing.T) {
	const callers = 64
	c := &syncCounter{delay: 2 * time.Millisecond}
	o := testOptions(c.fs(vfs.NewMem()))
	o.MaxSize = 1 << 20
	o.SegmentSize = 256 << 10
	j := mustOpen(t, o)
	before := j.Stats().Syncs
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			seq, err := j.Append(Write{Offset: int64(g) * 512, Data: bytes.Repeat([]byte{1}, 512)})
			require.NoError(t, err)
			require.NoError(t, j.Sync(seq))
			require.GreaterOrEqual(t, j.DurableSeq(), seq, "Sync returned before its record was durable")
		}()
	}
	close(start)
	wg.Wait()
	syncs := j.Stats().Syncs - before
	t.Logf("%d Sync callers, %d fdatasyncs", callers, syncs)
	require.LessOrEqual(t, syncs, uint64(callers/4), "group commit must share fdatasyncs")
	require.GreaterOrEqual(t, syncs, uint64(1))
	require.EqualValues(t, 1, c.maxInflight.Load(), "one fdatasync in flight")
	require.Equal(t, j.LastSeq(), j.DurableSeq())
}

func TestCheckpointFreesSegments(t *testing.T) {
	o := testOptions(vfs.NewMem())
	o.MaxSize = 1 << 20 // no automatic checkpoint during the test
	j := mustOpen(t, o)
	rng := rand.New(rand.NewPCG(1, 2))
	m := newModel()
	for j.Stats().Segments < 5 {
		appendTo(t, j, m, randWrite(rng))
	}
	st := j.Stats()
	names, err := o.FS.ReadDir("/db/journal")
	require.NoError(t, err)
	require.Len(t, names, st.Segments)
	require.NoError(t, j.Checkpoint())
	after := j.Stats()
	require.Equal(t, 1, after.Segments, "all but the active segment freed")
	require.Less(t, after.JournalBytes, st.JournalBytes)
	require.Equal(t, st.LastSeq, after.CheckpointSeq)
	require.Equal(t, st.LastSeq, after.DurableSeq)
	names, err = o.FS.ReadDir("/db/journal")
	require.NoError(t, err)
	segs, spares := splitJournalDir(names)
	require.Len(t, segs, 1)
	// The freed files wait as spares for rotation to reuse, as many as fit
	// with the live segments in MaxSize.
	require.Len(t, spares, st.Segments-1)
	require.ErrorIs(t, j.ReadRecords(1, func(Write) error { return nil }), ErrCompacted)
	requireModel(t, j, m)
	j.closeNoCheckpoint()
	j = mustOpen(t, o)
	requireModel(t, j, m)
	names, err = o.FS.ReadDir("/db/journal")
	require.NoError(t, err)
	_, spares = splitJournalDir(names)
	require.Empty(t, spares, "Open removes spares (one from before a crash may hold records of a reused segment number)")
}

// splitJournalDir splits the names of a journal directory into segments
// and spares.
func splitJournalDir(names []string) (segs, spares []string) {
	for _, name := range names {
		if isSpare(name) {
			spares = append(spares, name)
		} else {
			segs = append(segs, name)
		}
	}
	return segs, spares
}

func TestMaxSizeBound(t *testing.T) {
	o := testOptions(vfs.NewMem())
	o.MaxSize, o.SegmentSize = 32<<10, 8<<10
	j := mustOpen(t, o)
	var maxSeen atomic.Int64
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 3))
			for range 200 {
				_, err := j.Append(randWrite(rng))
				require.NoError(t, err)
				j.mu.Lock()
				b := j.journalBytes
				j.mu.Unlock()
				for m := maxSeen.Load(); b > m && !maxSeen.CompareAndSwap(m, b); m = maxSeen.Load() {
				}
			}
		}()
	}
	wg.Wait()
	st := j.Stats()
	t.Logf("max journal bytes %d of %d, %d checkpoints", maxSeen.Load(), o.MaxSize, st.Checkpoints)
	require.LessOrEqual(t, maxSeen.Load(), o.MaxSize)
	require.Greater(t, st.Checkpoints, uint64(3), "backpressure needed checkpoints")
}

func TestRetain(t *testing.T) {
	o := testOptions(vfs.NewMem())
	o.MaxSize = 1 << 20
	j := mustOpen(t, o)
	rng := rand.New(rand.NewPCG(4, 4))
	appendN := func(n int) {
		for range n {
			_, err := j.Append(randWrite(rng))
			require.NoError(t, err)
		}
	}
	appendN(20)
	j.Retain(10)
	appendN(60)
	require.NoError(t, j.Checkpoint())
	st := j.Stats()
	require.Greater(t, st.Segments, 1)
	require.LessOrEqual(t, st.FirstRetainedSeq, uint64(11), "records > 10 kept")
	got := collect(t, j, 11)
	require.Len(t, got, 70)
	require.EqualValues(t, 11, got[0].Seq)

	j.Retain(50)
	require.NoError(t, j.Checkpoint())
	st = j.Stats()
	require.Greater(t, st.FirstRetainedSeq, uint64(11), "segments <= 50 freed")
	require.LessOrEqual(t, st.FirstRetainedSeq, uint64(51))
	require.ErrorIs(t, j.ReadRecords(11, func(Write) error { return nil }), ErrCompacted)
	require.Len(t, collect(t, j, 51), 30)

	t.Run("MaxSize wins over Retain", func(t *testing.T) {
		j.Retain(0)
		appendN(400) // far beyond MaxSize/2 of journal bytes
		require.NoError(t, j.Checkpoint())
		st := j.Stats()
		require.LessOrEqual(t, st.JournalBytes, o.MaxSize/2)
		require.ErrorIs(t, j.ReadRecords(1, func(Write) error { return nil }), ErrCompacted)
	})

	t.Run("fn error stops iteration", func(t *testing.T) {
		stop := errors.New("stop")
		n := 0
		err := j.ReadRecords(j.Stats().FirstRetainedSeq, func(Write) error { n++; return stop })
		require.ErrorIs(t, err, stop)
		require.Equal(t, 1, n)
	})
}

func TestChangedSince(t *testing.T) {
	j := mustOpen(t, testOptions(vfs.NewMem()))
	for _, w := range []Write{
		{Offset: 0, Data: make([]byte, 10)},          // 1: region 0
		{Offset: 4096, Data: make([]byte, 4097)},     // 2: regions 1, 2
		{Offset: 20000, ZeroLength: 100},             // 3: region 4
		{Offset: 4095, Data: make([]byte, 2)},        // 4: regions 0, 1
		{Offset: testDev - 1, Data: make([]byte, 1)}, // 5: region 15
	} {
		_, err := j.Append(w)
		require.NoError(t, err)
	}
	cases := []struct {
		seq  uint64
		want []extent.Extent
	}{
		{0, []extent.Extent{{Offset: 0, Length: 3 * 4096}, {Offset: 4 * 4096, Length: 4096}, {Offset: 15 * 4096, Length: 4096}}},
		{1, []extent.Extent{{Offset: 0, Length: 3 * 4096}, {Offset: 4 * 4096, Length: 4096}, {Offset: 15 * 4096, Length: 4096}}},
		{2, []extent.Extent{{Offset: 0, Length: 2 * 4096}, {Offset: 4 * 4096, Length: 4096}, {Offset: 15 * 4096, Length: 4096}}},
		{3, []extent.Extent{{Offset: 0, Length: 2 * 4096}, {Offset: 15 * 4096, Length: 4096}}},
		{4, []extent.Extent{{Offset: 15 * 4096, Length: 4096}}},
		{5, nil},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("since=%d", tc.seq), func(t *testing.T) {
			require.Equal(t, tc.want, j.ChangedSince(tc.seq))
		})
	}
	t.Run("survives checkpoint and reopen", func(t *testing.T) {
		fs := j.fs
		require.NoError(t, j.Close())
		o := testOptions(fs)
		j2 := mustOpen(t, o)
		require.Equal(t, cases[2].want, j2.ChangedSince(2))
	})
	t.Run("last region clipped", func(t *testing.T) {
		o := testOptions(vfs.NewMem())
		o.DeviceSize = testDev + 100
		j := mustOpen(t, o)
		_, err := j.Append(Write{Offset: testDev, Data: make([]byte, 100)})
		require.NoError(t, err)
		require.Equal(t, []extent.Extent{{Offset: testDev, Length: 100}}, j.ChangedSince(0))
	})
}

func TestFailuresAreSticky(t *testing.T) {
	fs, failSync := faultFS(vfs.OpSync, ".seg", syscall.EIO)
	j := mustOpen(t, testOptions(fs))
	seq, err := j.Append(Write{Data: []byte("before")})
	require.NoError(t, err)
	require.NoError(t, j.Sync(seq))
	failSync.Store(true)
	seq, err = j.Append(Write{Offset: 100, Data: []byte("lost?")})
	require.NoError(t, err)
	err = j.Sync(seq)
	require.ErrorIs(t, err, ErrFailed)
	require.ErrorIs(t, err, syscall.EIO)
	failSync.Store(false)
	require.ErrorIs(t, j.Sync(seq), ErrFailed, "no retry after a failed fdatasync")
	_, err = j.Append(Write{Data: []byte("x")})
	require.ErrorIs(t, err, ErrFailed)
	require.ErrorIs(t, j.Checkpoint(), ErrFailed)
	require.ErrorIs(t, j.Close(), ErrFailed)

	j = mustOpen(t, testOptions(fs)) // reopen recovers by replay
	require.GreaterOrEqual(t, j.LastSeq(), uint64(1))
	got := make([]byte, 6)
	require.NoError(t, j.ReadAt(got, 0))
	require.Equal(t, "before", string(got))
}

func TestCheckpointMetaErrorIsTransient(t *testing.T) {
	fs, fail := faultFS(vfs.OpOpen, metaTmpName, syscall.ENOSPC)
	j := mustOpen(t, testOptions(fs))
	_, err := j.Append(Write{Data: []byte("x")})
	require.NoError(t, err)
	fail.Store(true)
	require.ErrorIs(t, j.Checkpoint(), syscall.ENOSPC)
	require.Zero(t, j.Stats().CheckpointSeq)
	fail.Store(false)
	require.NoError(t, j.Checkpoint())
	require.EqualValues(t, 1, j.Stats().CheckpointSeq)
	_, err = j.Append(Write{Data: []byte("y")})
	require.NoError(t, err)
}

func TestApplyErrorFailsStore(t *testing.T) {
	fs, fail := faultFS(vfs.OpWrite, dataName, syscall.EIO)
	j := mustOpen(t, testOptions(fs))
	fail.Store(true)
	_, err := j.Append(Write{Data: []byte("x")})
	require.ErrorIs(t, err, ErrFailed)
	_, err = j.Append(Write{Data: []byte("y")})
	require.ErrorIs(t, err, ErrFailed)
	fail.Store(false)
	j.closeNoCheckpoint()
	j = mustOpen(t, testOptions(fs))
	require.EqualValues(t, 1, j.LastSeq(), "the journaled record is replayed")
	got := make([]byte, 1)
	require.NoError(t, j.ReadAt(got, 0))
	require.Equal(t, "x", string(got))
}

// Past MaxSize/4 journal bytes since the last checkpoint, a background
// checkpoint runs without any caller asking, and frees segments.
func TestAutomaticCheckpoint(t *testing.T) {
	o := testOptions(vfs.NewMem())
	o.MaxSize = 1 << 20
	j := mustOpen(t, o)
	data := make([]byte, 4096)
	// 100 records: past MaxSize/4 (63 records), far from MaxSize. A fixed
	// count, not "until a checkpoint ran": on a loaded machine the
	// checkpoint takes long and the bytes appended meanwhile are not its.
	for last := uint64(0); last < 100; {
		var err error
		last, err = j.Append(Write{Offset: int64(last%16) * 4096, Data: data})
		require.NoError(t, err)
		if last == 60 { // 60 * 4160 bytes < MaxSize/4
			require.Zero(t, j.Stats().Checkpoints, "too early")
		}
	}
	require.Eventually(t, func() bool { return j.Stats().Checkpoints > 0 }, 5*time.Second, time.Millisecond)
	st := j.Stats()
	require.Greater(t, st.CheckpointSeq, uint64(60))
	require.Less(t, st.JournalBytes, o.MaxSize/4+o.SegmentSize*2)
}

// TestDataFileThickProvisioned checks that creating a store reserves the
// whole image on disk, so a full disk fails at create time rather than as an
// EIO on a later write.
func TestDataFileThickProvisioned(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(Options{Dir: dir, FS: vfs.Default, DeviceSize: 8 << 20})
	require.NoError(t, err)
	require.NoError(t, j.Close())
	var st unix.Stat_t
	require.NoError(t, unix.Stat(filepath.Join(dir, "data.img"), &st))
	require.GreaterOrEqual(t, st.Blocks*512, int64(8<<20), "data.img is sparse")
}

// A node restarted again and again, each run appending less than the
// checkpoint trigger (MaxSize/4): the records replayed count toward the
// trigger, so the journal checkpoints and stays small. Without that it
// grew a segment per restart until it was full.
func TestShortRunsStillCheckpoint(t *testing.T) {
	fs := vfs.NewMem()
	opts := testOptions(fs)
	var maxBytes int64
	for run := range 12 {
		j, err := Open(opts)
		require.NoError(t, err)
		maxBytes = max(maxBytes, j.Stats().JournalBytes)
		for i := range 3 { // ~12 KiB, under MaxSize/4 (16 KiB)
			_, err := j.Append(Write{Offset: int64((run*3+i)%16) * 4096, Data: bytes.Repeat([]byte{byte(run + 1)}, 4096)})
			require.NoError(t, err)
		}
		require.NoError(t, j.Sync(j.LastSeq()))
		time.Sleep(20 * time.Millisecond) // a requested checkpoint runs (usually)
		j.closeNoCheckpoint()
	}
	// MaxSize/4 and one run's worth, or two if a checkpoint came late on a
	// busy machine; without the rule it filled to MaxSize (62 KiB).
	require.LessOrEqual(t, maxBytes, opts.MaxSize*3/4, "the journal grew across restarts without a checkpoint")
}
