package journal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path"
	"testing"

	"github.com/grbd/grbd/internal/racetest"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

// buildJournal appends writes to a fresh store on a MemFS, syncing after
// each of the first synced ones, and leaves it closed without a checkpoint.
// It returns the FS, the model of all writes, and the journal's salt.
func buildJournal(t *testing.T, o Options, writes []Write, synced int) (*vfs.MemFS, *model, []Write, uint64) {
	t.Helper()
	fs := vfs.NewMem()
	o.FS = fs
	j, err := Open(o)
	require.NoError(t, err)
	m := newModel()
	var done []Write
	for i, w := range writes {
		w = appendTo(t, j, m, w)
		done = append(done, w)
		if i < synced {
			require.NoError(t, j.Sync(w.Seq))
		}
	}
	j.closeNoCheckpoint()
	return fs, m, done, j.salt
}

// segmentedJournal is buildJournal of 30 fixed writes (synced of them) in
// 1 MiB segments, so that the journal spans several segment files, and the
// names of those files.
func segmentedJournal(t *testing.T, synced int) (Options, *vfs.MemFS, []string, *model, []Write, uint64) {
	t.Helper()
	o := testOptions(nil)
	o.MaxSize = 1 << 20
	fs, m, done, salt := buildJournal(t, o, fixedWrites(30), synced)
	names, err := fs.ReadDir("/db/journal")
	require.NoError(t, err)
	return o, fs, names, m, done, salt
}

// nonLastSegmentEnd builds a segmented journal and returns the path and
// bytes of its segment before the last, with the offset and seq of that
// segment's last record.
func nonLastSegmentEnd(t *testing.T) (o Options, fs *vfs.MemFS, names []string, done []Write, p string, seg []byte, last int64, lastSeq uint64) {
	t.Helper()
	o, fs, names, _, done, _ = segmentedJournal(t, 30)
	require.Greater(t, len(names), 2)
	p = path.Join("/db/journal", names[len(names)-2])
	seg = readFile(t, fs, p)
	offs := recordOffsets(t, seg)
	last = offs[len(offs)-1]
	return o, fs, names, done, p, seg, last, binary.LittleEndian.Uint64(seg[last+16:])
}

func fixedWrites(n int) []Write {
	rng := rand.New(rand.NewPCG(uint64(n), 9))
	var ws []Write
	for range n {
		ws = append(ws, randWrite(rng))
	}
	return ws
}

// A crash while the last record is being written, at every byte: the store
// reopens at the previous record, with the data file equal to the model.
func TestTornLastRecordAtEveryByte(t *testing.T) {
	racetest.FullOnly(t)
	last := map[string]Write{
		"write": {Offset: 1024, Data: bytes.Repeat([]byte{0x5A}, 1000)},
		"zero":  {Offset: 0, ZeroLength: 8192},
	}
	for name, lw := range last {
		t.Run(name, func(t *testing.T) {
			o := testOptions(nil)
			o.SegmentSize, o.MaxSize = 64<<10, 1<<20
			writes := fixedWrites(5)
			writes = append(writes, Write{Offset: 0, Data: bytes.Repeat([]byte{7}, 8192)}) // under the last one
			base, m, done, _ := buildJournal(t, o, writes, len(writes))
			segPath := lastSegment(t, base, "/db")
			seg := readFile(t, base, segPath)
			salt := recordSaltOf(t, base, segPath)
			lw.Seq = done[len(done)-1].Seq + 1
			rec, err := EncodeRecord(nil, Record{Write: lw, Salt: salt, Synced: int64(len(seg))})
			require.NoError(t, err)
			full := newModel()
			copy(full.data, m.data)
			copy(full.regions, m.regions)
			full.apply(lw)

			for cut := 0; cut <= len(rec); cut++ {
				fs := copyFS(t, base)
				writeFile(t, fs, segPath, append(bytes.Clone(seg), rec[:cut]...))
				o.FS = fs
				j, err := Open(o)
				require.NoError(t, err, "cut %d", cut)
				want, wantSeq := m, lw.Seq-1
				if cut == len(rec) {
					want, wantSeq = full, lw.Seq
				}
				require.Equal(t, wantSeq, j.LastSeq(), "cut %d", cut)
				require.Equal(t, wantSeq, j.DurableSeq(), "cut %d", cut)
				requireModel(t, j, want)
				j.closeNoCheckpoint()
				require.Len(t, readFile(t, fs, segPath), len(seg)+map[bool]int{true: len(rec), false: 0}[cut == len(rec)],
					"torn bytes cut off the segment")
			}
		})
	}
}

// Damage to the journal: in the unsynced tail it is a torn write and is cut;
// where something proves the bytes had been made durable it is corruption.
// requireCutForGood: a tail replay cut is gone for good, new records go
// where it was and survive the next replay.
func requireCutForGood(t *testing.T, j *Journal, o Options) {
	t.Helper()
	seq, err := j.Append(Write{Data: []byte("after")})
	require.NoError(t, err)
	require.NoError(t, j.Sync(seq))
	j.closeNoCheckpoint()
	j = mustOpen(t, o)
	require.Equal(t, seq, j.LastSeq())
}

func TestJournalDamage(t *testing.T) {
	flip := func(rec, byteInRec int) func(t *testing.T, seg []byte) []byte {
		return func(t *testing.T, seg []byte) []byte {
			offs := append(recordOffsets(t, seg), int64(len(seg)))
			seg[min(offs[rec]+int64(byteInRec), offs[rec+1]-1)] ^= 0x10
			return seg
		}
	}
	cases := []struct {
		name     string
		synced   int // writes followed by a Sync (of 6)
		damage   func(t *testing.T, seg []byte) []byte
		wantErr  bool
		wantLast uint64
	}{
		{"middle record header, all synced", 6, flip(2, 20), true, 0},
		{"middle record data, all synced", 6, flip(2, 100), true, 0},
		{"last record, all synced (sync mark proves it)", 6, flip(5, 100), true, 0},
		{"truncated inside synced records", 6, func(t *testing.T, seg []byte) []byte {
			return seg[:recordOffsets(t, seg)[4]+10]
		}, true, 0},
		{"middle record, later records prove it synced", 3, flip(1, 30), true, 0},
		{"middle record, sync mark torn, record hints prove it", 3, func(t *testing.T, seg []byte) []byte {
			seg = flip(1, 30)(t, seg)
			seg[50] ^= 1 // the mark no longer proves anything
			return seg
		}, true, 0},
		{"first unsynced record, later ones unsynced too", 3, flip(3, 70), false, 3},
		{"last record, unsynced", 3, flip(5, 70), false, 5},
		{"last record header magic, unsynced", 3, flip(5, 0), false, 5},
		{"garbage after the last record", 3, func(t *testing.T, seg []byte) []byte {
			return append(seg, bytes.Repeat([]byte{0xEE}, 100)...)
		}, false, 6},
		{"zeros after the last record", 3, func(t *testing.T, seg []byte) []byte {
			return append(seg, make([]byte, 4096)...)
		}, false, 6},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions(nil)
			o.SegmentSize, o.MaxSize = 64<<10, 1<<20
			fs, _, _, _ := buildJournal(t, o, fixedWrites(6), tc.synced)
			segPath := lastSegment(t, fs, "/db")
			writeFile(t, fs, segPath, tc.damage(t, readFile(t, fs, segPath)))
			o.FS = fs
			j, err := Open(o)
			if tc.wantErr {
				require.ErrorIs(t, err, ErrCorrupt)
				require.Contains(t, err.Error(), "segment 00000001.seg offset")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantLast, j.LastSeq())
			require.Len(t, collect(t, j, 1), int(tc.wantLast))
			requireCutForGood(t, j, o)
		})
	}

	// Rotation does not sync the segment it rotates out (the next Sync
	// does, before anything newer): damage in a non-last segment is
	// corruption once a later segment was synced, else the torn end of
	// writes never made durable.
	damageNonLast := func(t *testing.T, synced int) (Options, []string, []Write, *Journal, error) {
		o, fs, names, _, done, _ := segmentedJournal(t, synced)
		require.Greater(t, len(names), 2)
		p := path.Join("/db/journal", names[len(names)-2])
		seg := readFile(t, fs, p)
		offs := recordOffsets(t, seg)
		seg[offs[len(offs)-1]+20] ^= 1 // inside its last record (its seq)
		writeFile(t, fs, p, seg)
		o.FS = fs
		j, err := Open(o)
		return o, names, done, j, err
	}
	// The same record damaged in its data, its header intact, and the
	// segment's sync mark torn (a kill right after rotation leaves the
	// mark behind the records): replay reads the record as the segment's
	// end, and the next segment, synced, proves records missing. The
	// refusal must leave the journal as it found it: the cleanup of the
	// refused Open trimmed the segment to what replay had read, and the
	// record was gone for good (the chaos soak, seed 66).
	t.Run("bad data in a non-last segment's last record, a later one synced: left as found", func(t *testing.T) {
		o, fs, names, done, p, seg, last, lastSeq := nonLastSegmentEnd(t)
		at := int64(len(bytes.TrimRight(seg, "\x00"))) - 1 // the last record's last data byte
		seg[at] ^= 1
		seg[50] ^= 1 // the sync mark proves nothing
		writeFile(t, fs, p, seg)
		damaged := bytes.Clone(seg)
		o.FS = fs
		_, err := Open(o)
		require.ErrorIs(t, err, ErrCorrupt)
		require.ErrorContains(t, err, "made durable")
		// The operator is pointed at the damaged record, not at the
		// intact segment after it.
		require.ErrorContains(t, err, fmt.Sprintf("segment %s offset %d: the record after record %d does not decode", names[len(names)-2], last, lastSeq-1))
		require.ErrorContains(t, err, fmt.Sprintf("segment %s, which starts at record %d", names[len(names)-1], lastSeq+1))
		require.Equal(t, damaged, readFile(t, fs, p), "the refused Open changed the segment")

		seg[at] ^= 1 // repaired
		seg[50] ^= 1
		writeFile(t, fs, p, seg)
		j := mustOpen(t, o)
		require.Equal(t, done[len(done)-1].Seq, j.LastSeq(), "repaired, nothing is lost")
		j.closeNoCheckpoint()
	})
	// The last record of a non-last segment gone (zeros), a later segment
	// synced: refused, pointing at where the records end.
	t.Run("records missing at a non-last segment's end, a later one synced", func(t *testing.T) {
		o, fs, names, _, p, seg, last, lastSeq := nonLastSegmentEnd(t)
		clear(seg[last:])
		seg[50] ^= 1 // the sync mark proves nothing
		writeFile(t, fs, p, seg)
		o.FS = fs
		_, err := Open(o)
		require.ErrorIs(t, err, ErrCorrupt)
		require.ErrorContains(t, err, fmt.Sprintf("segment %s offset %d: the records end after record %d, and segment %s, which starts at record %d",
			names[len(names)-2], last, lastSeq-1, names[len(names)-1], lastSeq+1))
	})
	t.Run("bad record in a non-last segment, a later one synced", func(t *testing.T) {
		_, names, _, _, err := damageNonLast(t, 30)
		require.ErrorIs(t, err, ErrCorrupt)
		require.Contains(t, err.Error(), names[len(names)-2])
	})
	t.Run("bad record in a non-last segment, nothing after it synced", func(t *testing.T) {
		o, names, done, j, err := damageNonLast(t, 0)
		require.NoError(t, err)
		require.Less(t, j.LastSeq(), done[len(done)-1].Seq, "the torn end and everything after it are gone")
		require.Equal(t, len(names)-1, j.Stats().Segments, "the later segment was dropped")
		requireCutForGood(t, j, o)
	})

	t.Run("torn header of a new last segment", func(t *testing.T) {
		o, fs, names, m, done, salt := segmentedJournal(t, 30)
		// The next segment was being created when the power went: only a
		// piece of its header reached the disk.
		var hdr [segHeaderSize]byte
		encodeSegHeader(hdr[:], segHeader{version: segVersion2, num: uint64(len(names)) + 1, firstSeq: done[len(done)-1].Seq + 1, salt: salt})
		writeFile(t, fs, path.Join("/db/journal", segName(uint64(len(names))+1)), hdr[:20])
		o.FS = fs
		j := mustOpen(t, o)
		require.Equal(t, done[len(done)-1].Seq, j.LastSeq())
		requireModel(t, j, m)
		seq, err := j.Append(Write{Data: []byte("x")})
		require.NoError(t, err)
		require.NoError(t, j.Sync(seq))
		require.Equal(t, len(names)+1, j.Stats().Segments, "the torn segment was rewritten and used")
	})

	t.Run("record of another journal", func(t *testing.T) {
		o := testOptions(nil)
		fs, _, done, _ := buildJournal(t, o, fixedWrites(2), 2)
		segPath := lastSegment(t, fs, "/db")
		seg := readFile(t, fs, segPath)
		alien, err := EncodeRecord(nil, Record{Write: Write{Seq: done[1].Seq + 1, Data: []byte("x")}, Salt: 12345})
		require.NoError(t, err)
		writeFile(t, fs, segPath, append(seg, alien...))
		o.FS = fs
		// A version-2 segment may be a reused file, its earlier records
		// behind the current ones: a record with another salt ends the
		// segment and is never replayed.
		j, err := Open(o)
		require.NoError(t, err)
		require.Equal(t, done[1].Seq, j.LastSeq())
		require.Len(t, collect(t, j, 1), 2)
		j.closeNoCheckpoint()
	})
}

// Replaying twice equals replaying once: open a crashed image (the data file
// lost random unsynced writes, the journal is intact), compare, close
// without a checkpoint, replay again, compare.
func TestReplayIsIdempotent(t *testing.T) {
	for seed := range uint64(10) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 5))
			fs := vfs.NewMem()
			o := testOptions(fs)
			o.MaxSize = 1 << 20
			j, err := Open(o)
			require.NoError(t, err)
			m := newModel()
			for i := range 60 {
				appendTo(t, j, m, randWrite(rng))
				if i == 20 {
					require.NoError(t, j.Checkpoint())
				}
			}
			require.NoError(t, j.Sync(j.LastSeq()))
			crashed := fs.CrashClone(rng)
			j.closeNoCheckpoint()

			state := func(j *Journal) (Stats, []byte, []Write) {
				data := make([]byte, testDev)
				require.NoError(t, j.ReadAt(data, 0))
				st := j.Stats()
				st.Syncs, st.Writes = 0, 0
				return st, data, collect(t, j, st.FirstRetainedSeq)
			}
			o.FS = crashed
			j1, err := Open(o)
			require.NoError(t, err)
			requireModel(t, j1, m)
			st1, data1, recs1 := state(j1)
			j1.closeNoCheckpoint()
			j2, err := Open(o)
			require.NoError(t, err)
			st2, data2, recs2 := state(j2)
			require.Equal(t, st1, st2)
			require.Equal(t, data1, data2)
			require.Equal(t, recs1, recs2)
			requireModel(t, j2, m)
			require.NoError(t, j2.Close())
		})
	}
}

// A crash while creating a store leaves no meta file: Open starts over.
func TestCrashDuringCreate(t *testing.T) {
	fs := vfs.NewMem()
	o := testOptions(fs)
	require.NoError(t, mustOpen(t, o).Close())
	require.NoError(t, fs.Remove("/db/meta"))
	j := mustOpen(t, o) // segments hold only a header: recreated
	_, err := j.Append(Write{Data: []byte("x")})
	require.NoError(t, err)
	j.closeNoCheckpoint()
	require.NoError(t, fs.Remove("/db/meta"))
	_, err = Open(o)
	require.ErrorIs(t, err, ErrCorrupt, "records without meta: refuse, do not wipe")
}

// Segments freed by a checkpoint whose removals did not survive come back;
// replay drops the ones before a gap and ignores their records.
func TestStaleSegmentsAfterGap(t *testing.T) {
	o := testOptions(nil)
	o.MaxSize = 1 << 20
	fs, m, _, _ := buildJournal(t, o, fixedWrites(40), 40)
	before := copyFS(t, fs)
	o.FS = fs
	j := mustOpen(t, o)
	require.NoError(t, j.Checkpoint())
	j.closeNoCheckpoint()
	names, err := before.ReadDir("/db/journal")
	require.NoError(t, err)
	require.Greater(t, len(names), 3)
	// Resurrect the oldest freed segment only: a gap follows it.
	writeFile(t, fs, "/db/journal/"+names[0], readFile(t, before, "/db/journal/"+names[0]))
	j = mustOpen(t, o)
	requireModel(t, j, m)
	st := j.Stats()
	require.Equal(t, 1, st.Segments)
	left, err := fs.ReadDir("/db/journal")
	require.NoError(t, err)
	require.NotContains(t, left, names[0])
}
