package journal

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/racetest"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

const powerLossSeeds = 150

// Power loss at a random instant while writers append, sync and checkpoint
// concurrently (with segments rotating and freed all the time). After
// CrashClone + Open:
//   - every write whose Sync returned is there: LastSeq >= the highest
//     acknowledged seq;
//   - the journal holds exactly the appended records (a prefix by seq, no
//     partial record), and the region table matches that prefix;
//   - every sector of the device holds the prefix's contents, or else lies
//     in the activity log's suspects and holds the bytes of a write that no
//     write certainly present superseded (disk semantics for writes never
//     acknowledged as durable): see sectorExplained.
//
// TestPowerLossExtents runs the same with extent records (writes in place).
//
// TestPowerLossPages runs it on a device of several data.sum pages, writes
// spread over them, so that Open takes most pages from data.sum (the
// others' devices are one page, always re-read): a page a checkpoint failed
// to save fails the read of the whole device.
func TestPowerLoss(t *testing.T) { powerLossSeedsRun(t, powerLossCase{dev: testDev}, powerLossSeeds) }

func TestPowerLossExtents(t *testing.T) {
	powerLossSeedsRun(t, powerLossCase{dev: testDev, extents: true}, powerLossSeeds)
}

func TestPowerLossPages(t *testing.T) {
	powerLossSeedsRun(t, powerLossCase{dev: 4 * sumPageBlocks * SumBlockSize, extents: true, pages: true}, powerLossSeeds/3)
}

// powerLossCase is a variant of the power-loss harness.
type powerLossCase struct {
	dev     int64
	extents bool // extent records too
	pages   bool // writes spread over data.sum's pages
}

// powerLossSeedsRun runs the seeds in parallel and requires that some of
// them crashed a journal that had reused segment files (segfile.go), so
// that the harness covers reuse.
func powerLossSeedsRun(t *testing.T, c powerLossCase, seeds int) {
	var reused, fromFile atomic.Uint64
	t.Run("seeds", func(t *testing.T) {
		for seed := range uint64(racetest.Sample(seeds)) {
			t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
				t.Parallel()
				r, f := powerLoss(t, seed, c)
				reused.Add(r)
				fromFile.Add(f)
			})
		}
	})
	require.NotZero(t, reused.Load(), "no seed reused a segment file")
	// About half the seeds do (measured: 27 of 50): required of the full
	// run, not of the race detector's sample of six.
	if c.pages && !racetest.Enabled {
		require.NotZero(t, fromFile.Load(), "no seed took a page with data from data.sum")
	}
}

// histWrite is a write as the journal logged it.
type histWrite struct {
	Write
	inPlace bool
}

// powerLoss returns how many segment files the crashed journal had reused
// and how many pages holding written blocks the recovered one took from
// data.sum.
func powerLoss(t *testing.T, seed uint64, c powerLossCase) (reused, fromFile uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	mem := vfs.NewMem()
	o := testOptions(mem)
	o.DeviceSize = c.dev
	o.SegmentSize, o.MaxSize = 8<<10, 32<<10 // rotations, checkpoints, backpressure
	gen := func(rng *rand.Rand) Write { return randWriteIn(rng, c.dev) }
	if c.pages {
		gen = func(rng *rand.Rand) Write { return spread(randWriteBlocks(rng), c.dev, rng) }
	} else if c.extents {
		gen = randWriteBlocks
	}
	if c.extents {
		o.InPlaceMin = SumBlockSize
	}
	// An activity log of 4 KiB extents, three hot, looking one ahead:
	// transactions and evictions all the time.
	o.activityExtentSize, o.ActivityExtents, o.activityLookahead = 4<<10, 3, 1
	o.BootID = "boot 1"
	j, err := Open(o)
	require.NoError(t, err)

	var (
		histMu sync.Mutex
		hist   = map[uint64]histWrite{}
	)
	j.hooks.beforeWrite = func(w Write, inPlace bool) { // under j.mu, before the journal write
		w.Data = bytes.Clone(w.Data)
		histMu.Lock()
		hist[w.Seq] = histWrite{w, inPlace}
		histMu.Unlock()
	}
	var acked, ops atomic.Uint64
	var writing atomic.Int32 // writers still running: one that failed stops
	writing.Store(3)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer writing.Add(-1)
			wrng := rand.New(rand.NewPCG(seed, uint64(g)))
			var mine uint64
			for {
				select {
				case <-stop:
					return
				default:
				}
				ops.Add(1)
				var err error
				switch r := wrng.IntN(20); {
				case r < 10:
					mine, err = j.Append(gen(wrng))
				case r < 14:
					// A batch, each write applied by a goroutine of its own
					// (as the primary does).
					ws := make([]Write, 1+wrng.IntN(3))
					for i := range ws {
						ws[i] = gen(wrng)
					}
					var logged []Logged
					logged, err = j.Log(ws)
					errs := make([]error, len(logged))
					var aw sync.WaitGroup
					for i, l := range logged {
						aw.Go(func() { errs[i] = j.Apply(l) })
					}
					aw.Wait()
					if err == nil {
						err = errors.Join(errs...)
					}
					if len(logged) > 0 {
						mine = logged[len(logged)-1].Seq
					}
				case r < 19:
					if err = j.Sync(mine); err == nil {
						for a := acked.Load(); mine > a && !acked.CompareAndSwap(a, mine); a = acked.Load() {
						}
					}
				default:
					err = j.Checkpoint()
				}
				if err != nil {
					if !errors.Is(err, ErrClosed) { // the test closes the journal
						t.Errorf("writer %d: %v", g, err)
					}
					return
				}
			}
		}()
	}
	crashAt := uint64(20 + rng.IntN(300))
	for ops.Load() < crashAt && writing.Load() > 0 {
		runtime.Gosched()
	}
	ack := acked.Load()
	crashed := mem.CrashClone(rng)
	close(stop)
	j.closeNoCheckpoint()
	reused = j.reused.Load()
	wg.Wait()
	histMu.Lock()
	defer histMu.Unlock()

	o.FS, o.BootID = crashed, "boot 2" // a power loss reboots
	j2, err := Open(o)
	require.NoError(t, err)
	defer j2.Close()
	last := j2.LastSeq()

	require.GreaterOrEqual(t, last, ack, "an acknowledged write was lost")
	require.Equal(t, last, j2.DurableSeq())

	// The model of the recovered prefix, and what lost writes may have left.
	m := newModelOf(c.dev)
	for s := uint64(1); s <= last; s++ {
		w, ok := hist[s]
		require.True(t, ok, "recovered seq %d was never appended", s)
		m.apply(w.Write)
	}
	for _, since := range []uint64{0, last / 2, last} {
		require.Equal(t, m.changedSince(since), j2.ChangedSince(since), "ChangedSince(%d)", since)
	}
	first := j2.Stats().FirstRetainedSeq
	for {
		err := j2.ReadRecords(first, func(w Write) error {
			h := hist[w.Seq]
			require.Equal(t, h.Offset, w.Offset, "seq %d", w.Seq)
			require.Equal(t, h.ZeroLength, w.ZeroLength, "seq %d", w.Seq)
			require.True(t, bytes.Equal(h.Data, w.Data), "seq %d data", w.Seq)
			first++
			return nil
		})
		if !errors.Is(err, ErrExtentGone) {
			require.NoError(t, err)
			break
		}
		// Its blocks changed since (a later write, or it lost its data):
		// only an extent record may be refused that way.
		require.True(t, hist[first].inPlace, "seq %d: %v", first, err)
		first++
	}
	require.Equal(t, last+1, first, "records are contiguous up to LastSeq")

	// What a sector may hold besides the model: see sectorExplained.
	certain := max(ack, j2.Stats().CheckpointSeq)
	dev := make([]byte, c.dev)
	require.NoError(t, j2.ReadAt(dev, 0), "a false checksum error: a page of data.sum older than its blocks")
	suspects := j2.Suspects()
	for s := 0; s < int(c.dev); s += 512 {
		got := dev[s : s+512]
		if bytes.Equal(got, m.data[s:s+512]) {
			continue
		}
		require.Empty(t, extent.Subtract([]extent.Extent{{Offset: uint64(s), Length: 512}}, suspects),
			"sector %d differs from the recovered records outside the activity log's suspects %v", s/512, suspects)
		require.True(t, sectorExplained(hist, int64(s), got, last, certain),
			"sector %d holds bytes of no write that may be there (recovered seq %d, durable %d)", s/512, last, certain)
	}

	// And the recovered store works.
	seq, err := j2.Append(Write{Data: []byte("after the crash")})
	require.NoError(t, err)
	require.NoError(t, j2.Sync(seq))
	return reused, j2.sumf.fromFile
}

// spread moves a write of the first 64 KiB to the same place in one of the
// device's 64 KiB pieces that start a data.sum page or end one.
func spread(w Write, dev int64, rng *rand.Rand) Write {
	const piece = 64 << 10
	var starts []int64
	for p := int64(0); p*sumPageBlocks*SumBlockSize < dev; p++ {
		at := p * sumPageBlocks * SumBlockSize
		starts = append(starts, at, min(dev, at+sumPageBlocks*SumBlockSize)-piece)
	}
	w.Offset = w.Offset%piece + starts[rng.IntN(len(starts))]
	if w.Offset+int64(len(w.Data))+w.ZeroLength > dev {
		w.Offset = dev - int64(len(w.Data)) - w.ZeroLength
	}
	return w
}

// sectorExplained reports whether a power loss may leave got in the sector
// at off: the bytes of a write (or the zeros of none) at least as new as
// every write certainly there. Certainly there are the data and zero
// records up to last (replay applies them) and the extent records up to
// certain (synced or checkpointed with their data). The bytes of a newer
// write are possible: it may have reached the disk before the crash.
func sectorExplained(hist map[uint64]histWrite, off int64, got []byte, last, certain uint64) bool {
	var floor uint64
	for seq, w := range hist {
		if sectorOf(w.Write, off, nil) && ((!w.inPlace && seq <= last) || (w.inPlace && seq <= certain)) {
			floor = max(floor, seq)
		}
	}
	if floor == 0 && bytes.Equal(got, make([]byte, 512)) {
		return true
	}
	for seq, w := range hist {
		if seq >= floor && sectorOf(w.Write, off, got) {
			return true
		}
	}
	return false
}

// randWriteBlocks is randWrite, or, half of the time, a write of 1 to 4
// whole blocks (an extent record when the journal takes it in place).
func randWriteBlocks(rng *rand.Rand) Write {
	if rng.IntN(2) == 0 {
		return randWrite(rng)
	}
	blocks := 1 + rng.IntN(2) // a batch of three fits the harness's 32 KiB journal
	off := int64(rng.IntN(testDev/SumBlockSize-blocks+1)) * SumBlockSize
	data := make([]byte, blocks*SumBlockSize)
	for i := range data {
		data[i] = byte(rng.Uint32() | 1)
	}
	return Write{Offset: off, Data: data, Epoch: 7}
}

// sectorOf reports whether w wrote exactly got to the sector at off (with
// got nil: whether w wrote the sector at all).
func sectorOf(w Write, off int64, got []byte) bool {
	n := int64(len(w.Data)) + w.ZeroLength
	if off < w.Offset || off+512 > w.Offset+n {
		return false
	}
	if got == nil {
		return true
	}
	if w.ZeroLength > 0 {
		return bytes.Equal(got, make([]byte, 512))
	}
	return bytes.Equal(got, w.Data[off-w.Offset:off-w.Offset+512])
}
