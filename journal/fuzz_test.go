package journal

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzDecodeRecord: DecodeRecord never panics, classifies every failure by
// sentinel, and whatever it accepts re-encodes to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range sampleRecords() {
		b, err := EncodeRecord(nil, r)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := DecodeRecord(b)
		if err != nil {
			require.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrVersion), "unclassified: %v", err)
			return
		}
		require.GreaterOrEqual(t, n, RecordHeaderSize)
		require.LessOrEqual(t, n, len(b))
		require.Zero(t, n%8)
		enc, err := EncodeRecord(nil, r)
		require.NoError(t, err)
		require.Equal(t, b[:n], enc)
	})
}

// FuzzDecodeMeta: the same for the meta file.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(encodeMeta(nil, &meta{deviceSize: 10000, regionSize: 4096, checkpointSeq: 42, salt: 9, regions: []uint64{0, 42, 17}}))
	f.Add(encodeMeta(nil, &meta{deviceSize: 512, regionSize: 512, regions: []uint64{0}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			require.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrVersion), "unclassified: %v", err)
			return
		}
		require.Equal(t, b, encodeMeta(nil, m))
	})
}
