package journal

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/blockid"
	"github.com/grbd/grbd/internal/crc32c"
	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/racetest"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

// extOptions: writes of 8 KiB and more on whole blocks become extent
// records; a small activity log, so that power losses suspect little.
func extOptions(fs vfs.FS, boot string) Options {
	o := testOptions(fs)
	o.InPlaceMin, o.BootID = 8<<10, boot
	o.MaxSize = 1 << 20 // no checkpoint unless a test asks
	o.activityExtentSize, o.ActivityExtents, o.activityLookahead = 4<<10, 4, 1
	return o
}

func TestExtentRecordRoundTrip(t *testing.T) {
	data := fill(3*SumBlockSize, 5)
	data[SumBlockSize] = 9
	r := Record{Write: Write{Seq: 3, Epoch: 2, Offset: 2 * SumBlockSize, Data: data}, Salt: 77, Synced: 64, InPlace: true}
	b, err := EncodeRecord(nil, r)
	require.NoError(t, err)
	require.Len(t, b, RecordHeaderSize+16, "three sums, padded to 8 bytes")
	require.Equal(t, byte(idVersion), b[4])
	got, n, err := DecodeRecord(b)
	require.NoError(t, err)
	require.Equal(t, len(b), n)
	require.True(t, got.InPlace)
	require.False(t, got.CRC)
	require.Nil(t, got.Data)
	require.EqualValues(t, len(data), got.Length)
	require.Equal(t, r.Offset, got.Offset)
	require.Equal(t, r.Epoch, got.Epoch)
	require.Equal(t, blockid.Of(data[SumBlockSize:2*SumBlockSize]), binary.LittleEndian.Uint32(got.Sums[4:]))
	again, err := EncodeRecord(nil, got)
	require.NoError(t, err)
	require.Equal(t, b, again, "a decoded extent record re-encodes to the same bytes")

	// A version-3 record (CRC32C sums, written by earlier builds) decodes as
	// one and re-encodes to the same bytes.
	v3 := r
	v3.Data, v3.Length, v3.CRC, v3.Sums = nil, int64(len(data)), true, crc32c.Blocks(nil, data)
	b3, err := EncodeRecord(nil, v3)
	require.NoError(t, err)
	require.Equal(t, byte(extentVersion), b3[4])
	got, _, err = DecodeRecord(b3)
	require.NoError(t, err)
	require.True(t, got.CRC)
	require.Equal(t, v3.Sums, got.Sums)
	again, err = EncodeRecord(nil, got)
	require.NoError(t, err)
	require.Equal(t, b3, again)
	v3.Data, v3.Sums = data, nil
	_, err = EncodeRecord(nil, v3)
	require.ErrorIs(t, err, ErrInvalidWrite, "new records are never version 3")

	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x10
		_, _, err := DecodeRecord(c)
		require.ErrorIs(t, err, ErrCorrupt, "bit flipped in byte %d", i)
	}
	for _, w := range []Write{
		{Seq: 1, Offset: 512, Data: fill(SumBlockSize, 1)},    // not on a block boundary
		{Seq: 1, Offset: 0, Data: fill(SumBlockSize+512, 1)},  // not whole blocks
		{Seq: 1, Offset: 0, ZeroLength: SumBlockSize},         // no data
		{Seq: 1, Offset: 0, Data: fill(MaxWriteSize+4096, 1)}, // too large
	} {
		_, err := EncodeRecord(nil, Record{Write: w, InPlace: true})
		require.ErrorIs(t, err, ErrInvalidWrite, "[%d,+%d)", w.Offset, len(w.Data)+int(w.ZeroLength))
	}
}

// A large write on whole blocks is journaled as a small extent record and
// written once, to data.img; ReadRecords serves it from there until a
// later write changes its blocks.
func TestExtentWrittenOnce(t *testing.T) {
	j := mustOpen(t, extOptions(vfs.NewMem(), "1"))
	before := j.Stats().JournalBytes
	big := fill(16<<10, 7)
	seq, err := j.Append(Write{Offset: 16 << 10, Data: big})
	require.NoError(t, err)
	require.EqualValues(t, extentRecordLen(16<<10), j.Stats().JournalBytes-before, "an extent record, not the data")
	got := make([]byte, len(big))
	require.NoError(t, j.ReadAt(got, 16<<10))
	require.True(t, bytes.Equal(big, got))
	recs := collect(t, j, seq)
	require.Len(t, recs, 1)
	require.True(t, bytes.Equal(big, recs[0].Data), "served from data.img")

	_, err = j.Append(Write{Offset: 20 << 10, Data: fill(512, 8)})
	require.NoError(t, err)
	err = j.ReadRecords(seq, func(Write) error { return nil })
	require.ErrorIs(t, err, ErrCompacted, "its blocks were written again")
	require.ErrorIs(t, err, ErrExtentGone)
}

// takesInPlace: only large writes on whole blocks, and only where no
// record that replay applies (above the checkpoint) touched the regions.
func TestExtentOnlyOutsideTheReplayWindow(t *testing.T) {
	j := mustOpen(t, extOptions(vfs.NewMem(), "1"))
	logged := func(ws ...Write) []bool {
		t.Helper()
		ls, err := j.Log(ws)
		require.NoError(t, err)
		var out []bool
		for _, l := range ls {
			require.NoError(t, j.Apply(l))
			out = append(out, l.Extent)
		}
		return out
	}
	require.Equal(t, []bool{false}, logged(Write{Offset: 0, Data: fill(4<<10, 1)}), "below InPlaceMin")
	require.Equal(t, []bool{false}, logged(Write{Offset: 512, Data: fill(8<<10, 1)}), "not on block boundaries")
	require.Equal(t, []bool{false}, logged(Write{Offset: 0, Data: fill(16<<10, 2)}), "a data record above the checkpoint touched its regions")
	require.Equal(t, []bool{true}, logged(Write{Offset: 32 << 10, Data: fill(8<<10, 3)}), "untouched regions")
	require.Equal(t, []bool{true}, logged(Write{Offset: 32 << 10, Data: fill(8<<10, 4)}), "over an extent record: replay applies neither")
	require.Equal(t, []bool{false, false}, logged(Write{Offset: 48 << 10, ZeroLength: 512}, Write{Offset: 48 << 10, Data: fill(8<<10, 5)}),
		"a zero record earlier in the same batch")
	require.NoError(t, j.Checkpoint())
	require.Equal(t, []bool{true}, logged(Write{Offset: 0, Data: fill(16<<10, 6)}), "the checkpoint took the data records out of replay")
}

// A process crash (the page cache survives) between an extent record and
// its data-file write: replay finds the record without its data, and the
// blocks become suspects, so that a peer resyncs them. The write was
// never acknowledged (Apply had not returned).
func TestExtentCrashBeforeItsData(t *testing.T) {
	const at = 32 << 10 // the extent record: two blocks, [32K,40K)
	for _, tc := range []struct {
		name     string
		later    []Write // logged after it, applied before the crash
		unlogged []Write // logged after it, never applied
		suspects []extent.Extent
		torn     bool // its first block reached data.img before the crash
		// selfSummed: every block, old and new, ends in the CRC32C of the
		// bytes before it, so all have one CRC32C (CI run 95: a torn write
		// of the fault suite's blocks passed replay's check)
		selfSummed bool
	}{
		{"alone", nil, nil, []extent.Extent{{Offset: at, Length: 8 << 10}}, false, false},
		{"its first block written, not the second", nil, nil, []extent.Extent{{Offset: at + 4<<10, Length: 4 << 10}}, true, false},
		{"blocks that end in their own CRC32C, torn", nil, nil, []extent.Extent{{Offset: at + 4<<10, Length: 4 << 10}}, true, true},
		{"blocks that end in their own CRC32C, not written", nil, nil, []extent.Extent{{Offset: at, Length: 8 << 10}}, false, true},
		{"a later write elsewhere in its region", []Write{{Offset: 44 << 10, Data: fill(4<<10, 3)}}, nil,
			[]extent.Extent{{Offset: at, Length: 8 << 10}}, false, false},
		{"a later write over one block", nil, []Write{{Offset: at, Data: fill(4<<10, 3)}},
			[]extent.Extent{{Offset: at + 4<<10, Length: 4 << 10}}, false, false},
		{"a later write over part of a block", nil, []Write{{Offset: at + 512, Data: fill(512, 3)}},
			[]extent.Extent{{Offset: at, Length: 8 << 10}}, false, false},
		{"a later zero record over all of it", nil, []Write{{Offset: 0, ZeroLength: 48 << 10}}, nil, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewMem()
			o := extOptions(mem, "1")
			o.RegionSize = 16 << 10 // as in production, a region holds several blocks
			j, err := Open(o)
			require.NoError(t, err)
			old, mine := fill(16<<10, 1), fill(8<<10, 2)
			if tc.selfSummed { // and old data under the extent
				old, mine = selfSummed(fill(48<<10, 1)), selfSummed(mine)
			}
			seq, err := j.Append(Write{Offset: 0, Data: old})
			require.NoError(t, err)
			require.NoError(t, j.Sync(seq))
			before := j.Stats().ExtentRecords
			ls, err := j.Log([]Write{{Offset: at, Data: mine}})
			require.NoError(t, err)
			require.True(t, ls[0].Extent)
			require.Equal(t, before+1, j.Stats().ExtentRecords, "counted")
			for _, w := range tc.later {
				_, err := j.Append(w)
				require.NoError(t, err)
			}
			unlogged, err := j.Log(tc.unlogged)
			require.NoError(t, err)
			crashed := copyFS(t, mem) // the process dies here: the extent never applied
			if tc.torn {              // or only in part: checked block by block, not by run
				f, err := crashed.OpenFile("/db/data.img", os.O_RDWR, 0)
				require.NoError(t, err)
				_, err = f.WriteAt(mine[:4<<10], at)
				require.NoError(t, err)
				require.NoError(t, f.Close())
			}
			require.NoError(t, j.Apply(ls[0]))
			for _, l := range unlogged {
				require.NoError(t, j.Apply(l))
			}
			j.closeNoCheckpoint()

			o.FS = crashed
			j, err = Open(o)
			require.NoError(t, err)
			defer j.Close()
			require.Equal(t, ls[0].Seq+uint64(len(tc.later)+len(tc.unlogged)), j.LastSeq())
			require.Equal(t, tc.suspects, j.Suspects())
			got := make([]byte, 16<<10)
			require.NoError(t, j.ReadAt(got, 0))
			if len(tc.unlogged) == 0 || tc.unlogged[0].ZeroLength == 0 {
				require.True(t, bytes.Equal(old[:len(got)], got), "the applied extent record kept its data")
			}
		})
	}
}

// selfSummed ends every SumBlockSize block of b in the CRC32C (little-endian)
// of the bytes before it, a common checksummed page layout: every such
// block has the same CRC32C.
func selfSummed(b []byte) []byte {
	for i := 0; i+SumBlockSize <= len(b); i += SumBlockSize {
		blk := b[i : i+SumBlockSize]
		binary.LittleEndian.PutUint32(blk[SumBlockSize-4:], crc32.Checksum(blk[:SumBlockSize-4], crc32c.Table))
	}
	return b
}

// A process crash after a data record and an extent record over the same
// blocks: replay must leave the extent's bytes, not write the older data
// record over them. Built with the planted bug that ignores the replay
// window, the second write becomes an extent record and this fails.
func TestExtentNotUndoneByReplay(t *testing.T) {
	mem := vfs.NewMem()
	j, err := Open(extOptions(mem, "1"))
	require.NoError(t, err)
	_, err = j.Append(Write{Offset: 0, Data: fill(4<<10, 1)})
	require.NoError(t, err)
	_, err = j.Append(Write{Offset: 0, Data: fill(16<<10, 2)})
	require.NoError(t, err)
	j.closeNoCheckpoint()

	j, err = Open(extOptions(mem, "1"))
	require.NoError(t, err)
	defer j.Close()
	got := make([]byte, 16<<10)
	require.NoError(t, j.ReadAt(got, 0))
	require.True(t, bytes.Equal(fill(16<<10, 2), got), "the acknowledged second write")
	require.Empty(t, j.Suspects())
}

// Sync covers an extent record's data: after a power loss every synced
// extent record's blocks hold its bytes. Built with the planted bug that
// skips the data file's fdatasync, this fails.
func TestExtentSyncedSurvivesPowerLoss(t *testing.T) {
	for seed := range uint64(20) {
		mem := vfs.NewMem()
		j, err := Open(extOptions(mem, "1"))
		require.NoError(t, err)
		var want []Write
		for i := range int64(4) {
			w := Write{Offset: i * (16 << 10), Data: fill(16<<10, byte(10+i))}
			seq, err := j.Append(w)
			require.NoError(t, err)
			want = append(want, w)
			require.NoError(t, j.Sync(seq))
		}
		crashed := mem.CrashClone(rand.New(rand.NewPCG(seed, 1)))
		j.closeNoCheckpoint()
		j, err = Open(extOptions(crashed, "2"))
		require.NoError(t, err)
		for _, w := range want {
			got := make([]byte, len(w.Data))
			require.NoError(t, j.ReadAt(got, w.Offset))
			require.True(t, bytes.Equal(w.Data, got), "seed %d: synced extent record at %d", seed, w.Offset)
		}
		require.NoError(t, j.Close())
	}
}

// TestExtentCatchesPlantedBugs builds the package with each planted bug
// that breaks a rule of extent records and requires the test that guards
// the rule to fail.
func TestExtentCatchesPlantedBugs(t *testing.T) {
	racetest.FullOnly(t)
	for tag, test := range map[string]string{
		"grbd_plantedbug_window":    "^TestExtentNotUndoneByReplay$",
		"grbd_plantedbug_imagesync": "^TestExtentSyncedSurvivesPowerLoss$",
	} {
		out := plantedRun(t, tag, test)
		require.Contains(t, out, "--- FAIL: "+test[1:len(test)-1], "it failed for another reason:\n%s", out)
	}
}

// Extent-record data checkpoints on a bound of its own (extentWindow,
// 4*MaxSize), not with the journal's bytes: one checkpoint per MaxSize/4 of
// large writes kept data.img flushing all the time. Past the bound a
// checkpoint still comes, which keeps replay's check of extents bounded.
func TestExtentDataCheckpointsOnItsOwnBound(t *testing.T) {
	o := extOptions(vfs.NewMem(), "1")
	j := mustOpen(t, o)
	const size = 16 << 10
	window := int(4 * o.MaxSize / size)
	data := fill(size, 3)
	for i := range window + 8 {
		before := j.Stats().JournalBytes
		_, err := j.Append(Write{Offset: int64(i%4) * size, Data: data})
		require.NoError(t, err)
		if i < window-1 { // the journal holds only records, far below MaxSize/4
			require.Less(t, j.Stats().JournalBytes-before, int64(size), "write %d was journaled whole", i)
			require.Zero(t, j.Stats().Checkpoints, "checkpoint after %d KiB of extent data", (i+1)*size>>10)
		}
	}
	require.Eventually(t, func() bool { return j.Stats().Checkpoints > 0 }, 5*time.Second, time.Millisecond,
		"no checkpoint after %d KiB of extent data", (window+8)*size>>10)
}

// Records of earlier builds still replay: version-3 extent records (CRC32C
// sums) are kept when intact and make a torn block a suspect; version-1
// writes (CRC32C of the data) read back.
func TestEarlierRecordVersionsReplay(t *testing.T) {
	for _, torn := range []bool{false, true} {
		mem := vfs.NewMem()
		o := extOptions(mem, "1")
		j, err := Open(o)
		require.NoError(t, err)
		small := fill(4<<10, 3)
		_, err = j.Append(Write{Offset: 32 << 10, Data: small}) // a write record
		require.NoError(t, err)
		mine := fill(8<<10, 2)
		ls, err := j.Log([]Write{{Offset: 0, Data: mine}})
		require.NoError(t, err)
		require.True(t, ls[0].Extent)
		if !torn {
			require.NoError(t, j.Apply(ls[0]))
		}
		crashed := copyFS(t, mem)
		if torn {
			require.NoError(t, j.Apply(ls[0]))
			f, err := crashed.OpenFile("/db/data.img", os.O_RDWR, 0)
			require.NoError(t, err)
			_, err = f.WriteAt(mine[:4<<10], 0)
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}
		j.closeNoCheckpoint()
		require.Equal(t, 2, toEarlierVersions(t, crashed, "/db/journal", mine), "records rewritten")

		o.FS = crashed
		j, err = Open(o)
		require.NoError(t, err)
		if torn {
			require.Equal(t, []extent.Extent{{Offset: 4 << 10, Length: 4 << 10}}, j.Suspects())
		} else {
			require.Empty(t, j.Suspects())
			recs := collect(t, j, ls[0].Seq)
			require.Len(t, recs, 1)
			require.True(t, bytes.Equal(mine, recs[0].Data), "served from data.img, checked by CRC32C")
		}
		require.Equal(t, ls[0].Seq, j.LastSeq())
		got := make([]byte, len(small))
		require.NoError(t, j.ReadAt(got, 32<<10))
		require.True(t, bytes.Equal(small, got), "the version-1 write replayed")
		require.NoError(t, j.Close())
	}
}

// toEarlierVersions rewrites every extent record in the segments of dir, each a
// write of data, as version 3 (CRC32C sums), and every write record as
// version 1 (CRC32C of its data), as an earlier build wrote them, and
// returns how many records it rewrote.
func toEarlierVersions(t *testing.T, fs vfs.FS, dir string, data []byte) int {
	t.Helper()
	names, err := fs.ReadDir(dir)
	require.NoError(t, err)
	n := 0
	for _, name := range names {
		f, err := fs.OpenFile(dir+"/"+name, os.O_RDWR, 0)
		require.NoError(t, err)
		size, err := f.Size()
		require.NoError(t, err)
		b := make([]byte, size)
		_, err = f.ReadAt(b, 0)
		require.NoError(t, err)
		for off := segHeaderSize; off < len(b); {
			rec, l, err := DecodeRecord(b[off:])
			if err != nil {
				break
			}
			if rec.InPlace || (len(rec.Data) > 0 && !rec.CRC) {
				rec.CRC = true
				if rec.InPlace {
					require.EqualValues(t, len(data), rec.Length)
					rec.Sums = crc32c.Blocks(nil, data)
				}
				enc, err := EncodeRecord(nil, rec)
				require.NoError(t, err)
				require.Len(t, enc, l)
				_, err = f.WriteAt(enc, int64(off))
				require.NoError(t, err)
				n++
			}
			off += l
		}
		require.NoError(t, f.Close())
	}
	return n
}
