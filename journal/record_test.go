package journal

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math"
	"testing"

	"github.com/grbd/grbd/internal/crc32c"
	"github.com/stretchr/testify/require"
)

func sampleRecords() map[string]Record {
	return map[string]Record{
		"write 1 byte":    {Write: Write{Seq: 1, Epoch: 2, Offset: 4096, Data: []byte{0xAA}}, Salt: 99, Synced: 64},
		"write 4 KiB":     {Write: Write{Seq: 1 << 40, Epoch: 3, Offset: 0, Data: bytes.Repeat([]byte("grbd"), 1024)}, Salt: 1, Synced: 1 << 31},
		"write unaligned": {Write: Write{Seq: 7, Offset: 13, Data: []byte("hello, journal")}, Salt: math.MaxUint64},
		"zero":            {Write: Write{Seq: 9, Epoch: 1, Offset: 512, ZeroLength: 1 << 40}, Salt: 5, Synced: 100},
		"resize":          {Write: Write{Seq: 10, Epoch: 4, Resize: 2 << 30}, Salt: 6, Synced: 200},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for name, r := range sampleRecords() {
		t.Run(name, func(t *testing.T) {
			b, err := EncodeRecord([]byte("prefix"), r)
			require.NoError(t, err)
			require.Equal(t, "prefix", string(b[:6]), "appends to dst")
			b = b[6:]
			require.Zero(t, len(b)%8, "8-byte aligned length")
			require.EqualValues(t, recordLen(&r.Write), len(b))
			got, n, err := DecodeRecord(append(b, 0xFF, 0xFF)) // trailing bytes are not its business
			require.NoError(t, err)
			require.Equal(t, len(b), n)
			if got.Data == nil {
				got.Data = r.Data // nil vs empty
			}
			require.Equal(t, r, got)
		})
	}
}

func TestRecordEveryBitFlipIsCorrupt(t *testing.T) {
	for name, r := range sampleRecords() {
		t.Run(name, func(t *testing.T) {
			b, err := EncodeRecord(nil, r)
			require.NoError(t, err)
			for bit := range len(b) * 8 {
				c := bytes.Clone(b)
				c[bit/8] ^= 1 << (bit % 8)
				_, _, err := DecodeRecord(c)
				require.ErrorIs(t, err, ErrCorrupt, "bit %d (byte %d)", bit, bit/8)
			}
		})
	}
}

func TestRecordEveryTruncationIsTruncated(t *testing.T) {
	for name, r := range sampleRecords() {
		t.Run(name, func(t *testing.T) {
			b, err := EncodeRecord(nil, r)
			require.NoError(t, err)
			for cut := range len(b) {
				_, n, err := DecodeRecord(b[:cut])
				require.ErrorIs(t, err, ErrTruncated, "cut at %d", cut)
				if cut >= RecordHeaderSize {
					require.Equal(t, len(b), n, "intact header tells the full length")
				}
			}
		})
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	valid, err := EncodeRecord(nil, Record{Write: Write{Seq: 1, Data: []byte("12345678")}})
	require.NoError(t, err)
	// reseal recomputes the header CRC, so the field check itself is tested.
	reseal := func(b []byte) []byte {
		binary.LittleEndian.PutUint32(b[60:], crc32.Checksum(b[:60], crc32c.Table))
		return b
	}
	cases := []struct {
		name   string
		mutate func(b []byte) []byte
		want   error
	}{
		{"future version", func(b []byte) []byte { b[4] = idVersion + 1; return reseal(b) }, ErrVersion},
		{"unknown type", func(b []byte) []byte { b[5] = typeExtent + 1; return reseal(b) }, ErrCorrupt},
		{"extent type in version 1", func(b []byte) []byte { b[4], b[5] = formatVersion, typeExtent; return reseal(b) }, ErrCorrupt},
		{"write in version 3", func(b []byte) []byte { b[4] = extentVersion; return reseal(b) }, ErrCorrupt},
		{"a version-4 data check read as version 1", func(b []byte) []byte { b[4] = formatVersion; return reseal(b) }, ErrCorrupt},
		{"zero in version 4", func([]byte) []byte {
			z, err := EncodeRecord(nil, Record{Write: Write{Seq: 1, ZeroLength: 4096}})
			require.NoError(t, err)
			z[4] = idVersion
			return reseal(z)
		}, ErrCorrupt},
		{"resize type in version 1", func(b []byte) []byte { b[4], b[5] = formatVersion, typeResize; return reseal(b) }, ErrCorrupt},
		{"resize type in version 4", func(b []byte) []byte { b[5] = typeResize; return reseal(b) }, ErrCorrupt},
		{"write in version 2", func(b []byte) []byte { b[4] = resizeVersion; return reseal(b) }, ErrCorrupt},
		{"flags set", func(b []byte) []byte { b[6] = 1; return reseal(b) }, ErrCorrupt},
		{"seq zero", func(b []byte) []byte { clear(b[16:24]); return reseal(b) }, ErrCorrupt},
		{"length disagrees", func(b []byte) []byte { b[8] += 8; return reseal(b) }, ErrCorrupt},
		{"data too long", func(b []byte) []byte { b[40+3] = 0x10; return reseal(b) }, ErrCorrupt},
		{"offset overflows", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[32:], math.MaxInt64-4); return reseal(b) }, ErrCorrupt},
		{"not a record", func(b []byte) []byte { return make([]byte, 128) }, ErrCorrupt},
		{"empty", func(b []byte) []byte { return nil }, ErrTruncated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DecodeRecord(tc.mutate(bytes.Clone(valid)))
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestEncodeRecordRejects(t *testing.T) {
	cases := []struct {
		name string
		r    Record
		want error
	}{
		{"no data no zero", Record{Write: Write{Seq: 1}}, ErrInvalidWrite},
		{"data and zero", Record{Write: Write{Seq: 1, Data: []byte("x"), ZeroLength: 1}}, ErrInvalidWrite},
		{"negative zero", Record{Write: Write{Seq: 1, ZeroLength: -1}}, ErrInvalidWrite},
		{"seq zero", Record{Write: Write{Data: []byte("x")}}, ErrInvalidWrite},
		{"negative offset", Record{Write: Write{Seq: 1, Offset: -1, Data: []byte("x")}}, ErrOutOfRange},
		{"too large", Record{Write: Write{Seq: 1, Data: make([]byte, MaxWriteSize+1)}}, ErrTooLarge},
		{"hint too large", Record{Write: Write{Seq: 1, Data: []byte("x")}, Synced: 1 << 32}, ErrInvalidWrite},
		{"resize with data", Record{Write: Write{Seq: 1, Resize: 4096, Data: []byte("x")}}, ErrInvalidWrite},
		{"resize with offset", Record{Write: Write{Seq: 1, Resize: 4096, Offset: 512}}, ErrInvalidWrite},
		{"negative resize", Record{Write: Write{Seq: 1, Resize: -1}}, ErrInvalidWrite},
		{"resize too large", Record{Write: Write{Seq: 1, Resize: MaxDeviceSize + 1}}, ErrInvalidWrite},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := EncodeRecord(nil, tc.r)
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestEncodeRecordDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 8192)
	r := Record{Write: Write{Seq: 1, Data: make([]byte, 4096)}}
	allocs := testing.AllocsPerRun(100, func() {
		buf, _ = EncodeRecord(buf[:0], r)
		_, _, _ = DecodeRecord(buf)
	})
	require.Zero(t, allocs)
}

func TestSegmentHeaderAndMark(t *testing.T) {
	var b [segHeaderSize]byte
	encodeSegHeader(b[:], segHeader{version: segVersion2, num: 3, firstSeq: 77, salt: 5})
	h, err := decodeSegHeader(b[:])
	require.NoError(t, err)
	require.Equal(t, segHeader{version: segVersion2, num: 3, firstSeq: 77, salt: 5}, h)
	require.Zero(t, decodeMark(b[48:]))
	encodeMark(b[48:], 4096)
	require.EqualValues(t, 4096, decodeMark(b[48:]))
	_, err = decodeSegHeader(b[:])
	require.NoError(t, err, "the mark is outside the header CRC")
	for bit := range 48 * 8 {
		c := b
		c[bit/8] ^= 1 << (bit % 8)
		_, err := decodeSegHeader(c[:])
		require.ErrorIs(t, err, ErrCorrupt, "bit %d", bit)
	}
	for bit := range 16 * 8 {
		c := b
		c[48+bit/8] ^= 1 << (bit % 8)
		require.Zero(t, decodeMark(c[48:]), "a torn mark proves nothing (bit %d)", bit)
	}
	_, err = decodeSegHeader(b[:10])
	require.ErrorIs(t, err, ErrTruncated)
}

func TestMetaRoundTripAndCorruption(t *testing.T) {
	m := &meta{deviceSize: 10000, regionSize: 4096, checkpointSeq: 42, salt: 9, regions: []uint64{0, 42, 17}}
	b := encodeMeta(nil, m)
	got, err := decodeMeta(b)
	require.NoError(t, err)
	require.Equal(t, m, got)
	for bit := range len(b) * 8 {
		c := bytes.Clone(b)
		c[bit/8] ^= 1 << (bit % 8)
		_, err := decodeMeta(c)
		require.ErrorIs(t, err, ErrCorrupt, "bit %d", bit)
	}
	_, err = decodeMeta(b[:len(b)-8])
	require.ErrorIs(t, err, ErrCorrupt, "short file")
	_, err = decodeMeta(b[:20])
	require.ErrorIs(t, err, ErrTruncated)
	bad := encodeMeta(nil, &meta{deviceSize: 10000, regionSize: 4096, checkpointSeq: 1, regions: []uint64{0, 2, 0}})
	_, err = decodeMeta(bad)
	require.ErrorIs(t, err, ErrCorrupt, "region seq above the checkpoint")
}

func TestRegionSizeFor(t *testing.T) {
	cases := []struct {
		name       string
		dev, want  int64
		expect     int64
		expectFail bool
	}{
		{"default", 1 << 30, 0, 4096, false},
		{"exactly 4M regions", 16 << 30, 0, 4096, false},
		{"grown for 1 TiB", 1 << 40, 0, 256 << 10, false},
		{"grown from explicit", 1 << 40, 1024, 256 << 10, false},
		{"explicit kept", 1 << 20, 64 << 10, 64 << 10, false},
		{"odd device size", 16<<30 + 1, 4096, 8192, false},
		{"not a power of two", 1 << 20, 3000, 0, true},
		{"too small", 1 << 20, 256, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := regionSizeFor(tc.dev, tc.want)
			if tc.expectFail {
				require.ErrorIs(t, err, ErrInvalidOptions)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.expect, got)
			require.LessOrEqual(t, regionCount(tc.dev, got), int64(maxRegions))
		})
	}
}

// A record torn by a crash between two of its data blocks, whose second
// block still holds the bytes a reused segment had there: when every block
// ends in its own CRC32C, a CRC32C of the data (version 1) cannot tell, and
// replay would take stale bytes for the write. Version 4's check can.
func TestWriteRecordTornBetweenSelfSummedBlocks(t *testing.T) {
	data := selfSummed(fill(8<<10, 1))
	stale := selfSummed(fill(4<<10, 2))
	for _, crc := range []bool{false, true} {
		b, err := EncodeRecord(nil, Record{Write: Write{Seq: 5, Offset: 8192, Data: data}, Salt: 3, CRC: crc})
		require.NoError(t, err)
		copy(b[RecordHeaderSize+4096:], stale)
		_, _, err = DecodeRecord(b)
		if crc {
			require.NoError(t, err, "version 1: CRC32C is blind to it")
		} else {
			require.ErrorIs(t, err, ErrCorrupt)
		}
	}
}
