package journal

import (
	"bytes"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"path"
	"sync"
	"testing"

	"github.com/grbd/grbd/internal/crc32c"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

// flipBit flips one bit of data.img at off, behind the store's back.
func flipBit(t *testing.T, fs vfs.FS, off int64) {
	t.Helper()
	name := path.Join("/db", dataName)
	b := readFile(t, fs, name)
	b[off] ^= 0x10
	writeFile(t, fs, name, b)
}

func fill(n int, v byte) []byte { return bytes.Repeat([]byte{v}, n) }

func TestChecksumDetectsFlippedBitAfterCleanClose(t *testing.T) {
	fs := vfs.NewMem()
	j := mustOpen(t, testOptions(fs))
	_, err := j.Append(Write{Offset: 0, Data: fill(4*SumBlockSize, 0xab)})
	require.NoError(t, err)
	require.NoError(t, j.Close())
	flipBit(t, fs, 2*SumBlockSize+100)

	j = mustOpen(t, testOptions(fs))
	p := make([]byte, 4*SumBlockSize)
	err = j.ReadAt(p, 0)
	var ce *ChecksumError
	require.ErrorAs(t, err, &ce)
	require.ErrorIs(t, err, ErrChecksum)
	require.Equal(t, []int64{2 * SumBlockSize}, ce.Blocks)
	require.EqualValues(t, 1, j.Stats().ChecksumErrors)

	// Other blocks read fine; an unaligned read touching the bad block fails.
	require.NoError(t, j.ReadAt(p[:SumBlockSize], SumBlockSize))
	require.Equal(t, fill(SumBlockSize, 0xab), p[:SumBlockSize])
	require.ErrorIs(t, j.ReadAt(p[:10], 3*SumBlockSize-5), ErrChecksum)
	require.ErrorIs(t, j.ReadAt(p[:1], 2*SumBlockSize+4095), ErrChecksum)

	// A partial write does not bless the corrupt rest of the block.
	_, err = j.Append(Write{Offset: 2 * SumBlockSize, Data: fill(512, 0xcd)})
	require.NoError(t, err)
	require.ErrorIs(t, j.ReadAt(p[:SumBlockSize], 2*SumBlockSize), ErrChecksum)

	// A whole-block write repairs it, and the repair survives a reopen.
	_, err = j.Append(Write{Offset: 2 * SumBlockSize, Data: fill(SumBlockSize, 0xef)})
	require.NoError(t, err)
	require.NoError(t, j.ReadAt(p, 0))
	require.Equal(t, fill(SumBlockSize, 0xef), p[2*SumBlockSize:3*SumBlockSize])
	require.NoError(t, j.Close())
	j = mustOpen(t, testOptions(fs))
	require.NoError(t, j.ReadAt(p, 0))
}

func TestChecksumZeroWritesAndUnalignedWrites(t *testing.T) {
	fs := vfs.NewMem()
	j := mustOpen(t, testOptions(fs))
	m := newModel()
	ws := []Write{
		{Offset: 100, Data: fill(9000, 1)},
		{Offset: 4096 + 512, ZeroLength: 512},
		{Offset: 0, ZeroLength: 3 * SumBlockSize},
		{Offset: 5000, Data: fill(10, 2)},
		{Offset: testDev - 512, Data: fill(512, 3)},
		{Offset: 8192, ZeroLength: 20000},
	}
	for _, w := range ws {
		appendTo(t, j, m, w)
		requireModel(t, j, m)
	}
	require.NoError(t, j.Close())
	j = mustOpen(t, testOptions(fs))
	requireModel(t, j, m)
	require.Zero(t, j.Stats().ChecksumErrors)
}

// A crash may leave a write in data.img whose record never reached the
// journal; the next Open must not call that block corrupt.
func TestChecksumRebuiltAfterCrash(t *testing.T) {
	fs := vfs.NewMem()
	j := mustOpen(t, testOptions(fs))
	_, err := j.Append(Write{Offset: 0, Data: fill(SumBlockSize, 7)})
	require.NoError(t, err)
	require.NoError(t, j.Checkpoint())
	j.closeNoCheckpoint()
	// The lost write: in the data file, not in the journal.
	name := path.Join("/db", dataName)
	b := readFile(t, fs, name)
	copy(b[SumBlockSize:], fill(SumBlockSize, 9))
	writeFile(t, fs, name, b)

	j = mustOpen(t, testOptions(fs))
	p := make([]byte, 2*SumBlockSize)
	require.NoError(t, j.ReadAt(p, 0))
	require.Equal(t, fill(SumBlockSize, 9), p[SumBlockSize:])
}

// A damaged or foreign data.sum costs a rebuild, never an error.
func TestChecksumFileDamage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(b []byte) []byte
	}{
		{"header bit", func(b []byte) []byte { b[13] ^= 1; return b }},
		{"page bit", func(b []byte) []byte { b[sumPageSize+8] ^= 1; return b }},
		{"page index", func(b []byte) []byte { return resealPage(b, sumPageTrailer, 1) }},
		{"page of another store", func(b []byte) []byte { return resealPage(b, sumPageTrailer+8, 12345) }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-4] }},
		{"empty", func([]byte) []byte { return nil }},
		{"version", func(b []byte) []byte { b[4] = 9; return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			j := mustOpen(t, testOptions(fs))
			_, err := j.Append(Write{Offset: 0, Data: fill(2*SumBlockSize, 5)})
			require.NoError(t, err)
			require.NoError(t, j.Close())
			name := path.Join("/db", sumName)
			writeFile(t, fs, name, tc.damage(readFile(t, fs, name)))
			j = mustOpen(t, testOptions(fs))
			p := make([]byte, 2*SumBlockSize)
			require.NoError(t, j.ReadAt(p, 0))
			require.Equal(t, fill(2*SumBlockSize, 5), p)
		})
	}
}

// resealPage sets the u64 at off of data.sum's first page to v and makes
// the page's CRC match again.
func resealPage(b []byte, off int, v uint64) []byte {
	page := b[sumPageSize : 2*sumPageSize]
	le.PutUint64(page[off:], v)
	le.PutUint32(page[sumPageSize-4:], crc32.Checksum(page[:sumPageSize-4], crc32c.Table))
	return b
}

// Readers racing writers to the same blocks (aligned and not) never see a
// false checksum error.
func TestChecksumConcurrentReadersAndWriters(t *testing.T) {
	fs := vfs.NewMem()
	j := mustOpen(t, testOptions(fs))
	const span = 8 * SumBlockSize
	var wg, writers sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 8)
	for w := 0; w < 3; w++ {
		writers.Add(1)
		go func(seed uint64) {
			defer writers.Done()
			rng := rand.New(rand.NewPCG(seed, 1))
			for i := 0; i < 400; i++ {
				off := rng.Int64N(span - 1024)
				n := 1 + rng.IntN(1024)
				if rng.IntN(3) == 0 {
					off &^= SumBlockSize - 1
					n = SumBlockSize
				}
				w := Write{Offset: off, Data: fill(n, byte(rng.Uint32()))}
				if rng.IntN(5) == 0 {
					w = Write{Offset: off, ZeroLength: int64(n)}
				}
				if _, err := j.Append(w); err != nil {
					errs <- err
					return
				}
			}
		}(uint64(w))
	}
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 2))
			p := make([]byte, span)
			for {
				select {
				case <-stop:
					return
				default:
				}
				off := rng.Int64N(span - 100)
				if err := j.ReadAt(p[:1+rng.Int64N(span-off)], off); err != nil {
					errs <- err
					return
				}
			}
		}(uint64(r))
	}
	writers.Wait()
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	require.Zero(t, j.Stats().ChecksumErrors)
}

func TestChecksumGrow(t *testing.T) {
	fs := vfs.NewMem()
	j := mustOpen(t, testOptions(fs))
	_, err := j.Append(Write{Offset: testDev - SumBlockSize, Data: fill(SumBlockSize, 4)})
	require.NoError(t, err)
	_, err = j.Append(Write{Resize: 2 * testDev})
	require.NoError(t, err)
	_, err = j.Append(Write{Offset: testDev + SumBlockSize, Data: fill(100, 6)})
	require.NoError(t, err)
	p := make([]byte, 2*testDev)
	require.NoError(t, j.ReadAt(p, 0))
	require.NoError(t, j.Close())
	j = mustOpen(t, testOptions(fs))
	require.NoError(t, j.ReadAt(p, 0))
	require.Equal(t, fill(100, 6), p[testDev+SumBlockSize:testDev+SumBlockSize+100])
	flipBit(t, fs, testDev+3*SumBlockSize)
	require.ErrorIs(t, j.ReadAt(p, 0), ErrChecksum)
}

// encodeSums encodes blocks entries of t as an earlier build's whole-file
// data.sum (version 2) with the store's salt.
func encodeSums(t *sumTable, blocks int64, salt uint64) []byte {
	b := make([]byte, sumHeaderSize+4*blocks)
	body := b[sumHeaderSize:]
	for i := int64(0); i < blocks; i++ {
		le.PutUint32(body[4*i:], t.get(i))
	}
	le.PutUint32(b[0:], sumMagic)
	b[4] = sumVersionIDs
	le.PutUint32(b[8:], SumBlockSize)
	le.PutUint64(b[12:], uint64(blocks))
	le.PutUint64(b[20:], salt)
	le.PutUint32(b[28:], crc32.Checksum(body, crc32c.Table))
	le.PutUint32(b[32:], crc32.Checksum(b[:32], crc32c.Table))
	return b
}

func TestDecodeSumsErrors(t *testing.T) {
	tab := newSumTable(3)
	tab.set(1, 42)
	good := encodeSums(tab, 3, 7)
	h, body, err := decodeSums(good)
	require.NoError(t, err)
	require.EqualValues(t, 3, h.count)
	require.EqualValues(t, 7, h.salt)
	require.EqualValues(t, 42, le.Uint32(body[4:]))
	for i := range good {
		b := bytes.Clone(good)
		b[i] ^= 0x80
		_, _, err := decodeSums(b)
		require.Error(t, err, "flip at byte %d", i)
		require.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, ErrVersion), "byte %d: %v", i, err)
	}
	_, _, err = decodeSums(good[:10])
	require.ErrorIs(t, err, ErrTruncated)
}

// FuzzDecodeSums: decodeSums never panics, classifies failures, and what it
// accepts re-encodes to the same bytes (the committed seeds "valid" and
// "valid-empty" are version 1, an earlier build's; "valid-ids" version 2).
func FuzzDecodeSums(f *testing.F) {
	tab := newSumTable(4)
	tab.set(2, 0xdeadbeef)
	f.Add(encodeSums(tab, 4, 99))
	f.Add(encodeSums(tab, 0, 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, body, err := decodeSums(b)
		if err != nil {
			require.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrVersion), "unclassified: %v", err)
			return
		}
		tab := newSumTable(int64(h.count))
		for i := int64(0); i < int64(h.count); i++ {
			tab.set(i, le.Uint32(body[4*i:]))
		}
		again := encodeSums(tab, int64(h.count), h.salt)
		if h.version == sumVersionCRC { // an earlier build's: the same layout
			again[4] = sumVersionCRC
			le.PutUint32(again[32:], crc32.Checksum(again[:32], crc32c.Table))
		}
		require.Equal(t, b, again)
	})
}

// tornRead is the data file, except that its first reads return torn bytes
// (a write was changing the block) and then run during() before returning.
type tornRead struct {
	vfs.File
	torn   int
	during func()
}

func (f *tornRead) ReadAt(p []byte, off int64) (int, error) {
	if f.torn == 0 {
		return f.File.ReadAt(p, off)
	}
	f.torn--
	for i := range p {
		p[i] = 0xab
	}
	if f.torn == 0 && f.during != nil {
		f.during()
	}
	return len(p), nil
}

// A block that two writes bring back to its old bytes while a read is
// rechecking it is not corrupt: its checksum is the same before and after
// the read, but the block changed during it. (recheck compared the
// checksums and reported a checksum error; it happened to
// TestChecksumConcurrentReadersAndWriters, whose writers zero blocks.)
func TestRecheckSeesABlockThatCameBack(t *testing.T) {
	fs := vfs.NewMem()
	j := mustOpen(t, testOptions(fs))
	f := &tornRead{File: j.data, torn: 2} // ReadAt's read, then recheck's
	f.during = func() {
		_, err := j.Append(Write{Offset: 0, Data: fill(SumBlockSize, 0x11)})
		require.NoError(t, err)
		_, err = j.Append(Write{Offset: 0, ZeroLength: SumBlockSize})
		require.NoError(t, err)
	}
	j.data = f
	got := fill(SumBlockSize, 0xff)
	require.NoError(t, j.ReadAt(got, 0), "a block that changed during the read was taken for corrupt")
	require.Equal(t, make([]byte, SumBlockSize), got)
	require.Zero(t, j.Stats().ChecksumErrors)
}
