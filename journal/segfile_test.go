package journal

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/grbd/grbd/internal/vfs"
)

// reusedJournal appends random writes to a journal of small segments,
// checkpointing now and then, until its last two segments are reused
// files with bytes of their earlier lives behind their records. It
// returns the journal, still open, and the model of what it holds.
func reusedJournal(t *testing.T, fs *vfs.MemFS, seed uint64) (*Journal, *model, Options) {
	t.Helper()
	o := testOptions(fs)
	o.MaxSize = 1 << 20 // only the checkpoints below free segments
	j := mustOpen(t, o)
	rng := rand.New(rand.NewPCG(seed, 11))
	m := newModel()
	for i := range 5000 {
		appendTo(t, j, m, randWrite(rng))
		if i%20 == 19 {
			require.NoError(t, j.Checkpoint())
		}
		if j.reused.Load() >= 4 && j.Stats().Segments >= 2 && staleBehind(t, fs, j, 2) {
			return j, m, o
		}
	}
	t.Fatal("no reused segments with older bytes behind their records")
	return nil, nil, o
}

// staleBehind reports whether each of the last n segments holds non-zero
// bytes after its records.
func staleBehind(t *testing.T, fs *vfs.MemFS, j *Journal, n int) bool {
	t.Helper()
	j.mu.Lock()
	type seg struct {
		num  uint64
		size int64
	}
	var last []seg
	for _, s := range j.segs[max(len(j.segs)-n, 0):] {
		last = append(last, seg{s.num, s.size})
	}
	j.mu.Unlock()
	if len(last) < n {
		return false
	}
	for _, s := range last {
		b := readFile(t, fs, path.Join("/db/journal", segName(s.num)))
		if int64(len(b)) <= s.size || len(bytes.TrimRight(b[s.size:], "\x00")) == 0 {
			return false
		}
	}
	return true
}

// A process crash (the page cache survives, nothing is trimmed) of a
// journal whose last segments are reused files: Open recovers every
// record, none of the files' earlier records, and no error. Replay must
// tell the records of a file's earlier lives from its current ones (they
// carry another segment's salt) in the last segment and in one before it,
// which rotation no longer trims.
func TestReusedSegmentsReplayAfterProcessCrash(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			fs := vfs.NewMem()
			j, m, o := reusedJournal(t, fs, seed)
			last := j.LastSeq()
			j.closeNoCheckpoint()

			j = mustOpen(t, o)
			defer j.closeNoCheckpoint()
			require.Equal(t, last, j.LastSeq(), "replay lost records or took a reused file's older ones")
			requireModel(t, j, m)
			first := j.Stats().FirstRetainedSeq
			require.Len(t, collect(t, j, first), int(last-first+1), "ReadRecords yields each record once")
		})
	}
}

// A power loss of a journal that reuses segment files, after a Sync: no
// synced write is lost and Open succeeds, whatever unsynced bytes the
// crash kept (TestPowerLoss covers reuse under concurrent writers too).
func TestReusedSegmentsPowerLoss(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			fs := vfs.NewMem()
			j, _, o := reusedJournal(t, fs, seed)
			require.NoError(t, j.Sync(j.LastSeq()))
			synced := j.LastSeq()
			rng := rand.New(rand.NewPCG(seed, 12))
			for range rng.IntN(12) {
				_, err := j.Append(randWrite(rng))
				require.NoError(t, err)
			}
			crashed := fs.CrashClone(rng)
			j.closeNoCheckpoint()
			o.FS = crashed
			j2 := mustOpen(t, o)
			defer j2.closeNoCheckpoint()
			require.GreaterOrEqual(t, j2.LastSeq(), synced)
			first := j2.Stats().FirstRetainedSeq
			require.Len(t, collect(t, j2, first), int(j2.LastSeq()-first+1))
		})
	}
}

// Spares never hold more than MaxSize allows with the live segments, and a
// file a reader still has open is never reused.
func TestSparesBounded(t *testing.T) {
	fs := vfs.NewMem()
	o := testOptions(fs)
	j := mustOpen(t, o)
	defer j.closeNoCheckpoint()
	rng := rand.New(rand.NewPCG(3, 4))
	bound := int(o.MaxSize / o.SegmentSize)
	for i := range 2000 {
		_, err := j.Append(randWrite(rng))
		require.NoError(t, err)
		if i%50 == 49 {
			require.NoError(t, j.Checkpoint())
			names, err := fs.ReadDir("/db/journal")
			require.NoError(t, err)
			require.LessOrEqual(t, len(names), bound, "journal files %v", names)
		}
	}
	require.NotZero(t, j.reused.Load())

	// A reader holding a segment: the checkpoint that frees it removes
	// the file instead of keeping it as a spare.
	j.mu.Lock()
	held := j.segs[0]
	held.refs++
	j.mu.Unlock()
	names := rotateAndCheckpoint(t, fs, j, rng)
	require.NotContains(t, names, spareName(held.num), "a file still open was kept for reuse")
	j.release(held)
}

// A version-1 segment (made by a build before version 2) is never reused:
// its records carry the journal's own salt, which a torn header's segment
// may carry too (candidateSalts), so they must not linger in a reused file.
func TestVersion1FilesNotReused(t *testing.T) {
	fs := vfs.NewMem()
	o := testOptions(fs)
	o.MaxSize = 1 << 20
	j := mustOpen(t, o)
	defer j.closeNoCheckpoint()
	j.mu.Lock()
	old := j.segs[0]
	old.version, old.salt = segVersion1, j.salt // as an older build made it
	j.mu.Unlock()
	names := rotateAndCheckpoint(t, fs, j, rand.New(rand.NewPCG(5, 6)))
	require.NotContains(t, names, spareName(old.num), "a version-1 file was kept for reuse")
	require.NotContains(t, names, segName(old.num))
	_, spares := splitJournalDir(names)
	require.NotEmpty(t, spares, "the version-2 segments freed with it are kept")
}

// rotateAndCheckpoint appends until the journal has three segments,
// checkpoints, and returns the names in the journal directory.
func rotateAndCheckpoint(t *testing.T, fs vfs.FS, j *Journal, rng *rand.Rand) []string {
	t.Helper()
	for j.Stats().Segments < 3 {
		_, err := j.Append(randWrite(rng))
		require.NoError(t, err)
	}
	require.NoError(t, j.Checkpoint())
	names, err := fs.ReadDir("/db/journal")
	require.NoError(t, err)
	return names
}
