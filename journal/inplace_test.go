package journal

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/crc32c"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

func TestWriteInPlaceTakesItsSeq(t *testing.T) {
	j := mustOpen(t, testOptions(vfs.NewMem()))
	_, err := j.Append(Write{Seq: 3, Offset: 0, Data: bytes.Repeat([]byte{1}, 4096)})
	require.NoError(t, err)
	copyData := bytes.Repeat([]byte{2}, 8192)
	require.NoError(t, j.WriteInPlace(Write{Seq: 10, Offset: 16 << 10, Data: copyData}))

	got := make([]byte, len(copyData))
	require.NoError(t, j.ReadAt(got, 16<<10))
	require.Equal(t, copyData, got)
	require.Equal(t, uint64(10), j.LastSeq())
	st := j.Stats()
	require.Equal(t, uint64(10), st.LastSeq)
	require.Equal(t, uint64(len(copyData)), st.InPlaceBytes)
	require.Equal(t, uint64(1), st.Writes, "no record")
	require.Len(t, j.ChangedSince(9), 1, "its regions carry its seq")
	require.Equal(t, uint64(10), j.LastWriteSeq(16<<10, 1))

	_, err = j.Append(Write{Seq: 10, Offset: 0, Data: []byte{3}})
	require.ErrorIs(t, err, ErrSeqOrder)
	require.ErrorIs(t, j.WriteInPlace(Write{Seq: 10, Offset: 0, Data: []byte{3}}), ErrSeqOrder)
	require.ErrorIs(t, j.WriteInPlace(Write{Offset: 0, Data: []byte{3}}), ErrInvalidWrite)
	require.ErrorIs(t, j.WriteInPlace(Write{Seq: 11, Offset: testDev, Data: []byte{3}}), ErrOutOfRange)
	require.NoError(t, j.Sync(10), "Sync to an in-place position returns")
	seq, err := j.Append(Write{Offset: 0, Data: []byte{4}})
	require.NoError(t, err)
	require.Equal(t, uint64(11), seq)
}

// An in-place write survives a power loss once a checkpoint followed it,
// and not before: Sync alone is not enough (this is what a resync target's
// progress relies on, docs/journal.md "Writes in place").
func TestWriteInPlaceDurableOnlyAfterCheckpoint(t *testing.T) {
	for _, tc := range []struct {
		name       string
		checkpoint bool
	}{{"checkpoint", true}, {"sync only", false}} {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewMem()
			o := testOptions(mem)
			j := mustOpen(t, o)
			old := bytes.Repeat([]byte{1}, 8192)
			_, err := j.Append(Write{Seq: 5, Offset: 8 << 10, Data: old}) // replayable under the copy
			require.NoError(t, err)
			require.NoError(t, j.Sync(5))
			fresh := bytes.Repeat([]byte{2}, 8192)
			require.NoError(t, j.WriteInPlace(Write{Seq: 9, Offset: 8 << 10, Data: fresh}))
			if tc.checkpoint {
				require.NoError(t, j.Checkpoint())
			} else {
				require.NoError(t, j.Sync(9))
			}
			lost := 0
			for i := range 20 {
				crashed := mem.CrashClone(rand.New(rand.NewPCG(uint64(i), 7)))
				o.FS = crashed
				j2, err := Open(o)
				require.NoError(t, err)
				got := make([]byte, len(fresh))
				require.NoError(t, j2.ReadAt(got, 8<<10))
				if !bytes.Equal(got, fresh) {
					lost++
				} else {
					require.GreaterOrEqual(t, j2.LastSeq(), uint64(9))
				}
				require.NoError(t, j2.Close())
			}
			if tc.checkpoint {
				require.Zero(t, lost, "a checkpointed in-place write was lost")
			} else {
				require.NotZero(t, lost, "the crash clones never lost an unsynced in-place write: the test cannot tell")
			}
		})
	}
}

// Records after an in-place write rotate segments as usual and replay
// after a power loss: the position an in-place write took is not a record
// replay must find.
func TestRotationAfterWriteInPlaceReplays(t *testing.T) {
	mem := vfs.NewMem()
	o := testOptions(mem)
	// No background checkpoint (it starts after MaxSize/4 appended): it
	// would free the rotated segments this test counts and replays.
	o.MaxSize = 1 << 20
	j := mustOpen(t, o)
	_, err := j.Append(Write{Seq: 1, Offset: 0, Data: make([]byte, 4096)})
	require.NoError(t, err)
	require.NoError(t, j.WriteInPlace(Write{Seq: 50, Offset: 4096, Data: bytes.Repeat([]byte{7}, 4096)}))
	data := bytes.Repeat([]byte{9}, 4096)
	for seq := uint64(51); seq < 51+4; seq++ { // 8 KiB segments: several rotations
		_, err := j.Append(Write{Seq: seq, Offset: 8192, Data: data})
		require.NoError(t, err)
	}
	require.Greater(t, j.Stats().Segments, 2)
	require.NoError(t, j.Sync(54))
	o.FS = mem.CrashClone(rand.New(rand.NewPCG(1, 2)))
	j2, err := Open(o)
	require.NoError(t, err)
	defer j2.Close()
	require.Equal(t, uint64(54), j2.LastSeq())
	got := make([]byte, 4096)
	require.NoError(t, j2.ReadAt(got, 8192))
	require.Equal(t, data, got)
}

// After Seal nothing at or below the position is served from the journal:
// a peer behind it gets a region resync, which the region table covers.
func TestSealFreesEveryOlderRecord(t *testing.T) {
	mem := vfs.NewMem()
	o := testOptions(mem)
	j := mustOpen(t, o)
	for seq := uint64(1); seq <= 4; seq++ {
		_, err := j.Append(Write{Seq: seq, Offset: int64(seq) * 4096, Data: bytes.Repeat([]byte{byte(seq)}, 4096)})
		require.NoError(t, err)
	}
	copied := bytes.Repeat([]byte{8}, 4096)
	require.NoError(t, j.WriteInPlace(Write{Seq: 8, Offset: 0, Data: copied}))
	require.NoError(t, j.Seal())

	st := j.Stats()
	require.Equal(t, uint64(8), st.LastSeq)
	require.Equal(t, uint64(8), st.CheckpointSeq)
	require.Equal(t, uint64(9), st.FirstRetainedSeq)
	require.Error(t, j.ReadRecords(2, func(Write) error { return nil }), "records below the seal")
	require.Len(t, j.ChangedSince(0), 1)
	require.Equal(t, uint64(8), j.LastWriteSeq(0, 1))

	// The seal is durable: a power loss right after keeps the copy and the
	// position.
	o.FS = mem.CrashClone(rand.New(rand.NewPCG(3, 4)))
	j2, err := Open(o)
	require.NoError(t, err)
	defer j2.Close()
	require.Equal(t, uint64(8), j2.LastSeq())
	require.Equal(t, uint64(9), j2.Stats().FirstRetainedSeq)
	got := make([]byte, 4096)
	require.NoError(t, j2.ReadAt(got, 0))
	require.Equal(t, copied, got)
	seq, err := j2.Append(Write{Offset: 0, Data: []byte{1}})
	require.NoError(t, err)
	require.Equal(t, uint64(9), seq)
}

// On a real file system whole aligned blocks go to data.img with O_DIRECT
// (where the file system takes it); other in-place writes through the page
// cache. Both read back, before and after a reopen, with their checksums.
func TestWriteInPlaceDirect(t *testing.T) {
	o := testOptions(vfs.Default)
	o.Dir = t.TempDir()
	o.DeviceSize = 4 << 20
	j := mustOpen(t, o)
	big := chunkOf(1<<20, 3)
	require.NoError(t, j.WriteInPlace(Write{Seq: 1, Offset: 1 << 20, Data: big}))
	if j.direct.f == nil {
		t.Logf("no direct I/O on this file system (%s): buffered", o.Dir)
	}
	odd := chunkOf(5000, 4)
	require.NoError(t, j.WriteInPlace(Write{Seq: 2, Offset: 100, Data: odd}))
	check := func(j *Journal) {
		got := make([]byte, len(big))
		require.NoError(t, j.ReadAt(got, 1<<20))
		require.Equal(t, big, got)
		got = make([]byte, len(odd))
		require.NoError(t, j.ReadAt(got, 100))
		require.Equal(t, odd, got)
	}
	check(j)
	require.NoError(t, j.Close())
	j2, err := Open(o)
	require.NoError(t, err)
	defer j2.Close()
	check(j2)
	require.Equal(t, uint64(2), j2.LastSeq())
}

// chunkOf is n bytes that differ in every 4 KiB block.
func chunkOf(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i/4096)
	}
	return b
}

// An in-place write logged before an overlapping record lands first, even
// when it is applied later on another goroutine; ReadAt waits for both.
func TestApplyInPlaceOrdersWithLaterWrites(t *testing.T) {
	j := mustOpen(t, testOptions(vfs.NewMem()))
	copied := alignedBuf(8192)
	for i := range copied {
		copied[i] = 1
	}
	l, err := j.LogInPlace(Write{Seq: 5, Offset: 0, Data: copied})
	require.NoError(t, err)
	appended := make(chan error, 1)
	go func() { // a live write after the copy, over its second block
		_, err := j.Append(Write{Seq: 6, Offset: 4096, Data: bytes.Repeat([]byte{2}, 4096)})
		appended <- err
	}()
	// Logged: it now waits for the copy (or, were it not ordered, has
	// landed already and the copy would overwrite it).
	require.Eventually(t, func() bool { return j.LastSeq() == 6 }, 5*time.Second, time.Millisecond)
	require.NoError(t, j.ApplyInPlace(l))
	require.NoError(t, <-appended)
	got := make([]byte, 8192)
	require.NoError(t, j.ReadAt(got, 0))
	require.Equal(t, bytes.Repeat([]byte{1}, 4096), got[:4096])
	require.Equal(t, bytes.Repeat([]byte{2}, 4096), got[4096:], "the older copy landed over the newer write")
}

// A checkpoint after a failed in-place write claims nothing: the progress
// a resync target saves after it would name a copy that is not there.
func TestCheckpointFailsAfterFailedInPlaceWrite(t *testing.T) {
	fs, fail := faultFS(vfs.OpWrite, dataName, syscall.EIO)
	j, err := Open(testOptions(fs))
	require.NoError(t, err)
	defer j.Close()
	fail.Store(true)
	require.ErrorIs(t, j.WriteInPlace(Write{Seq: 3, Offset: 0, Data: make([]byte, 4096)}), syscall.EIO)
	fail.Store(false)
	require.Error(t, j.Checkpoint())
}

// Append allocates nothing per write (a func value passed on the apply
// path once cost one allocation per write, found by BenchmarkAppend).
func TestAppendAllocatesNothing(t *testing.T) {
	o := testOptions(vfs.Default) // MemFS allocates on every write itself
	o.Dir = t.TempDir()
	o.DeviceSize, o.MaxSize, o.SegmentSize = 1<<20, 64<<20, 16<<20
	j := mustOpen(t, o)
	data := make([]byte, 4096)
	var off int64
	allocs := testing.AllocsPerRun(500, func() {
		if _, err := j.Append(Write{Offset: off, Data: data}); err != nil {
			t.Fatal(err)
		}
		off = (off + 4096) % (1 << 20)
	})
	require.Less(t, allocs, 0.5, "allocations per Append")
}

// A checkpoint that is waiting for an in-place write when that write fails
// claims nothing either: it checks for a failure after the wait, not only
// before it.
func TestCheckpointFailsWhenInPlaceWriteFailsDuringIt(t *testing.T) {
	fs, fail := faultFS(vfs.OpWrite, dataName, syscall.EIO)
	j, err := Open(testOptions(fs))
	require.NoError(t, err)
	defer j.Close()
	l, err := j.LogInPlace(Write{Seq: 3, Offset: 0, Data: make([]byte, 4096)})
	require.NoError(t, err)
	ckErr := make(chan error, 1)
	go func() { ckErr <- j.Checkpoint() }()
	// The checkpoint runs (holds ckMu) and waits for the write's ticket.
	require.Eventually(t, func() bool {
		if !j.ckMu.TryLock() {
			return true
		}
		j.ckMu.Unlock()
		return false
	}, 5*time.Second, time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-ckErr:
		t.Fatalf("the checkpoint did not wait for the in-place write: %v", err)
	default:
	}
	fail.Store(true)
	require.ErrorIs(t, j.ApplyInPlace(l), syscall.EIO)
	require.Error(t, <-ckErr, "a checkpoint claimed an in-place write that failed")
}

// A large logged write goes to the data file in pieces of applyChunk (no
// large folios for later small writes to walk), and reads back whole.
func TestLargeWritesApplyInChunks(t *testing.T) {
	var dataWrites atomic.Int64
	fs := vfs.WithErrors(vfs.NewMem(), func(o vfs.Op, name string) error {
		if o == vfs.OpWrite && strings.HasSuffix(name, dataName) {
			dataWrites.Add(1)
		}
		return nil
	})
	o := testOptions(fs)
	o.DeviceSize, o.MaxSize, o.SegmentSize = 4<<20, 16<<20, 4<<20
	j := mustOpen(t, o)
	big := chunkOf(1<<20+512, 6) // not a multiple of the chunk either
	_, err := j.Append(Write{Offset: 4096, Data: big})
	require.NoError(t, err)
	require.Equal(t, int64((len(big)+applyChunk-1)/applyChunk), dataWrites.Load())
	got := make([]byte, len(big))
	require.NoError(t, j.ReadAt(got, 4096))
	require.Equal(t, big, got)
}

// ReadSummed hands back the CRC-32C of each block it read (a resync copy's
// frame is joined from them; the table it checked them against holds block
// IDs), refuses reads that are not whole blocks, and fails on a corrupt
// block as ReadAt does.
func TestReadSummed(t *testing.T) {
	fs := vfs.NewMem()
	j := mustOpen(t, testOptions(fs))
	data := make([]byte, 4*SumBlockSize)
	for i := range data {
		data[i] = byte(i / SumBlockSize * 7)
	}
	require.NoError(t, j.WriteInPlace(Write{Seq: 3, Offset: 0, Data: data}))
	p := make([]byte, len(data))
	sums, err := j.ReadSummed(p, 0, nil)
	require.NoError(t, err)
	require.Equal(t, data, p)
	require.Equal(t, crc32c.Blocks(nil, data), sums)
	_, err = j.ReadSummed(p[:SumBlockSize+1], 0, nil)
	require.ErrorIs(t, err, ErrNotWholeBlocks)
	_, err = j.ReadSummed(p[:SumBlockSize], 100, nil)
	require.ErrorIs(t, err, ErrNotWholeBlocks)

	flipBit(t, fs, SumBlockSize+9)
	_, err = j.ReadSummed(p, 0, nil)
	var ce *ChecksumError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, []int64{SumBlockSize}, ce.Blocks)
}
