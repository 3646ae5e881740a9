package replicator

import (
	"encoding/binary"
	"github.com/grbd/grbd/internal/crc32c"
	"github.com/grbd/grbd/internal/extent"
	"hash/crc32"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDiverge(t *testing.T) {
	h := func(xs ...uint64) History {
		var out History
		for i := 0; i < len(xs); i += 2 {
			out = append(out, HistoryEntry{Epoch: xs[i], FirstSeq: xs[i+1]})
		}
		return out
	}
	forced := func(x History) History { x[len(x)-1].Forced = true; return x }
	for _, tc := range []struct {
		name    string
		pri     History
		priLast uint64
		sec     History
		secLast uint64
		want    Divergence
	}{
		{"identical", h(1, 1), 100, h(1, 1), 100, Divergence{Common: 100}},
		{"secondary behind", h(1, 1, 2, 51), 100, h(1, 1), 40, Divergence{Common: 40}},
		{"secondary behind in same epoch", h(1, 1, 2, 51), 100, h(1, 1, 2, 51), 60, Divergence{Common: 60}},
		{"deposed primary's tail", h(1, 1, 2, 81), 100, h(1, 1), 90, Divergence{Common: 80, Diverged: true}},
		{"secondary ahead in the same epoch", h(1, 1), 80, h(1, 1), 90, Divergence{Common: 80, Diverged: true}},
		{"empty epochs do not count", h(1, 1, 3, 101), 100, h(1, 1, 2, 101), 100, Divergence{Common: 100}},
		{"forced epoch after the fork", forced(h(1, 1, 2, 81)), 100, h(1, 1), 90, Divergence{Common: 80, Diverged: true, SplitBrain: true}},
		{"forced epoch before the fork", forced(h(1, 1, 2, 11)), 100, h(1, 1, 2, 11), 100, Divergence{Common: 100}},
		{"blank secondary", h(1, 1), 100, nil, 0, Divergence{Common: 0}},
		{"fork at the first record", h(2, 1), 10, h(1, 1), 5, Divergence{Common: 0, Diverged: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, Diverge(tc.pri, tc.priLast, tc.sec, tc.secLast))
		})
	}
}

func TestHistoryAdoptAndEnter(t *testing.T) {
	sec := History{{Epoch: 1, FirstSeq: 1}, {Epoch: 2, FirstSeq: 81}}
	pri := History{{Epoch: 1, FirstSeq: 1}, {Epoch: 3, FirstSeq: 81}, {Epoch: 5, FirstSeq: 200}}
	got := sec.Adopt(pri, 80)
	require.Equal(t, History{{Epoch: 1, FirstSeq: 1}, {Epoch: 3, FirstSeq: 81}, {Epoch: 5, FirstSeq: 200}}, got)
	require.Equal(t, uint64(3), got.EpochOf(150))
	require.Equal(t, got, got.Enter(4, 300, false), "older epoch: no change")
	require.Equal(t, HistoryEntry{Epoch: 6, FirstSeq: 300, Forced: true}, got.Enter(6, 300, true).Last())

	// A node that adopted a primary's history beyond its own records and is
	// promoted at its own position drops the entries it holds no records of
	// (sim seed 1374 of the first version).
	held := History{{Epoch: 1, FirstSeq: 1}, {Epoch: 2, FirstSeq: 53}}
	require.Equal(t, History{{Epoch: 1, FirstSeq: 1}, {Epoch: 4, FirstSeq: 43}}, held.Enter(4, 43, false))
	require.Equal(t, uint64(4), held.Enter(4, 43, false).EpochOf(50))
}

func TestHistoryCodec(t *testing.T) {
	for _, h := range []History{nil, {{Epoch: 1, FirstSeq: 1}, {Epoch: 4, FirstSeq: 99, Forced: true}}} {
		b := h.Encode()
		got, err := DecodeHistory(b)
		require.NoError(t, err)
		require.Equal(t, h, got)
		for i := range b {
			bad := append([]byte(nil), b...)
			bad[i] ^= 4
			_, err := DecodeHistory(bad)
			require.ErrorIs(t, err, ErrCorrupt, "byte %d", i)
		}
	}
	bad := History{{Epoch: 2, FirstSeq: 1}, {Epoch: 1, FirstSeq: 5}}.Encode()
	_, err := DecodeHistory(bad)
	require.ErrorIs(t, err, ErrCorrupt, "epochs must increase")
}

func FuzzDecodeHistory(f *testing.F) {
	f.Add(History(nil).Encode())
	f.Add(History{{Epoch: 1, FirstSeq: 1}, {Epoch: 4, FirstSeq: 99, Forced: true}}.Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHistory(b)
		if err != nil {
			require.ErrorIs(t, err, ErrCorrupt)
			return
		}
		require.Equal(t, b, h.Encode())
	})
}

func TestResyncStateCodec(t *testing.T) {
	for _, r := range []ResyncState{{From: 7}, {From: 1 << 40, All: true}, {From: 3, Extents: []extent.Extent{{Offset: 0, Length: 4096}, {Offset: 1 << 20, Length: 8192}}},
		{From: 0, All: true, Progress: &ResyncProgress{AsOf: 99, Epoch: 3, Source: 0xabcdef, Copied: []extent.Extent{{Offset: 0, Length: 300 << 20}}}},
		{From: 5, Extents: []extent.Extent{{Offset: 0, Length: 4096}}, Progress: &ResyncProgress{AsOf: 6, Epoch: 1, Source: 1}}} {
		b := r.Encode()
		got, err := DecodeResyncState(b)
		require.NoError(t, err)
		require.Equal(t, r, got)
		for i := range b {
			bad := append([]byte(nil), b...)
			bad[i] ^= 0x20
			_, err := DecodeResyncState(bad)
			require.ErrorIs(t, err, ErrCorrupt, "byte %d", i)
		}
	}
}

// TestResyncStateVersion1 decodes a version-1 image as an older release
// wrote it (bytes fixed here) and re-encodes it unchanged.
func TestResyncStateVersion1(t *testing.T) {
	old := []byte{'G', 'R', 'B', 'S', 1, 1, 0, 0, 1, 0, 0, 0}
	old = append(old, 0, 0, 0, 0)                                      // crc, below
	old = append(old, 7, 0, 0, 0, 0, 0, 0, 0)                          // from
	old = append(old, 0, 0, 1, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0) // [64 KiB, +4 KiB)
	crc := crc32.Update(crc32.Checksum(old[:12], crc32c.Table), crc32c.Table, old[16:])
	binary.LittleEndian.PutUint32(old[12:], crc)
	got, err := DecodeResyncState(old)
	require.NoError(t, err)
	require.Equal(t, ResyncState{From: 7, All: true, Extents: []extent.Extent{{Offset: 1 << 16, Length: 4096}}}, got)
	require.Equal(t, old, got.Encode())
}

func FuzzDecodeResyncState(f *testing.F) {
	f.Add(ResyncState{From: 7}.Encode())
	f.Add(ResyncState{From: 3, Extents: []extent.Extent{{Offset: 0, Length: 4096}}}.Encode())
	f.Add(ResyncState{All: true, Progress: &ResyncProgress{AsOf: 99, Epoch: 3, Source: 7, Copied: []extent.Extent{{Offset: 0, Length: 1 << 20}, {Offset: 4 << 20, Length: 4096}}}}.Encode())
	f.Add(ResyncState{From: 5, Progress: &ResyncProgress{AsOf: 6, Epoch: 1, Source: 1}}.Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeResyncState(b)
		if err != nil {
			require.ErrorIs(t, err, ErrCorrupt)
			return
		}
		require.Equal(t, b, r.Encode())
	})
}
