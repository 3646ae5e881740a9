package journal

import (
	"encoding/binary"
	"fmt"
	"path"
	"testing"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

// checkpointedSegments is segmentedJournal with every write synced and
// then checkpointed, the segments kept (Retain): the records of the segment
// before the last are all covered by the checkpoint. It returns what
// nonLastSegmentEnd does.
func checkpointedSegments(t *testing.T) (o Options, fs *vfs.MemFS, names []string, p string, seg []byte, last int64, lastSeq uint64) {
	t.Helper()
	o = testOptions(nil)
	o.MaxSize = 1 << 20
	fs = vfs.NewMem()
	o.FS = fs
	j, err := Open(o)
	require.NoError(t, err)
	j.Retain(0)
	m := newModel()
	for _, w := range fixedWrites(30) {
		w = appendTo(t, j, m, w)
		require.NoError(t, j.Sync(w.Seq))
	}
	require.NoError(t, j.Checkpoint())
	require.Equal(t, j.LastSeq(), j.Stats().CheckpointSeq)
	j.closeNoCheckpoint()
	names, err = fs.ReadDir("/db/journal")
	require.NoError(t, err)
	require.Greater(t, len(names), 2, "the checkpoint kept the segments")
	p = path.Join("/db/journal", names[len(names)-2])
	seg = readFile(t, fs, p)
	offs := recordOffsets(t, seg)
	last = offs[len(offs)-1]
	return o, fs, names, p, seg, last, binary.LittleEndian.Uint64(seg[last+16:])
}

// A checkpoint that covers the records missing at the end of a segment
// does not make the damage there harmless: a later segment synced proves
// they had been durable (the damage is reported), and a journal with a hole
// must not serve catch-up across it. The chaos soak (seed 302) flipped a
// bit in the last record of a non-last segment, under the checkpoint: the
// node started without a word, and catch-up from below the record would
// have passed over it.
func TestCheckpointedRecordsMissing(t *testing.T) {
	damage := []struct {
		name string
		at   func(last int64, seg []byte) int64 // the byte flipped
	}{
		{"data", func(_ int64, seg []byte) int64 { return int64(len(trimZeros(seg))) - 1 }},
		{"magic", func(last int64, _ []byte) int64 { return last }},
		{"salt", func(last int64, _ []byte) int64 { return last + 48 }},
		{"seq", func(last int64, _ []byte) int64 { return last + 16 }},
	}
	for _, d := range damage {
		t.Run("flipped "+d.name+" of the last record, a later segment synced", func(t *testing.T) {
			o, fs, names, p, seg, last, lastSeq := checkpointedSegments(t)
			seg[d.at(last, seg)] ^= 1
			seg[50] ^= 1 // the sync mark proves nothing
			writeFile(t, fs, p, seg)
			o.FS = fs
			_, err := Open(o)
			require.ErrorIs(t, err, ErrCorrupt)
			require.ErrorContains(t, err, fmt.Sprintf("segment %s offset %d: the record after record %d does not decode", names[len(names)-2], last, lastSeq-1))
		})
	}

	t.Run("zeros where the last record was: its end, and a hole catch-up does not cross", func(t *testing.T) {
		o, fs, _, p, seg, last, lastSeq := checkpointedSegments(t)
		clear(seg[last:]) // as a cut at a torn record leaves it
		seg[50] ^= 1
		writeFile(t, fs, p, seg)
		o.FS = fs
		j := mustOpen(t, o)
		err := j.ReadRecords(lastSeq-1, func(w Write) error {
			require.Equal(t, lastSeq-1, w.Seq, "a record after the hole was served")
			return nil
		})
		require.ErrorIs(t, err, ErrCompacted)
		require.ErrorContains(t, err, fmt.Sprintf("records %d to %d are not in the journal", lastSeq, lastSeq))
		require.NoError(t, j.ReadRecords(lastSeq+1, func(Write) error { return nil }), "after the hole")
	})
}

// The same at the end: the last record of the last segment zeroed and its
// sync mark torn, under the checkpoint, is cut as a torn tail; the
// position stays at the checkpoint, and catch-up must not take it as
// reached from the records alone.
func TestCheckpointedRecordsMissingAtTheEnd(t *testing.T) {
	o, fs, names, _, _, _, _ := checkpointedSegments(t)
	p := path.Join("/db/journal", names[len(names)-1])
	seg := readFile(t, fs, p)
	offs := recordOffsets(t, seg)
	last := offs[len(offs)-1]
	lastSeq := binary.LittleEndian.Uint64(seg[last+16:])
	clear(seg[last:])
	seg[50] ^= 1
	writeFile(t, fs, p, seg)
	o.FS = fs
	j := mustOpen(t, o)
	require.Equal(t, lastSeq, j.LastSeq(), "the checkpoint's position")
	var got []uint64
	err := j.ReadRecords(lastSeq-1, func(w Write) error {
		got = append(got, w.Seq)
		return nil
	})
	require.Equal(t, []uint64{lastSeq - 1}, got)
	require.ErrorIs(t, err, ErrCompacted)
	require.ErrorContains(t, err, fmt.Sprintf("records %d to %d are not in the journal", lastSeq, lastSeq))
}

func trimZeros(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}
