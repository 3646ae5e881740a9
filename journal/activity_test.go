package journal

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/racetest"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

// actOptions: a 64 KiB device in 16 activity extents of 4 KiB. Each
// CrashClone is a reboot: callers pass the boot's ID.
func actOptions(fs vfs.FS, hot int, boot string) Options {
	o := testOptions(fs)
	o.activityExtentSize, o.ActivityExtents, o.activityLookahead, o.BootID = 4<<10, hot, 2, boot
	return o
}

// The suspects' life: none after a clean close; after a power loss the
// extents written since the last sync; they survive reopening (clean or
// not) until ClearSuspects.
func TestActivityLogSuspectsLifecycle(t *testing.T) {
	mem := vfs.NewMem()
	j, err := Open(actOptions(mem, 8, "1"))
	require.NoError(t, err)
	require.Empty(t, j.Suspects(), "a new store")
	_, err = j.Append(Write{Offset: 0, Data: fill(4096, 1)})
	require.NoError(t, err)
	require.NoError(t, j.Close())

	j, err = Open(actOptions(mem, 8, "1"))
	require.NoError(t, err)
	require.Empty(t, j.Suspects(), "after a clean close")
	seq, err := j.Append(Write{Offset: 8192, Data: fill(8192, 2)}) // extents 2 and 3
	require.NoError(t, err)
	require.NoError(t, j.Sync(seq))
	_, err = j.Append(Write{Offset: 40960, Data: fill(512, 3)}) // extent 10, not synced
	require.NoError(t, err)
	crashed := mem.CrashClone(rand.New(rand.NewPCG(1, 2)))
	j.closeNoCheckpoint()

	j, err = Open(actOptions(crashed, 8, "2"))
	require.NoError(t, err)
	want := j.Suspects()
	written := []extent.Extent{{Offset: 8192, Length: 8192}, {Offset: 40960, Length: 4096}}
	require.Empty(t, extent.Subtract(written, want), "the extents written before the power loss")
	ahead := []extent.Extent{{Offset: 8192, Length: 8192 + 2*4096}, {Offset: 40960, Length: 4096 + 2*4096}}
	require.Empty(t, extent.Subtract(want, ahead), "and at most the lookahead after them")
	require.NoError(t, j.Close())
	j, err = Open(actOptions(crashed, 8, "2"))
	require.NoError(t, err)
	require.Equal(t, want, j.Suspects(), "a clean close keeps them")
	require.NoError(t, j.ClearSuspects())
	require.Empty(t, j.Suspects())
	j.closeNoCheckpoint()
	j, err = Open(actOptions(crashed, 8, "2"))
	require.NoError(t, err)
	require.Empty(t, j.Suspects(), "cleared durably")
	require.NoError(t, j.Close())
}

// With writes synced as they go, eviction keeps the hot set at its bound,
// so a power loss suspects at most that many extents.
func TestActivityLogBounded(t *testing.T) {
	mem := vfs.NewMem()
	j, err := Open(actOptions(mem, 2, "1"))
	require.NoError(t, err)
	for x := range int64(16) {
		seq, err := j.Append(Write{Offset: x * 4096, Data: fill(4096, byte(x))})
		require.NoError(t, err)
		require.NoError(t, j.Sync(seq))
	}
	crashed := mem.CrashClone(rand.New(rand.NewPCG(3, 4)))
	j.closeNoCheckpoint()
	j, err = Open(actOptions(crashed, 2, "2"))
	require.NoError(t, err)
	defer j.Close()
	sus := j.Suspects()
	require.LessOrEqual(t, extent.Bytes(sus), uint64(2+2)*4096, "the bound and the lookahead: %v", sus)
	require.Empty(t, extent.Subtract(sus, []extent.Extent{{Offset: 12 * 4096, Length: 4 * 4096}}), "the most recent extents: %v", sus)
}

// A process crash (kill -9: same boot, page cache intact) leaves nothing
// suspect: every data.img byte came from a record replay finds and makes
// durable, so a power loss right after the reopen still finds the records
// and their data, and no suspects are needed.
func TestActivityLogProcessCrash(t *testing.T) {
	mem := vfs.NewMem()
	j, err := Open(actOptions(mem, 8, "1"))
	require.NoError(t, err)
	var last uint64
	for i := range int64(6) { // never synced, over new segments (8 KiB each)
		last, err = j.Append(Write{Offset: 8192 + 4096*i, Data: fill(4096, 7)})
		require.NoError(t, err)
	}
	j.closeNoCheckpoint()

	j, err = Open(actOptions(mem, 8, "1"))
	require.NoError(t, err)
	require.Empty(t, j.Suspects(), "the same boot")
	crashed := mem.CrashClone(rand.New(rand.NewPCG(5, 6)))
	j.closeNoCheckpoint()
	j, err = Open(actOptions(crashed, 8, "2"))
	require.NoError(t, err)
	defer j.Close()
	require.Empty(t, j.Suspects())
	require.Equal(t, last, j.LastSeq(), "the records made durable by the reopen, segment names too")
	got := make([]byte, 6*4096)
	require.NoError(t, j.ReadAt(got, 8192))
	require.Equal(t, fill(6*4096, 7), got, "and the data")
}

// A store whose activity log is unreadable (both files) after an unclean
// stop suspects everything; after a clean stop nothing.
func TestActivityLogLost(t *testing.T) {
	for _, clean := range []bool{false, true} {
		mem := vfs.NewMem()
		j, err := Open(actOptions(mem, 8, "1"))
		require.NoError(t, err)
		_, err = j.Append(Write{Offset: 0, Data: fill(4096, 1)})
		require.NoError(t, err)
		if clean {
			require.NoError(t, j.Close())
		} else {
			require.NoError(t, j.Sync(0))
			j.closeNoCheckpoint()
		}
		for _, n := range actNames {
			require.NoError(t, vfs.WriteFileAtomic(mem, "/db/"+n, []byte("garbage")))
		}
		j, err = Open(actOptions(mem, 8, "2"))
		require.NoError(t, err)
		if clean {
			require.Empty(t, j.Suspects())
		} else {
			require.Equal(t, []extent.Extent{{Offset: 0, Length: testDev}}, j.Suspects())
		}
		require.NoError(t, j.Close())
	}
}

// A failed activity log write fails the store: the write cannot reach
// data.img without its extent logged.
func TestActivityLogWriteFails(t *testing.T) {
	var broken bool
	fs := vfs.WithErrors(vfs.NewMem(), func(op vfs.Op, name string) error {
		if broken && op == vfs.OpWrite && (name == "/db/activity.0" || name == "/db/activity.1") {
			return errors.New("injected EIO")
		}
		return nil
	})
	j, err := Open(actOptions(fs, 8, "1"))
	require.NoError(t, err)
	broken = true
	_, err = j.Append(Write{Offset: 0, Data: fill(4096, 1)})
	require.ErrorIs(t, err, ErrFailed)
	buf := make([]byte, 4096)
	_ = j.ReadAt(buf, 0)
	require.Equal(t, make([]byte, 4096), buf, "the data never reached data.img")
	_ = j.Close()
}

// TestActivityLogCatchesPlantedBug builds this package with the planted bug
// (plantedbug_activity_on.go: writes reach data.img unlogged) and requires
// the power-loss test to fail on it.
func TestActivityLogCatchesPlantedBug(t *testing.T) {
	racetest.FullOnly(t)
	out := plantedRun(t, "grbd_plantedbug_activity", "^TestPowerLoss$")
	require.Contains(t, out, "outside the activity log's suspects")
}

// FuzzDecodeAct: decodeAct never panics, classifies failures, and what it
// accepts re-encodes to its bytes (stale bytes after the body aside).
func FuzzDecodeAct(f *testing.F) {
	f.Add(encodeAct(nil, &actLog{extentSize: 4 << 20, gen: 7, salt: 99, boot: 3, hot: []uint32{1, 5}, suspects: []uint32{2}}))
	f.Add(encodeAct(nil, &actLog{extentSize: 4096, gen: 1, salt: 1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := decodeAct(b)
		if err != nil {
			require.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrVersion), "unclassified: %v", err)
			return
		}
		enc := encodeAct(nil, l)
		require.Equal(t, enc, b[:len(enc)])
	})
}

// On the operating system's file system the transactions go through the
// O_DIRECT|O_DSYNC handles: what they write is what the next Open reads.
func TestActivityLogOnDisk(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, DeviceSize: 64 << 20, BootID: "1"}
	j, err := Open(o)
	require.NoError(t, err)
	for _, off := range []int64{0, 40 << 20} {
		_, err = j.Append(Write{Offset: off, Data: fill(1<<20, 5)})
		require.NoError(t, err)
	}
	require.Greater(t, j.Stats().ActivityCommits, uint64(1))
	j.closeNoCheckpoint()
	o.BootID = "2"
	j, err = Open(o)
	require.NoError(t, err)
	defer j.Close()
	written := []extent.Extent{{Offset: 0, Length: 4 << 20}, {Offset: 40 << 20, Length: 4 << 20}}
	require.Empty(t, extent.Subtract(written, j.Suspects()), "suspects after a reboot: %v", j.Suspects())
}
